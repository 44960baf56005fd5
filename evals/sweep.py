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

Resume is free: a (checkpoint, evaluator) unit is skipped when the store holds
its record with this batch's provenance (`provenance_of`: the evaluator's
scoring options, its inputs by content, code version and dtype) and every part
the record names is whole (evals.store); a checkpoint with nothing pending is
never loaded. Before that, `check_provenance` refuses a batch whose options
differ from those of units already stored (one line per differing option,
with the ways out), unless `rescore` asks to score those units again: a store
never holds two versions of one unit, nor two experiments. A unit that fails
(load error, a checkpoint that does not load exactly, evaluator exception,
non-finite values, no row where rows are due) is recorded in the store with
its error text and the batch goes on; a later run does not rerun recorded
failures unless `retry_failed=True`, and reports them
(`SweepResult.not_retried`): a failure is never counted as stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from dynamics.checkpoints import CheckpointRef
from dynamics.exact import ArchReference, checkpoint_identity
from dynamics.loading import LoadOptions, load_checkpoint
from dynamics.progress import progress_bar
from dynamics.streaming import Streamed, stream_checkpoints
from evals.base import ConfigError, Evaluator, build_evaluator, tokenizer_fingerprint
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


class ProvenanceError(ConfigError):
    """The batch's options differ from those of units already in the store."""


def build_evaluators(cfg: BatchConfig) -> list[Evaluator]:
    """The batch's evaluators; every table's problems (options, unreadable inputs) at once."""
    evals, problems = [], []
    for name, values in cfg.evaluators.items():
        try:
            evals.append(build_evaluator(name, values, cfg.base_dir))
        except ConfigError as err:
            problems += err.problems
    if problems:
        raise ConfigError(problems)
    return evals


def check_inputs(evals: list[Evaluator]) -> None:
    """Read and check every evaluator's inputs once, before any checkpoint is loaded."""
    problems = [p for ev in evals for p in ev.input_errors()]
    if problems:
        raise ConfigError(problems)


def load_options(cfg: BatchConfig) -> LoadOptions:
    return LoadOptions(cfg.device, cfg.dtype, cfg.allow_pickle, cfg.trust_remote_code)


def provenance_of(ev: Evaluator, cfg: BatchConfig) -> dict:
    """What a unit of `ev` depends on in this batch: the evaluator's provenance and dtype."""
    body = {**ev.provenance(), "dtype": cfg.dtype}
    return {**body, "fingerprint": hashlib.sha256(json.dumps(body, sort_keys=True).encode()
                                                  ).hexdigest()[:20]}


@dataclass
class UnitContext:
    """What the unit runner needs besides the checkpoint: each evaluator's provenance
    (recorded with its parts) and the architecture each model's checkpoints must have."""

    provenance: dict[str, dict] = field(default_factory=dict)
    arch: ArchReference | None = None


def unit_context(cfg: BatchConfig, evals: list[Evaluator], suite=None) -> UnitContext:
    """The batch's UnitContext (`suite`: the batch's suite, loaded if not given)."""
    from dynamics.suites import get_suite

    suite = suite or get_suite(cfg.suite_path)
    firsts = {m: refs[0] for m, refs in suite.models.items() if refs}
    return UnitContext({ev.name: provenance_of(ev, cfg) for ev in evals}, ArchReference(firsts))


def is_done(store: Store, ev: Evaluator, ref: CheckpointRef, fingerprint: str | None,
            unrecorded: list[str] | None = None) -> bool:
    """The unit's record matches `fingerprint` and every part it names is whole.

    A damaged part is redone with a warning naming it. A part without a record (an
    interrupted write, or an older version of this tool) is redone too; it is appended to
    `unrecorded` (plan warns once per evaluator), or warned about here when that is None.
    """
    record = store.read_record(ev.name, ref.key)
    if record is None:
        there = [str(store.part_path(t, ref.key)) for t in ev.tables
                 if store.part_path(t, ref.key).is_file()]
        if there and unrecorded is not None:
            unrecorded.append(there[0])
        elif there:
            log.warning("%s [%s]: %s has no provenance record (an interrupted write or an "
                        "older version); scoring it again", ref.label, ev.name, there[0])
        return False
    if fingerprint is not None and record.get("fingerprint") != fingerprint:
        return False
    for table in ev.tables:
        facts = (record.get("parts") or {}).get(table)
        problem = ("no part recorded" if facts is None
                   else store.part_problem(table, ref.key, facts))
        if problem is not None:
            log.warning("%s [%s]: %s; scoring it again", ref.label, ev.name, problem)
            return False
    return True


