"""The sweep: load each checkpoint once, run every pending evaluator, store the frames.

    for ckpt in stream_checkpoints(refs):
        for ev in pending[ckpt]:
            for table, frame in ev.run(model).items():
                store.write(table, with_keys(frame, ckpt))

Resume is free: a (checkpoint, evaluator) unit whose tables all exist in the
store is skipped, and a checkpoint with nothing pending is never loaded. A
unit that fails (load error, evaluator exception, non-finite values) is
recorded in the store with its error text and the batch goes on; a later run
skips recorded failures unless `retry_failed=True`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from dynamics.checkpoints import CheckpointRef
from dynamics.loading import LoadOptions, load_checkpoint
from dynamics.streaming import stream_checkpoints
from dynamics.suites import get_suite
from evals.base import Evaluator, build_evaluator
from evals.config import BatchConfig, batch_to_toml
from evals.generated import prepare_generated
from evals.schema import with_keys
from evals.store import Store

log = logging.getLogger(__name__)
LOAD = "load"  # failure kind for checkpoints that could not be loaded


@dataclass
class SweepResult:
    """What a sweep did: units written, skipped (already stored), and failed."""

    written: list[tuple[str, str]] = field(default_factory=list)  # (checkpoint label, evaluator)
    skipped: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (label, what, error)
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"{len(self.written)} evaluator x checkpoint units written, {self.skipped} already "
            f"stored, {len(self.failed)} failed ({self.seconds:.1f}s)"
        )


def build_evaluators(cfg: BatchConfig) -> list[Evaluator]:
    return [build_evaluator(n, v, cfg.base_dir) for n, v in cfg.evaluators.items()]


def is_done(store: Store, ev: Evaluator, ref: CheckpointRef) -> bool:
    """All of the evaluator's tables are stored (and complete, where it can tell: `is_stored`)."""
    if not all(store.has(t, ref.key) for t in ev.tables):
        return False
    check = getattr(ev, "is_stored", None)
    return check is None or check(store, ref.key)


def plan(
    store: Store, refs: list[CheckpointRef], evals: list[Evaluator], retry_failed: bool
) -> tuple[list[tuple[CheckpointRef, list[Evaluator]]], int]:
    """Pending evaluators per checkpoint, and the number of units already done."""
    todo, skipped = [], 0
    for ref in refs:
        if store.has_failure(LOAD, ref.key) and not retry_failed:
            continue
        pending = []
        for ev in evals:
            if is_done(store, ev, ref):
                skipped += 1
            elif retry_failed or not store.has_failure(ev.name, ref.key):
                pending.append(ev)
        if pending:
            todo.append((ref, pending))
    return todo, skipped


def _check_finite(frame: pl.DataFrame, where: str) -> None:
    floats = [c for c, t in frame.schema.items() if t.is_float()]
    if not floats or frame.height == 0:
        return
    bad = frame.select(pl.sum_horizontal([(~pl.col(c).is_finite()).sum() for c in floats])).item()
    if bad:
        raise FloatingPointError(f"{where}: {bad} non-finite values in {floats}")


def run_unit(store: Store, ev: Evaluator, lm, ref: CheckpointRef) -> None:
    """Run one evaluator on one loaded checkpoint and write all its tables."""
    frames = ev.run(lm)
    missing = set(ev.tables) - set(frames)
    if missing:
        raise RuntimeError(f"evaluator {ev.name} returned no frame for tables {sorted(missing)}")
    keyed = {t: with_keys(frames[t], ref.key, t) for t in ev.tables}
    for table, frame in keyed.items():
        _check_finite(frame, f"{ev.name}/{table} at {ref.label}")
    for table, frame in keyed.items():  # validate everything before writing anything
        store.write(table, frame, ref.key)
    store.clear_failure(ev.name, ref.key)


def run_batch(
    cfg: BatchConfig,
    *,
    retry_failed: bool = False,
    progress: bool = True,
    loader: Callable = load_checkpoint,
    evaluators: list[Evaluator] | None = None,
) -> SweepResult:
    """Run a batch locally (the default executor); see the module docstring.

    `[generate.*]` sets are generated first (or reused; evals.generated). The
    store is locked for the run (`Store.lock`: a second run on the same
    output fails with the holder's pid, host and start time) and temp files
    of a killed earlier run are removed first, so a rerun after SIGKILL ends
    with the same parts as an uninterrupted run.
    """
    store = Store(cfg.output_dir)
    with store.lock():
        store.clean_temp()
        return _run_locked(cfg, store, retry_failed, progress, loader, evaluators)


def _run_locked(cfg, store, retry_failed, progress, loader, evaluators) -> SweepResult:
    t0 = time.perf_counter()
    store.write_config(batch_to_toml(cfg))
    cfg = prepare_generated(cfg)  # [generate.*] sets: made once, then scored by `sequences`
    refs = get_suite(cfg.suite_path).select(cfg.models, cfg.steps)
    evals = evaluators if evaluators is not None else build_evaluators(cfg)
    todo, skipped = plan(store, refs, evals, retry_failed)
    result = SweepResult(skipped=skipped)
    options = LoadOptions(cfg.device, cfg.dtype, cfg.allow_pickle, cfg.trust_remote_code)
    bar = _progress(len(todo), progress)
    pending = {ref: evs for ref, evs in todo}
    for item in stream_checkpoints([r for r, _ in todo], options, prefetch=cfg.prefetch,
                                   disk_budget_gb=cfg.disk_budget_gb, loader=loader):
        ref = item.ref
        bar.set_postfix_str(ref.label)
        if item.error is not None:
            store.record_failure(LOAD, ref.key, item.error)
            result.failed.append((ref.label, LOAD, f"{type(item.error).__name__}: {item.error}"))
            log.warning("could not load %s: %s", ref.label, item.error)
            bar.update(1)
            continue
        store.clear_failure(LOAD, ref.key)
        for ev in pending[ref]:
            try:
                run_unit(store, ev, item.loaded, ref)
                result.written.append((ref.label, ev.name))
            except Exception as err:  # noqa: BLE001  (recorded; the batch goes on)
                store.record_failure(ev.name, ref.key, err)
                result.failed.append((ref.label, ev.name, f"{type(err).__name__}: {err}"))
                log.warning("%s failed on %s: %s", ev.name, ref.label, err)
        item.loaded = None
        bar.update(1)
    bar.close()
    result.seconds = time.perf_counter() - t0
    return result


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="checkpoints", unit="ckpt", disable=not enabled)
