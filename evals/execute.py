"""The one execution path: `execute(cfg)` for `dynamics run`, `run_batch` and `run_batch_ray`.

The top of the evals package: it imports the schedulers (evals.sweep's local
loop, evals.ray_executor) and nothing in evals imports it, so `run_batch` and
`run_batch_ray` (thin wrappers of `execute`) live here, not beside the loops.

    run = resolve_batch(cfg)                 # the config read once: suite, checkpoints,
                                             # [generate.*] specs (a ResolvedBatch)
    evals = build_evaluators(cfg)            # every evaluator's inputs read and checked
    check_inputs(evals)                      # once, all problems at once (ConfigError)
    with store.lock():                       # a second run on the output is refused
        store.clean_temp()                   # leftovers of a killed run
        cfg = prepare_generated(cfg, run.generate)   # [generate.*] sets: made or reused
        check_provenance(store, evals, ...)  # stored units with other options: refused
        store.write_config(batch_to_toml(cfg))   # batch.toml: the batch as given, once, here
        store.record_seeds(...)              # seeds.json: the suite's seed runs (issue 20)
        todo = plan(store, run.refs, evaluators)     # pending (checkpoint, evaluator) units
        scheduler(cfg, todo)                 # "local": evals.sweep.run_local
                                             # "ray":   evals.ray_executor.run_ray

Ctrl-C during the run raises RunInterrupted (a KeyboardInterrupt) holding the
number of units this run stored; the store stays whole (atomic parts, records
written last, the lock released).

Both schedulers stream checkpoints with the same `stream_checkpoints`
(prefetch, disk budget, in-use markers) and hand each one to the same
per-checkpoint unit runner (`evals.sweep.run_checkpoint`), which records
failures in the store. So the Python API and the CLI do the same thing, and a
Ray run writes the same store as a local run.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

from dynamics.checkpoints import CheckpointRef
from dynamics.loading import load_checkpoint
from dynamics.suites import Suite, get_suite
from evals.base import Evaluator
from evals.config import BatchConfig, batch_to_toml
from evals.generated import GenerateSpec, generate_specs, prepare_generated
from evals.store import Store
from evals.sweep import (SweepResult, build_evaluators, check_inputs, check_provenance, plan,
                         run_local, unit_context)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; `stored` units were written before it (the store is whole)."""

    def __init__(self, stored: int):
        super().__init__(stored)
        self.stored = stored


@dataclass(frozen=True)
class ResolvedBatch:
    """A batch config resolved once into what the run needs; handed on, never re-read.

    Attributes:
        suite: the batch's suite (`cfg.suite`, loaded once).
        refs: the checkpoints `cfg.models` x `cfg.steps` select, model-major.
        generate: the `[generate.*]` tables, checkpoints and options resolved.
    """

    suite: Suite
    refs: list[CheckpointRef]
    generate: list[GenerateSpec]

    def seed_runs(self) -> dict[str, dict]:
        """{model: {group, seed}} of the selected models that are seed runs (seeds.json)."""
        return {r.model: {"group": self.suite.seeds[r.model].group,
                          "seed": self.suite.seeds[r.model].seed}
                for r in self.refs if r.model in self.suite.seeds}


def resolve_batch(cfg: BatchConfig) -> ResolvedBatch:
    """Load the suite once and resolve the selection and the `[generate.*]` tables against it."""
    suite = get_suite(cfg.suite_path)
    return ResolvedBatch(suite, suite.select(cfg.models, cfg.steps), generate_specs(cfg, suite))


def _scheduler(executor: str) -> Callable:
    if executor == "ray":
        from evals.ray_executor import run_ray

        return run_ray
    if executor == "local":
        return run_local
    raise ValueError(f"executor {executor!r} not allowed; use 'local' or 'ray'")


