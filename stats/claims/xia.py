"""Claims of Xia et al. 2023: (b) ppl predicts behaviors, (c1) the hallucination gap, (c2) the
late rise of a generated set's ppl.

(b) Behaviors are predicted by perplexity rather than by size or compute. A
    fitted behavior follows ppl when its best_spec (lowest AIC) is "ppl" or
    "ppl_size" and size_adds is False (the CI of log(params) at fixed ppl
    covers 0). Only behaviors that carry signal count (stats.claims.signal):
    degenerate ones (constant, too few distinct values or examples, at chance
    at every checkpoint) and ones no spec predicts better than a per-model
    constant are excluded, with their reasons in the detail. Derived or
    duplicate behaviors are one measure and vote once (a macro, its
    normalized twin and its tasks; a gap and its two sets; ...).
    value = share of measures that follow ppl, interval = its 95 % Wilson CI
    over measures. The measures of one suite share its models, so they are
    not independent draws: the Wilson CI is an approximation, and its error
    rates are what the simulation in bench/bench_calibration.py --claims
    measures (suites whose behaviors share the models: all noise, half noise
    and half size-driven, tokens-only, half ppl-driven and half noise).
    Rule: supported when ci_low > 0.5 (a majority), contradicted when
    ci_high < 0.5, else inconclusive with the smallest true share n measures
    would show above 0.5 with 80 % power (:func:`share_mde`); not testable
    when no behavior is counted.
(c1) The factual-minus-hallucinated gap grows as ppl falls. Per model,
    Spearman rho of (val_ppl, gap) over its checkpoints with tokens_seen > 0
    (at least 3); the models are the independent units (a model's
    checkpoints are one run): value = mean rho over models, interval = its
    95 % t CI over models (n - 1 df; rho itself, not Fisher z: a model with
    rho = -1 over a few checkpoints would get an infinite z, and any clipping
    of it would set the width), clipped to [-1, 1].
    Rule: supported when the CI lies below 0 (the gap is larger at lower
    ppl), contradicted when it lies above 0, else inconclusive with the
    smallest |rho| the models could detect at 80 % power. The min and max
    over models are in the detail, as a range.
(c2) Larger models raise the ppl of the a=1, b=-1 generated set late in
    training (finding 2: "early in training all models lower the ppl of
    hallucinated grammatical sequences; small models stop there, larger ones
    later raise it"). Decided per set, on the models that did NOT generate it:
    the set is, by construction, text its small checkpoint likes and its large
    one dislikes, so a generator's trajectory on it is partly built in
    (stats.hallucination.generator_marks reads them from the set name; the
    detail names the ones left out; "not testable: only the generator models
    ..." when fewer than two others remain). Per model, over its checkpoints
    with tokens_seen > 0, the finding written as a rule ("rises late"):
      - it falls first: ppl at the first checkpoint >= RISE_MIN x its minimum
        ("early in training all models lower" it);
      - the minimum is late: at >= LATE_FRACTION (20 %) of the model's
        training in tokens (tokens at the minimum / final tokens). The paper
        gives no number for sequences; 20 % is where its token-level analysis
        places the rise of double descent (trends over the checkpoints after a
        fraction t of training; "increasing" tokens reported after 20 %);
      - what rise counts: final ppl >= RISE_MIN x the minimum.
    value = the largest non-generator model's rise (final / minimum). Rule:
    supported when that model rises late and more than the smallest
    non-generator model; contradicted when its rise < RISE_MIN (its set ppl
    does not rise); inconclusive when the smallest rises as much (not tied to
    size), or it rises without falling first or from an early minimum. No
    interval (one store, no noise estimate); calibrated by simulation
    (bench/bench_calibration.py --claims: only the generator rises; a
    non-generator large model rises).
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
from scipy import stats as st

from stats import hallucination
from stats.claims import signal
from stats.equivalence import mde
from stats.outcomes import ALPHA, POWER, Claim, ClaimInputs, decide, g, not_testable

FOLLOWS_PPL_SPECS = ("ppl", "ppl_size")
RISE_MIN = 1.05
LATE_FRACTION = 0.2
GENERATED_AB = (1.0, -1.0)
Z95 = 1.959963984540054


WILSON_MEASURES = ("95 % Wilson CI over {n} measures (approximate: measures share the suite's "
                   "models; calibrated by simulation)")


def wilson(k: float, n: int) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k / n (n > 0)."""
    p, z2 = k / n, Z95 ** 2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return centre - half, centre + half


