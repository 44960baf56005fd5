"""Circuit size and stability over checkpoints (Tigges et al. 2024), polars only.

Inputs are the store tables `circuit-summary`, `circuit-edges` and
`components` (evals/schema.py). Jaccard similarity of two checkpoints' circuits:
plain |A n B| / |A u B| over in-circuit edge sets; weighted
sum_e min(|s_A(e)|, |s_B(e)|) / sum_e max(|s_A(e)|, |s_B(e)|) over the union of
the two circuits (an edge outside a circuit counts with score 0).

Worked example: A = {e1 (score 2), e2 (1)}, B = {e2 (3), e3 (1)}: plain 1/3;
weighted min/max over e1, e2, e3 = (0 + 1 + 0) / (2 + 3 + 1) = 1/6.
"""

from __future__ import annotations

import polars as pl

from evals.schema import KEY_COLUMNS

KEYS = list(KEY_COLUMNS)
SERIES = ["family", "model", "task"]


def circuit_size(summary: pl.DataFrame) -> pl.DataFrame:
    """Circuit size, faithfulness, metrics and reason per (checkpoint, task), sorted by step.

    circuit_edges and faithfulness are null where the model does not perform the
    task (`reason` says why; evals.circuits.search.not_performed_reason).
    """
    return summary.select(*KEYS, "task", "circuit_edges", "faithfulness", "metric_clean",
                          "metric_corrupted", "reason").sort(*SERIES, "step")


def not_performed(summary: pl.DataFrame) -> pl.DataFrame:
    """The (model, task) series with checkpoints where the task is not performed.

    Returns family, model, task, steps (list, ascending), n_checkpoints (of the series).
    """
    return (summary.group_by(SERIES)
            .agg(pl.col("step").filter(pl.col("reason").is_not_null()).sort().alias("steps"),
                 pl.len().alias("n_checkpoints"))
            .filter(pl.col("steps").list.len() > 0).sort(SERIES))


def _pair_jaccard(edges: pl.DataFrame, left: pl.DataFrame) -> pl.DataFrame:
    """Jaccard of the circuit at each row of `left` (keys, task, ref_step) vs the ref step."""
    circ = edges.filter(pl.col("in_circuit")).select(
        *SERIES, "step", "edge", pl.col("score").abs().cast(pl.Float64).alias("s"))
    a = left.join(circ, on=[*SERIES, "step"], how="inner")
    b = left.join(circ.rename({"step": "ref_step"}), on=[*SERIES, "ref_step"], how="inner")
    both = a.join(b, on=[*SERIES, "step", "ref_step", "edge"], how="full", coalesce=True,
                  suffix="_ref").with_columns(pl.col("s").fill_null(0.0),
                                              pl.col("s_ref").fill_null(0.0))
    return both.group_by(*SERIES, "step", "ref_step").agg(
        ((pl.col("s") > 0) & (pl.col("s_ref") > 0)).sum().alias("n_common"),
        pl.len().alias("n_union"),
        pl.min_horizontal("s", "s_ref").sum().alias("min_sum"),
        pl.max_horizontal("s", "s_ref").sum().alias("max_sum"),
    ).with_columns(
        (pl.col("n_common") / pl.col("n_union")).alias("jaccard"),
        (pl.col("min_sum") / pl.col("max_sum")).alias("weighted_jaccard"),
    ).select(*SERIES, "step", "ref_step", "jaccard", "weighted_jaccard")


def circuit_jaccard(edges: pl.DataFrame, reference: str = "previous") -> pl.DataFrame:
    """Jaccard (plain, weighted) of each checkpoint's circuit vs the previous or final one.

    Args:
        edges: the `circuit-edges` table (in-circuit edges must have nonzero score
            to count in the weighted variant, as EAP-IG scores do).
        reference: "previous" (adjacent checkpoints) or "final" (last step of the model).
    Returns:
        family, model, task, step, ref_step, jaccard, weighted_jaccard (one row per
        checkpoint with a reference; the first checkpoint has none for "previous").
    """
    if reference not in ("previous", "final"):
        raise ValueError(f"reference {reference!r} not allowed; use 'previous' or 'final'")
    steps = edges.select(*SERIES, "step").unique().sort(*SERIES, "step")
    if reference == "previous":
        left = steps.with_columns(pl.col("step").shift(1).over(SERIES).alias("ref_step"))
    else:
        left = steps.with_columns(pl.col("step").max().over(SERIES).alias("ref_step"))
    left = left.drop_nulls("ref_step")
    return _pair_jaccard(edges, left).sort(*SERIES, "step")


def behaviors(store) -> pl.DataFrame | None:
    """Behavior rows (stats.behaviors.BEHAVIOR_COLUMNS; evaluator "circuits").

    Behaviors: `circuit_size:<task>`, `faithfulness:<task>` (only at checkpoints
    where the model performs the task: `reason` null), `task_metric:<task>` (the
    clean task metric, at every checkpoint) and, from `components`, `<kind>_max`
    (the best head's score, e.g. `induction_max`). None when the store has neither table.
    """
    from stats.behaviors import identity

    tables = store.tables()
    parts = []
    if "circuit-summary" in tables:
        s = store.read("circuit-summary")
        performed = pl.col("reason").is_null()
        for col, label, rows in (("circuit_edges", "circuit_size", performed),
                                 ("faithfulness", "faithfulness", performed),
                                 ("metric_clean", "task_metric", pl.lit(True))):
            parts.append(s.filter(rows).select(
                *KEYS, pl.concat_str(pl.lit(label + ":"), "task").alias("behavior"),
                *identity("circuits", label, pl.col("task")),
                pl.col(col).cast(pl.Float64).alias("value")))
    if "components" in tables:
        c = store.read("components")
        parts.append(c.group_by(*KEYS, "kind").agg(pl.col("score").max().alias("value")).select(
            *KEYS, (pl.col("kind").str.replace_all("-", "_") + "_max").alias("behavior"),
            *identity("circuits", "head_score", pl.col("kind")), pl.col("value").cast(pl.Float64)))
    if not parts:
        return None
    return (pl.concat(parts).with_columns(pl.lit(None, pl.Int64).alias("n_trials"))
            .sort("family", "model", "step", "behavior"))
