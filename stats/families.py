"""Do two model families differ at the same validation perplexity? (issue 16)

Three pure functions over the behavior table (:mod:`stats.behaviors` columns);
``families`` is a pair ``(a, b)`` and every difference is **b minus a**.

:func:`family_differences(rows, families, ppls, behavior=None, n_boot=2000, seed=0,
level=0.95)` -> one row per (behavior, ppl): behavior, ppl, family_a, family_b,
mean_a, mean_b, diff (mean_b - mean_a of the models' values interpolated at
that ppl by :func:`stats.matched.at_ppl`), ci_low, ci_high, n_models_a,
n_models_b, note. The CI is diff +- t * SE, the SE from a bootstrap that
resamples **models** within each family (a model's checkpoints are one run;
its interpolated value is one draw; each family's deviations from its mean are
scaled by sqrt(n/(n-1)) so the bootstrap variance is unbiased), t on the
Welch-Satterthwaite df. With 4 models per family the plain percentile
bootstrap interval covered only 83-91 % in simulation (it ignores that the SE
is itself estimated from a few models); the t reference fixes that
(``bench/bench_calibration.py``). Examples are not resampled: the behavior table holds one value
per checkpoint, so the uncertainty from the finite example set (shared by
every model) is not in the interval. With fewer than ``MIN_MODELS_CI`` (3)
models in a family the CI is null and note says "too few models"; resampling
two values is not a 95 % interval. note also names models whose ppl turns up
late (overfitting) and the steps the matched-ppl envelope dropped; models whose
ppl range does not reach that ppl are left out of that row (n_models counts
the ones used).

:func:`family_test(rows, families, behaviors=None)` -> one row per behavior:
behavior, family_a, family_b, response (binomial|fractional|ols), scale ("value"
or "logit": units of estimate), estimate (the family-b term in value ~ log ppl
+ family, over every checkpoint of both families), std_err, ci_low, ci_high,
p_value (leave-one-model-out jackknife, t(G-1): :mod:`stats.inference`),
n_models_a, n_models_b, evidence (which evidence there is, or why the behavior
was not tested: too few models (fewer than 2 in a family or MIN_CLUSTERS in
all; then p_value is null) or not fitted (every number null)), ppl_turns_up.
Whether the families differ, do not differ or the run cannot tell is decided
by :func:`stats.equivalence.family_outcomes` (the outcome columns :func:`compare` adds).

:func:`matched_ppl_grid(rows, families, n=5)` -> a list of ppl values, log-spaced
over the range every model of those families visits (empty when they do not
overlap): the default ``ppls`` for the report.

:func:`compare(rows, families, ppls=None, behavior=None, seeds=None, margin=None)`
-> :class:`Comparison` (pair, ppls, differences, test with each behavior's
outcome, notes): the one call behind
`dynamics compare` and the report's family section.

Calibration (false positives, power, CI coverage): ``bench/bench_calibration.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl
from scipy import stats as st

from stats.equivalence import family_outcomes
from stats.inference import LEVEL, MIN_CLUSTERS, response_kind, robust_fit
from stats.matched import UnknownFamilyError, at_ppl, ppl_turns, ppl_turns_text

MIN_MODELS_CI = 3
MIN_MODELS_TEST = 2
DIFF_SCHEMA = [("behavior", pl.String), ("ppl", pl.Float64), ("family_a", pl.String),
               ("family_b", pl.String), ("mean_a", pl.Float64), ("mean_b", pl.Float64),
               ("diff", pl.Float64), ("ci_low", pl.Float64), ("ci_high", pl.Float64),
               ("n_models_a", pl.Int64), ("n_models_b", pl.Int64), ("note", pl.String)]
TEST_SCHEMA = [("behavior", pl.String), ("family_a", pl.String), ("family_b", pl.String),
               ("response", pl.String), ("scale", pl.String), ("estimate", pl.Float64),
               ("std_err", pl.Float64), ("ci_low", pl.Float64), ("ci_high", pl.Float64),
               ("p_value", pl.Float64), ("n_models_a", pl.Int64), ("n_models_b", pl.Int64),
               ("evidence", pl.String), ("ppl_turns_up", pl.String)]


def select_pair(rows: pl.DataFrame, families, behavior: str | None = None) -> pl.DataFrame:
    """Rows of the two families (and one behavior); clear errors for unknown names."""
    families = list(families)
    if len(families) != 2 or families[0] == families[1]:
        raise ValueError(f"give two different families to compare; got {families}")
    known = sorted(set(rows["family"].unique()))
    bad = [f for f in families if f not in known]
    if bad:
        raise UnknownFamilyError(f"families {bad} not in results; available: {known}")
    sub = rows.filter(pl.col("family").is_in(families))
    if behavior is not None:
        names = sorted(set(sub["behavior"]))
        if behavior not in names:
            raise KeyError(f"behavior {behavior!r} not found; available: {names}")
        sub = sub.filter(pl.col("behavior") == behavior)
    return sub


def _expand(v: np.ndarray) -> np.ndarray:
    """Deviations from the mean scaled by sqrt(n / (n - 1)): bootstrap variance is unbiased."""
    return v.mean() + np.sqrt(v.size / (v.size - 1)) * (v - v.mean())


def _boot_ci(a: np.ndarray, b: np.ndarray, rng, n_boot: int, level: float):
    """diff +- t(Welch df) * SE, the SE from a bootstrap over models within each family."""
    ea, eb = _expand(a), _expand(b)
    ia = rng.integers(0, a.size, (n_boot, a.size))
    ib = rng.integers(0, b.size, (n_boot, b.size))
    se = float(np.std(eb[ib].mean(axis=1) - ea[ia].mean(axis=1), ddof=1))
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1)) if va + vb > 0 else 1.0
    half = st.t.ppf(0.5 + level / 2, df) * se
    diff = float(b.mean() - a.mean())
    return diff - half, diff + half


def _notes(n_a: int, n_b: int, fams, turns: str | None) -> str | None:
    parts = []
    if min(n_a, n_b) < MIN_MODELS_CI:
        parts.append(f"too few models for a CI ({fams[0]}: {n_a}, {fams[1]}: {n_b}; "
                     f"need {MIN_MODELS_CI} each)")
    if turns:
        parts.append(f"ppl turns up: {turns}")
    return "; ".join(parts) or None


def family_differences(rows: pl.DataFrame, families, ppls, behavior: str | None = None,
                       n_boot: int = 2000, seed: int = 0, level: float = LEVEL) -> pl.DataFrame:
    """b - a at matched ppl with a bootstrap-over-models CI (module docstring)."""
    fams = list(families)
    sub = select_pair(rows, fams, behavior)
    interp = at_ppl(sub, list(ppls)).drop_nulls("value")
    rng = np.random.default_rng(seed)
    out = []
    for (beh, p), g in interp.group_by(["behavior", "ppl"], maintain_order=True):
        a = g.filter(pl.col("family") == fams[0])["value"].to_numpy()
        b = g.filter(pl.col("family") == fams[1])["value"].to_numpy()
        if a.size == 0 or b.size == 0:
            continue
        lo = hi = None
        if min(a.size, b.size) >= MIN_MODELS_CI:
            lo, hi = _boot_ci(a, b, rng, n_boot, level)
        turns = ppl_turns_text(ppl_turns(sub.filter(pl.col("behavior") == beh)))
        out.append((beh, p, *fams, float(a.mean()), float(b.mean()), float(b.mean() - a.mean()),
                    lo, hi, int(a.size), int(b.size), _notes(a.size, b.size, fams, turns)))
    return pl.DataFrame(out, orient="row", schema=DIFF_SCHEMA).sort("behavior", "ppl")


def _test_one(name: str, sub: pl.DataFrame, fams) -> tuple:
    n_a = sub.filter(pl.col("family") == fams[0])["model"].n_unique()
    n_b = sub.filter(pl.col("family") == fams[1])["model"].n_unique()
    response = response_kind(sub)
    df = sub.with_columns(pl.col("val_ppl").log().alias("log_ppl"),
                          (pl.col("family") == fams[1]).cast(pl.Float64).alias("family_b")
                          ).to_pandas()
    rob = robust_fit(df, ("log_ppl", "family_b"), response)
    i = rob.terms.index("family_b")
    vals = [None if not np.isfinite(x) else float(x) for x in
            (rob.estimate[i], rob.std_err[i], rob.ci_low[i], rob.ci_high[i], rob.p_value[i])]
    n = n_a + n_b
    if min(n_a, n_b) < MIN_MODELS_TEST or n < MIN_CLUSTERS or vals[2] is None:
        vals[4] = None  # no p value: the test is not made
        evidence = (f"too few models ({fams[0]}: {n_a}, {fams[1]}: {n_b}; "
                    f"need {MIN_CLUSTERS} in all, {MIN_MODELS_TEST} each)")
    else:
        evidence = f"cluster-jackknife CI ({n} models)"
    return (name, *fams, response, "value" if response == "ols" else "logit", *vals, n_a, n_b,
            evidence, ppl_turns_text(ppl_turns(sub)))


def family_test(rows: pl.DataFrame, families, behaviors: list[str] | None = None
                ) -> pl.DataFrame:
    """value ~ log ppl + family per behavior, jackknife over models (module docstring)."""
    fams = list(families)
    sub = select_pair(rows, fams)
    names = sorted(sub["behavior"].unique()) if behaviors is None else behaviors
    out = []
    for name in names:
        part = sub.filter(pl.col("behavior") == name)
        reason = None
        if part.height < 5 or part["value"].n_unique() < 2 or part["family"].n_unique() < 2:
            reason = "not fitted: < 5 rows, a constant value or one family only"
        else:
            try:
                out.append(_test_one(name, part, fams))
            except (ValueError, np.linalg.LinAlgError) as err:
                reason = f"not fitted: {type(err).__name__}: {err}"
        if reason is not None:
            out.append((name, *fams, *[None] * 9, reason, None))
    return pl.DataFrame(out, orient="row", schema=TEST_SCHEMA)


def matched_ppl_grid(rows: pl.DataFrame, families, n: int = 5) -> list[float]:
    """``n`` log-spaced ppls inside every model's visited ppl range (module docstring)."""
    ckpts = rows.filter(pl.col("family").is_in(list(families)))
    ranges = ckpts.group_by("model").agg(pl.col("val_ppl").min().alias("lo"),
                                         pl.col("val_ppl").max().alias("hi"))
    if ranges.is_empty():
        return []
    lo, hi = float(ranges["lo"].max()), float(ranges["hi"].min())
    if not lo < hi:
        return []
    inner = np.geomspace(lo, hi, n + 2)[1:-1]  # stay off the edges, where one point decides
    return [float(f"{p:.4g}") for p in inner]