def share_mde(n: int, power: float = POWER) -> float | None:
    """Smallest true share p whose Wilson ci_low exceeds 0.5 with ``power`` (n behaviors);
    None when even p = 1 does not (n too small: 3 of 3 gives ci_low 0.44)."""
    ks = np.arange(n + 1)
    passing = np.array([wilson(int(k), n)[0] > 0.5 for k in ks])
    for p in np.linspace(0.5, 1.0, 501):
        if st.binom.pmf(ks, n, p)[passing].sum() >= power:
            return float(p)
    return None


def follows_ppl() -> pl.Expr:
    """Boolean expression over a verdicts frame: the behavior follows ppl (rule (b))."""
    return pl.col("best_spec").is_in(FOLLOWS_PPL_SPECS) & ~pl.col("size_adds")


def _ppl_detail(verdicts: pl.DataFrame, screened: pl.DataFrame, per: pl.DataFrame) -> str:
    counted = verdicts.filter(pl.col("behavior").is_in(
        screened.filter(pl.col("reason").is_null())["behavior"].implode()))
    follow = screened.filter(pl.col("reason").is_null() & pl.col("follows"))
    votes = per["vote"].sum()
    detail = (f"{g(votes)} of {per.height} measures follow ppl (one vote per measure; "
              f"{follow.height} of {counted.height} counted behaviors)")
    if counted.height:
        best = counted.group_by("best_spec").len().sort("len", "best_spec",
                                                         descending=[True, False])
        detail += ("; best fit: " + ", ".join(f"{spec} {c}" for spec, c in best.iter_rows())
                   + f"; size adds at fixed ppl: {counted['size_adds'].sum()}")
    if follow.height:
        names = sorted({b.split(" | ")[0] for b in follow["behavior"]})  # generated sets: a, b
        detail += "; following ppl: " + ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    shared = per.filter(pl.col("n_behaviors") > 1)
    if shared.height:
        detail += "; grouped: " + ", ".join(f"{m} ({n} behaviors)" for m, n in
                                             shared.select("measure", "n_behaviors").iter_rows())
    if excluded := signal.excluded_text(screened):
        detail += "; " + excluded
    if "evidence" in counted.columns and counted.height:
        counts = counted.group_by("evidence").len().sort("evidence")
        detail += "; evidence: " + ", ".join(f"{e}: {c}" for e, c in counts.iter_rows())
    return detail


def ppl_predicts(inp: ClaimInputs, claim: Claim) -> list[dict]:
    """Claim (b) (module docstring)."""
    verdicts = inp.verdicts
    if verdicts is None or verdicts.is_empty():
        return [claim.row(not_testable("no fitted behaviors"))]
    screened = signal.screen(verdicts, inp.rows, follows_ppl())
    per = signal.votes(screened)
    detail = _ppl_detail(verdicts, screened, per)
    n = per.height
    if n == 0:
        return [claim.row(not_testable(f"no behavior moves and is predicted ({verdicts.height} "
                                       "fitted, all excluded)"), detail)]
    k = float(per["vote"].sum())
    low, high = wilson(k, n)
    detect = share_mde(n)
    why = (f"with {n} measures a share could be shown above 0.5 only if it is >= "
           f"{g(detect)} at {POWER:.0%} power" if detect is not None else
           f"{n} measures cannot show a share above 0.5 even if all follow ppl")
    verdict = decide(low > 0.5, high < 0.5, f"the CI contains 0.5; {why}")
    return [claim.row(verdict, detail, k / n, (low, high), WILSON_MEASURES.format(n=n))]


