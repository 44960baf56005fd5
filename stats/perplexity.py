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
