"""Fits whose uncertainty respects that a model's checkpoints are one run (issue 16).

A model's checkpoints are the same training run seen 10-150 times: their
residuals are strongly autocorrelated, so the default (iid) standard errors of
statsmodels are far too narrow, and any term that is constant within a model
(log params, family) is really estimated from a handful of independent units,
the models. Every fit here therefore reports a **leave-one-model-out cluster
jackknife** covariance (CV3: ``(G-1)/G * sum_g (b_-g - b)(b_-g - b)'`` over the
G models) with a t reference on G-1 degrees of freedom.

Why this and not the alternatives: ``bench/bench_calibration.py`` simulates
suites whose behavior depends on ppl alone, with AR(1) noise (rho 0.8) along
each model's checkpoints, and counts how often "log params is significant at
fixed ppl" fires at nominal 5 % (BENCHMARKS.md has the tables; 300
replicates): default SEs fire in 42-49 % of the runs; cluster-robust CR1 with
t(G-1) (statsmodels ``cov_type="cluster"``) in 8-13 %; the jackknife with
t(G-1) in 2.7-4.7 % for 3, 5 and 8 models, with the power the bench reports.
statsmodels only offers CV3 for linear models, so the jackknife is computed
here, the same way for OLS, binomial and fractional-logit GLMs.

Responses (:func:`response_kind`):

- ``"binomial"``: only when every row has ``n_trials`` and ``value * n_trials``
  is a whole number (real counts: one task's 0/1-graded examples at one
  checkpoint). Likelihood = binomial on (successes, failures).
- ``"fractional"``: proportions in [0, 1] without real counts (macro averages,
  partial-credit grades, token-class fractions: ``FRACTIONAL_KINDS``), fitted
  as a fractional logit (Papke-Wooldridge: binomial quasi-likelihood with the
  value as the response, no counts invented); its AIC is a quasi-AIC, usable
  only to compare specs of the same behavior. The jackknife SEs do not rely on
  the binomial variance.
- ``"ols"``: everything else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import polars as pl
import statsmodels.api as sm
from scipy import stats as st

LEVEL = 0.95
MIN_CLUSTERS = 5  # below this many models, verdicts also ask LOSO to agree (calibrated)
FRACTIONAL_KINDS = frozenset({"accuracy", "accuracy_norm", "macro_accuracy",
                              "macro_accuracy_norm", "trend_fraction"})
_COUNT_TOL = 1e-6


class NotIdentifiedError(ValueError):
    """A term cannot be estimated from these rows (e.g. one size left for log params)."""


def response_kind(rows: pl.DataFrame) -> str:
    """"binomial" (real counts), "fractional" (proportions) or "ols": see the module docstring."""
    value = rows["value"]
    in_unit = bool(value.min() >= 0.0 and value.max() <= 1.0)
    if "n_trials" in rows.columns and rows["n_trials"].null_count() == 0 and in_unit:
        succ = value * rows["n_trials"]
        if bool(((succ - succ.round()).abs() < _COUNT_TOL).all()):
            return "binomial"
    if "kind" in rows.columns and in_unit and set(rows["kind"].unique()) <= FRACTIONAL_KINDS:
        return "fractional"
    return "ols"


def design(df: pd.DataFrame, terms: tuple[str, ...]) -> pd.DataFrame:
    """The exog matrix: an ``Intercept`` column then ``terms`` (columns of ``df``)."""
    x = df.loc[:, list(terms)].astype(float)
    x.insert(0, "Intercept", 1.0)
    return x


def fit(df: pd.DataFrame, terms: tuple[str, ...], response: str):
    """Point fit (statsmodels results, iid covariance) of value on ``terms``.

    Raises:
        NotIdentifiedError: the design is rank deficient (a term is constant or collinear).
    """
    x = design(df, terms)
    if np.linalg.matrix_rank(x.to_numpy()) < x.shape[1]:
        raise NotIdentifiedError(f"terms {list(terms)} not identified from {len(df)} rows")
    y = df["value"].to_numpy(dtype=float)
    if response == "binomial":
        n = df["n_trials"].to_numpy(dtype=float)
        succ = np.round(y * n)
        return sm.GLM(np.column_stack([succ, n - succ]), x, family=sm.families.Binomial()).fit()
    if response == "fractional":
        return sm.GLM(y, x, family=sm.families.Binomial()).fit()
    if response == "ols":
        return sm.OLS(y, x).fit()
    raise ValueError(f"unknown response {response!r}; allowed: binomial, fractional, ols")


def predict(res, df: pd.DataFrame, terms: tuple[str, ...]) -> np.ndarray:
    """Predicted value (a proportion for the GLMs) at the rows of ``df``."""
    return np.asarray(res.predict(design(df, terms)))


@dataclass(frozen=True)
class Robust:
    """One fit with its cluster-jackknife inference (one entry per term)."""

    res: object  # the full-data statsmodels results
    terms: list[str]
    estimate: np.ndarray
    std_err: np.ndarray  # NaN where a leave-one-model-out fit is not identified
    p_value: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    n_clusters: int
    loo: dict  # model -> leave-that-model-out results (reused for LOSO when sizes = models)


def robust_fit(df: pd.DataFrame, terms: tuple[str, ...], response: str,
               cluster: str = "model", level: float = LEVEL) -> Robust:
    """Fit with the leave-one-cluster-out jackknife covariance and a t(G-1) reference."""
    res = fit(df, terms, response)
    est = np.asarray(res.params, dtype=float)
    groups = df[cluster].to_numpy()
    names = list(pd.unique(groups))
    loo, reps = {}, []
    for g in names:
        try:
            loo[g] = fit(df[groups != g], terms, response)
            reps.append(np.asarray(loo[g].params, dtype=float))
        except (NotIdentifiedError, ValueError, np.linalg.LinAlgError):
            reps = None
            break
    n_g = len(names)
    if reps is None or n_g < 2:
        nan = np.full(est.shape, np.nan)
        return Robust(res, list(res.params.index), est, nan, nan, nan, nan, n_g, loo)
    dev = np.asarray(reps) - est
    se = np.sqrt((n_g - 1) / n_g * np.sum(dev**2, axis=0))
    tcrit = st.t.ppf(0.5 + level / 2, n_g - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = 2 * st.t.sf(np.abs(est / se), n_g - 1)
    return Robust(res, list(res.params.index), est, se, p, est - tcrit * se, est + tcrit * se,
                  n_g, loo)
