"""When a behavior emerges: the checkpoint where it has covered a fraction of its change.

:func:`crossing_points` takes behavior rows (keys, value, val_ppl, and the
grouping columns) and returns, per group, the first checkpoint at which the
value has moved `fraction` of the way from its first value (the earliest
checkpoint, usually step 0: the model at initialisation) to its final value:

    threshold = start + fraction * (final - start)

reached when (value - threshold) has the sign of (final - start). This works
for rising measures (accuracies, head scores) and falling ones (losses) alike,
and is not fooled by a score whose initial value is already high: with a
random-init head score of 0.06 and a final one of 0.09, "half the final
value" (0.045) is met at step 0, while half the change (0.075) is not.

Worked example: values 4.0, 3.5, 2.0, 1.0 at steps 0, 1, 2, 3, fraction 0.5:
threshold 2.5, first reached at step 2. A group whose final value equals its
start never moves: step, tokens_seen and val_ppl are null.

Output columns: the `by` columns, start_value, final_value, threshold, step,
tokens_seen, val_ppl (of the crossing checkpoint).
"""

from __future__ import annotations

import polars as pl

BY = ("family", "model", "params", "behavior")


def crossing_points(rows: pl.DataFrame, fraction: float = 0.5,
                    by: tuple[str, ...] | list[str] = BY) -> pl.DataFrame:
    """First checkpoint per group past `fraction` of the change (module docstring)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    keys = list(by)
    marked = rows.sort("step").with_columns(
        pl.col("value").first().over(keys).alias("start_value"),
        pl.col("value").last().over(keys).alias("final_value"))
    change = pl.col("final_value") - pl.col("start_value")
    marked = marked.with_columns((pl.col("start_value") + fraction * change).alias("threshold"))
    moved = ((pl.col("value") - pl.col("threshold")) * change.sign() >= 0) & (change != 0)
    hit = (marked.filter(moved).group_by(keys, maintain_order=True)
           .agg(pl.col("step").first(), pl.col("tokens_seen").first(),
                pl.col("val_ppl").first()))
    groups = marked.group_by(keys, maintain_order=True).agg(
        pl.col("start_value").first(), pl.col("final_value").first(),
        pl.col("threshold").first())
    return groups.join(hit, on=keys, how="left").sort(keys)
