"""Behavior table: one tidy row per (checkpoint, behavior) joined with val_ppl.

Output columns of :func:`behavior_table`: family, model, params, step,
tokens_seen, flops, behavior (String: a readable label, unique per behavior),
then the behavior's identity as data: evaluator (the table it comes from, e.g.
"bigbench-mc"), kind (what is measured, e.g. "accuracy", "circuit_size",
"head_score", "logprob"), task (the task, trend class or head kind it is about;
nullable), set (the sequence set or option class; nullable); then value
(Float64), n_trials (Int64, nullable; number of examples for accuracies),
chance (Float64, nullable: the value guessing gets, e.g. a multiple-choice
accuracy's random baseline; filled null when a provider has none), val_ppl
(Float64). Code that selects behaviors filters on these columns, never
on the label's spelling.

Providers are ``"module:function"`` strings taking a Store and returning
BEHAVIOR_COLUMNS, or None when the store lacks their table. Modules are
imported lazily; a missing module is reported in ``BehaviorTable.missing``
unless it was requested explicitly (then it raises). Frames without the
identity columns (older providers, ``extra`` frames) get evaluator "user" and
kind = the behavior label.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

import polars as pl

from evals.schema import KEY_COLUMNS
from stats.perplexity import validation_ppl

PROVIDERS: dict[str, str | Callable] = {
    "bigbench": "stats.bigbench:behaviors",
    "hallucination": "stats.hallucination:behaviors",
    "trajectories": "stats.trajectories:behaviors",
    "circuits": "stats.circuits:behaviors",
    "birth": "stats.birth:behaviors",
}
IDENTITY_COLUMNS = ("evaluator", "kind", "task", "set")
BEHAVIOR_COLUMNS = (*KEY_COLUMNS, "behavior", *IDENTITY_COLUMNS, "value", "n_trials", "chance")


class UnknownProviderError(KeyError):
    """A requested behavior provider is not registered."""


def register_behavior(name: str, fn: Callable | str) -> None:
    """Register a provider ``fn(store) -> pl.DataFrame | None`` under ``name``."""
    PROVIDERS[name] = fn


def identity(evaluator: str, kind: str, task: str | pl.Expr | None = None,
             set: str | pl.Expr | None = None) -> list[pl.Expr]:  # noqa: A002 (column name)
    """The IDENTITY_COLUMNS as expressions: constants, or expressions over a provider's frame.

    Example: ``frame.select(*KEYS, label, *identity("bigbench-mc", "accuracy", pl.col("task")))``.
    """
    def col(v, name):
        if isinstance(v, pl.Expr):
            return v.cast(pl.String).alias(name)
        return pl.lit(v, dtype=pl.String).alias(name)

    return [col(evaluator, "evaluator"), col(kind, "kind"), col(task, "task"), col(set, "set")]


def behavior_from_frame(frame: pl.DataFrame, value: str, behavior: str,
                        n_trials: str | None = None, *, evaluator: str | None = None,
                        kind: str | None = None, task: str | None = None,
                        set: str | None = None) -> pl.DataFrame:  # noqa: A002 (column name)
    """Turn any frame with the key columns and a value column into behavior rows.

    ``kind`` defaults to the behavior label, ``evaluator`` to "user".
    """
    missing = [c for c in (*KEY_COLUMNS, value) if c not in frame.columns]
    if missing:
        raise KeyError(f"frame lacks columns {missing}; needs {list(KEY_COLUMNS)} + {value!r}")
    trials = pl.col(n_trials).cast(pl.Int64) if n_trials else pl.lit(None, dtype=pl.Int64)
    return frame.select(*KEY_COLUMNS, pl.lit(behavior).alias("behavior"),
                        *identity(evaluator or "user", kind or behavior, task, set),
                        pl.col(value).cast(pl.Float64).alias("value"), trials.alias("n_trials"))


def _resolve(spec: str | Callable) -> Callable:
    if callable(spec):
        return spec
    module, _, fn = spec.partition(":")
    return getattr(importlib.import_module(module), fn)


@dataclass
class BehaviorTable:
    """Result of :func:`behavior_table`: rows plus providers that could not be loaded."""

    rows: pl.DataFrame
    missing: list[str] = field(default_factory=list)


def behavior_table(store, providers: list[str] | None = None,
                   extra: list[pl.DataFrame] = ()) -> BehaviorTable:
    """Collect behaviors from providers (+ ``extra`` frames) and join val_ppl.

    ``val_loss`` (mean validation loss in nats) is always included when the
    store has a token-loss table. Explicitly requested providers that fail to
    import raise; default providers that fail are listed in ``missing``.
    """
    names = list(PROVIDERS) if providers is None else providers
    unknown = [n for n in names if n not in PROVIDERS]
    if unknown:
        raise UnknownProviderError(f"unknown providers {unknown}; registered: {sorted(PROVIDERS)}")
    frames, missing = list(extra), []
    for name in names:
        try:
            fn = _resolve(PROVIDERS[name])
        except (ImportError, AttributeError) as err:
            if providers is not None:
                raise
            missing.append(f"{name}: {err}")
            continue
        out = fn(store)
        if out is not None and out.height:
            frames.append(out)
    if "token-loss" not in store.tables():
        raise ValueError("store has no 'token-loss' table; val_ppl is needed for every behavior")
    ppl = validation_ppl(store.scan("token-loss"))
    frames.append(behavior_from_frame(ppl, "loss_nats", "val_loss", evaluator="token-loss",
                                      kind="val_loss"))
    rows = pl.concat([_conform(f) for f in frames])
    rows = rows.join(ppl.select(*KEY_COLUMNS, "val_ppl"), on=list(KEY_COLUMNS), how="inner")
    return BehaviorTable(rows.sort("behavior", "family", "model", "step"), missing)


def _conform(frame: pl.DataFrame) -> pl.DataFrame:
    """BEHAVIOR_COLUMNS in order and type; missing identity columns filled (module docstring)."""
    fill = {"evaluator": pl.lit("user"), "kind": pl.col("behavior"),
            "task": pl.lit(None, pl.String), "set": pl.lit(None, pl.String),
            "chance": pl.lit(None, pl.Float64)}
    frame = frame.with_columns(*(e.alias(c) for c, e in fill.items() if c not in frame.columns))
    return frame.select(BEHAVIOR_COLUMNS).cast(dict(zip(BEHAVIOR_COLUMNS, _schema())))


def _schema():
    return [pl.String, pl.String, pl.Int64, pl.Int64, pl.Int64, pl.Float64,
            pl.String, pl.String, pl.String, pl.String, pl.String, pl.Float64, pl.Int64,
            pl.Float64]
