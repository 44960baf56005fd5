"""Exponential moving averages along training (polars only).

Xia et al. (2023) draw BIG-bench accuracy over checkpoints smoothed by an
exponential moving average (weight 0.5 for the average over tasks, 0.8 for
single tasks) beside the raw points. The weight is the share kept from the
previous smoothed value, as in TensorBoard's smoothing slider:

    s_0 = x_0,    s_t = w * s_{t-1} + (1 - w) * x_t

over each model's checkpoints in step order (nulls are skipped). Worked
example, w = 0.5, x = [0, 2, 4]: s = [0, 1, 2.5]; w = 0.8: s = [0, 0.4, 1.12].
"""

from __future__ import annotations

import polars as pl

GROUP = ("family", "model")


def ema(frame: pl.DataFrame, value: str, weight: float, *, by: tuple[str, ...] | list[str]
        = GROUP, order: str = "step", out: str | None = None) -> pl.DataFrame:
    """`frame` with `out` (default `<value>_ema`): the EMA of `value` per group in `order`.

    Args:
        frame: one row per checkpoint (and per any extra key in `by`, e.g. task).
        value: the column smoothed.
        weight: w in [0, 1): 0 = no smoothing; the paper uses 0.5 and 0.8.
        by: the columns of one trajectory (default family, model).
        order: the training order (default step).
    Raises:
        ValueError: weight outside [0, 1), or a column missing.
    """
    if not 0 <= weight < 1:
        raise ValueError(f"EMA weight must be in [0, 1) (0 = no smoothing), got {weight}")
    missing = [c for c in (value, order, *by) if c not in frame.columns]
    if missing:
        raise ValueError(f"ema: frame lacks columns {missing}; it has {frame.columns}")
    smoothed = (pl.col(value).cast(pl.Float64)
                .ewm_mean(alpha=1 - weight, adjust=False, ignore_nulls=True)
                .over(list(by), order_by=order))
    return frame.with_columns(smoothed.alias(out or f"{value}_ema"))
