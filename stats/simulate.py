"""Simulated suites with a known truth, for calibrating verdicts and comparisons (issue 16).

:func:`simulate_suite` returns a behavior table (the columns of
:mod:`stats.behaviors`, one behavior "sim") for one or more families of models.
Per model (family f, size N) and checkpoint (log-spaced steps, Pythia's
2,097,152 tokens per step)::

    log ppl = 4.2 + ppl_offset[f] - 0.12 (log N - 18) - 0.3 (log tokens - 21) + N(0, 0.01)
    value   = 0.5 - 0.3 (log ppl - 3) + size_effect (log N - mean log N)
              + family_shift[f] + e,       e ~ AR(1) along the model's checkpoints

with AR coefficient ``rho`` and stationary sd ``noise_sd``. So with
``size_effect = family_shift = 0`` the behavior depends on ppl alone, however
correlated a model's checkpoints are; any "size adds" or "family differs" is a
false positive. ``ppl_offset`` makes families differ in ppl at equal size and
tokens, so only a comparison at matched ppl is fair. With ``n_trials`` the
behavior is an accuracy with real counts: successes ~ Binomial(n_trials,
logistic(value)) on top of the same dependent noise. Sizes are log-spaced over
``size_range`` (70M to 12B); in several families every family gets the same sizes.

Example: ``simulate_suite(np.random.default_rng(0), n_sizes=8)`` gives 8 models
x 15 checkpoints = 120 rows, with val_ppl from about 66 down to about 7.
"""

from __future__ import annotations

import numpy as np
import polars as pl

TOKENS_PER_STEP = 2_097_152
FIRST_STEP, LAST_STEP = 1_000, 143_000


def _ar1(rng: np.random.Generator, shape: tuple[int, int], rho: float, sd: float) -> np.ndarray:
    """Stationary AR(1) along axis 1: (models, checkpoints)."""
    e = np.empty(shape)
    e[:, 0] = rng.normal(0.0, sd, shape[0])
    innov = rng.normal(0.0, sd * np.sqrt(1 - rho**2), shape)
    for t in range(1, shape[1]):
        e[:, t] = rho * e[:, t - 1] + innov[:, t]
    return e


def simulate_suite(rng: np.random.Generator, n_sizes: int = 8, n_checkpoints: int = 15,
                   rho: float = 0.8, noise_sd: float = 0.03, size_effect: float = 0.0,
                   families: tuple[str, ...] = ("sim",), family_shift: dict | None = None,
                   ppl_offset: dict | None = None,
                   size_range: tuple[float, float] = (7e7, 1.2e10),
                   n_trials: int | None = None) -> pl.DataFrame:
    """A behavior table with a known truth (model in the module docstring)."""
    if not 0 <= rho < 1:
        raise ValueError(f"rho must be in [0, 1); got {rho}")
    shift, offset = family_shift or {}, ppl_offset or {}
    unknown = sorted((set(shift) | set(offset)) - set(families))
    if unknown:
        raise KeyError(f"families {unknown} not simulated; families: {list(families)}")
    params = np.round(np.geomspace(*size_range, n_sizes)).astype(np.int64)
    steps = np.unique(np.round(np.geomspace(FIRST_STEP, LAST_STEP, n_checkpoints))).astype(
        np.int64)
    tokens = steps * TOKENS_PER_STEP
    lp, lt = np.log(params.astype(float)), np.log(tokens.astype(float))
    parts = []
    for fam in families:
        shape = (n_sizes, steps.size)
        log_ppl = (4.2 + offset.get(fam, 0.0) - 0.12 * (lp[:, None] - 18)
                   - 0.3 * (lt[None, :] - 21) + rng.normal(0.0, 0.01, shape))
        value = (0.5 - 0.3 * (log_ppl - 3) + size_effect * (lp - lp.mean())[:, None]
                 + shift.get(fam, 0.0) + _ar1(rng, shape, rho, noise_sd))
        if n_trials is not None:  # accuracy: the same model on the logit scale, real counts
            value = rng.binomial(n_trials, 1 / (1 + np.exp(-value))) / n_trials
        parts.append(pl.DataFrame({
            "family": fam, "model": [f"{fam}-{p}" for p in params.repeat(steps.size)],
            "params": params.repeat(steps.size), "step": np.tile(steps, n_sizes),
            "tokens_seen": np.tile(tokens, n_sizes),
            "flops": 6.0 * params.repeat(steps.size) * np.tile(tokens, n_sizes).astype(float),
            "behavior": "sim", "evaluator": "user", "kind": "sim", "task": None, "set": None,
            "value": value.ravel(), "n_trials": n_trials, "val_ppl": np.exp(log_ppl.ravel())},
            schema_overrides={"task": pl.String, "set": pl.String, "n_trials": pl.Int64}))
    return pl.concat(parts)