def _rho_ci(rho: np.ndarray) -> tuple[float, float, float, float]:
    """Mean rho, its 95 % t CI over models (clipped to [-1, 1]) and the detectable |mean rho|
    at 80 % power, (t(0.975) + t(0.8)) x SE."""
    n = rho.size
    se = rho.std(ddof=1) / math.sqrt(n)
    half = st.t.ppf(1 - ALPHA / 2, n - 1) * se
    detect = mde(se, n - 1)
    mean = float(rho.mean())
    return mean, max(-1.0, mean - half), min(1.0, mean + half), float(detect)


def hallucination_gap_trend(inp: ClaimInputs, claim: Claim) -> list[dict]:
    """Claim (c1) from the behavior rows of kind "hallucination_gap" (module docstring)."""
    gap = inp.rows.filter((pl.col("kind") == "hallucination_gap") & (pl.col("tokens_seen") > 0))
    if gap.is_empty():
        return [claim.row(not_testable("no factual and hallucinated sets"))]
    rho = (gap.group_by("params", "model").agg(
        pl.corr("val_ppl", "value", method="spearman").alias("rho"), pl.len().alias("n"))
        .filter(pl.col("n") >= 3).with_columns(pl.col("rho").fill_nan(None))
        .sort("params", "model"))
    detail = "; ".join(f"{m}: rho {g(r)} over {n} checkpoints" for _, m, r, n in rho.iter_rows())
    rho = rho.drop_nulls("rho")
    if rho.height < 2:
        return [claim.row(not_testable(f"{rho.height} model(s) with 3 checkpoints and a "
                                       "varying gap; the models are the units"), detail)]
    mean, low, high, detect = _rho_ci(rho["rho"].to_numpy())
    detail += f"; range over models [{g(rho['rho'].min())}, {g(rho['rho'].max())}]"
    verdict = decide(high < 0, low > 0, f"the CI contains 0; {rho.height} models could "
                     f"detect only |rho| >= {g(detect)} at {POWER:.0%} power")
    return [claim.row(verdict, detail, mean, (low, high),
                      f"95 % CI over {rho.height} models (t)")]


def _rise_table(sub: pl.DataFrame) -> pl.DataFrame:
    """Per model of one set: first, min, final ppl (checkpoints with tokens_seen > 0), where the
    minimum lies (step, fraction of training in tokens), rise, and rises_late (module doc)."""
    per = (sub.filter(pl.col("tokens_seen") > 0).sort("step")
           .group_by("params", "model", "generator").agg(
               pl.col("ppl").first().alias("first"), pl.col("ppl").min().alias("low"),
               pl.col("ppl").last().alias("last"),
               pl.col("step").get(pl.col("ppl").arg_min()).alias("min_step"),
               (pl.col("tokens_seen").get(pl.col("ppl").arg_min()).cast(pl.Float64)
                / pl.col("tokens_seen").last()).alias("min_at"),
               pl.col("step").last().alias("last_step"))
           .sort("params", "model"))
    rise, fell = pl.col("last") / pl.col("low"), pl.col("first") / pl.col("low")
    return per.with_columns(rise.alias("rise"), fell.alias("fell"), (
        (rise >= RISE_MIN) & (fell >= RISE_MIN) & (pl.col("min_at") >= LATE_FRACTION))
        .alias("rises_late"))


def _late_why(r: dict) -> str:
    """Why the largest model's rise does not count as Xia's late rise (rise >= RISE_MIN)."""
    if r["fell"] < RISE_MIN:
        return f"its set ppl did not fall first (first / lowest x{g(r['fell'])} < {RISE_MIN:g})"
    if r["min_at"] < LATE_FRACTION:
        return (f"its lowest point is early ({r['min_at']:.0%} of training, "
                f"< {LATE_FRACTION:.0%}): not a late rise")
    return ""


