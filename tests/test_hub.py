"""Issue #18: the hub download path for real, against a local hub on 127.0.0.1.

The real `snapshot_download` (model info, tree listing, HEAD + GET of each
file) fills a real cache; prefetch, disk-budget eviction and resume run end
to end over a Pythia-style suite (revisions `step{N}`) whose revisions share
config and tokenizer files, as Pythia's do.
"""

from __future__ import annotations

import pytest

import dynamics.suites
from dynamics.cache import registered, usage
from dynamics.loading import load_checkpoint
from evals.config import load_batch
from evals.execute import run_batch
from evals.store import Store
from tests.helpers import hub_suite, make_tiny_suite, write_val
from tests.hub_server import TinyHub, point_hub_at

REPO = "tiny/tiny-neox-0"
STEPS = (0, 10, 20, 30)


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    suite = make_tiny_suite(root / "suite", "neox", steps=(*STEPS, 40))
    return suite, write_val(root / "v.jsonl", 6)


@pytest.fixture
def hub(local, tmp_path, monkeypatch):
    """The local hub serving steps 0-30 (not 40), with huggingface_hub pointed at it."""
    server = TinyHub()
    for step in STEPS:
        server.add_revision(REPO, f"step{step}", local[0] / "tiny-neox-0" / f"step{step}")
    server.serve()
    point_hub_at(server, monkeypatch, tmp_path / "cache")
    monkeypatch.setitem(dynamics.suites.BUILTIN_SUITES, "tiny-pythia",
                        lambda: hub_suite("tiny-pythia", local[0], org="tiny"))
    yield server
    server.close()


def _budget(local) -> int:
    """Bytes between one revision and two (two share config and tokenizer blobs)."""
    folders = [local[0] / "tiny-neox-0" / f"step{s}" for s in STEPS[:2]]
    one = sum(p.stat().st_size for p in folders[0].iterdir())
    weights = (folders[1] / "model.safetensors").stat().st_size
    return one + weights // 2  # < two revisions even with shared blobs (one + weights)


class Watch:
    """The real loader, after checking the cache: under budget, no registered revision broken."""

    def __init__(self, cache, budget: int):
        self.cache, self.budget, self.seen = cache, budget, []

    def __call__(self, ref, options):
        snaps = registered([self.cache])
        lost = [f for s in snaps for f in s.iterdir() if not f.exists()]
        assert not lost, f"a revision still on disk lost files: {lost}"
        assert usage(snaps) <= self.budget, (usage(snaps), self.budget)
        self.seen.append(len(snaps))
        return load_checkpoint(ref, options)


def _gets(hub, name: str) -> list[str]:
    return [p for m, p in hub.requests if m == "GET" and p.endswith("/" + name)]


def test_sweep_over_the_hub_under_a_disk_budget_then_resume(hub, local, tmp_path):
    budget = _budget(local)
    cfg = load_batch({"suite": "tiny-pythia", "output": str(tmp_path / "out"),
                      "steps": list(STEPS), "disk_budget_gb": budget / 2**30,
                      "evaluators": {"token-loss": {"dataset": str(local[1]), "context": 32}}})
    watch = Watch(tmp_path / "cache", budget)
    result = run_batch(cfg, progress=False, loader=watch)
    assert not result.failed, result.failed
    assert [label.split("@")[1] for label, _ in result.written] == [f"step{s}" for s in STEPS]
    assert watch.seen == [0, 1, 1, 1]  # one revision on disk whenever the next one starts
    assert len(_gets(hub, "model.safetensors")) == 4
    assert len(_gets(hub, "config.json")) == 1  # shared blob kept across evictions: fetched once
    left = registered([tmp_path / "cache"])
    assert len(left) == 1 and usage(left) <= budget and all(f.exists() for f in left[0].iterdir())

    before = len(hub.requests)  # resume: everything stored, nothing fetched
    assert run_batch(cfg, progress=False).written == [] and len(hub.requests) == before
    store = Store(tmp_path / "out")
    part = next(p for p in store.parts("token-loss") if "step=10" in str(p))
    part.unlink()  # lose one result: only that revision is fetched again
    again = run_batch(cfg, progress=False, loader=watch)
    assert [w[0].split("@")[1] for w in again.written] == ["step10"]
    fetched = [p for m, p in hub.requests[before:] if m == "GET" and "/resolve/" in p]
    commit = registered([tmp_path / "cache"])[-1].name  # step10's, fetched again
    assert fetched == [f"/{REPO}/resolve/{commit}/model.safetensors"]


def test_revision_the_hub_lacks_is_a_clear_recorded_error(hub, local, tmp_path):
    cfg = load_batch({"suite": "tiny-pythia", "output": str(tmp_path / "out"), "steps": [30, 40],
                      "evaluators": {"token-loss": {"dataset": str(local[1]), "context": 32}}})
    result = run_batch(cfg, progress=False)
    assert [w[0] for w in result.written] == ["tiny-pythia/tiny-neox-0@step30"]
    [(label, what, err)] = result.failed
    assert (label, what) == ("tiny-pythia/tiny-neox-0@step40", "load")
    assert err.startswith("CheckpointUnavailableError: revision step40 does not exist in "
                          f"{REPO} on {hub.url}")
    assert "dynamics suites --steps tiny-neox-0" in err and "internet" not in err
    assert Store(tmp_path / "out").failures()["what"].to_list() == ["load"]
