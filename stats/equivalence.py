"""Do two families differ, do they not, or can this run not tell? (issue 27)

"Not significant" is not "no difference". Per behavior, on the family term at
fixed ppl of :func:`stats.families.family_test` (estimate, jackknife SE, t on
G - 1 df, G = the models of both families), :func:`family_outcomes` decides,
with the vocabulary of :mod:`stats.outcomes`:

- ``supported`` (the families do not differ): the **90 % CI lies inside
  +-margin** (TOST: two one-sided 5 % tests against the margin). A difference
  that is non-zero but inside the margin is still "no difference" at that margin.
- ``contradicted`` (they differ): p < ALPHA / m, m = behaviors tested
  (Bonferroni), i.e. the (1 - ALPHA / m) CI excludes 0.
- ``inconclusive: <why>``: neither; the why gives the minimal detectable
  effect :func:`mde` = (t(1 - ALPHA / 2m) + t(POWER)) x SE.
- ``not testable: <why>``: the family test could not fit (too few models ...).

The margin, per behavior, in this order (``margin_source`` says which):

1. ``seed sd``: where the suite has seed runs, the seed-to-seed SD at matched
   ppl (stats.seeds: seed_sd_a/_b of the differences, root mean square over
   the families and ppls): a family difference within seed noise is no family effect;
2. ``declared``: the margin the batch declares (``equivalence_margin`` in its
   TOML, read from the store by stats.summary.declared_margin) or the caller
   (`dynamics compare --margin`, ``analyze(margin=...)``), in value units;
3. ``default``: DEFAULT_MARGIN_SPREAD x the behavior's spread (SD of its
   values over every checkpoint of both families).

Margins are in value units; for a logit-scale estimate (accuracies) they are
turned into logit units at the behavior's mean value p: margin / (p (1 - p)),
and the spread is taken of the logits.

Example: estimate 0.02, SE 0.01, 8 models (7 df), margin 0.05: the 90 % CI is
0.02 +- 1.895 x 0.01 = [0.001, 0.039], inside +-0.05: supported; p = 0.085
for m = 1, not a difference either way.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
from scipy import stats as st

from stats.outcomes import ALPHA, CONTRADICTED, POWER, SUPPORTED, g, inconclusive, not_testable

DEFAULT_MARGIN_SPREAD = 0.1
OUTCOME_COLUMNS = [("margin", pl.Float64), ("margin_source", pl.String),
                   ("tost_low", pl.Float64), ("tost_high", pl.Float64),
                   ("adj_level", pl.Float64), ("adj_low", pl.Float64), ("adj_high", pl.Float64),
                   ("mde", pl.Float64), ("outcome", pl.String)]


def tost_interval(estimate: float, se: float, df: float, alpha: float = ALPHA
                  ) -> tuple[float, float]:
    """The (1 - 2 alpha) CI: inside +-margin is TOST's equivalence at level alpha."""
    half = st.t.ppf(1 - alpha, df) * se
    return estimate - half, estimate + half


