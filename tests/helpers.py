"""Shared test builders: tiny tokenizer, tiny local suites."""

from __future__ import annotations

from pathlib import Path

import torch

from dynamics.manifest import write_manifest
from dynamics.tiny import count_params, save_checkpoint, tiny_gpt_neox, tiny_opt, train_bpe_tokenizer

WORDS = ("the cat sat on a mat while dogs ran past red houses and blue trees near "
         "quiet rivers under bright stars every night before dawn").split()


def sample_texts(n: int = 200, seed: int = 0) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = int(torch.randint(5, 30, (1,), generator=g))
        idx = torch.randint(0, len(WORDS), (k,), generator=g).tolist()
        out.append(" ".join(WORDS[i] for i in idx) + ".")
    return out


_TOKENIZER = None


def tiny_tokenizer():
    global _TOKENIZER
    if _TOKENIZER is None:
        _TOKENIZER = train_bpe_tokenizer(sample_texts(300), vocab_size=160)
    return _TOKENIZER


def make_tiny_suite(root: Path, arch: str = "neox", steps=(0, 10, 20), n_models: int = 1,
                    tokens_per_step: int = 1000) -> Path:
    """A local suite of tiny random models; each 'checkpoint' perturbs the weights."""
    tok = tiny_tokenizer()
    build = {"neox": tiny_gpt_neox, "opt": tiny_opt}[arch]
    models = []
    for m in range(n_models):
        hidden = 32 * (m + 1)
        name = f"tiny-{arch}-{m}"
        ckpts = []
        for step in steps:
            model = build(vocab_size=len(tok), hidden_size=hidden, seed=1000 * m + step)
            save_checkpoint(model, tok, root / name / f"step{step}")
            ckpts.append({"step": step, "path": f"{name}/step{step}"})
        models.append({"name": name, "params": count_params(model), "checkpoints": ckpts})
    write_manifest(root / "suite.toml", f"tiny-{arch}", models, family=f"tiny-{arch}",
                   tokens_per_step=tokens_per_step)
    return root


def write_val(path: Path, n: int = 30, seed: int = 1) -> Path:
    import json

    path.write_text("\n".join(json.dumps({"text": t}) for t in sample_texts(n, seed)) + "\n")
    return path
