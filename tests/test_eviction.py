"""Issue #18: disk eviction on a real hub-cache layout never breaks another revision.

The hub cache stores identical files of different revisions (config.json,
tokenizer files) as ONE blob; deleting a revision must keep every blob
another snapshot links to, and never touch a snapshot a live process uses.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from dynamics.cache import (
    DiskBudget,
    delete_revision,
    fetching,
    in_use_marker,
    is_in_use,
    registered,
    snapshot_blobs,
    usage,
)
from dynamics.checkpoints import CheckpointRef
from dynamics.loading import load_checkpoint
from tests.helpers import make_tiny_suite, put_in_hub_cache

REPO = "tiny/neox"


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return make_tiny_suite(tmp_path_factory.mktemp("evict"), "neox", steps=(0, 10, 20))


def _cache(tmp_path, suite, steps=(0, 10, 20)) -> list[Path]:
    return [put_in_hub_cache(tmp_path / "hub", REPO, f"step{s}", suite / "tiny-neox-0" / f"step{s}")
            for s in steps]


def _complete(snapshot: Path) -> bool:
    files = list(snapshot.iterdir())
    return bool(files) and all(f.exists() for f in files)  # exists() is False on a dangling link


def _load(snapshot: Path, suite: Path):
    import tomllib

    params = tomllib.loads((suite / "suite.toml").read_text())["models"][0]["params"]
    ref = CheckpointRef("t", "m", params, 0, 0, source=str(snapshot), is_local=True)
    return load_checkpoint(ref)


def test_revisions_share_blobs_in_this_layout(tmp_path, suite):
    a, b, _ = _cache(tmp_path, suite)
    shared = set(snapshot_blobs(a)) & set(snapshot_blobs(b))
    names = {p.name for p in a.iterdir() if p.resolve() in {s.resolve() for s in shared}}
    assert {"config.json", "tokenizer.json"} <= names and "model.safetensors" not in names
    assert usage([a, b]) < usage([a]) + usage([b])  # a shared blob counts once


def test_evicting_one_revision_leaves_the_other_loadable(tmp_path, suite):
    from huggingface_hub import scan_cache_dir

    a, b, c = _cache(tmp_path, suite)
    blobs_a = snapshot_blobs(a)
    only_a = set(blobs_a) - set(snapshot_blobs(b)) - set(snapshot_blobs(c))
    freed = delete_revision(a)
    assert not a.exists() and only_a and not any(p.exists() for p in only_a)
    assert freed == sum(blobs_a[p] for p in only_a)
    assert _complete(b) and _complete(c)
    assert _load(b, suite).model.config.hidden_size == 32
    repo = a.parent.parent
    assert not (repo / "refs" / "step0").exists() and (repo / "refs" / "step10").is_file()
    info = scan_cache_dir(tmp_path / "hub")
    assert not info.warnings, info.warnings  # our markers do not corrupt `hf cache scan`
    assert {r.commit_hash for r in next(iter(info.repos)).revisions} == {b.name, c.name}


def test_budget_never_touches_a_revision_in_use(tmp_path, suite):
    a, b, c = _cache(tmp_path, suite)
    budget = DiskBudget(0)
    for s in (a, b, c):
        budget.add(s)
    in_use_marker(a, os.getppid()).touch()  # a live other process (our parent) uses a
    in_use_marker(b, _dead_pid()).touch()  # stale: its process is gone
    budget.acquire(c)  # this process uses c
    assert is_in_use(a) and not is_in_use(b) and is_in_use(c)
    assert budget.evict() == [b]
    assert _complete(a) and _complete(c) and not b.exists()
    assert _load(a, suite).model.config.hidden_size == 32
    budget.release(c)
    assert not in_use_marker(c).exists()
    assert budget.evict() == [c] and _complete(a)
    assert registered(budget.roots) == [a]


def test_budget_evicts_least_recently_used_until_it_fits(tmp_path, suite):
    a, b, c = _cache(tmp_path, suite)
    budget = DiskBudget(None)
    for s in (a, b, c):
        budget.add(s)
        os.utime(s.parent.parent / ".dynamics" / f"{s.name}.fetched",
                 ns=(10**18 + len(registered(budget.roots)),) * 2)  # strict order a < b < c
    two = usage([b, c])
    budget.budget_bytes = two  # room for b and c together (they share config and tokenizer)
    assert two < usage([b]) + usage([c])
    assert budget.evict() == [a] and budget.usage() == two
    assert _complete(b) and _complete(c)


def test_nothing_evicted_while_another_process_fetches_into_the_repo(tmp_path, suite):
    a, b, _ = _cache(tmp_path, suite)
    budget = DiskBudget(0)
    budget.add(a)
    repo = a.parent.parent
    with fetching(repo):  # creates the marker folder; our own fetch is no blocker (see below)
        pass
    other = repo.parent / ".locks" / repo.name / f"dynamics-fetch.{os.getppid()}"
    other.touch()  # a live other process is downloading into the repo
    assert budget.evict() == [] and _complete(a)
    other.unlink()
    with fetching(repo):  # our own fetch: serialized by the in-process lock, not a blocker
        assert budget.evict() == [a]
    assert _complete(b)