def mde(se: float, df: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest |difference| a two-sided level-alpha t test finds with ``power``."""
    return (st.t.ppf(1 - alpha / 2, df) + st.t.ppf(power, df)) * se


def equivalence_outcome(estimate: float, se: float, df: float, margin: float, m: int = 1
                        ) -> dict:
    """One behavior's outcome (module docstring) with the intervals it used."""
    lo, hi = tost_interval(estimate, se, df)
    adj_level = 1 - ALPHA / m
    half = st.t.ppf(1 - ALPHA / (2 * m), df) * se
    adj_lo, adj_hi = estimate - half, estimate + half
    detect = mde(se, df, ALPHA / m)
    if -margin < lo and hi < margin:
        verdict = SUPPORTED
    elif adj_lo > 0 or adj_hi < 0:
        verdict = CONTRADICTED
    else:
        verdict = inconclusive(
            f"90 % CI [{g(lo)}, {g(hi)}] not inside +-{g(margin)}, and no difference after "
            f"Bonferroni; could detect only differences >= {g(detect)} at "
            f"{POWER:.0%} power")
    return {"tost_low": lo, "tost_high": hi, "adj_level": adj_level, "adj_low": adj_lo,
            "adj_high": adj_hi, "mde": detect, "outcome": verdict}


def _logit_scale(values: pl.Series) -> pl.Series:
    p = values.clip(1e-3, 1 - 1e-3)
    return (p / (1 - p)).log()


def behavior_margins(test: pl.DataFrame, rows: pl.DataFrame, diffs: pl.DataFrame | None = None,
                     declared: float | None = None) -> dict[str, tuple[float, str]]:
    """behavior -> (margin on the estimate's scale, source) (module docstring)."""
    if declared is not None and not (math.isfinite(declared) and declared > 0):
        raise ValueError(f"margin {declared!r}: give a positive number in the behavior's units")
    seed = {}
    if diffs is not None and "seed_sd_a" in diffs.columns:
        sds = diffs.select("behavior", pl.concat_list("seed_sd_a", "seed_sd_b").alias("sd")
                           ).explode("sd").drop_nulls("sd")
        seed = dict(sds.group_by("behavior").agg((pl.col("sd") ** 2).mean().sqrt()).iter_rows())
    out = {}
    for r in test.iter_rows(named=True):
        name = r["behavior"]
        values = rows.filter(pl.col("behavior") == name)["value"]
        logit = r.get("scale") == "logit"
        p = float(values.mean()) if values.len() else 0.5
        to_scale = 1.0 / max(p * (1 - p), 1e-3) if logit else 1.0
        if seed.get(name):
            out[name] = (seed[name] * to_scale, "seed sd")
        elif declared is not None:
            out[name] = (declared * to_scale, "declared")
        else:
            spread = (_logit_scale(values) if logit else values).std()
            out[name] = (DEFAULT_MARGIN_SPREAD * (spread or 0.0), "default")
    return out


def family_outcomes(test: pl.DataFrame, rows: pl.DataFrame, diffs: pl.DataFrame | None = None,
                    declared: float | None = None) -> pl.DataFrame:
    """``test`` (stats.families.family_test) + OUTCOME_COLUMNS, one outcome per behavior,
    + decision_low, decision_high, interval (:func:`decision_interval`)."""
    margins = behavior_margins(test, rows, diffs, declared)
    m = max(test.drop_nulls("p_value").height, 1)
    out = []
    for r in test.iter_rows(named=True):
        margin, source = margins.get(r["behavior"], (None, None))
        vals = dict.fromkeys(c for c, _ in OUTCOME_COLUMNS)
        vals.update(margin=margin, margin_source=source)
        se = r["std_err"]
        if r["p_value"] is None or se is None or not np.isfinite(se):
            vals["outcome"] = not_testable(r["evidence"] or "not fitted")
        elif not margin:
            vals["outcome"] = not_testable("zero margin (the behavior is constant)")
        else:
            df = r["n_models_a"] + r["n_models_b"] - 1
            vals.update(equivalence_outcome(r["estimate"], se, df, margin, m))
        out.append(vals)
    return with_decision_interval(pl.concat(
        [test, pl.DataFrame(out, schema=dict(OUTCOME_COLUMNS))], how="horizontal"))


def decision_interval(r: dict) -> tuple[float | None, float | None, str | None]:
    """The interval a behavior's outcome was decided on, and its kind in words: the
    Bonferroni-adjusted CI for "contradicted", else the 90 % TOST CI (None when untested)."""
    if r.get("outcome") is None or r.get("tost_low") is None:
        return None, None, None
    if r["outcome"] == CONTRADICTED:
        return r["adj_low"], r["adj_high"], f"{100 * r['adj_level']:.4g}% CI (Bonferroni)"
    return r["tost_low"], r["tost_high"], "90% CI (TOST)"


def with_decision_interval(test: pl.DataFrame) -> pl.DataFrame:
    """family_outcomes output + decision_low, decision_high, interval (decision_interval)."""
    cols = list(zip(*(decision_interval(r) for r in test.iter_rows(named=True)), strict=True))
    cols = cols or [[], [], []]
    return test.with_columns(pl.Series("decision_low", cols[0], pl.Float64),
                             pl.Series("decision_high", cols[1], pl.Float64),
                             pl.Series("interval", cols[2], pl.String))