@dataclass(frozen=True)
class Comparison:
    """:func:`compare` output: what `dynamics compare` prints and the report draws."""

    pair: tuple[str, str]
    ppls: list[float]
    differences: pl.DataFrame
    test: pl.DataFrame
    notes: list[str] = field(default_factory=list)


def compare(rows: pl.DataFrame, families, ppls: list[float] | None = None,
            behavior: str | None = None, seeds: pl.DataFrame | None = None,
            margin: float | None = None) -> Comparison:
    """Two families at matched ppl: differences, the family test with each behavior's
    outcome (stats.equivalence.family_outcomes; ``margin``: the declared equivalence
    margin in value units) and seed noise, in one call.

    The one policy behind `dynamics compare` and the report's family section:
    val_loss (log val_ppl itself, equal at matched ppl by definition) is left
    out unless asked for by ``behavior``; ``ppls`` default to
    :func:`matched_ppl_grid`; with ``seeds`` (stats.seeds.seed_frame: a suite
    with seed runs) the differences get seed_sd_a/_b (stats.seeds.attach_seed_noise).
    """
    pair = (list(families)[0], list(families)[1]) if len(list(families)) == 2 else families
    sub = select_pair(rows, pair, behavior)
    if behavior is None:
        sub = sub.filter(pl.col("kind") != "val_loss")
    notes = []
    ppls = list(ppls) if ppls else matched_ppl_grid(sub, pair)
    if not ppls:
        notes.append("The models' validation ppl ranges do not overlap: no matched ppl.")
    else:
        notes.append(f"Matched ppl values: {', '.join(f'{p:.4g}' for p in ppls)}; "
                     f"differences are {pair[1]} - {pair[0]}.")
    diffs = family_differences(sub, pair, ppls) if ppls else pl.DataFrame(schema=DIFF_SCHEMA)
    if seeds is not None and not seeds.is_empty() and ppls:
        from stats.seeds import attach_seed_noise, seed_noise

        diffs = attach_seed_noise(diffs, seed_noise(sub, seeds, ppls))
        notes.append("seed_sd_a/b: SD across seeds of one configuration at that ppl (seed "
                     "noise); a family difference within it is not evidence of a family effect.")
    test = family_test(sub, pair, None if behavior is None else [behavior])
    test = family_outcomes(test, sub, diffs, margin)
    return Comparison(tuple(pair), ppls, diffs, test, notes)
