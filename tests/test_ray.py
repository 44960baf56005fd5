"""Issue #9: the Ray executor gives the same store as the local executor."""

from __future__ import annotations

import polars as pl
import pytest

from evals.config import load_batch
from evals.store import Store
from evals.sweep import run_batch
from tests.helpers import make_tiny_suite, write_val

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _batch(suite, out, val, **extra):
    return {"suite": str(suite), "output": str(out), **extra,
            "evaluators": {"token-loss": {"dataset": str(val), "context": 32, "batch_size": 4}}}


def _parts(root) -> dict[str, pl.DataFrame]:
    store = Store(root)
    return {str(p.relative_to(root)): pl.read_parquet(p) for p in store.parts("token-loss")}


@pytest.mark.slow
def test_ray_matches_local(tmp_path, ray_cluster):
    suite = make_tiny_suite(tmp_path / "suite", "neox", steps=(0, 10), n_models=2)
    val = write_val(tmp_path / "val.jsonl", n=8)
    local = run_batch(load_batch(_batch(suite, tmp_path / "local", val)), progress=False)
    cfg = load_batch(_batch(suite, tmp_path / "ray", val, executor="ray"))
    from evals.ray_executor import run_batch_ray

    remote = run_batch_ray(cfg, progress=False)
    assert not local.failed and not remote.failed
    assert sorted(remote.written) == sorted(local.written) and len(remote.written) == 4
    a, b = _parts(tmp_path / "local"), _parts(tmp_path / "ray")
    assert set(a) == set(b) and len(a) == 4
    for name in a:
        assert a[name].equals(b[name]), name
    # Resume: a second Ray run finds everything stored and submits nothing.
    again = run_batch_ray(cfg, progress=False)
    assert again.written == [] and again.skipped == 4


@pytest.mark.slow
def test_ray_records_load_failures(tmp_path, ray_cluster):
    suite = make_tiny_suite(tmp_path / "suite", "neox", steps=(0, 10))
    (suite / "tiny-neox-0" / "step10" / "model.safetensors").write_bytes(b"not weights")
    val = write_val(tmp_path / "val.jsonl", n=4)
    from evals.ray_executor import run_batch_ray

    cfg = load_batch(_batch(suite, tmp_path / "out", val, executor="ray"))
    result = run_batch_ray(cfg, progress=False)
    assert [(label, what) for label, what, _ in result.failed] == [(result.failed[0][0], "load")]
    assert "step=10" in result.failed[0][0] or "10" in result.failed[0][0]
    store = Store(tmp_path / "out")
    assert len(store.parts("token-loss")) == 1
    assert store.failures()["what"].to_list() == ["load"]
