"""Claim (e): at matched perplexity, model families do not differ (Xia et al. 2023's ppl as
the common axis, tested across families).

Each behavior gets its outcome from :func:`stats.equivalence.family_outcomes`
(the family term b - a of value ~ log ppl + family, leave-one-model-out
jackknife): supported when its 90 % CI lies inside +-margin (TOST; margin:
seed SD at matched ppl, else declared, else a tenth of the behavior's spread),
contradicted when its Bonferroni-adjusted CI excludes 0, else inconclusive.

Rule for the claim (an intersection-union test: "no behavior differs" needs
every behavior shown equivalent, at no multiplicity cost):

- contradicted when any behavior is contradicted; value = the family term of
  the one with the smallest p, interval = its Bonferroni-adjusted CI;
- supported when every tested behavior is supported; value = the family term
  of the one whose 90 % CI comes closest to its margin, interval = that 90 %
  CI, margin = its margin (so the whole printed interval lies inside +-margin);
- inconclusive otherwise; value, interval and margin of the least equivalent
  inconclusive behavior, the why with its minimal detectable effect;
- not testable: one family, no family test, or no behavior could be tested
  (the test's evidence, e.g. too few models).
"""

from __future__ import annotations

import polars as pl

from stats.equivalence import family_outcomes
from stats.outcomes import (
    CONTRADICTED,
    INCONCLUSIVE,
    NOT_TESTABLE,
    POWER,
    SUPPORTED,
    Claim,
    ClaimInputs,
    g,
    inconclusive,
    not_testable,
    outcome,
)

TOST_INTERVAL = "90 % CI (TOST vs +-margin)"


def _largest_difference(diffs: pl.DataFrame | None) -> str:
    """The largest |b - a| at matched ppl, in words (empty when there is none)."""
    if diffs is None or diffs.drop_nulls("diff").is_empty():
        return ""
    top = diffs.drop_nulls("diff").sort(pl.col("diff").abs(), descending=True).row(0, named=True)
    ci = ("" if top["ci_low"] is None
          else f" (95 % CI [{g(top['ci_low'])}, {g(top['ci_high'])}])")
    return (f"largest difference at matched ppl: {top['behavior']} at ppl {g(top['ppl'])}: "
            f"{top['family_b']} - {top['family_a']} = {g(top['diff'])}{ci}"
            + (" (see the family section's notes: ppl turns up)" if "ppl turns up" in
               (top.get("note") or "") else ""))


def _closeness() -> pl.Expr:
    """How near a behavior's 90 % CI comes to its margin (> 1: outside)."""
    return pl.max_horizontal(pl.col("tost_low").abs(), pl.col("tost_high").abs()) / pl.col(
        "margin")


def _scale(r: dict) -> str:
    return f" ({r['scale']} scale)" if r.get("scale") not in (None, "value") else ""


def families_match(inp: ClaimInputs, claim: Claim) -> list[dict]:
    """Claim (e) (module docstring)."""
    if inp.rows["family"].n_unique() < 2:
        return [claim.row(not_testable("one family"))]
    test = inp.family_test
    if test is None or test.is_empty():
        return [claim.row(not_testable("family test not computed"))]
    if "outcome" not in test.columns:
        test = family_outcomes(test, inp.rows, inp.family_differences)
    test = test.with_columns(pl.col("outcome").map_elements(outcome, pl.String).alias("word"))
    tested = test.filter(pl.col("word") != NOT_TESTABLE)
    if tested.is_empty():
        return [claim.row(not_testable(test["outcome"][0].split(": ", 1)[-1]))]
    counts = {w: tested.filter(pl.col("word") == w) for w in (SUPPORTED, CONTRADICTED,
                                                              INCONCLUSIVE)}
    m = tested.height
    detail = (f"of {m} behaviors: {counts[SUPPORTED].height} within their margin, "
              f"{counts[CONTRADICTED].height} differ (Bonferroni over {m}), "
              f"{counts[INCONCLUSIVE].height} inconclusive; margins: " + ", ".join(
                  f"{s} {c}" for s, c in tested.group_by("margin_source").len()
                  .sort("margin_source").iter_rows()))
    if test.height > m:
        detail += f"; {test.height - m} not testable"
    for word in (CONTRADICTED, INCONCLUSIVE):
        if counts[word].height:
            detail += f"; {word}: " + ", ".join(sorted(counts[word]["behavior"])[:8])
    text = _largest_difference(inp.family_differences)
    detail += ("; " + text) if text else ""
    if counts[CONTRADICTED].height:
        r = counts[CONTRADICTED].sort("p_value").row(0, named=True)
        detail += (f"; smallest p: {r['behavior']} (p = {g(r['p_value'])}), {r['family_b']} - "
                   f"{r['family_a']} = {g(r['estimate'])}{_scale(r)}")
        kind = f"{100 * r['adj_level']:.4g} % CI (Bonferroni, {m} behaviors)"
        return [claim.row(CONTRADICTED, detail, r["estimate"], (r["adj_low"], r["adj_high"]),
                          kind, r["margin"])]
    if counts[INCONCLUSIVE].height == 0:
        r = tested.sort(_closeness(), descending=True).row(0, named=True)
        detail += (f"; closest to its margin: {r['behavior']}{_scale(r)}, margin "
                   f"+-{g(r['margin'])} ({r['margin_source']})")
        return [claim.row(SUPPORTED, detail, r["estimate"], (r["tost_low"], r["tost_high"]),
                          TOST_INTERVAL, r["margin"])]
    r = counts[INCONCLUSIVE].sort(_closeness(), descending=True).row(0, named=True)
    why = (f"{counts[INCONCLUSIVE].height} of {m} behaviors neither inside their margin nor "
           f"different; {r['behavior']}{_scale(r)}: 90 % CI [{g(r['tost_low'])}, "
           f"{g(r['tost_high'])}] vs +-{g(r['margin'])} ({r['margin_source']}); could detect "
           f"only differences >= {g(r['mde'])} at {POWER:.0%} power")
    return [claim.row(inconclusive(why), detail, r["estimate"], (r["tost_low"], r["tost_high"]),
                      TOST_INTERVAL, r["margin"])]


FAMILIES_MATCH = Claim(
    "e", "At matched perplexity, model families do not differ",
    "Xia et al. 2023 (ppl as the common axis), across families",
    "family term b - a at fixed ppl (the deciding behavior)",
    "supported: every behavior's 90 % CI inside +-margin (TOST); contradicted: a behavior's "
    "Bonferroni CI excludes 0; else inconclusive", families_match)
