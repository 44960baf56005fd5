"""Bietti et al.'s order of learning: global bigrams before in-context recall.

Behaviors from the `recall-bigram` table (evals/recall_bigram.py), per
checkpoint and position kind ("recall": the token after a trigger's 2nd+
occurrence, recalled from context; "bigram": a token that follows the global
bigram chain): `<kind>_loss` (mean loss in nats, kind "recall_loss" /
"bigram_loss") and `<kind>_accuracy` (n_correct / n_tokens, kind
"recall_accuracy" / "bigram_accuracy", n_trials = n_tokens).

:func:`learning_order` turns them into emergence points: per model, the first
checkpoint where each accuracy reaches `fraction` of the way from its first to
its final value, and whether bigram accuracy got there strictly before recall
accuracy (Bietti et al.: bigrams in the first iterations, induction later).

Example: bigram accuracy 0.1, 0.5, 0.6, 0.6 and recall accuracy 0.2, 0.2, 0.3,
0.9 at steps 0, 10, 100, 1000, fraction 0.5: bigram thresholds at 0.35 ->
step 10; recall at 0.55 -> step 1000; bigram_first = True.
"""

from __future__ import annotations

import polars as pl

from evals.schema import KEY_COLUMNS
from stats.behaviors import identity

EVALUATOR = "recall-bigram"
KINDS = ("recall", "bigram")


def behaviors(store) -> pl.DataFrame | None:
    """Behavior rows (BEHAVIOR_COLUMNS) of the recall-bigram table; None without it."""
    if EVALUATOR not in store.tables():
        return None
    frame = store.read(EVALUATOR).filter(pl.col("position_kind").is_in(KINDS))
    if frame.height == 0:
        return None
    kind = pl.col("position_kind")
    loss = frame.select(
        *KEY_COLUMNS, (kind + "_loss").alias("behavior"),
        *identity(EVALUATOR, kind + "_loss", kind),
        (pl.col("loss_nats") / pl.col("n_tokens")).alias("value"),
        pl.lit(None, pl.Int64).alias("n_trials"))
    acc = frame.select(
        *KEY_COLUMNS, (kind + "_accuracy").alias("behavior"),
        *identity(EVALUATOR, kind + "_accuracy", kind),
        (pl.col("n_correct") / pl.col("n_tokens")).alias("value"),
        pl.col("n_tokens").cast(pl.Int64).alias("n_trials"))
    return pl.concat([loss, acc]).sort("family", "model", "step", "behavior")


def _emergence_step(sub: pl.DataFrame, fraction: float) -> tuple[float, int | None, float]:
    sub = sub.sort("step")
    first, last = sub["value"][0], sub["value"][-1]
    threshold = first + fraction * (last - first)
    hit = sub.filter(pl.col("value") >= threshold) if last > first else sub.clear()
    return threshold, (int(hit["step"][0]) if hit.height else None), last - first


def learning_order(rows: pl.DataFrame, fraction: float = 0.5) -> pl.DataFrame:
    """Per model: emergence step of bigram and recall accuracy, and which came first.

    `rows`: behavior rows with evaluator "recall-bigram" (from :func:`behaviors` or the
    behavior table). Returns family, model, params, bigram_threshold, bigram_step,
    bigram_rise, recall_threshold, recall_step, recall_rise, bigram_first (null when an
    accuracy never rises). `<kind>_rise` = final - first accuracy: the threshold is relative,
    so a small rise (a model that never learns recall) still gets a step; judge it by the rise.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    acc = rows.filter((pl.col("evaluator") == EVALUATOR)
                      & pl.col("kind").is_in([f"{k}_accuracy" for k in KINDS]))
    out = []
    for (family, model, params), sub in acc.group_by("family", "model", "params",
                                                     maintain_order=True):
        row = {"family": family, "model": model, "params": params}
        for k in ("bigram", "recall"):
            part = sub.filter(pl.col("kind") == f"{k}_accuracy")
            row[f"{k}_threshold"], row[f"{k}_step"], row[f"{k}_rise"] = (
                _emergence_step(part, fraction) if part.height else (None, None, None))
        both = row["bigram_step"] is not None and row["recall_step"] is not None
        row["bigram_first"] = row["bigram_step"] < row["recall_step"] if both else None
        out.append(row)
    schema = {"family": pl.String, "model": pl.String, "params": pl.Int64,
              "bigram_threshold": pl.Float64, "bigram_step": pl.Int64, "bigram_rise": pl.Float64,
              "recall_threshold": pl.Float64, "recall_step": pl.Int64, "recall_rise": pl.Float64,
              "bigram_first": pl.Boolean}
    return pl.DataFrame(out, schema=schema).sort("family", "params")
