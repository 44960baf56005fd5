"""Train the toy suite: two model families (GPTNeoX and pre-LN OPT) on the synthetic corpus.

`build_toy_suite(out_dir, scale, seed)` trains every size of every family of
the scale on the same row stream (same order, like Pythia; same tokenizer),
saves HF checkpoints (safetensors + tokenizer) at log-spaced, regular and dense steps,
exports the evaluation data and writes `suite.toml` (families "toy-neox" and
"toy-opt"). Models train in parallel worker processes, one torch thread each
(tiny models use one core far better than two; results do not depend on the
number of workers). A finished suite is marked by `COMPLETE` holding the config
hash; a later call with the same hash reuses it, anything else (missing marker:
interrupted; other hash: other config) retrains.

Layout of `<out_dir>/toy-<scale>-seed<seed>/`::

    suite.toml  COMPLETE  tokenizer/  data/...  (see dynamics.toy.export)
    toy-<arch>-<scale>-<size>/step<N>/   model.safetensors, config.json, tokenizer files
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from dynamics.manifest import write_manifest
from dynamics.tiny import count_params, save_checkpoint, tiny_gpt_neox, tiny_opt, word_tokenizer
from dynamics.toy.corpus import Corpus, CorpusSpec, vocabulary
from dynamics.toy.export import export_data

CODE_VERSION = 4  # 3: packed rows, repeat documents; 4: sizes per family, lr and steps per size (issue 26)
MARKER = "COMPLETE"
OWNER = ".toy-suite"


@dataclass(frozen=True)
class ModelSpec:
    """One model size (MLP width 4 x hidden).

    Attributes:
        size: the size label (model name "toy-<arch>-<scale>-<size>").
        num_layers, hidden_size, num_heads: the shape.
        arch: the one architecture this size is built in (None: every architecture of the scale).
        lr: its peak learning rate (None: the scale's), as real suites set one per size.
        steps: its optimizer steps (None: the scale's); every model reads the same rows in the
            same order, a shorter run reads a prefix of them.
    """

    size: str
    num_layers: int
    hidden_size: int
    num_heads: int
    arch: str | None = None
    lr: float | None = None
    steps: int | None = None


@dataclass(frozen=True)
class ToyScale:
    """How much to train.

    Attributes:
        models: the sizes (trained on the same rows in the same order).
        steps: optimizer steps per model.
        batch_size: rows per step (tokens per step = batch_size * corpus.row_len).
        lr: peak AdamW learning rate (linear warmup, cosine decay to lr / 10).
        warmup: warmup steps.
        n_regular: regular checkpoints (every steps / n_regular), besides the log-spaced ones;
            they put 8 or more in the last 30 % of training (Xia et al.'s latest trend window).
        dense: (first, last, every): extra checkpoints every `every` steps from `first` to
            `last`, where the induction phase change falls (None: no extra checkpoints).
        archs: the architectures ("neox", "opt"); each is one family, "toy-<arch>".
        corpus: the corpus spec.
    """

    models: tuple[ModelSpec, ...]
    steps: int
    batch_size: int = 32
    lr: float = 0.01
    warmup: int = 20
    n_regular: int = 25
    dense: tuple[int, int, int] | None = None
    archs: tuple[str, ...] = ("neox", "opt")
    corpus: CorpusSpec = CorpusSpec()

    def __post_init__(self) -> None:
        unknown = [a for a in self.archs if a not in ARCHS]
        if unknown or not self.archs:
            raise ValueError(f"unknown toy architecture(s) {unknown or self.archs}; "
                             f"allowed: {', '.join(ARCHS)}")
        for spec in self.models:
            if spec.arch is not None and spec.arch not in self.archs:
                raise ValueError(f"size {spec.size!r} is for architecture {spec.arch!r}, "
                                 f"not one of the scale's: {', '.join(self.archs)}")
            if spec.steps is not None and spec.steps < 1:
                raise ValueError(f"size {spec.size!r}: steps must be >= 1, got {spec.steps}")

    def jobs(self) -> list[tuple[str, ModelSpec]]:
        """(arch, size) of every model of the scale, family by family."""
        return [(a, m) for a in self.archs for m in self.models if m.arch in (None, a)]

    def steps_of(self, spec: ModelSpec) -> int:
        """The optimizer steps of one size."""
        return spec.steps or self.steps

    def lr_of(self, spec: ModelSpec) -> float:
        """The peak learning rate of one size."""
        return spec.lr or self.lr

    def n_rows(self) -> int:
        """Training rows the longest-training model reads (every model reads a prefix)."""
        return max(self.steps_of(m) for _, m in self.jobs()) * self.batch_size

    def checkpoints_of(self, spec: ModelSpec) -> list[int]:
        """The checkpoint steps of one size (the dense window clipped to its steps)."""
        total = self.steps_of(spec)
        dense = self.dense
        if dense is not None:
            dense = (min(dense[0], total), min(dense[1], total), dense[2])
        return checkpoint_steps(total, self.n_regular, dense)


ARCHS = {
    "neox": "GPTNeoX (Pythia: parallel residual, rotary positions, untied head)",
    "opt": "OPT (pre-LN, sequential residual, learned positions, tied head)",
}


# Issue 26 (BENCHMARKS.md "Induction formation"; bench/toy_induction.py sweeps): every size has
# two or more layers, varied by depth and width, and forms an induction head on the
# repeat-heavy corpus. GPTNeoX's phase change falls at steps ~500-800 (2-3M tokens) at lr 0.01;
# OPT (learned absolute positions) needs lr 0.03 and forms more gradually at steps ~900-1500
# (4-6M tokens), so its sizes train 1,600 steps and GPTNeoX's 1,000. The dense checkpoints
# cover both windows. Five models: the family test's jackknife needs 5 (stats.inference
# MIN_CLUSTERS); the fifth, GPTNeoX 2L d32, is the cheapest (it need not form a head).
TOY_CORPUS = CorpusSpec()
TOY_MODELS = (
    ModelSpec("s", 2, 32, 4, arch="neox", lr=0.01, steps=1000),
    ModelSpec("m", 3, 32, 4, arch="neox", lr=0.01, steps=1000),
    ModelSpec("l", 2, 48, 4, arch="neox", lr=0.01, steps=1000),
    ModelSpec("s", 3, 48, 4, arch="opt", lr=0.03, steps=1600),
    ModelSpec("m", 2, 64, 4, arch="opt", lr=0.03, steps=1600),
)
SCALES = {
    "fast": ToyScale(models=TOY_MODELS, steps=1600, batch_size=64, n_regular=10,
                     dense=(400, 1600, 40), corpus=TOY_CORPUS),
    "demo": ToyScale(models=TOY_MODELS, steps=1600, batch_size=64, n_regular=10,
                     dense=(400, 1600, 40), corpus=TOY_CORPUS),
}


def get_scale(scale: str | ToyScale) -> ToyScale:
    """A scale by name ("fast", "demo") or as given."""
    if isinstance(scale, ToyScale):
        return scale
    if scale not in SCALES:
        raise KeyError(f"unknown toy scale {scale!r}; allowed: {', '.join(SCALES)}")
    return SCALES[scale]


def checkpoint_steps(total: int, n_regular: int,
                     dense: tuple[int, int, int] | None = None) -> list[int]:
    """0, powers of two below `total`, `n_regular` evenly spaced steps ending at `total`,
    and with `dense` = (first, last, every) the steps first, first + every, ... <= last.

    Examples: total=100, n_regular=4 -> [0, 1, 2, 4, 8, 16, 25, 32, 50, 64, 75, 100];
    with dense=(40, 60, 10) also 40 and 60 (50 is there already).
    """
    steps = {0, total} | {2**i for i in range(int(math.log2(max(total, 1))) + 1) if 2**i < total}
    steps |= {round(total * j / n_regular) for j in range(1, n_regular + 1)}
    if dense is not None:
        first, last, every = dense
        if not (0 <= first <= last <= total and every >= 1):
            raise ValueError(f"dense must be (first, last, every) with 0 <= first <= last <= "
                             f"{total} (the steps) and every >= 1, got {dense}")
        steps |= set(range(first, last + 1, every))
    return sorted(steps)


def config_hash(scale: ToyScale, seed: int) -> str:
    """Hash of everything that determines the suite's contents."""
    import transformers

    blob = json.dumps({"scale": asdict(scale), "seed": seed, "code": CODE_VERSION,
                       "torch": torch.__version__, "transformers": transformers.__version__},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def toy_tokenizer(spec: CorpusSpec):
    """The word-level tokenizer of the corpus (specials first; eos = `<|endoftext|>`).

    decode() joins words with single spaces ("paris ." stays "paris ."), so text
    round-trips exactly.
    """
    from tokenizers import decoders

    tok = word_tokenizer(vocabulary(spec))
    tok.backend_tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tok.clean_up_tokenization_spaces = False
    return tok


def _lr_at(step: int, scale: ToyScale, spec: ModelSpec | None = None) -> float:
    """Learning rate at `step`: linear warmup, then cosine to a tenth of the peak at the end."""
    lr = scale.lr if spec is None else scale.lr_of(spec)
    steps = scale.steps if spec is None else scale.steps_of(spec)
    if step < scale.warmup:
        return lr * (step + 1) / scale.warmup
    frac = (step - scale.warmup) / max(1, steps - scale.warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def build_model(arch: str, spec: ModelSpec, vocab_size: int, max_positions: int, seed: int):
    """A freshly initialised model of one size in one architecture (seeded)."""
    common = dict(vocab_size=vocab_size, hidden_size=spec.hidden_size, num_layers=spec.num_layers,
                  num_heads=spec.num_heads, max_positions=max_positions, seed=seed)
    if arch == "neox":
        return tiny_gpt_neox(intermediate_size=4 * spec.hidden_size, **common)
    if arch == "opt":
        return tiny_opt(ffn_dim=4 * spec.hidden_size, **common)
    raise ValueError(f"unknown toy architecture {arch!r}; allowed: {', '.join(ARCHS)}")


def train_model(arch: str, spec: ModelSpec, rows: torch.Tensor, scale: ToyScale, tokenizer,
                folder: Path, seed: int, name: str) -> dict:
    """Train one size in one architecture, saving checkpoints under `folder`.

    Returns its manifest entry (family "toy-<arch>"). Runs with one torch thread.
    """
    torch.set_num_threads(1)
    model = build_model(arch, spec, len(tokenizer), scale.corpus.row_len, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=scale.lr_of(spec), betas=(0.9, 0.99),
                            weight_decay=0.01)
    save_at = set(scale.checkpoints_of(spec))
    total = scale.steps_of(spec)
    tokens_per_step = scale.batch_size * scale.corpus.row_len
    ckpts = []
    model.train()
    for step in range(total + 1):
        if step in save_at:
            rel = f"{name}/step{step}"
            save_checkpoint(model, tokenizer, folder / rel)
            ckpts.append({"step": step, "path": rel, "tokens_seen": step * tokens_per_step})
        if step == total:
            break
        batch = rows[step * scale.batch_size:(step + 1) * scale.batch_size].long()
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, scale, spec)
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return {"name": name, "params": count_params(model), "family": f"toy-{arch}",
            "checkpoints": ckpts}


def word_ids(rows: list[list[str]], tokenizer) -> torch.Tensor:
    """Rows of words as token ids [len(rows), row_len] (int16; one token per word)."""
    vocab = tokenizer.get_vocab()
    return torch.tensor([[vocab[w] for w in row] for row in rows], dtype=torch.int16)


def training_tensor(corpus: Corpus, tokenizer, n_rows: int) -> torch.Tensor:
    """The first `n_rows` training rows as token ids [n_rows, row_len] (int16)."""
    return word_ids(corpus.training_rows(n_rows), tokenizer)


def n_workers(n_jobs: int) -> int:
    """Worker processes for training: one per usable core, at most one per model."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(n_jobs, cores or 1))


def _train_all(jobs: list[tuple], workers: int) -> dict[str, dict]:
    """Run `train_model(*job)` for every job; in `workers` spawned processes when > 1.

    Jobs are submitted largest first (params x steps) so the long ones do not come last.
    """
    from tqdm.auto import tqdm

    # CPU time per step of these tiny models grows with depth more than with width
    # (measured: 2L d32 ~55 ms, 3L d32 ~79, 2L d48 ~77, 2L d64 ~80, 3L d48 ~90 at batch 64)
    jobs = sorted(jobs, key=lambda j: -(j[1].num_layers * (j[1].hidden_size + 32)
                                         * j[3].steps_of(j[1])))
    bar = tqdm(total=len(jobs), desc="train toy models", unit="model", leave=False,
               disable=None)  # no bar when stderr is not a terminal (issue 18)
    out = {}
    if workers == 1:
        threads = torch.get_num_threads()
        try:
            for job in jobs:
                out[job[-1]] = train_model(*job)
                bar.update()
        finally:
            torch.set_num_threads(threads)
    else:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # fork after torch's thread pools can hang
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            futures = [pool.submit(train_model, *job) for job in jobs]
            for fut in as_completed(futures):
                entry = fut.result()
                out[entry["name"]] = entry
                bar.update()
    bar.close()
    return out


def build_toy_suite(out_dir: str | Path, scale: str | ToyScale = "demo", seed: int = 0,
                    workers: int | None = None) -> Path:
    """Train (unless cached) the toy suite; returns its folder (holding `suite.toml`).

    `workers`: training processes (default: one per core, at most one per model).
    """
    cfg = get_scale(scale)
    label = scale if isinstance(scale, str) else "custom"
    folder = Path(out_dir) / f"toy-{label}-seed{seed}"
    digest = config_hash(cfg, seed)
    if (folder / MARKER).is_file() and (folder / MARKER).read_text().strip() == digest:
        return folder
    _clear(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / OWNER).write_text("written by dynamics.toy; safe to delete\n")
    corpus = Corpus(cfg.corpus, seed)
    tokenizer = toy_tokenizer(cfg.corpus)
    tokenizer.save_pretrained(folder / "tokenizer")
    export_data(corpus, folder / "data")
    rows = training_tensor(corpus, tokenizer, cfg.n_rows())
    jobs = [(arch, spec, rows, cfg, tokenizer, folder, seed, f"toy-{arch}-{label}-{spec.size}")
            for arch, spec in cfg.jobs()]
    trained = _train_all(jobs, workers or n_workers(len(jobs)))
    models = [trained[job[-1]] for job in jobs]  # manifest order: family, then size
    write_manifest(folder / "suite.toml", f"toy-{label}", models,
                   description=f"toy suite ({label} scale, seed {seed}; families "
                               f"{', '.join(f'toy-{a}' for a in cfg.archs)}), trained locally",
                   tokens_per_step=cfg.batch_size * cfg.corpus.row_len)
    (folder / MARKER).write_text(digest + "\n")
    return folder


def _clear(folder: Path) -> None:
    """Remove an unfinished or stale suite folder (only one this module created)."""
    if not folder.exists():
        return
    if not (folder / OWNER).is_file() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} exists and was not written by dynamics.toy; "
                              "remove it or choose another out_dir")
    shutil.rmtree(folder)