def _one_set_rise(sub: pl.DataFrame, claim: Claim, text: str | None) -> dict:
    per = _rise_table(sub)
    gen = hallucination.is_generator()
    excluded = per.filter(gen)
    others = per.filter(~gen)
    left_out = ", ".join(f"{m} ({role})" for m, role in excluded.select("model", "generator")
                         .iter_rows())
    note = f"; generator models, not counted: {left_out}" if left_out else ""
    if per["generator"].null_count() == per.height:
        note = "; the set's name records no generator models: every model counted"
    if others.height < 2:
        why = (f"only the generator models ({left_out}) have scores of this set"
               if others.is_empty() else
               f"one model besides the generator models ({left_out}); the rule compares "
               "the largest with the smallest")
        return claim.row(not_testable(why), note.lstrip("; "), text=text)
    detail = "; ".join(
        f"{r['model']}: x{g(r['rise'])} (lowest at step {r['min_step']}, {r['min_at']:.0%} of "
        f"training; final step {r['last_step']})" for r in others.iter_rows(named=True)) + note
    large, small = others.row(-1, named=True), others.row(0, named=True)
    why = (f"the smallest model rises as much (x{g(small['rise'])} vs x{g(large['rise'])})"
           if large["rises_late"] else f"the largest model rises x{g(large['rise'])} but "
           + _late_why(large))
    verdict = decide(large["rises_late"] and large["rise"] > small["rise"],
                     large["rise"] < RISE_MIN, why)
    return claim.row(verdict, detail, large["rise"], text=text)


def generated_set_rise(inp: ClaimInputs, claim: Claim) -> list[dict]:
    """Claim (c2) from stats.hallucination.generated_set_ppl output (module docstring): one
    row per a=1, b=-1 set (sets from other generator pairs are other sets)."""
    a, b = GENERATED_AB
    gen = inp.generated
    sub = (None if gen is None or gen.is_empty()
           else gen.filter((pl.col("a") == a) & (pl.col("b") == b)))
    if sub is None or sub.is_empty():
        return [claim.row(not_testable(f"no a={a:g}, b={b:g} generated set"))]
    names = sorted(sub["set"].unique())
    return [_one_set_rise(sub.filter(pl.col("set") == name), claim,
                          None if len(names) == 1 else f"{claim.text} ({name})")
            for name in names]


PPL_PREDICTS = Claim(
    "b", "Behaviors are predicted by perplexity rather than by size or compute",
    "Xia et al. 2023",
    "share of fitted behaviors whose best fit is on ppl and where size adds nothing at fixed ppl",
    "supported: 95 % Wilson CI above 0.5; contradicted: below 0.5; else inconclusive",
    ppl_predicts)
GAP_TREND = Claim(
    "c1", "The factual-minus-hallucinated gap grows as perplexity falls", "Xia et al. 2023",
    "mean over models of Spearman rho(val_ppl, gap)",
    "supported: 95 % CI over models below 0; contradicted: above 0; else inconclusive",
    hallucination_gap_trend)
GENERATED_RISE = Claim(
    "c2", f"Larger models raise the perplexity of the a={GENERATED_AB[0]:g}, "
    f"b={GENERATED_AB[1]:g} generated set late in training", "Xia et al. 2023",
    "largest non-generator model's set ppl at its final checkpoint / its minimum",
    f"supported: the largest model that did not generate the set rises late (fell first by "
    f">= x{RISE_MIN:g}, lowest after {LATE_FRACTION:.0%} of training, final >= x{RISE_MIN:g} "
    f"its lowest) and more than the smallest; contradicted: its rise < x{RISE_MIN:g}; "
    "else inconclusive", generated_set_rise)
