"""The outcome vocabulary of every claim and comparison, and the rows Findings are made of.

One policy, used by the Findings table (stats.findings), the family outcomes of
`dynamics compare` and the report's family section (stats.equivalence):

- ``supported``: the data show what the claim says (its rule's test passes);
- ``contradicted``: the data show the opposite;
- ``inconclusive: <why>``: neither; the why names what the run could have
  detected (e.g. "could detect only differences >= 0.12 at 80 % power");
- ``not testable: <why>``: the run lacks what the rule needs.

A finding row (FINDINGS_SCHEMA) carries the interval the decision used and
its kind in words (``interval``): e.g. "95 % Wilson CI", "90 % CI (TOST vs
+-margin)", "range over models". A range is never called a CI.

:class:`Claim` is one entry of the claims table (stats.findings.CLAIMS): text,
citation, statistic, rule and the function that gives its outcome rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import polars as pl

SUPPORTED, CONTRADICTED = "supported", "contradicted"
INCONCLUSIVE, NOT_TESTABLE = "inconclusive", "not testable"
OUTCOMES = (SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_TESTABLE)
ALPHA = 0.05  # every claim's test: 5 % (two one-sided 5 % tests for an equivalence)
POWER = 0.80  # the minimal detectable effect of an inconclusive outcome is at this power

FINDINGS_SCHEMA = {"claim": pl.String, "source": pl.String, "statistic": pl.String,
                   "value": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
                   "interval": pl.String, "margin": pl.Float64, "verdict": pl.String,
                   "rule": pl.String, "detail": pl.String}


def inconclusive(why: str) -> str:
    return f"{INCONCLUSIVE}: {why}"


def not_testable(why: str) -> str:
    return f"{NOT_TESTABLE}: {why}"


def outcome(verdict: str) -> str:
    """The verdict without its reason: one of OUTCOMES ("not testable: one family" -> "not
    testable"); ValueError naming the allowed words on anything else."""
    head = verdict.split(":", 1)[0]
    if head not in OUTCOMES:
        raise ValueError(f"verdict {verdict!r} is none of {OUTCOMES}")
    if head in (SUPPORTED, CONTRADICTED) and head != verdict:
        raise ValueError(f"verdict {verdict!r}: {head!r} takes no reason")
    return head


def decide(supported: bool, contradicted: bool, why: str) -> str:
    """supported, contradicted or "inconclusive: why" (both True is a bug in a rule)."""
    assert not (supported and contradicted), "a rule found a claim and its opposite"
    return SUPPORTED if supported else CONTRADICTED if contradicted else inconclusive(why)


@dataclass(frozen=True)
class Claim:
    """One claim of the Findings table: adding a claim is adding one of these.

    ``evaluate(inputs, claim)`` returns the claim's rows (:meth:`row`), usually one.
    """

    key: str
    text: str
    citation: str
    statistic: str
    rule: str
    evaluate: Callable

    def row(self, verdict: str, detail: str = "", value: float | None = None,
            ci: tuple[float | None, float | None] = (None, None), interval: str | None = None,
            margin: float | None = None, text: str | None = None) -> dict:
        """A FINDINGS_SCHEMA row; ``interval`` names ``ci`` (required when ci is given)."""
        outcome(verdict)
        if (ci[0] is not None or ci[1] is not None) and not interval:
            raise ValueError(f"claim {self.key}: an interval needs its kind (interval=...)")
        return {"claim": text or self.text, "source": self.citation,
                "statistic": self.statistic, "value": value, "ci_low": ci[0],
                "ci_high": ci[1], "interval": interval, "margin": margin,
                "verdict": verdict, "rule": self.rule, "detail": detail}


def g(x: float | None) -> str:
    """A number for a detail text: 3 significant digits, "-" for None."""
    return "-" if x is None else f"{x:.3g}"


@dataclass(frozen=True)
class ClaimInputs:
    """What the claims are decided from (stats.findings.findings arguments)."""

    rows: pl.DataFrame  # the behavior table (stats.behaviors; identity columns and val_ppl)
    emergence: pl.DataFrame  # emergence points with identity columns (stats.summary)
    verdicts: pl.DataFrame | None = None  # stats.regression.Fits.verdicts
    generated: pl.DataFrame | None = None  # stats.hallucination.generated_set_ppl
    family_test: pl.DataFrame | None = None  # stats.families.compare(...).test (with outcomes)
    family_differences: pl.DataFrame | None = None  # stats.families.family_differences
