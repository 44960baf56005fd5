"""Validation perplexity per checkpoint, derived from the token-loss table.

ppl = exp(mean token loss in nats) over every scored validation token of a
checkpoint; it is the x-axis of every analysis.
"""

from __future__ import annotations

import polars as pl

from evals.schema import KEY_COLUMNS


def validation_ppl(token_loss: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """One row per checkpoint: keys, n_tokens, loss_nats (mean), val_ppl."""
    lazy = token_loss.lazy() if isinstance(token_loss, pl.DataFrame) else token_loss
    return (
        lazy.group_by(list(KEY_COLUMNS))
        .agg(
            pl.len().alias("n_tokens"),
            pl.col("loss_nats").cast(pl.Float64).mean().alias("loss_nats"),
        )
        .with_columns(pl.col("loss_nats").exp().alias("val_ppl"))
        .sort("family", "model", "step")
        .collect()
    )


RISE_TOLERANCE = 0.01  # a rise under 1 % of the best ppl so far is noise, not a rise


def _best_before() -> pl.Expr:
    """The model's lowest val_ppl over its earlier checkpoints (null at its first)."""
    return pl.col("val_ppl").cum_min().shift(1).over("family", "model", order_by="step")


def ppl_over_best(ppl: pl.DataFrame) -> pl.DataFrame:
    """`ppl` plus `over_best`: val_ppl / the model's lowest val_ppl at earlier checkpoints
    (null at its first). Example: ppl 40, 20, 25, 18 -> null, 0.5, 1.25, 0.9."""
    return ppl.with_columns((pl.col("val_ppl") / _best_before()).alias("over_best"))


def flag_ppl_rises(ppl: pl.DataFrame, tolerance: float = RISE_TOLERANCE) -> pl.DataFrame:
    """`ppl` plus `ppl_rises` (Boolean): val_ppl above (1 + tolerance) x the model's best so far.

    Validation ppl is the x-axis of every matched-ppl analysis, which assumes it
    falls with training; a checkpoint flagged here sits at a ppl the model had
    already passed (stats.matched uses the running minimum there). Example:
    ppl 40, 20, 25, 18 in step order -> flags False, False, True, False.
    """
    return ppl.with_columns(
        (pl.col("val_ppl") > _best_before() * (1 + tolerance)).fill_null(False)
        .alias("ppl_rises"))


def ppl_rises(ppl: pl.DataFrame) -> pl.DataFrame:
    """family, model, steps (sorted list): the checkpoints :func:`flag_ppl_rises` flags."""
    flagged = ppl if "ppl_rises" in ppl.columns else flag_ppl_rises(ppl)
    return (flagged.filter(pl.col("ppl_rises")).group_by("family", "model")
            .agg(pl.col("step").sort().alias("steps")).sort("family", "model"))
