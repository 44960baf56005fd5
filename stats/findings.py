"""Findings: one row per paper claim, generated from this run's frames (polars only).

The claims are data: :data:`CLAIMS` holds one :class:`stats.outcomes.Claim`
per claim (text, citation, statistic, rule, outcome function); adding a claim
is adding an entry. Each claim's rule is documented beside it:

- (a) induction at matched tokens, (d) bigram before recall: stats.claims.emergence
- (b) ppl predicts behaviors, (c1) hallucination gap, (c2) generated-set rise:
  stats.claims.xia
- (e) families do not differ at matched ppl (an equivalence test): stats.claims.families

:func:`findings` returns FINDINGS_SCHEMA (stats.outcomes): claim, source,
statistic, value, ci_low, ci_high (the interval the decision used), interval
(its kind in words: "95 % Wilson CI", "90 % CI (TOST vs +-margin)", "bounds
from checkpoint spacing", ...; null when there is none), margin (an
equivalence claim's margin), verdict (supported, contradicted,
"inconclusive: <why>", "not testable: <why>"), rule, detail.

Calibration of every rule on simulated stores with known truth:
``bench/bench_calibration.py --claims`` (BENCHMARKS.md).
"""

from __future__ import annotations

import polars as pl

from stats.claims.emergence import INDUCTION, LEARNING_ORDER
from stats.claims.families import FAMILIES_MATCH
from stats.claims.xia import GAP_TREND, GENERATED_RISE, PPL_PREDICTS
from stats.outcomes import FINDINGS_SCHEMA, ClaimInputs, g

CLAIMS = (INDUCTION, PPL_PREDICTS, GAP_TREND, GENERATED_RISE, LEARNING_ORDER, FAMILIES_MATCH)


def claim(key: str):
    """The CLAIMS entry with this key; KeyError naming the keys there are."""
    for c in CLAIMS:
        if c.key == key:
            return c
    raise KeyError(f"no claim {key!r}; claims: {[c.key for c in CLAIMS]}")


def evaluate(key: str, inputs: ClaimInputs) -> list[dict]:
    """One claim's rows (FINDINGS_SCHEMA dicts)."""
    c = claim(key)
    return c.evaluate(inputs, c)


def findings(*, rows: pl.DataFrame, emergence: pl.DataFrame, verdicts: pl.DataFrame | None,
             generated: pl.DataFrame | None = None,
             family_differences: pl.DataFrame | None = None,
             family_test: pl.DataFrame | None = None) -> pl.DataFrame:
    """Every claim's rows (FINDINGS_SCHEMA), in the order of CLAIMS.

    Args:
        rows: the behavior table (stats.behaviors; identity columns and val_ppl).
        emergence: emergence points with the identity columns (stats.summary).
        verdicts: stats.regression.Fits.verdicts, or None when nothing was fitted.
        generated: stats.hallucination.generated_set_ppl output, or None.
        family_differences: families at matched ppl (stats.families.family_differences).
        family_test: stats.families.compare(...).test (claim (e) decides on its outcomes).
    """
    inputs = ClaimInputs(rows, emergence, verdicts, generated, family_test, family_differences)
    out = [row for c in CLAIMS for row in c.evaluate(inputs, c)]
    return pl.DataFrame(out, schema=FINDINGS_SCHEMA)


def summary_text(table: pl.DataFrame) -> str:
    """One line per finding, for a terminal:
    "- [<verdict>] <claim>; <statistic> = <value> [<low>, <high>] (<interval kind>)"."""
    lines = []
    for r in table.iter_rows(named=True):
        line = f"- [{r['verdict']}] {r['claim']}"
        if r["value"] is not None:
            line += f"; {r['statistic']} = {g(r['value'])}"
            if r["ci_low"] is not None or r["ci_high"] is not None:
                line += f" [{g(r['ci_low'])}, {g(r['ci_high'])}] ({r['interval']}"
                line += f", margin +-{g(r['margin'])})" if r["margin"] is not None else ")"
        lines.append(line)
    return "\n".join(lines)
