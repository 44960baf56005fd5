"""Issue #18: one execution path; the Python API and `dynamics run` do the same thing.

`execute(cfg)` locks the store, writes batch.toml, prepares `[generate.*]`
sets, plans and schedules; the local loop and the Ray task run every
checkpoint through the same streaming (disk budget, in-use markers) and the
same unit runner. These tests need no Ray: the Ray task function runs
in-process here (tests/test_ray.py runs it on a cluster).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

import dynamics.suites
from dynamics.cache import registered, usage
from evals.config import batch_to_toml, load_batch
from evals.store import Store
from tests.helpers import fake_hub_loader, hub_suite, make_tiny_suite, store_files, write_val

GEN = {"small": "tiny-neox-0", "large": "tiny-neox-1", "grid": [[1, -1], [0, 1]],
       "n_prompts": 3, "prompt_tokens": 4, "max_new_tokens": 5, "seed": 1}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    root = tmp_path_factory.mktemp("exec")
    folder = make_tiny_suite(root / "suite", "neox", steps=(0, 10, 20), n_models=2)
    return folder, write_val(root / "val.jsonl", n=6)


def _values(suite, out, **extra) -> dict:
    folder, val = suite
    return {"suite": str(folder), "output": str(out), "steps": [0, 20], **extra,
            "evaluators": {"token-loss": {"dataset": str(val), "context": 32}},
            "generate": {"mix": GEN}}


def _same(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for name, value in a.items():
        assert value.equals(b[name]) if isinstance(value, pl.DataFrame) else value == b[name], name


def test_cli_run_and_python_api_write_the_same_store(tmp_path, suite):
    from dynamics import cli
    from evals.execute import run_batch

    batch = tmp_path / "b.toml"
    values = _values(suite, tmp_path / "cli")
    batch.write_text(batch_to_toml(load_batch(values)))
    assert cli.main(["run", str(batch), "-q"]) == 0
    api = load_batch(_values(suite, tmp_path / "api"))
    result = run_batch(api, progress=False)
    assert not result.failed and len(result.written) == 4 * 2  # 4 checkpoints x 2 evaluators
    cli_files, api_files = store_files(tmp_path / "cli"), store_files(tmp_path / "api")
    assert sum(k.startswith("sequences/") for k in api_files) == 4
    assert sum(k.startswith("generated/") for k in api_files) == 2
    _same(cli_files, api_files)
    # batch.toml: written once, under the lock, as the batch was given (before generation
    # adds its files to the sequences evaluator)
    text = (tmp_path / "api" / "batch.toml").read_text()
    assert text == batch_to_toml(api) and "extra_datasets" not in text and "sequences" not in text


def test_batch_toml_is_written_only_for_an_accepted_batch(tmp_path, suite):
    """Issue 33: <output>/batch.toml describes the store, so it is written once the batch is
    accepted (inputs read, generated sets made, stored units' options equal): a failed
    generation or a refused batch leaves the store's batch.toml as it was."""
    from evals.execute import execute

    def broken(*args, **kwargs):
        raise RuntimeError("generator exploded")

    cfg = load_batch(_values(suite, tmp_path / "out"))
    with pytest.raises(RuntimeError, match="exploded"):
        execute(cfg, progress=False, generator=broken)
    assert not (tmp_path / "out" / "batch.toml").exists()
    assert not (tmp_path / "out" / "_lock.json").exists()  # the lock is released


def _hub_batch(suite, tmp_path, monkeypatch, budget_gb: float, **extra):
    from huggingface_hub import constants

    folder, val = suite
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # fetch markers here
    monkeypatch.setitem(dynamics.suites.BUILTIN_SUITES, "tiny-hub",
                        lambda: hub_suite("tiny-hub", folder))
    return load_batch({"suite": "tiny-hub", "output": str(tmp_path / "out"),
                       "models": ["tiny-neox-0"], "disk_budget_gb": budget_gb, **extra,
                       "evaluators": {"token-loss": {"dataset": str(val), "context": 32}}})


def _one_revision_bytes(suite, tmp_path) -> tuple[int, int]:
    """Bytes of one revision in the cache, and of two (they share config and tokenizer)."""
    loader = fake_hub_loader(tmp_path / "probe", suite[0])
    from dynamics.suites import get_suite

    refs = get_suite("tiny-hub").select(["tiny-neox-0"], [0, 10])
    snaps = [loader(r, None).local_dir for r in refs]
    return usage(snaps[:1]), usage(snaps)


class CheckingLoader:
    """A fake hub loader that checks the cache before every load: under budget, nothing broken."""

    def __init__(self, cache: Path, suite: Path, budget: int):
        self.inner, self.cache, self.budget = fake_hub_loader(cache, suite), cache, budget
        self.seen: list[tuple[int, int]] = []  # (registered snapshots, bytes) at each load

    def __call__(self, ref, options):
        snaps = registered([self.cache])
        broken = [p for s in snaps for p in s.iterdir() if not p.exists()]
        assert not broken, f"a registered revision lost files: {broken}"
        self.seen.append((len(snaps), usage(snaps)))
        assert usage(snaps) <= self.budget, self.seen
        return self.inner(ref, options)


@pytest.mark.parametrize("prefetch", [True, False])
def test_local_run_stays_under_budget_and_breaks_no_revision(tmp_path, suite, monkeypatch,
                                                            prefetch):
    from evals.execute import run_batch

    cfg = _hub_batch(suite, tmp_path, monkeypatch, 1.0, prefetch=prefetch)
    one, two = _one_revision_bytes(suite, tmp_path)
    budget = (one + two) // 2  # fits one revision, not two (even sharing blobs)
    cfg = load_batch({**_raw(cfg), "disk_budget_gb": budget / 2**30})
    loader = CheckingLoader(tmp_path / "hub", suite[0], budget)
    result = run_batch(cfg, progress=False, loader=loader)
    assert not result.failed and len(result.written) == 3
    assert len(loader.seen) == 3 and max(n for n, _ in loader.seen) == 1
    left = registered([tmp_path / "hub"])
    assert len(left) == 1 and usage(left) <= budget
    assert all(p.exists() for p in left[0].iterdir())
    assert Store(cfg.output_dir).read("token-loss")["step"].unique().sort().to_list() == [0, 10, 20]


def _raw(cfg) -> dict:
    import tomllib

    values = tomllib.loads(batch_to_toml(cfg))
    values.pop("base_dir", None)
    return values


def test_ray_task_streams_its_checkpoint_under_the_budget(tmp_path, suite, monkeypatch):
    """The Ray scheduler's task, run in-process: it registers, marks and evicts like the loop."""
    from dynamics.suites import get_suite
    from evals.ray_executor import checkpoint_task

    cfg = _hub_batch(suite, tmp_path, monkeypatch, 1.0)
    one, two = _one_revision_bytes(suite, tmp_path)
    budget = (one + two) // 2
    cfg = load_batch({**_raw(cfg), "disk_budget_gb": budget / 2**30})
    loader = CheckingLoader(tmp_path / "hub", suite[0], budget)
    for ref in get_suite("tiny-hub").select(["tiny-neox-0"], "all"):
        out = checkpoint_task(cfg, ref, ["token-loss"], loader)
        assert out.written == ["token-loss"] and not out.failed
        left = registered([tmp_path / "hub"])
        assert len(left) == 1 and usage(left) <= budget  # the previous revision was evicted
        assert all(f.exists() for f in left[0].iterdir())
    assert len(Store(cfg.output_dir).parts("token-loss")) == 3
    assert not list((tmp_path / "hub").glob("*/.dynamics/*.inuse.*"))  # released


def test_execute_reads_the_suite_once(tmp_path, suite, monkeypatch):
    """Issue 28: the batch is resolved once (suite, checkpoints, [generate.*] specs) and handed
    on; generation does not load the suite again table by table."""
    import dynamics.suites
    from evals.execute import execute

    cfg = load_batch({**_values(suite, tmp_path / "out"), "generate": {"mix": GEN, "mix2": GEN}})
    loads = []  # counted from here: load_batch validates against the suite, once, before
    real = dynamics.suites.load_manifest
    monkeypatch.setattr(dynamics.suites, "load_manifest",
                        lambda path: loads.append(path) or real(path))
    result = execute(cfg, progress=False)
    assert not result.failed
    assert len(loads) == 1, loads
    assert sorted(p.name for p in (tmp_path / "out" / "generated").glob("*.jsonl")) == [
        "mix.jsonl", "mix2.jsonl"]


def test_generation_downloads_count_against_the_disk_budget(tmp_path, suite, monkeypatch):
    """Issue 28: [generate.*] checkpoints load through the same streaming as the sweep's, so a
    hub download is registered and evicted under `disk_budget_gb`; before, generation loaded
    directly and left both revisions on disk, unregistered, whatever the budget."""
    from evals.execute import generate_sets, run_batch

    cfg = _hub_batch(suite, tmp_path, monkeypatch, 1.0)
    one, two = _one_revision_bytes(suite, tmp_path)
    budget = (one + two) // 2  # fits one revision, not two
    gen = {**GEN, "large": "tiny-neox-0", "step_small": 0, "step_large": 10}
    cfg = load_batch({**_raw(cfg), "disk_budget_gb": budget / 2**30, "steps": [20],
                      "generate": {"mix": gen}})
    cache = tmp_path / "hub"
    generate_sets(cfg, loader=fake_hub_loader(cache, suite[0]))
    on_disk = list(cache.glob("models--*/snapshots/*"))
    assert usage(on_disk) <= budget, "generation left more than the budget on disk"
    assert registered([cache]) == on_disk  # registered: the sweep's budget counts them
    loader = CheckingLoader(cache, suite[0], budget)  # the sweep starts under budget
    result = run_batch(cfg, progress=False, loader=loader)
    assert not result.failed and loader.seen and max(n for n, _ in loader.seen) == 1
