"""Shared test builders: tiny tokenizer, tiny local suites."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import torch

from dynamics.manifest import write_manifest
from dynamics.tiny import (
    count_params,
    save_checkpoint,
    tiny_gpt_neox,
    tiny_llama,
    tiny_olmo,
    tiny_opt,
    train_bpe_tokenizer,
)

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
    build = {"neox": tiny_gpt_neox, "opt": tiny_opt, "llama": tiny_llama, "olmo": tiny_olmo}[arch]
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


def put_in_hub_cache(cache: Path, repo_id: str, revision: str, folder: Path) -> Path:
    """Copy a checkpoint folder into a Hugging Face cache as `repo_id@revision`; its snapshot.

    The layout is huggingface_hub's: each file is a blob named by its sha256 under
    `blobs/`, linked from `snapshots/<commit>/`, with `refs/<revision>` naming the
    commit. Identical files of two revisions are one blob, as on the real hub.
    """
    import hashlib
    import os

    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
    snap = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True, exist_ok=True)
    for f in sorted(Path(folder).iterdir()):
        data = f.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        if not blob.exists():
            blob.write_bytes(data)
        link = snap / f.name
        if not link.is_symlink():
            os.symlink(os.path.relpath(blob, snap), link)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return snap


def fake_hub_loader(cache: Path, suite: Path):
    """A loader for hub refs `<repo>@step{N}` that 'downloads' from a local tiny suite.

    Before each load it fails if a registered revision in `cache` lost a file.

    `ref.source`'s last path part is the local model name; the checkpoint folder
    is `<suite>/<model>/step{N}`. It is copied into `cache` like snapshot_download
    would, then loaded from the snapshot with the real loader.
    """
    return _FakeHubLoader(Path(cache), Path(suite))


class _FakeHubLoader:
    def __init__(self, cache: Path, suite: Path):
        self.cache, self.suite = cache, suite

    def __call__(self, ref, options):
        import dataclasses

        from dynamics.cache import registered, repo_lock
        from dynamics.loading import load_checkpoint

        repo = self.cache / ("models--" + ref.source.replace("/", "--"))
        with repo_lock(repo):  # no eviction mid-check (another process may be evicting)
            lost = [f for s in registered([self.cache]) if s.is_dir() for f in s.iterdir()
                    if not f.exists()]
        if lost:
            raise RuntimeError(f"a revision still on disk lost files: {lost}")
        local = self.suite / ref.source.split("/")[-1] / ref.revision
        snap = put_in_hub_cache(self.cache, ref.source, ref.revision, local)
        loaded = load_checkpoint(dataclasses.replace(ref, source=str(snap), revision=None,
                                                     is_local=True), options)
        loaded.ref, loaded.local_dir = ref, snap
        return loaded


def hub_suite(name: str, local_suite: Path, org: str = "tiny"):
    """A Pythia-style suite (hub refs `<org>/<model>` @ `step{N}`) mirroring a local tiny suite.

    Register it for a test with
    `monkeypatch.setitem(dynamics.suites.BUILTIN_SUITES, name, lambda: suite)`.
    """
    from dynamics.checkpoints import CheckpointRef
    from dynamics.suites import Suite, get_suite

    local = get_suite(str(local_suite))
    models = {m: [CheckpointRef(name, m, r.params, r.step, r.tokens_seen, source=f"{org}/{m}",
                                revision=f"step{r.step}") for r in refs]
              for m, refs in local.models.items()}
    return Suite(name, "a Pythia-style suite served from a local tiny suite", models)


def store_files(root: Path) -> dict[str, object]:
    """Every result part (as a frame) and generated file (as text) of a store."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.suffix == ".parquet" and not rel.startswith("_"):
            out[rel] = pl.read_parquet(p)
        elif rel.startswith("generated/") and p.is_file():
            out[rel] = p.read_text()
    return out