def _shown(value) -> str:
    if isinstance(value, dict) and "sha256" in value:
        return f"{value.get('name', 'content')} sha256 {value['sha256'][:12]}"
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return json.dumps(value)


def _differences(old: dict, new: dict) -> list[str]:
    """`name: stored -> this batch` for each differing option (and dtype, code version)."""
    flat = lambda p: {"dtype": p.get("dtype"), "code_version": p.get("code_version"),  # noqa: E731
                      **(p.get("options") or {})}
    a, b = flat(old), flat(new)
    return [f"{k} = {_shown(b.get(k))} in this batch, {_shown(a.get(k))} in the stored units"
            for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _has_a_part(store: Store, record: dict) -> bool:
    key = record.get("key") or {}
    return bool(key) and any(store.part_path(t, key).is_file() for t in record.get("parts") or ())


def check_provenance(store: Store, evals: list[Evaluator], provenance: dict[str, dict],
                     refs: list[CheckpointRef], rescore: bool = False) -> None:
    """Refuse a batch whose provenance differs from units already stored (see module doc).

    With `rescore`, differing units of this batch's selection are scored again (plan
    treats them as pending); differing units outside the selection are still refused,
    since the store would then hold two experiments.
    """
    selected = {(r.family, r.model, r.step) for r in refs}
    problems, n_stale = [], 0
    for ev in evals:
        want = provenance[ev.name]
        stale = [rec for _, rec in store.records(ev.name)  # a record with no part left
                 if rec is not None and rec.get("fingerprint") != want["fingerprint"]
                 and _has_a_part(store, rec)]  # is no stored unit: it blocks nothing
        if not stale:
            continue
        where = f"[evaluators.{ev.name}]"
        if rescore:
            outside = [r for r in stale if (r["key"]["family"], r["key"]["model"],
                                            int(r["key"]["step"])) not in selected]
            if outside:
                k = outside[0]["key"]
                problems.append(f"{where}: --rescore: {len(outside)} stored unit(s) with other "
                                f"options are outside this batch's models/steps (e.g. "
                                f"{k['family']}/{k['model']}@step{k['step']}); select them "
                                "too, or use another output")
            continue
        n_stale += len(stale)
        diffs = _differences(stale[0].get("provenance") or {}, want)
        problems += [f"{where}: {d}" for d in diffs or ["scored by another version"]]
    if problems and not rescore:
        problems.append(f"{n_stale} stored unit(s) were scored with other options; restore "
                        "them, give another `output`, or rerun with --rescore to score those "
                        "units again with these options")
    if problems:
        raise ProvenanceError(problems)


def plan(
    store: Store, refs: list[CheckpointRef], evals: list[Evaluator], retry_failed: bool,
    fingerprints: dict[str, str] | None = None,
) -> tuple[list[tuple[CheckpointRef, list[Evaluator]]], SweepResult]:
    """Pending evaluators per checkpoint, and the result so far: units already stored
    (`skipped`) and failures recorded earlier that this run does not retry (`not_retried`).

    `fingerprints` (evaluator name -> this batch's provenance fingerprint): a stored unit
    with another fingerprint is pending (check_provenance has allowed it); None: any."""
    todo, result = [], SweepResult()
    fingerprints, unrecorded = fingerprints or {}, {}
    for ref in refs:
        load_error = None if retry_failed else store.failure_error(LOAD, ref.key)
        if load_error is not None:
            result.not_retried.append((ref.label, LOAD, load_error))
            continue
        pending = []
        for ev in evals:
            if is_done(store, ev, ref, fingerprints.get(ev.name),
                       unrecorded.setdefault(ev.name, [])):
                result.skipped += 1
                continue
            error = None if retry_failed else store.failure_error(ev.name, ref.key)
            if error is None:
                pending.append(ev)
            else:
                result.not_retried.append((ref.label, ev.name, error))
        if pending:
            todo.append((ref, pending))
    for name, paths in unrecorded.items():
        if paths:
            log.warning("[%s]: %d stored part(s) have no provenance record (an interrupted "
                        "write, or a store written by an older version), e.g. %s; scoring "
                        "them again", name, len(paths), paths[0])
    return todo, result


def _check_finite(frame: pl.DataFrame, where: str) -> None:
    floats = [c for c, t in frame.schema.items() if t.is_float()]
    if not floats or frame.height == 0:
        return
    bad = frame.select(pl.sum_horizontal([(~pl.col(c).is_finite()).sum() for c in floats])).item()
    if bad:
        raise FloatingPointError(f"{where}: {bad} non-finite values in {floats}")


def run_unit(store: Store, ev: Evaluator, lm, ref: CheckpointRef,
             record: dict | None = None) -> None:
    """Run one evaluator on one loaded checkpoint, write all its tables, then its record.

    The record (provenance, checkpoint identity, tokenizer, parts' facts) is written last:
    a unit without one is not done. A table that must hold rows and holds none is an error.
    """
    frames = ev.run(lm)
    missing = set(ev.tables) - set(frames)
    if missing:
        raise RuntimeError(f"evaluator {ev.name} returned no frame for tables {sorted(missing)}")
    keyed = {t: with_keys(frames[t], ref.key, t) for t in ev.tables}
    for table, frame in keyed.items():
        _check_finite(frame, f"{ev.name}/{table} at {ref.label}")
        if frame.height == 0 and table not in getattr(ev, "empty_tables", ()):
            raise ValueError(f"{ev.name}/{table} at {ref.label}: scored nothing (0 rows); "
                             "check the evaluator's options and data")
    store.drop_record(ev.name, ref.key)  # rewritten parts are not done until recorded again
    for table, frame in keyed.items():  # validate everything before writing anything
        store.write(table, frame, ref.key)
    store.write_record(ev.name, ref.key, tuple(ev.tables), record or {})
    store.clear_failure(ev.name, ref.key)


def _unit_record(ctx: UnitContext, ev: Evaluator, lm, identity: dict) -> dict:
    prov = ctx.provenance.get(ev.name) or {}
    tokenizer = getattr(lm, "tokenizer", None)
    return {"fingerprint": prov.get("fingerprint"), "provenance": prov, "checkpoint": identity,
            "tokenizer": tokenizer_fingerprint(tokenizer) if tokenizer is not None else None}


def _loaded_check(ctx: UnitContext, item: Streamed) -> dict:
    """The checkpoint's identity, after the architecture check (raises CheckpointUnavailable)."""
    model = getattr(item.loaded, "model", None)
    if ctx.arch is not None:
        ctx.arch.check(item.ref, getattr(model, "config", None))
    return checkpoint_identity(item.ref, getattr(item.loaded, "local_dir", None))


def run_checkpoint(store: Store, item: Streamed, evals: list[Evaluator],
                   ctx: UnitContext | None = None) -> CheckpointOutcome:
    """The one per-checkpoint unit runner (local and Ray): record a load failure or run `evals`."""
    ref, out = item.ref, CheckpointOutcome(item.ref.label)
    ctx = ctx or UnitContext()
    error = item.error
    identity = {}
    if error is None:
        try:
            identity = _loaded_check(ctx, item)
        except Exception as err:  # noqa: BLE001  (recorded as this checkpoint's load failure)
            error = err
    if error is not None:
        store.record_failure(LOAD, ref.key, error)
        out.failed.append((LOAD, f"{type(error).__name__}: {error}"))
        return out
    store.clear_failure(LOAD, ref.key)
    for ev in evals:
        try:
            run_unit(store, ev, item.loaded, ref, _unit_record(ctx, ev, item.loaded, identity))
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
              loader: Callable = load_checkpoint, rebuild: bool = True,
              ctx: UnitContext | None = None) -> None:
    """The local scheduler: stream the pending checkpoints in order through `run_checkpoint`.

    `rebuild` is the Ray scheduler's (whether workers rebuild evaluators from the
    config); here the planned evaluator objects run in this process either way.
    """
    store = Store(cfg.output_dir)
    if ctx is None:
        ctx = unit_context(cfg, list({ev.name: ev for _, evs in todo for ev in evs}.values()))
    pending = {ref: evs for ref, evs in todo}
    bar = progress_bar(len(todo), "checkpoints", "ckpt", progress)
    try:
        for item in stream_for(cfg, list(pending), loader):
            result.add(run_checkpoint(store, item, pending[item.ref], ctx))
            item.loaded = None
            bar.set_postfix_str(item.ref.label)
            bar.update(1)
    finally:
        bar.close()

