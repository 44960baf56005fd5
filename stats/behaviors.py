"""Behavior table: one tidy row per (checkpoint, behavior) joined with val_ppl.

Output columns of :func:`behavior_table`: family, model, params, step,
tokens_seen, flops, behavior (String), value (Float64), n_trials (Int64,
nullable; number of examples for accuracies), val_ppl (Float64).

Providers are ``"module:function"`` strings taking a Store and returning the 6
key columns + behavior + value + n_trials, or None when the store lacks their
table. Modules are imported lazily; a missing module is reported in
``BehaviorTable.missing`` unless it was requested explicitly (then it raises).
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
}
BEHAVIOR_COLUMNS = (*KEY_COLUMNS, "behavior", "value", "n_trials")


class UnknownProviderError(KeyError):
    """A requested behavior provider is not registered."""


def register_behavior(name: str, fn: Callable | str) -> None:
    """Register a provider ``fn(store) -> pl.DataFrame | None`` under ``name``."""
    PROVIDERS[name] = fn


def behavior_from_frame(frame: pl.DataFrame, value: str, behavior: str,
                        n_trials: str | None = None) -> pl.DataFrame:
    """Turn any frame with the key columns and a value column into behavior rows."""
    missing = [c for c in (*KEY_COLUMNS, value) if c not in frame.columns]
    if missing:
        raise KeyError(f"frame lacks columns {missing}; needs {list(KEY_COLUMNS)} + {value!r}")
    trials = pl.col(n_trials).cast(pl.Int64) if n_trials else pl.lit(None, dtype=pl.Int64)
    return frame.select(*KEY_COLUMNS, pl.lit(behavior).alias("behavior"),
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
            frames.append(out.select(BEHAVIOR_COLUMNS))
    if "token-loss" not in store.tables():
        raise ValueError("store has no 'token-loss' table; val_ppl is needed for every behavior")
    ppl = validation_ppl(store.scan("token-loss"))
    frames.append(behavior_from_frame(ppl, "loss_nats", "val_loss"))
    rows = pl.concat([f.cast(dict(zip(BEHAVIOR_COLUMNS, _schema()))) for f in frames])
    rows = rows.join(ppl.select(*KEY_COLUMNS, "val_ppl"), on=list(KEY_COLUMNS), how="inner")
    return BehaviorTable(rows.sort("behavior", "family", "model", "step"), missing)


def _schema():
    return [pl.String, pl.String, pl.Int64, pl.Int64, pl.Int64, pl.Float64,
            pl.String, pl.Float64, pl.Int64]
