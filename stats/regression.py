"""Is a behavior predicted by perplexity or by size and compute?

Inputs: the behavior table of :mod:`stats.behaviors`. Rows with
tokens_seen == 0 (step 0) are DROPPED, since log(tokens) is undefined there.

:func:`fit_behaviors` returns a :class:`Fits` with three polars frames:

- coefficients: behavior, model_spec, term, estimate, std_err, p_value, ci_low, ci_high
- fits: behavior, model_spec, family_glm (binomial|ols), n_obs, r2 (OLS R2 or
  McFadden pseudo-R2), aic, bic, loso_rmse (leave-one-size-out RMSE, null if
  fewer than 2 sizes), mixed ("fit" or why skipped), mixed_aic (ML fit with a
  random intercept per model; only OLS behaviors with >= MIN_MODELS_MIXED models)
- verdicts: behavior, best_spec (lowest AIC), delta_aic (second best minus best),
  loso_ratio (best loso_rmse of size/compute specs / loso_rmse of ppl spec),
  size_term, size_ci_low, size_ci_high, size_adds (False when the CI of
  log(params) in the ppl+params model covers 0: "size adds nothing
  significant at fixed ppl").

Binomial GLM (successes = value * n_trials) where n_trials is present for every
row of a behavior, OLS otherwise. Mixed models: see mixed/mixed_aic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import statsmodels.api as sm
import statsmodels.formula.api as smf

SPECS = {
    "ppl": "log_ppl",
    "size_tokens": "log_params + log_tokens",
    "flops": "log_flops",
    "ppl_size": "log_ppl + log_params",
}


MIN_MODELS_MIXED = 4


def _mixed(df, formula: str, binomial: bool) -> tuple[str, float | None]:
    if binomial:
        return "skipped: binomial (no GLMM)", None
    if df.model.nunique() < MIN_MODELS_MIXED:
        return f"skipped: < {MIN_MODELS_MIXED} models", None
    try:
        res = smf.mixedlm(f"value ~ {formula}", df, groups=df.model).fit(reml=False)
    except (ValueError, np.linalg.LinAlgError) as err:
        return f"skipped: {err}", None
    return "fit", float(res.aic)


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


def _fit(df, formula: str, binomial: bool):
    if binomial:
        df = df.assign(fail=df.n_trials - df.succ)
        return smf.glm(f"succ + fail ~ {formula}", df, family=sm.families.Binomial()).fit()
    return smf.ols(f"value ~ {formula}", df).fit()


def _r2(res, binomial: bool) -> float:
    return float(res.pseudo_rsquared(kind="mcf")) if binomial else float(res.rsquared)


def _loso(df, formula: str, binomial: bool) -> float | None:
    sizes = sorted(df.params.unique())
    if len(sizes) < 2:
        return None
    errs = []
    for size in sizes:
        train, test = df[df.params != size], df[df.params == size]
        res = _fit(train, formula, binomial)
        errs.append(np.asarray(res.predict(test)) - test.value.to_numpy())
    return float(np.sqrt(np.mean(np.concatenate(errs) ** 2)))


def _one(behavior: str, rows: pl.DataFrame):
    binomial = rows["n_trials"].null_count() == 0
    if binomial:
        rows = rows.with_columns((pl.col("value") * pl.col("n_trials")).round().alias("succ"))
    df = rows.to_pandas()
    coefs, fits = [], []
    for spec, formula in SPECS.items():
        res = _fit(df, formula, binomial)
        ci = res.conf_int()
        for term in res.params.index:
            coefs.append((behavior, spec, term, float(res.params[term]), float(res.bse[term]),
                          float(res.pvalues[term]), float(ci.loc[term, 0]), float(ci.loc[term, 1])))
        fits.append((behavior, spec, "binomial" if binomial else "ols", int(res.nobs),
                     _r2(res, binomial), float(res.aic), float(res.bic), _loso(df, formula, binomial),
                     *_mixed(df, formula, binomial)))
    return coefs, fits


def fit_behaviors(rows: pl.DataFrame, behaviors: list[str] | None = None) -> Fits:
    """Fit the four SPECS per behavior and pick a winner (see module docstring)."""
    design = _design(rows)
    names = sorted(design["behavior"].unique()) if behaviors is None else behaviors
    coefs, fits = [], []
    skipped = []
    for name in names:
        sub = design.filter(pl.col("behavior") == name)
        if sub.height < 5:
            skipped.append((name, f"{sub.height} usable rows (< 5)"))
            continue
        if sub["value"].n_unique() < 2:
            skipped.append((name, "constant value"))
            continue
        try:
            c, f = _one(name, sub)
        except (ValueError, np.linalg.LinAlgError) as err:  # singular design, separation, ...
            skipped.append((name, f"fit failed: {type(err).__name__}: {err}"))
            continue
        coefs += c
        fits += f
    coef = pl.DataFrame(coefs, orient="row", schema=[
        ("behavior", pl.String), ("model_spec", pl.String), ("term", pl.String),
        ("estimate", pl.Float64), ("std_err", pl.Float64), ("p_value", pl.Float64),
        ("ci_low", pl.Float64), ("ci_high", pl.Float64)])
    fit = pl.DataFrame(fits, orient="row", schema=[
        ("behavior", pl.String), ("model_spec", pl.String), ("family_glm", pl.String),
        ("n_obs", pl.Int64), ("r2", pl.Float64), ("aic", pl.Float64), ("bic", pl.Float64),
        ("loso_rmse", pl.Float64), ("mixed", pl.String), ("mixed_aic", pl.Float64)])
    skip = pl.DataFrame(skipped, orient="row",
                        schema=[("behavior", pl.String), ("reason", pl.String)])
    return Fits(coef, fit, _verdicts(coef, fit), skip)


def fit_curves(rows: pl.DataFrame, behavior: str, n_points: int = 25) -> pl.DataFrame:
    """The ppl-only fit (value ~ log ppl, pooled over models) along each model's ppl range.

    Returns model, val_ppl, fitted: one line per model over the ppl values it
    actually visited (no extrapolation), for drawing beside the data. Empty when
    the behavior cannot be fitted.
    """
    sub = _design(rows).filter(pl.col("behavior") == behavior)
    if sub.height < 3 or sub["value"].n_unique() < 2:
        return pl.DataFrame(schema={"model": pl.String, "val_ppl": pl.Float64,
                                    "fitted": pl.Float64})
    binomial = sub["n_trials"].null_count() == 0
    if binomial:
        sub = sub.with_columns((pl.col("value") * pl.col("n_trials")).round().alias("succ"))
    res = _fit(sub.to_pandas(), SPECS["ppl"], binomial)
    ranges = sub.group_by("model").agg(pl.col("log_ppl").min().alias("lo"),
                                        pl.col("log_ppl").max().alias("hi")).sort("model")
    parts = []
    for model, lo, hi in ranges.iter_rows():
        grid = np.linspace(lo, hi, n_points)
        fitted = np.asarray(res.predict({"log_ppl": grid}))
        parts.append(pl.DataFrame({"model": [model] * n_points, "val_ppl": np.exp(grid),
                                   "fitted": fitted}))
    return pl.concat(parts)


def _verdicts(coef: pl.DataFrame, fit: pl.DataFrame) -> pl.DataFrame:
    out = []
    for name in fit["behavior"].unique(maintain_order=True):
        f = fit.filter(pl.col("behavior") == name).sort("aic")
        loso = dict(zip(f["model_spec"], f["loso_rmse"]))
        other = [loso[s] for s in ("size_tokens", "flops") if loso[s] is not None]
        ratio = min(other) / loso["ppl"] if other and loso["ppl"] else None
        term = coef.filter((pl.col("behavior") == name) & (pl.col("model_spec") == "ppl_size")
                           & (pl.col("term") == "log_params")).row(0, named=True)
        adds = not (term["ci_low"] <= 0 <= term["ci_high"])
        out.append((name, f["model_spec"][0], float(f["aic"][1] - f["aic"][0]), ratio,
                    term["estimate"], term["ci_low"], term["ci_high"], adds))
    return pl.DataFrame(out, orient="row", schema=[
        ("behavior", pl.String), ("best_spec", pl.String), ("delta_aic", pl.Float64),
        ("loso_ratio", pl.Float64), ("size_term", pl.Float64), ("size_ci_low", pl.Float64),
        ("size_ci_high", pl.Float64), ("size_adds", pl.Boolean)])
