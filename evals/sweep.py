"""The sweep's building blocks: planning, the per-checkpoint unit runner, the local scheduler.

    for ckpt in stream_checkpoints(refs):
        for ev in pending[ckpt]:
            for table, frame in ev.run(model).items():
                store.write(table, with_keys(frame, ckpt))

`evals.execute.execute(cfg)` is the one execution path (lock, generated sets,
plan, schedule; `run_batch` there runs it with this module's local loop); the
local loop here (`run_local`) and the Ray scheduler (evals.ray_executor) both
hand each streamed checkpoint to `run_checkpoint`. This module imports neither
of them (no import circle: evals.execute -> evals.ray_executor -> evals.sweep).

Resume is free: a (checkpoint, evaluator) unit whose tables all exist in the
store is skipped, and a checkpoint with nothing pending is never loaded. A
unit that fails (load error, evaluator exception, non-finite values) is
recorded in the store with its error text and the batch goes on; a later run
does not rerun recorded failures unless `retry_failed=True`, and reports them
(`SweepResult.not_retried`): a failure is never counted as stored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from dynamics.checkpoints import CheckpointRef
from dynamics.loading import LoadOptions, load_checkpoint
from dynamics.progress import progress_bar
from dynamics.streaming import Streamed, stream_checkpoints
from evals.base import Evaluator, build_evaluator
from evals.config import BatchConfig
from evals.schema import with_keys
from evals.store import Store

log = logging.getLogger(__name__)
LOAD = "load"  # failure kind for checkpoints that could not be loaded


@dataclass
class CheckpointOutcome:
    """What happened to one checkpoint: evaluators written, and (what, error) failures."""

    label: str
    written: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class SweepResult:
    """What a sweep did: units written, skipped (already stored), and failed.

    `not_retried` holds the failures an earlier run recorded that this run left
    alone (no `retry_failed`): they are not stored results, so a batch with any
    is not done (`dynamics run` exits 1 and names them; issue 28).
    """

    written: list[tuple[str, str]] = field(default_factory=list)  # (checkpoint label, evaluator)
    skipped: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (label, what, error)
    seconds: float = 0.0
    not_retried: list[tuple[str, str, str]] = field(default_factory=list)  # (label, what, error)

    @property
    def has_failures(self) -> bool:
        """A unit failed in this run, or failed before and was not retried."""
        return bool(self.failed or self.not_retried)

    def add(self, out: CheckpointOutcome) -> None:
        """Merge one checkpoint's outcome (and log its failures)."""
        self.written += [(out.label, name) for name in out.written]
        self.failed += [(out.label, what, err) for what, err in out.failed]
        for what, err in out.failed:
            log.warning("%s failed on %s: %s", what, out.label, err)

    def summary(self) -> str:
        earlier = (f", {len(self.not_retried)} failed in an earlier run and not retried"
                   if self.not_retried else "")
        return (
            f"{len(self.written)} evaluator x checkpoint units written, {self.skipped} already "
            f"stored, {len(self.failed)} failed{earlier} ({self.seconds:.1f}s)"
        )


def build_evaluators(cfg: BatchConfig) -> list[Evaluator]:
    return [build_evaluator(n, v, cfg.base_dir) for n, v in cfg.evaluators.items()]


def load_options(cfg: BatchConfig) -> LoadOptions:
    return LoadOptions(cfg.device, cfg.dtype, cfg.allow_pickle, cfg.trust_remote_code)


def is_done(store: Store, ev: Evaluator, ref: CheckpointRef) -> bool:
    """All of the evaluator's tables are stored (and complete, where it can tell: `is_stored`)."""
    if not all(store.has(t, ref.key) for t in ev.tables):
        return False
    check = getattr(ev, "is_stored", None)
    return check is None or check(store, ref.key)


def plan(
    store: Store, refs: list[CheckpointRef], evals: list[Evaluator], retry_failed: bool
) -> tuple[list[tuple[CheckpointRef, list[Evaluator]]], SweepResult]:
    """Pending evaluators per checkpoint, and the result so far: units already stored
    (`skipped`) and failures recorded earlier that this run does not retry (`not_retried`)."""
    todo, result = [], SweepResult()
    for ref in refs:
        load_error = None if retry_failed else store.failure_error(LOAD, ref.key)
        if load_error is not None:
            result.not_retried.append((ref.label, LOAD, load_error))
            continue
        pending = []
        for ev in evals:
            if is_done(store, ev, ref):
                result.skipped += 1
                continue
            error = None if retry_failed else store.failure_error(ev.name, ref.key)
            if error is None:
                pending.append(ev)
            else:
                result.not_retried.append((ref.label, ev.name, error))
        if pending:
            todo.append((ref, pending))
    return todo, result


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


def run_checkpoint(store: Store, item: Streamed, evals: list[Evaluator]) -> CheckpointOutcome:
    """The one per-checkpoint unit runner (local and Ray): record a load failure or run `evals`."""
    ref, out = item.ref, CheckpointOutcome(item.ref.label)
    if item.error is not None:
        store.record_failure(LOAD, ref.key, item.error)
        out.failed.append((LOAD, f"{type(item.error).__name__}: {item.error}"))
        return out
    store.clear_failure(LOAD, ref.key)
    for ev in evals:
        try:
            run_unit(store, ev, item.loaded, ref)
            out.written.append(ev.name)
        except Exception as err:  # noqa: BLE001  (recorded; the batch goes on)
            store.record_failure(ev.name, ref.key, err)
            out.failed.append((ev.name, f"{type(err).__name__}: {err}"))
    return out


def stream_for(cfg: BatchConfig, refs: list[CheckpointRef], loader: Callable, *,
               prefetch: bool | None = None):
    """`stream_checkpoints` with the batch's options, prefetch and disk budget."""
    return stream_checkpoints(refs, load_options(cfg),
                              prefetch=cfg.prefetch if prefetch is None else prefetch,
                              disk_budget_gb=cfg.disk_budget_gb, loader=loader)


def run_local(cfg: BatchConfig, todo, result: SweepResult, *, progress: bool = True,
              loader: Callable = load_checkpoint, rebuild: bool = True) -> None:
    """The local scheduler: stream the pending checkpoints in order through `run_checkpoint`.

    `rebuild` is the Ray scheduler's (whether workers rebuild evaluators from the
    config); here the planned evaluator objects run in this process either way.
    """
    store = Store(cfg.output_dir)
    pending = {ref: evs for ref, evs in todo}
    bar = progress_bar(len(todo), "checkpoints", "ckpt", progress)
    try:
        for item in stream_for(cfg, list(pending), loader):
            result.add(run_checkpoint(store, item, pending[item.ref]))
            item.loaded = None
            bar.set_postfix_str(item.ref.label)
            bar.update(1)
    finally:
        bar.close()

