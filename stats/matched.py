"""Behaviors at matched perplexity, and emergence points.

:func:`at_ppl` interpolates each (model, behavior) trajectory piecewise-linearly
in log(val_ppl). Output columns: family, model, params, behavior, ppl, value,
monotone (Boolean). value is null where ppl lies outside the model's observed
ppl range (never extrapolated). Where ppl is not monotone (non-increasing) in
step, monotone=False and the running minimum of ppl (monotone envelope: each
checkpoint at the best ppl reached so far, later non-improving checkpoints
dropped) is used.

Example: a model with (ppl, value) = (40, 0.1), (20, 0.3) gives at ppl=28.28
(log-midpoint) value 0.2, and null at ppl=50. at_ppl also returns
dropped_steps (List[Int64]): the checkpoints the envelope left out (ppl not
below the best so far: overfitting late in training), empty when monotone.

:func:`ppl_turns`: family, model, best_step, best_ppl, dropped_steps (one row
per model whose ppl is not monotone; the steps the envelope drops), and
:func:`ppl_turns_text` renders it as one line for verdict tables.

:func:`compare_families`: family, behavior, ppl, mean, ci_low, ci_high, n_models
(bootstrap over models, 95%; ci_low/ci_high are null when a family has fewer
than 3 models at that ppl: resampling one or two values is not a 95% interval).
For the difference between two families with a CI and a test, use
:mod:`stats.families`.

:func:`emergence`: family, model, params, behavior, threshold, step,
tokens_seen, val_ppl of the first checkpoint whose value >= threshold
(null when never reached). Threshold = ``chance + margin`` if ``chance`` is
given, else ``fraction`` of the final value.
"""

from __future__ import annotations

import numpy as np
import polars as pl

_GROUP = ("family", "model", "params", "behavior")
MIN_MODELS_BOOT = 3


class UnknownFamilyError(KeyError):
    """Requested family is not in the behavior table."""


def _keep(ppl: np.ndarray) -> np.ndarray:
    """Mask of the monotone envelope: checkpoints (in step order) that improve on the best ppl."""
    keep = np.ones(ppl.size, dtype=bool)
    keep[1:] = ppl[1:] < np.minimum.accumulate(ppl)[:-1]
    return keep


def _envelope(sub: pl.DataFrame):
    sub = sub.sort("step")
    ppl, val = sub["val_ppl"].to_numpy(), sub["value"].to_numpy()
    monotone = bool(np.all(np.diff(ppl) <= 0))
    keep = _keep(ppl)
    dropped = [int(s) for s in sub["step"].to_numpy()[~keep]]
    return np.log(ppl[keep])[::-1], val[keep][::-1], monotone, dropped


def ppl_turns(rows: pl.DataFrame) -> pl.DataFrame:
    """Models whose validation ppl does not fall monotonically, with the steps dropped."""
    ckpts = rows.select("family", "model", "step", "val_ppl").unique().sort(
        "family", "model", "step")
    out = []
    for (fam, model), sub in ckpts.group_by(["family", "model"], maintain_order=True):
        ppl, steps = sub["val_ppl"].to_numpy(), sub["step"].to_numpy()
        keep = _keep(ppl)
        if not keep.all():
            best = int(np.argmin(ppl))
            out.append((fam, model, int(steps[best]), float(ppl[best]),
                        [int(s) for s in steps[~keep]]))
    return pl.DataFrame(out, orient="row", schema=[
        ("family", pl.String), ("model", pl.String), ("best_step", pl.Int64),
        ("best_ppl", pl.Float64), ("dropped_steps", pl.List(pl.Int64))])


def ppl_turns_text(turns: pl.DataFrame) -> str | None:
    """One line, e.g. "m1: ppl min 12.3 at step 800, steps 900,1000 dropped"; None if empty."""
    if turns.is_empty():
        return None
    return "; ".join(f"{m}: ppl min {p:.4g} at step {b}, steps "
                     f"{','.join(map(str, d))} dropped at matched ppl"
                     for m, b, p, d in turns.select("model", "best_step", "best_ppl",
                                                     "dropped_steps").iter_rows())


def at_ppl(rows: pl.DataFrame, ppls: list[float]) -> pl.DataFrame:
    """Interpolate every trajectory at ``ppls`` (see module docstring)."""
    out = []
    for key, sub in rows.group_by(list(_GROUP), maintain_order=True):
        x, y, mono, dropped = _envelope(sub)
        for p in ppls:
            lp = np.log(p)
            ok = x.size > 0 and x[0] - 1e-12 <= lp <= x[-1] + 1e-12
            out.append((*key, float(p), float(np.interp(lp, x, y)) if ok else None, mono,
                        dropped))
    return pl.DataFrame(out, orient="row", schema=[
        ("family", pl.String), ("model", pl.String), ("params", pl.Int64),
        ("behavior", pl.String), ("ppl", pl.Float64), ("value", pl.Float64),
        ("monotone", pl.Boolean), ("dropped_steps", pl.List(pl.Int64))])


def compare_families(rows: pl.DataFrame, families: list[str], ppls: list[float],
                     behavior: str | None = None, n_boot: int = 1000,
                     seed: int = 0) -> pl.DataFrame:
    """Mean behavior per family at matched ppl with bootstrap-over-models CIs."""
    known = set(rows["family"].unique())
    bad = [f for f in families if f not in known]
    if bad:
        raise UnknownFamilyError(f"families {bad} not in results; available: {sorted(known)}")
    sub = rows.filter(pl.col("family").is_in(families))
    if behavior is not None:
        if behavior not in set(sub["behavior"]):
            raise KeyError(f"behavior {behavior!r} not found; available: {sorted(set(sub['behavior']))}")
        sub = sub.filter(pl.col("behavior") == behavior)
    interp = at_ppl(sub, ppls).drop_nulls("value")
    rng = np.random.default_rng(seed)
    out = []
    for (fam, beh, p), g in interp.group_by(["family", "behavior", "ppl"], maintain_order=True):
        v = g["value"].to_numpy()
        lo = hi = None
        if v.size >= MIN_MODELS_BOOT:
            boots = rng.choice(v, size=(n_boot, v.size)).mean(axis=1)
            lo, hi = float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))
        out.append((fam, beh, p, float(v.mean()), lo, hi, int(v.size)))
    return pl.DataFrame(out, orient="row", schema=[
        ("family", pl.String), ("behavior", pl.String), ("ppl", pl.Float64), ("mean", pl.Float64),
        ("ci_low", pl.Float64), ("ci_high", pl.Float64), ("n_models", pl.Int64)]).sort(
        "behavior", "ppl", "family")


def emergence(rows: pl.DataFrame, chance: float | None = None, margin: float = 0.1,
              fraction: float = 0.5) -> pl.DataFrame:
    """First checkpoint per (model, behavior) at which value >= threshold."""
    out = []
    for key, sub in rows.group_by(list(_GROUP), maintain_order=True):
        sub = sub.sort("step")
        thr = chance + margin if chance is not None else fraction * sub["value"][-1]
        hit = sub.filter(pl.col("value") >= thr)
        first = hit.row(0, named=True) if hit.height else None
        out.append((*key, float(thr), *((first["step"], first["tokens_seen"], first["val_ppl"])
                                        if first else (None, None, None))))
    return pl.DataFrame(out, orient="row", schema=[
        ("family", pl.String), ("model", pl.String), ("params", pl.Int64),
        ("behavior", pl.String), ("threshold", pl.Float64), ("step", pl.Int64),
        ("tokens_seen", pl.Int64), ("val_ppl", pl.Float64)])