def execute(
    cfg: BatchConfig,
    *,
    retry_failed: bool = False,
    rescore: bool = False,
    progress: bool = True,
    loader: Callable = load_checkpoint,
    evaluators: list[Evaluator] | None = None,
    generator: Callable | None = None,
) -> SweepResult:
    """Run a batch with its executor (`cfg.executor`); see the module docstring.

    Args:
        retry_failed: rerun units recorded as failed by an earlier run.
        rescore: score again the stored units whose options differ from this batch's
            (otherwise such a batch is refused: evals.sweep.check_provenance).
        progress: show progress (a bar on a terminal, a few lines in a log).
        loader: checkpoint loader (tests pass fakes); must be picklable for Ray.
        evaluators: evaluator objects to run instead of building them from `cfg`.
        generator: mixture-set generator for `[generate.*]` (default evals.mixture's).

    Raises:
        ConfigError: an input is unusable, or stored units have other options.
        RunInterrupted: Ctrl-C; the units stored so far stay.
    """
    scheduler = _scheduler(cfg.executor)
    t0 = time.perf_counter()
    store = Store(cfg.output_dir)
    run = resolve_batch(cfg)
    evals = evaluators if evaluators is not None else build_evaluators(cfg)
    check_inputs(evals)  # before the lock: a data problem leaves no trace in the store
    check_prompt_files(run.generate)
    result = SweepResult()
    try:
        with store.lock():
            store.clean_temp()
            prepared = prepare_generated(cfg, run.generate, generator=generator, loader=loader)
            if evaluators is None:
                evals = _with_generated(evals, cfg, prepared)
            ctx = unit_context(prepared, evals, run.suite)
            check_provenance(store, evals, ctx.provenance, run.refs, rescore)
            store.write_config(batch_to_toml(cfg))
            store.record_seeds(run.seed_runs())
            fingerprints = {name: p["fingerprint"] for name, p in ctx.provenance.items()}
            todo, result = plan(store, run.refs, evals, retry_failed, fingerprints)
            if todo:
                scheduler(prepared, todo, result, progress=progress, loader=loader,
                          rebuild=evaluators is None, ctx=ctx)
    except RunInterrupted:
        raise
    except KeyboardInterrupt:
        raise RunInterrupted(len(result.written)) from None
    result.seconds = time.perf_counter() - t0
    return result


def check_prompt_files(specs: list[GenerateSpec]) -> None:
    """The `[generate.*]` prompt files, read and checked before any checkpoint is loaded."""
    from evals.base import ConfigError
    from evals.generated import prompt_source

    problems = []
    for spec in specs:
        try:  # a local file; a hub dataset name is read at generation
            prompt_source(spec.prompts_path, spec.options)[0].check_file()
        except (ValueError, OSError) as err:
            problems.append(f"[generate.{spec.name}]: prompts: {err}")
    if problems:
        raise ConfigError(problems)


def _with_generated(evals: list[Evaluator], cfg: BatchConfig, prepared: BatchConfig
                    ) -> list[Evaluator]:
    """The evaluators of `prepared`: those of `evals` whose options the `[generate.*]` sets
    left alone, the others (e.g. `sequences` with the generated sources) built and checked."""
    kept = {ev.name: ev for ev in evals if prepared.evaluators.get(ev.name)
            == cfg.evaluators.get(ev.name)}
    new = build_evaluators(dataclasses.replace(prepared, evaluators={
        name: values for name, values in prepared.evaluators.items() if name not in kept}))
    check_inputs(new)
    built = {ev.name: ev for ev in new}
    return [kept.get(name) or built[name] for name in prepared.evaluators]


def generate_sets(cfg: BatchConfig, generator: Callable | None = None,
                  loader: Callable = load_checkpoint) -> BatchConfig:
    """Only make (or reuse) the `[generate.*]` sets, holding the store's lock as `execute` does."""
    store = Store(cfg.output_dir)
    with store.lock():
        store.clean_temp()
        run = resolve_batch(cfg)
        return prepare_generated(cfg, run.generate, generator=generator, loader=loader)


def run_batch(
    cfg: BatchConfig,
    *,
    retry_failed: bool = False,
    rescore: bool = False,
    progress: bool = True,
    loader: Callable = load_checkpoint,
    evaluators: list[Evaluator] | None = None,
) -> SweepResult:
    """Run a batch with the local scheduler: `execute(cfg)` with executor = "local"."""
    return execute(dataclasses.replace(cfg, executor="local"), retry_failed=retry_failed,
                   rescore=rescore, progress=progress, loader=loader, evaluators=evaluators)


def run_batch_ray(cfg: BatchConfig, *, retry_failed: bool = False, progress: bool = True,
                  loader: Callable = load_checkpoint) -> SweepResult:
    """Run a batch on Ray: `execute(cfg)` with executor = "ray" (same store as `run_batch`)."""
    return execute(dataclasses.replace(cfg, executor="ray"), retry_failed=retry_failed,
                   progress=progress, loader=loader)
