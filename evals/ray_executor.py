"""The Ray scheduler: one Ray task per pending checkpoint, all writing to the same store.

`evals.execute.execute` locks the store, writes batch.toml, makes the
`[generate.*]` sets and plans the pending units exactly as for a local run,
then calls `run_ray`, which submits one task per checkpoint with pending
units. Each task (`checkpoint_task`) streams its checkpoint with the shared
`stream_checkpoints` and runs it through the shared unit runner
(`evals.sweep.run_checkpoint`): same validation, finiteness check, atomic part
writes and failure records as the local loop. Parts are keyed by checkpoint,
so tasks never write the same file and the parquet content equals a local
run's. A task asks for one GPU when the device is cuda, one CPU otherwise.

Disk budget and prefetch under Ray (a decision, see README): each task
downloads into its node's Hugging Face cache and honours `disk_budget_gb`
for that cache: the snapshots this tool loaded are registered on disk
(dynamics.cache), so every worker on a node sees the same set, in-use
markers carry the worker's pid, and after its checkpoint a task evicts the
least recently used snapshots no live process uses. The driver does not
download or hand paths to tasks (a multi-node cluster has no shared disk).
Prefetch overlaps loads with compute across tasks (tasks run concurrently up
to the cluster's CPUs/GPUs); within a task there is one checkpoint, so
`prefetch` has nothing more to load.

Ray is an optional dependency (`pip install "training-dynamics[dist]"`); it is
imported only here. Connects to a running cluster (`RAY_ADDRESS`) or starts a
local one when none is initialized.
"""

from __future__ import annotations

from collections.abc import Callable

from dynamics.loading import load_checkpoint
from dynamics.progress import progress_bar
from evals.config import BatchConfig
from evals.store import Store
from evals.sweep import (CheckpointOutcome, SweepResult, UnitContext, build_evaluators,
                         run_checkpoint, stream_for, unit_context)


def checkpoint_task(cfg: BatchConfig, ref, evaluators: list, loader: Callable = load_checkpoint,
                    ctx: UnitContext | None = None) -> CheckpointOutcome:
    """One Ray task: stream one checkpoint (budget, markers) and run its pending evaluators.

    `evaluators` holds evaluator names (rebuilt here from `cfg`) or evaluator objects;
    `ctx` the driver's provenance and architecture reference (built here if None).
    """
    store = Store(cfg.output_dir)
    if all(isinstance(e, str) for e in evaluators):
        evaluators = [ev for ev in build_evaluators(cfg) if ev.name in evaluators]
    ctx = ctx if ctx is not None else unit_context(cfg, evaluators)
    out = CheckpointOutcome(ref.label)
    for item in stream_for(cfg, [ref], loader, prefetch=False):  # runs to the end: evicts
        out = run_checkpoint(store, item, evaluators, ctx)
        item.loaded = None
    return out


def _ensure_ray():
    import ray

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    return ray


def run_ray(cfg: BatchConfig, todo, result: SweepResult, *, progress: bool = True,
            loader: Callable = load_checkpoint, rebuild: bool = True,
            ctx: UnitContext | None = None) -> None:
    """The Ray scheduler: one task per pending checkpoint; merges outcomes into `result`."""
    ray = _ensure_ray()
    gpus = 1 if cfg.device.startswith("cuda") else 0
    task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(checkpoint_task)
    cfg_ref, loader_ref, ctx_ref = ray.put(cfg), ray.put(loader), ray.put(ctx)
    waiting = {task.remote(cfg_ref, ref, [ev.name if rebuild else ev for ev in evs], loader_ref,
                           ctx_ref): ref for ref, evs in todo}
    bar = progress_bar(len(waiting), "checkpoints", "ckpt", progress)
    try:
        while waiting:
            done, _ = ray.wait(list(waiting), num_returns=1)
            ref = waiting.pop(done[0])
            try:
                out = ray.get(done[0])
            except Exception as err:  # noqa: BLE001  (worker died: OOM, node loss)
                out = CheckpointOutcome(ref.label,
                                        failed=[("task", f"{type(err).__name__}: {err}")])
            result.add(out)
            bar.set_postfix_str(out.label)
            bar.update(1)
    finally:
        for pending in waiting:
            ray.cancel(pending, force=True)
        bar.close()

