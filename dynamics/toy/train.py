"""Train the toy suite: a family of GPTNeoX models on the synthetic corpus.

`build_toy_suite(out_dir, scale, seed)` trains every model of the scale on the
same row stream (same order, like Pythia), saves HF checkpoints (safetensors +
tokenizer) at log-spaced and regular steps, exports the evaluation data and
writes `suite.toml` (family "toy"). A finished suite is marked by `COMPLETE`
holding the config hash; a later call with the same hash reuses it, anything
else (missing marker: interrupted; other hash: other config) retrains.

Layout of `<out_dir>/toy-<scale>-seed<seed>/`::

    suite.toml  COMPLETE  tokenizer/  data/...  (see dynamics.toy.export)
    toy-<scale>-<size>/step<N>/   model.safetensors, config.json, tokenizer files
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from dynamics.manifest import write_manifest
from dynamics.tiny import count_params, save_checkpoint, tiny_gpt_neox, word_tokenizer
from dynamics.toy.corpus import Corpus, CorpusSpec, vocabulary
from dynamics.toy.export import export_data

CODE_VERSION = 1
MARKER = "COMPLETE"
OWNER = ".toy-suite"


@dataclass(frozen=True)
class ModelSpec:
    """One model size (Pythia architecture; intermediate size 4 x hidden)."""

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
        n_regular: regular checkpoints (every steps / n_regular), besides the log-spaced ones.
        corpus: the corpus spec.
    """

    models: tuple[ModelSpec, ...]
    steps: int
    batch_size: int = 32
    lr: float = 0.01
    warmup: int = 20
    n_regular: int = 8
    corpus: CorpusSpec = CorpusSpec()


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


def train_model(spec: ModelSpec, rows: torch.Tensor, scale: ToyScale, tokenizer, folder: Path,
                seed: int, name: str) -> dict:
    """Train one size, saving checkpoints under `folder`; returns its manifest entry."""
    from tqdm.auto import tqdm

    model = tiny_gpt_neox(vocab_size=len(tokenizer), hidden_size=spec.hidden_size,
                          num_layers=spec.num_layers, num_heads=spec.num_heads,
                          intermediate_size=4 * spec.hidden_size,
                          max_positions=scale.corpus.row_len, seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=scale.lr, betas=(0.9, 0.99), weight_decay=0.01)
    save_at = set(checkpoint_steps(scale.steps, scale.n_regular))
    tokens_per_step = scale.batch_size * scale.corpus.row_len
    ckpts = []
    model.train()
    bar = tqdm(range(scale.steps + 1), desc=f"train {name}", unit="step", leave=False,
               disable=None)  # no bar when stderr is not a terminal (issue 18)
    for step in bar:
        if step in save_at:
            rel = f"{name}/step{step}"
            save_checkpoint(model, tokenizer, folder / rel)
            ckpts.append({"step": step, "path": rel, "tokens_seen": step * tokens_per_step})
        if step == scale.steps:
            break
        batch = rows[step * scale.batch_size:(step + 1) * scale.batch_size]
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, scale)
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    return {"name": name, "params": count_params(model), "family": "toy", "checkpoints": ckpts}


def training_tensor(corpus: Corpus, tokenizer, n_rows: int) -> torch.Tensor:
    """The first `n_rows` training rows as token ids [n_rows, row_len]."""
    vocab = tokenizer.get_vocab()
    return torch.tensor([[vocab[w] for w in row] for row in corpus.training_rows(n_rows)])


def build_toy_suite(out_dir: str | Path, scale: str | ToyScale = "demo", seed: int = 0) -> Path:
    """Train (unless cached) the toy suite; returns its folder (holding `suite.toml`)."""
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
    torch.manual_seed(seed)
    models = [train_model(spec, rows, cfg, tokenizer, folder, seed, f"toy-{label}-{spec.size}")
              for spec in cfg.models]
    write_manifest(folder / "suite.toml", f"toy-{label}", models, family="toy",
                   description=f"toy suite ({label} scale, seed {seed}), trained locally",
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
