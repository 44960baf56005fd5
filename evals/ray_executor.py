"""The Ray executor: one Ray task per checkpoint, all writing to the same store.

The driver locks the store, removes temp files of a killed earlier run, plans
the pending (checkpoint, evaluator) units exactly as the local sweep does
(`evals.sweep.plan`), and submits one task per checkpoint that has pending
units. Each task loads its checkpoint once, runs its pending evaluators with
the local sweep's `run_unit` (same validation, finiteness check and atomic
part writes), records failures in the store, and returns what it did. Parts
are keyed by checkpoint, so tasks never write the same file and the parquet
content equals a local run's. A task asks for one GPU when the device is
cuda, one CPU otherwise.

Ray is an optional dependency (`pip install "training-dynamics[dist]"`); it is
imported only here. Connects to a running cluster (`RAY_ADDRESS`) or starts a
local one when none is initialized.
"""

from __future__ import annotations

import logging
import time

from evals.config import BatchConfig, batch_to_toml
from evals.store import Store
from evals.sweep import LOAD, SweepResult, _progress, build_evaluators, plan

log = logging.getLogger(__name__)


def run_checkpoint(cfg: BatchConfig, ref, names: list[str]) -> dict:
    """Load one checkpoint, run the named evaluators on it, write their parts.

    Returns {"label", "written": [evaluator], "failed": [(what, error)]}; failures
    are also recorded in the store, as the local sweep does.
    """
    from dynamics.loading import LoadOptions, load_checkpoint
    from evals.sweep import run_unit

    store = Store(cfg.output_dir)
    evals = [ev for ev in build_evaluators(cfg) if ev.name in names]
    out = {"label": ref.label, "written": [], "failed": []}
    options = LoadOptions(cfg.device, cfg.dtype, cfg.allow_pickle, cfg.trust_remote_code)
    try:
        lm = load_checkpoint(ref, options)
    except Exception as err:  # noqa: BLE001  (recorded; the batch goes on)
        store.record_failure(LOAD, ref.key, err)
        out["failed"].append((LOAD, f"{type(err).__name__}: {err}"))
        return out
    store.clear_failure(LOAD, ref.key)
    for ev in evals:
        try:
            run_unit(store, ev, lm, ref)
            out["written"].append(ev.name)
        except Exception as err:  # noqa: BLE001
            store.record_failure(ev.name, ref.key, err)
            out["failed"].append((ev.name, f"{type(err).__name__}: {err}"))
    return out


def _ensure_ray():
    import ray

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    return ray


def run_batch_ray(cfg: BatchConfig, *, retry_failed: bool = False, progress: bool = True
                  ) -> SweepResult:
    """Run a batch with one Ray task per pending checkpoint; same store as `run_batch`."""
    from dynamics.suites import get_suite

    t0 = time.perf_counter()
    store = Store(cfg.output_dir)
    with store.lock():
        store.clean_temp()
        store.write_config(batch_to_toml(cfg))
        refs = get_suite(cfg.suite_path).select(cfg.models, cfg.steps)
        todo, skipped = plan(store, refs, build_evaluators(cfg), retry_failed)
        result = SweepResult(skipped=skipped)
        if todo:
            _run_tasks(cfg, todo, result, progress)
    result.seconds = time.perf_counter() - t0
    return result


def _run_tasks(cfg: BatchConfig, todo, result: SweepResult, progress: bool) -> None:
    ray = _ensure_ray()
    gpus = 1 if cfg.device.startswith("cuda") else 0
    task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(run_checkpoint)
    cfg_ref = ray.put(cfg)
    waiting = {task.remote(cfg_ref, ref, [ev.name for ev in evs]): ref for ref, evs in todo}
    bar = _progress(len(waiting), progress)
    try:
        while waiting:
            done, _ = ray.wait(list(waiting), num_returns=1)
            ref = waiting.pop(done[0])
            try:
                out = ray.get(done[0])
            except Exception as err:  # noqa: BLE001  (worker died: OOM, node loss)
                out = {"label": ref.label, "written": [],
                       "failed": [("task", f"{type(err).__name__}: {err}")]}
            result.written += [(out["label"], name) for name in out["written"]]
            result.failed += [(out["label"], what, err) for what, err in out["failed"]]
            for what, err in out["failed"]:
                log.warning("%s failed on %s: %s", what, out["label"], err)
            bar.set_postfix_str(out["label"])
            bar.update(1)
    finally:
        for pending in waiting:
            ray.cancel(pending, force=True)
        bar.close()
