"""Train the toy suite: two model families (GPTNeoX and pre-LN OPT) on the synthetic corpus.

`build_toy_suite(out_dir, scale, seed)` trains every size of every family of
the scale on the same row stream (same order, like Pythia; same tokenizer),
saves HF checkpoints (safetensors + tokenizer) at log-spaced and regular steps,
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

CODE_VERSION = 2
MARKER = "COMPLETE"
OWNER = ".toy-suite"


@dataclass(frozen=True)
class ModelSpec:
    """One model size (built in every architecture of the scale; MLP width 4 x hidden)."""

    size: str
    num_layers: int
    hidden_size: int
    num_heads: int


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
            25 puts 8 of them in the last 30 % of training (Xia et al.'s latest trend window).
        archs: the architectures ("neox", "opt"); each is one family, "toy-<arch>".
        corpus: the corpus spec.
    """

    models: tuple[ModelSpec, ...]
    steps: int
    batch_size: int = 32
    lr: float = 0.01
    warmup: int = 20
    n_regular: int = 25
    archs: tuple[str, ...] = ("neox", "opt")
    corpus: CorpusSpec = CorpusSpec()

    def __post_init__(self) -> None:
        unknown = [a for a in self.archs if a not in ARCHS]
        if unknown or not self.archs:
            raise ValueError(f"unknown toy architecture(s) {unknown or self.archs}; "
                             f"allowed: {', '.join(ARCHS)}")


ARCHS = {
    "neox": "GPTNeoX (Pythia: parallel residual, rotary positions, untied head)",
    "opt": "OPT (pre-LN, sequential residual, learned positions, tied head)",
}


SCALES = {
    "fast": ToyScale(
        models=(ModelSpec("s", 1, 16, 2), ModelSpec("m", 2, 32, 4), ModelSpec("l", 2, 64, 4)),
        steps=800,
    ),
    "demo": ToyScale(
        models=(ModelSpec("s", 1, 16, 2), ModelSpec("m", 2, 48, 4), ModelSpec("l", 2, 96, 4)),
        steps=1000,
    ),
}


def get_scale(scale: str | ToyScale) -> ToyScale:
    """A scale by name ("fast", "demo") or as given."""
    if isinstance(scale, ToyScale):
        return scale
    if scale not in SCALES:
        raise KeyError(f"unknown toy scale {scale!r}; allowed: {', '.join(SCALES)}")
    return SCALES[scale]


def checkpoint_steps(total: int, n_regular: int) -> list[int]:
    """0, powers of two below `total`, and `n_regular` evenly spaced steps ending at `total`.

    Example: total=100, n_regular=4 -> [0, 1, 2, 4, 8, 16, 25, 32, 50, 64, 75, 100].
    """
    steps = {0, total} | {2**i for i in range(int(math.log2(max(total, 1))) + 1) if 2**i < total}
    steps |= {round(total * j / n_regular) for j in range(1, n_regular + 1)}
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


def _lr_at(step: int, scale: ToyScale) -> float:
    if step < scale.warmup:
        return scale.lr * (step + 1) / scale.warmup
    frac = (step - scale.warmup) / max(1, scale.steps - scale.warmup)
    return scale.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


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
    opt = torch.optim.AdamW(model.parameters(), lr=scale.lr, betas=(0.9, 0.99), weight_decay=0.01)
    save_at = set(checkpoint_steps(scale.steps, scale.n_regular))
    tokens_per_step = scale.batch_size * scale.corpus.row_len
    ckpts = []
    model.train()
    for step in range(scale.steps + 1):
        if step in save_at:
            rel = f"{name}/step{step}"
            save_checkpoint(model, tokenizer, folder / rel)
            ckpts.append({"step": step, "path": rel, "tokens_seen": step * tokens_per_step})
        if step == scale.steps:
            break
        batch = rows[step * scale.batch_size:(step + 1) * scale.batch_size].long()
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, scale)
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return {"name": name, "params": count_params(model), "family": f"toy-{arch}",
            "checkpoints": ckpts}


def training_tensor(corpus: Corpus, tokenizer, n_rows: int) -> torch.Tensor:
    """The first `n_rows` training rows as token ids [n_rows, row_len] (int16)."""
    vocab = tokenizer.get_vocab()
    return torch.tensor([[vocab[w] for w in row] for row in corpus.training_rows(n_rows)],
                        dtype=torch.int16)


def n_workers(n_jobs: int) -> int:
    """Worker processes for training: one per usable core, at most one per model."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(n_jobs, cores or 1))


def _train_all(jobs: list[tuple], workers: int) -> dict[str, dict]:
    """Run `train_model(*job)` for every job; in `workers` spawned processes when > 1.

    Jobs are submitted largest first (params x steps) so the long ones do not come last.
    """
    from tqdm.auto import tqdm

    jobs = sorted(jobs, key=lambda j: -(j[1].num_layers * j[1].hidden_size ** 2))
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
    rows = training_tensor(corpus, tokenizer, cfg.steps * cfg.batch_size)
    jobs = [(arch, spec, rows, cfg, tokenizer, folder, seed, f"toy-{arch}-{label}-{spec.size}")
            for arch in cfg.archs for spec in cfg.models]
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
