"""Every frame the report draws from the behaviors, computed once: `analyze(rows) -> Analysis`.

The report (reports/build.py) only lays these frames out; the choices made
here are the analysis:

- which behaviors are fitted: every behavior except kinds in NOT_FITTED_KINDS
  (val_loss is log(val_ppl) itself: regressing it on ppl is a tautology);
- fitted curves (stats.regression.fit_curves) for every fitted behavior,
  stacked with a behavior column;
- which behaviors rise during training and get emergence points: kinds in
  RISING_KINDS (accuracies, head scores, recall/bigram accuracies); the
  emergence point is the first checkpoint past EMERGENCE_FRACTION of the
  change from the first checkpoint's value to the final one
  (stats.emergence.crossing_points), with the identity columns joined back;
- with two or more families, the first two (sorted by name) compared at
  matched ppl (stats.families): differences on matched_ppl_grid and the
  family test at fixed ppl, over the fitted behaviors;
- the findings (stats.findings), from the verdicts, emergence points,
  generated sets and the family comparison.

:func:`analyze_store` reads what it needs from a store (behavior table, the
generated sets of the sequences table, validation ppl with rises flagged).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from evals.schema import KEY_COLUMNS
from stats import behaviors, families, findings, hallucination, regression
from stats.emergence import crossing_points
from stats.perplexity import flag_ppl_rises, validation_ppl

EMERGENCE_FRACTION = 0.5
NOT_FITTED_KINDS = ("val_loss",)
RISING_KINDS = ("accuracy", "macro_accuracy", "macro_accuracy_norm", "head_score",
                "recall_accuracy", "bigram_accuracy")
CURVE_COLUMNS = {"behavior": pl.String, "model": pl.String, "val_ppl": pl.Float64,
                 "fitted": pl.Float64}


@dataclass(frozen=True)
class Analysis:
    """The frames of one analysis (module docstring says how each is chosen).

    Attributes:
        behaviors: the behavior table (stats.behaviors.BEHAVIOR_COLUMNS + val_ppl).
        fits: regressions per fitted behavior, or None when none could be fitted.
        curves: behavior, model, val_ppl, fitted (the ppl-only fit along each model).
        emergence: stats.emergence.crossing_points columns + evaluator, kind, task, set.
        ppl: validation ppl per checkpoint with ppl_rises (stats.perplexity), or None.
        generated: stats.hallucination.generated_set_ppl with val_ppl, or None.
        findings: stats.findings.FINDINGS_SCHEMA, one row per claim.
        notes: what could not be computed, in words.
        family_pair: the two families compared (a, b), or None with fewer than two.
        family_differences: stats.families.family_differences (b - a at matched ppl).
        family_test: stats.families.family_test (family term at fixed ppl).
        family_notes: the matched ppl values and what limited the comparison.
    """

    behaviors: pl.DataFrame
    fits: regression.Fits | None
    curves: pl.DataFrame
    emergence: pl.DataFrame
    findings: pl.DataFrame
    ppl: pl.DataFrame | None = None
    generated: pl.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    family_pair: tuple[str, str] | None = None
    family_differences: pl.DataFrame | None = None
    family_test: pl.DataFrame | None = None
    family_notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FamilyFrames:
    """:func:`family_frames` output (the Analysis family_* fields)."""

    pair: tuple[str, str] | None = None
    differences: pl.DataFrame | None = None
    test: pl.DataFrame | None = None
    notes: list[str] = field(default_factory=list)


def family_frames(rows: pl.DataFrame, seeds: pl.DataFrame | None = None,
                  margin: float | None = None) -> FamilyFrames:
    """The first two families (sorted) at matched ppl (stats.families.compare)."""
    names = sorted(rows["family"].unique())
    if len(names) < 2:
        return FamilyFrames()
    pair = (names[0], names[1])
    notes = []
    if len(names) > 2:
        notes.append(f"Comparing {pair[1]} with {pair[0]}; for other pairs run "
                     "`dynamics compare RESULTS --families a,b`.")
    result = families.compare(fitted_rows(rows), pair, seeds=seeds, margin=margin)
    diffs = result.differences if result.ppls else None
    return FamilyFrames(pair, diffs, result.test, notes + result.notes)


def fitted_rows(rows: pl.DataFrame) -> pl.DataFrame:
    """Rows of the behaviors that get regressions (all kinds but NOT_FITTED_KINDS)."""
    return rows.filter(~pl.col("kind").is_in(NOT_FITTED_KINDS))


def rising_rows(rows: pl.DataFrame) -> pl.DataFrame:
    """Rows of the behaviors expected to rise over training (RISING_KINDS)."""
    return rows.filter(pl.col("kind").is_in(RISING_KINDS))


def emergence_points(rows: pl.DataFrame, fraction: float = EMERGENCE_FRACTION) -> pl.DataFrame:
    """Emergence of every rising behavior (stats.emergence.crossing_points columns + identity)."""
    rising = rising_rows(rows)
    ident = rising.select("behavior", *behaviors.IDENTITY_COLUMNS).unique("behavior")
    points = crossing_points(rising, fraction)
    return points.join(ident, on="behavior", how="left").sort("behavior", "params", "model")


def fit_all_curves(rows: pl.DataFrame, names: list[str]) -> pl.DataFrame:
    """stats.regression.fit_curves of each behavior in `names`, stacked (CURVE_COLUMNS)."""
    parts = [pl.DataFrame(schema=CURVE_COLUMNS)]
    for name in names:
        try:
            curve = regression.fit_curves(rows, name)
        except (ValueError, np.linalg.LinAlgError):  # as fit_behaviors: skip, do not fail
            continue
        parts.append(curve.select(pl.lit(name).alias("behavior"), "model", "val_ppl", "fitted"))
    return pl.concat(parts)


def analyze(rows: pl.DataFrame, *, ppl: pl.DataFrame | None = None,
            generated: pl.DataFrame | None = None,
            family_differences: pl.DataFrame | None = None,
            fraction: float = EMERGENCE_FRACTION, seeds: pl.DataFrame | None = None,
            margin: float | None = None) -> Analysis:
    """Fits, curves, emergence points and findings of a behavior table.

    Args:
        rows: stats.behaviors.behavior_table(...).rows.
        ppl: validation ppl per checkpoint (flagged here when it lacks ppl_rises).
        generated: stats.hallucination.generated_set_ppl output (claim (c2)).
        family_differences: families at matched ppl with CIs (claim (e)); None:
            computed here (:func:`family_frames`) when the rows hold two families.
        fraction: the emergence threshold as a fraction of the final value.
        seeds: stats.seeds.seed_frame of the store (seed noise beside family differences).
        margin: the declared equivalence margin of claim (e) (stats.equivalence).
    """
    notes = []
    fits = regression.fit_behaviors(fitted_rows(rows))
    if fits.verdicts.is_empty():
        notes.append("No behavior could be fitted (too few checkpoints or constant values).")
    curves = fit_all_curves(rows, fits.verdicts["behavior"].to_list())
    points = emergence_points(rows, fraction)
    if ppl is not None and "ppl_rises" not in ppl.columns:
        ppl = flag_ppl_rises(ppl)
    fam = family_frames(rows, seeds, margin)
    if family_differences is None:
        family_differences = fam.differences
    table = findings.findings(rows=rows, emergence=points, verdicts=fits.verdicts,
                              generated=generated, family_differences=family_differences,
                              family_test=fam.test)
    return Analysis(rows, fits, curves, points, table, ppl, generated, notes, fam.pair,
                    family_differences, fam.test, fam.notes)


def declared_margin(store) -> float | None:
    """The batch's equivalence_margin (``<store>/batch.toml``), or None (stats.equivalence)."""
    import tomllib

    path = Path(store.root) / "batch.toml"
    if not path.exists():
        return None
    return tomllib.loads(path.read_text()).get("equivalence_margin")


def analyze_store(store, *, family_differences: pl.DataFrame | None = None,
                  fraction: float = EMERGENCE_FRACTION) -> Analysis:
    """:func:`analyze` of a results store (needs its token-loss table; ValueError otherwise)."""
    table = behaviors.behavior_table(store)
    ppl = validation_ppl(store.scan("token-loss"))
    generated = None
    if "sequences" in store.tables():
        generated = hallucination.generated_set_ppl(store.scan("sequences")).join(
            ppl.select(*KEY_COLUMNS, "val_ppl"), on=list(KEY_COLUMNS), how="left")
    from stats.seeds import seed_frame

    out = analyze(table.rows, ppl=ppl, generated=generated,
                  family_differences=family_differences, fraction=fraction,
                  seeds=seed_frame(store), margin=declared_margin(store))
    out.notes.extend(f"Behavior provider not available: {m}" for m in table.missing)
    return out

