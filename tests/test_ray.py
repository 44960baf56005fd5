"""Issues #9, #18: the Ray scheduler writes the same store as the local one, under the same budget.

Ray runs the same `execute(cfg)` path as a local run (store lock, batch.toml,
`[generate.*]` sets, plan); only the scheduler differs. Workers import this
worktree's code (PYTHONPATH) and use a hub cache in a temp folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

import dynamics.suites
from dynamics.cache import registered, usage
from dynamics.suites import get_suite
from dynamics.toy.train import SCALES
from evals.config import load_batch, load_batch_file
from evals.execute import run_batch
from evals.store import Store
from tests.helpers import fake_hub_loader, hub_suite, make_tiny_suite, store_files, write_val

ray = pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    cache = tmp_path_factory.mktemp("ray-hub-cache")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "HF_HUB_CACHE": str(cache),
                                       "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}})

    @ray.remote
    def where() -> str:
        import evals.execute

        return evals.execute.__file__

    assert ray.get(where.remote()).startswith(str(ROOT))  # workers run this worktree's code
    yield cache
    ray.shutdown()


def _expected_units(cfg) -> list[tuple[str, str]]:
    refs = get_suite(cfg.suite_path).select(cfg.models, cfg.steps)
    return sorted((r.label, ev) for r in refs for ev in cfg.evaluators)


@pytest.mark.slow
def test_ray_matches_local_on_the_demo_batch_with_generated_sets(tmp_path, toy_suite,
                                                                 ray_cluster):
    from dynamics import cli
    from evals.execute import run_batch_ray

    steps = ['steps="log-spaced 2"']
    local = load_batch_file(cli._demo_batch(toy_suite, _mk(tmp_path / "local")), steps)
    remote = load_batch_file(cli._demo_batch(toy_suite, _mk(tmp_path / "ray")), steps)
    assert remote.generate and set(remote.evaluators) >= {"token-loss", "sequences"}
    a = run_batch(local, progress=False)
    b = run_batch_ray(remote, progress=False)  # makes the [generate.*] sets itself
    assert not a.failed and not b.failed, (a.failed, b.failed)
    want = _expected_units(local)
    n_models = len(get_suite(local.suite_path).models)
    assert n_models == len(SCALES["fast"].jobs()) == 5  # neox s, m, l; opt s, m (issue 26)
    assert len(want) == n_models * 2 * len(local.evaluators)  # 2 steps per model
    assert sorted(a.written) == want and sorted(b.written) == want
    sa, sb = store_files(local.output_dir), store_files(remote.output_dir)
    assert any(k.startswith("generated/") for k in sa)
    assert set(sa) == set(sb)
    for name, value in sa.items():
        if isinstance(value, pl.DataFrame):
            _assert_same_frame(value, sb[name], name)
        else:
            assert value == sb[name], name
    gen_sets = {s for s in Store(remote.output_dir).read("sequences")["set"] if "| gen: " in s}
    assert len(gen_sets) == 4  # the demo's four (a, b) pairs, scored at every checkpoint
    again = run_batch_ray(remote, progress=False)  # resume: nothing submitted
    assert again.written == [] and again.skipped == len(want)


def _assert_same_frame(a: pl.DataFrame, b: pl.DataFrame, name: str) -> None:
    """Identical keys, ids, counts and flags; float measures equal to float32 rounding.

    A Ray worker runs torch with its own thread count, so float sums (EAP-IG edge scores
    in particular) may differ in the last bits from the local run's.
    """
    assert a.schema == b.schema and a.height == b.height, name
    floats = [c for c, t in a.schema.items() if t in (pl.Float32, pl.Float64)]
    assert a.drop(floats).equals(b.drop(floats)), name
    for col in floats:
        x, y = a[col].to_numpy(), b[col].to_numpy()
        assert np.allclose(x, y, rtol=1e-4, atol=1e-6, equal_nan=True), (
            name, col, float(np.nanmax(np.abs(x - y))))


def _mk(folder: Path) -> Path:
    folder.mkdir(parents=True)
    return folder


@pytest.mark.slow
def test_ray_records_load_failures_with_their_checkpoint(tmp_path, ray_cluster):
    from evals.execute import run_batch_ray

    suite = make_tiny_suite(tmp_path / "suite", "neox", steps=(0, 10))
    (suite / "tiny-neox-0" / "step10" / "model.safetensors").write_bytes(b"not weights")
    val = write_val(tmp_path / "val.jsonl", n=4)
    cfg = load_batch({"suite": str(suite), "output": str(tmp_path / "out"), "executor": "ray",
                      "evaluators": {"token-loss": {"dataset": str(val), "context": 32}}})
    result = run_batch_ray(cfg, progress=False)
    step0, step10 = (r.label for r in get_suite(str(suite)).select(None, "all"))
    assert result.written == [(step0, "token-loss")]
    [(label, what, err)] = result.failed
    assert (label, what) == (step10, "load") and err.startswith("CheckpointUnavailableError")
    store = Store(tmp_path / "out")
    assert [p.name for p in store.parts("token-loss")] == ["step=0.parquet"]
    assert store.failures()["what"].to_list() == ["load"]


@pytest.mark.slow
def test_ray_run_evicts_and_stays_under_the_disk_budget(tmp_path, ray_cluster, monkeypatch):
    from evals.execute import run_batch_ray

    steps = (0, 10, 20, 30)
    suite = make_tiny_suite(tmp_path / "suite", "neox", steps=steps)
    val = write_val(tmp_path / "val.jsonl", n=4)
    monkeypatch.setitem(dynamics.suites.BUILTIN_SUITES, "tiny-hub",
                        lambda: hub_suite("tiny-hub", suite))
    folders = [suite / "tiny-neox-0" / f"step{s}" for s in steps[:2]]
    one = sum(p.stat().st_size for p in folders[0].iterdir())
    budget = one + (folders[1] / "model.safetensors").stat().st_size // 2  # < two revisions
    cache = ray_cluster  # the workers' HF_HUB_CACHE: their fetch markers guard these blobs
    cfg = load_batch({"suite": "tiny-hub", "output": str(tmp_path / "out"),
                      "disk_budget_gb": budget / 2**30,
                      "evaluators": {"token-loss": {"dataset": str(val), "context": 32}}})
    result = run_batch_ray(cfg, progress=False, loader=fake_hub_loader(cache, suite))
    assert not result.failed, result.failed  # the loader fails a load if a revision lost files
    assert sorted(result.written) == _expected_units(cfg)
    snapshots = list((cache / "models--tiny--tiny-neox-0" / "snapshots").iterdir())
    assert len(snapshots) == 1 and registered([cache]) == snapshots  # three evicted
    assert usage(snapshots) <= budget
    assert all(f.exists() for f in snapshots[0].iterdir())
    assert not list(cache.glob("*/.dynamics/*.inuse.*"))  # every worker released its marker
