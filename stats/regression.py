"""Is a behavior predicted by perplexity or by size and compute?

Inputs: the behavior table of :mod:`stats.behaviors`. Rows with
tokens_seen == 0 (step 0) are DROPPED, since log(tokens) is undefined there.

Every fit's uncertainty is a leave-one-model-out cluster jackknife with a
t(G-1) reference (G = number of models): a model's checkpoints are one run,
not independent observations. Why, and how it was calibrated:
:mod:`stats.inference` and ``bench/bench_calibration.py``. The response is
binomial only for real counts, a fractional logit for other proportions, OLS
otherwise (:func:`stats.inference.response_kind`).

:func:`fit_behaviors` returns a :class:`Fits` with three polars frames:

- coefficients: behavior, model_spec, term, estimate, std_err, p_value, ci_low,
  ci_high (jackknife over models; null when a leave-one-model-out fit is not
  identified, e.g. log params with 2 sizes)
- fits: behavior, model_spec, family_glm (binomial|fractional|ols), n_obs,
  n_models, r2 (OLS R2 or McFadden pseudo-R2), aic, bic (iid likelihoods:
  compare specs, do not read as tests), loso_rmse (leave-one-size-out RMSE,
  null with fewer than 2 sizes), mixed ("fit" or why skipped), mixed_aic (ML
  fit with a random intercept per model; OLS behaviors with >= MIN_MODELS_MIXED)
- verdicts: behavior, best_spec (lowest AIC), delta_aic, loso_ratio (best
  loso_rmse of size/compute specs / loso_rmse of the ppl spec), size_term,
  size_ci_low, size_ci_high, size_p_value (log params in the ppl+params spec),
  size_adds, n_models, evidence, ppl_turns_up, best_loso_rmse (the best_spec's
  leave-one-size-out RMSE, null with one size), model_mean_rmse (RMSE of a
  per-model constant: each model's own mean value, i.e. how much the behavior
  moves within models; claim (b) counts a behavior only when best_loso_rmse is
  below it, stats.claims.signal).

``size_adds`` ("log params matters at fixed ppl") and ``evidence`` (which
evidence decided it):

- fewer than 3 sizes or models: null, "too few sizes (S) / models (G): no size test";
- G >= MIN_CLUSTERS models: the jackknife CI excludes 0,
  "cluster-jackknife CI (G models)";
- 3 <= G < MIN_CLUSTERS: the CI excludes 0 AND the ppl+params spec predicts
  held-out sizes better than the ppl spec (LOSO RMSE ratio < 1),
  "few models (G): jackknife CI + LOSO error ratio".

With several families in the rows, every spec also gets a family intercept
(one 0/1 column ``family[<name>]`` per family but the first, sorted), so a
size or compute term is not standing in for a family difference; those terms
appear in the coefficients table. (:mod:`stats.families` tests the family
difference itself.)

``ppl_turns_up`` lists models whose validation ppl rises after its minimum
(overfitting), with those late steps: they stay in these fits (they are valid
points at their ppl) but matched-ppl comparisons drop them
(:func:`stats.matched.ppl_turns`). Null when every model's ppl is monotone.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import polars as pl
import statsmodels.formula.api as smf

from stats.inference import (
    MIN_CLUSTERS,
    NotIdentifiedError,
    fit,
    predict,
    response_kind,
    robust_fit,
)
from stats.matched import ppl_turns, ppl_turns_text

SPECS = {
    "ppl": ("log_ppl",),
    "size_tokens": ("log_params", "log_tokens"),
    "flops": ("log_flops",),
    "ppl_size": ("log_ppl", "log_params"),
}
MIN_MODELS_MIXED = 4
MIN_SIZES_TEST = 3


def _mixed(df, terms: tuple[str, ...], response: str) -> tuple[str, float | None]:
    """("fit" | why not, ML AIC) of value ~ terms with a random intercept per model.

    statsmodels' warnings (convergence, singular random-effects covariance, ...) are
    recorded here ("fit (not converged: ...)"), not printed: a demo run fits this
    for every behavior and spec.
    """
    if response != "ols":
        return f"skipped: {response} (no GLMM)", None
    if df.model.nunique() < MIN_MODELS_MIXED:
        return f"skipped: < {MIN_MODELS_MIXED} models", None
    # Q(): family terms are named like "family[fb]", which a bare formula would index
    rhs = " + ".join(f'Q("{t}")' for t in terms)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = smf.mixedlm(f"value ~ {rhs}", df, groups=df.model).fit(reml=False)
        except (ValueError, np.linalg.LinAlgError) as err:
            return f"skipped: {err}", None
    issues = sorted({str(w.message).split(".")[0] for w in caught})
    return ("fit" if not issues else f"fit (not converged: {'; '.join(issues)})"), float(res.aic)


@dataclass(frozen=True)
class Fits:
    """Tidy outputs of :func:`fit_behaviors` (columns in the module docstring)."""

    coefficients: pl.DataFrame
    fits: pl.DataFrame
    verdicts: pl.DataFrame
    skipped: pl.DataFrame | None = None  # behavior, reason: not fitted (too few rows, ...)


def _design(rows: pl.DataFrame) -> pl.DataFrame:
    return rows.filter(pl.col("tokens_seen") > 0).with_columns(
        pl.col("val_ppl").log().alias("log_ppl"),
        pl.col("params").cast(pl.Float64).log().alias("log_params"),
        pl.col("tokens_seen").cast(pl.Float64).log().alias("log_tokens"),
        pl.col("flops").log().alias("log_flops"),
    )


def _r2(res, response: str) -> float:
    return float(res.rsquared) if response == "ols" else float(res.pseudo_rsquared(kind="mcf"))


def _loso(df: pd.DataFrame, terms, response: str, loo: dict) -> float | None:
    """Leave-one-size-out RMSE; reuses the leave-one-model-out fits when sizes = models."""
    sizes = sorted(df.params.unique())
    if len(sizes) < 2:
        return None
    per_size = df.groupby("params").model.nunique()
    errs = []
    for size in sizes:
        train, test = df[df.params != size], df[df.params == size]
        try:
            res = (loo[test.model.iloc[0]] if per_size[size] == 1 and loo
                   else fit(train, terms, response))
        except NotIdentifiedError:
            return None
        errs.append(predict(res, test, terms) - test.value.to_numpy())
    return float(np.sqrt(np.mean(np.concatenate(errs) ** 2)))


def _family_terms(rows: pl.DataFrame) -> tuple[pl.DataFrame, tuple[str, ...]]:
    """0/1 columns family[<name>] for every family but the first (module docstring)."""
    names = sorted(rows["family"].unique())[1:]
    cols = tuple(f"family[{n}]" for n in names)
    return rows.with_columns((pl.col("family") == n).cast(pl.Float64).alias(c)
                             for n, c in zip(names, cols)), cols


def _one(behavior: str, rows: pl.DataFrame, mixed: bool):
    response = response_kind(rows)
    rows, fam_terms = _family_terms(rows)
    df = rows.to_pandas()
    coefs, fits = [], []
    for spec, spec_terms in SPECS.items():
        terms = (*spec_terms, *fam_terms)
        rob = robust_fit(df, terms, response)
        for i, term in enumerate(rob.terms):
            coefs.append((behavior, spec, term, *(_num(a[i]) for a in (
                rob.estimate, rob.std_err, rob.p_value, rob.ci_low, rob.ci_high))))
        res = rob.res
        fits.append((behavior, spec, response, int(res.nobs), rob.n_clusters, _r2(res, response),
                     float(res.aic), float(res.bic), _loso(df, terms, response, rob.loo),
                     *(_mixed(df, terms, response) if mixed else ("skipped: not asked", None))))
    return coefs, fits


def _num(x) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _usable(sub: pl.DataFrame) -> str | None:
    if sub.height < 5:
        return f"{sub.height} usable rows (< 5)"
    if sub["value"].n_unique() < 2:
        return "constant value"
    return None


def fit_behaviors(rows: pl.DataFrame, behaviors: list[str] | None = None,
                  mixed: bool = True) -> Fits:
    """Fit the four SPECS per behavior and give a verdict (see module docstring).

    ``mixed=False`` skips the random-intercept fits (slow; the calibration bench skips them).
    """
    design = _design(rows)
    names = sorted(design["behavior"].unique()) if behaviors is None else behaviors
    coefs, fits, skipped = [], [], []
    for name in names:
        sub = design.filter(pl.col("behavior") == name)
        reason = _usable(sub)
        if reason is None:
            try:
                c, f = _one(name, sub, mixed)
            except (ValueError, np.linalg.LinAlgError) as err:  # singular design, separation
                reason = f"fit failed: {type(err).__name__}: {err}"
        if reason is not None:
            skipped.append((name, reason))
            continue
        coefs += c
        fits += f
    coef = pl.DataFrame(coefs, orient="row", schema=[
        ("behavior", pl.String), ("model_spec", pl.String), ("term", pl.String),
        ("estimate", pl.Float64), ("std_err", pl.Float64), ("p_value", pl.Float64),
        ("ci_low", pl.Float64), ("ci_high", pl.Float64)])
    fit_frame = pl.DataFrame(fits, orient="row", schema=[
        ("behavior", pl.String), ("model_spec", pl.String), ("family_glm", pl.String),
        ("n_obs", pl.Int64), ("n_models", pl.Int64), ("r2", pl.Float64), ("aic", pl.Float64),
        ("bic", pl.Float64), ("loso_rmse", pl.Float64), ("mixed", pl.String),
        ("mixed_aic", pl.Float64)])
    skip = pl.DataFrame(skipped, orient="row",
                        schema=[("behavior", pl.String), ("reason", pl.String)])
    return Fits(coef, fit_frame, _verdicts(coef, fit_frame, design), skip)


def fit_curves(rows: pl.DataFrame, behavior: str, n_points: int = 25) -> pl.DataFrame:
    """The ppl-only fit (value ~ log ppl, pooled over models) along each model's ppl range.

    Returns model, val_ppl, fitted: one line per model over the ppl values it
    actually visited (no extrapolation), for drawing beside the data. Empty when
    the behavior cannot be fitted.
    """
    sub = _design(rows).filter(pl.col("behavior") == behavior)
    empty = pl.DataFrame(schema={"model": pl.String, "val_ppl": pl.Float64, "fitted": pl.Float64})
    if sub.height < 3 or sub["value"].n_unique() < 2:
        return empty
    try:
        res = fit(sub.to_pandas(), SPECS["ppl"], response_kind(sub))
    except (ValueError, np.linalg.LinAlgError):
        return empty
    ranges = sub.group_by("model").agg(pl.col("log_ppl").min().alias("lo"),
                                        pl.col("log_ppl").max().alias("hi")).sort("model")
    parts = []
    for model, lo, hi in ranges.iter_rows():
        grid = pd.DataFrame({"log_ppl": np.linspace(lo, hi, n_points)})
        parts.append(pl.DataFrame({"model": [model] * n_points, "val_ppl": np.exp(grid.log_ppl),
                                   "fitted": predict(res, grid, SPECS["ppl"])}))
    return pl.concat(parts)


def size_decision(ci_low, ci_high, loso_ratio_size, n_models: int,
                  n_sizes: int) -> tuple[bool | None, str]:
    """``(size_adds, evidence)`` from the jackknife CI and the LOSO ratio (module docstring).

    ``loso_ratio_size`` = LOSO RMSE of ppl+params / LOSO RMSE of ppl (< 1: size helps).
    """
    if n_sizes < MIN_SIZES_TEST or n_models < MIN_SIZES_TEST:
        return None, f"too few sizes ({n_sizes}) / models ({n_models}): no size test"
    if ci_low is None or ci_high is None:
        return None, f"size term not identified leaving one model out ({n_models} models)"
    excludes = not (ci_low <= 0 <= ci_high)
    if n_models >= MIN_CLUSTERS:
        return excludes, f"cluster-jackknife CI ({n_models} models)"
    agrees = loso_ratio_size is not None and loso_ratio_size < 1
    return excludes and agrees, f"few models ({n_models}): jackknife CI + LOSO error ratio"


def _verdicts(coef: pl.DataFrame, fit_frame: pl.DataFrame, design: pl.DataFrame) -> pl.DataFrame:
    out = []
    for name in fit_frame["behavior"].unique(maintain_order=True):
        f = fit_frame.filter(pl.col("behavior") == name).sort("aic")
        loso = dict(zip(f["model_spec"], f["loso_rmse"]))
        other = [loso[s] for s in ("size_tokens", "flops") if loso[s] is not None]
        ratio = min(other) / loso["ppl"] if other and loso["ppl"] else None
        size_ratio = (loso["ppl_size"] / loso["ppl"]
                      if loso["ppl_size"] is not None and loso["ppl"] else None)
        term = coef.filter((pl.col("behavior") == name) & (pl.col("model_spec") == "ppl_size")
                           & (pl.col("term") == "log_params")).row(0, named=True)
        sub = design.filter(pl.col("behavior") == name)
        within = sub["value"] - sub.select(pl.col("value").mean().over("model")).to_series()
        adds, evidence = size_decision(term["ci_low"], term["ci_high"], size_ratio,
                                       sub["model"].n_unique(), sub["params"].n_unique())
        out.append((name, f["model_spec"][0], float(f["aic"][1] - f["aic"][0]), ratio,
                    term["estimate"], term["ci_low"], term["ci_high"], term["p_value"], adds,
                    sub["model"].n_unique(), evidence, ppl_turns_text(ppl_turns(sub)),
                    loso[f["model_spec"][0]], float(np.sqrt((within ** 2).mean()))))
    return pl.DataFrame(out, orient="row", schema=[
        ("behavior", pl.String), ("best_spec", pl.String), ("delta_aic", pl.Float64),
        ("loso_ratio", pl.Float64), ("size_term", pl.Float64), ("size_ci_low", pl.Float64),
        ("size_ci_high", pl.Float64), ("size_p_value", pl.Float64), ("size_adds", pl.Boolean),
        ("n_models", pl.Int64), ("evidence", pl.String), ("ppl_turns_up", pl.String),
        ("best_loso_rmse", pl.Float64), ("model_mean_rmse", pl.Float64)])
