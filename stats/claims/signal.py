"""Which fitted behaviors carry evidence for claim (b), and which measure each one votes for.

Claim (b) ("behaviors are predicted by ppl rather than by size or compute",
stats.claims.xia) counts behaviors. A behavior that never moves, or that no
spec predicts, is not evidence that ppl predicts it: its best spec is chosen
among fits to noise. So before counting, :func:`screen` sorts every fitted
behavior into counted or excluded-with-a-reason:

Degenerate (from its rows at checkpoints with tokens_seen > 0, the rows fitted):
  - "constant": one distinct value;
  - "too few distinct values": fewer than MIN_DISTINCT (4) distinct values;
  - "too few examples": an accuracy over fewer than MIN_TRIALS (20) examples;
  - "at chance": a behavior with a chance level (``chance``: a multiple-choice
    random baseline) whose value is at or below the top of its chance band at
    every checkpoint: chance + max(CHANCE_BAND_MIN, 1.96 sqrt(c (1 - c) / n))
    (n = n_trials; CHANCE_BAND_MIN alone where n is unknown, e.g. a macro
    average over tasks).
Not predicted (from the verdicts, stats.regression):
  - "not predicted": its best spec (lowest AIC) predicts held-out sizes
    (leave-one-size-out RMSE, ``best_loso_rmse``) no better than
    PREDICTED_RATIO (0.9) x the RMSE of a per-model constant
    (``model_mean_rmse``: each model's own mean, an oracle that knows the
    held-out model's level). A behavior that is noise around a per-model level
    fails this; one that moves with ppl, size or tokens passes it. The 0.9
    keeps noise that happens to fit a little better than its own means out
    (calibrated in bench/bench_calibration.py --claims);
  - "no held-out prediction": the leave-one-size-out fit is not identified
    (one size, or a held-out size leaves a family with no model).

One vote per measure (:func:`measure_of`): derived or duplicate behaviors
are one underlying measure and vote once: a BIG-bench macro accuracy, its
length-normalized twin and its own tasks ("BIG-bench accuracy"); the correct
and incorrect option ppl; the hallucination gap and the two sets it is the
difference of; the token trend-class fractions (shares of one
classification); a recall-bigram position kind's loss and accuracy. Every
other behavior is its own measure. A measure votes "follows ppl" (1) when
most of its counted behaviors do, "does not" (0) when fewer than half do, and
half a vote on a tie; a measure none of whose behaviors is counted does not vote.
"""

from __future__ import annotations

import math

import polars as pl

MIN_DISTINCT = 4
MIN_TRIALS = 20
CHANCE_BAND_MIN = 0.02
PREDICTED_RATIO = 0.9
Z95 = 1.959963984540054

SCREEN_SCHEMA = {"behavior": pl.String, "measure": pl.String, "follows": pl.Boolean,
                 "reason": pl.String}


def _chance_top(chance: float, n: int | None) -> float:
    band = CHANCE_BAND_MIN if not n else max(CHANCE_BAND_MIN,
                                            Z95 * math.sqrt(chance * (1 - chance) / n))
    return chance + band


def degenerate(rows: pl.DataFrame) -> dict[str, str]:
    """behavior -> why it is degenerate (module docstring), for the behaviors of ``rows``."""
    if rows.is_empty():
        return {}
    fit = rows.filter(pl.col("tokens_seen") > 0)
    out = {}
    for (name,), sub in fit.group_by("behavior"):
        distinct = sub["value"].n_unique()
        trials = sub["n_trials"].drop_nulls() if "n_trials" in sub.columns else pl.Series([])
        chance = (sub["chance"].drop_nulls() if "chance" in sub.columns else pl.Series([]))
        if distinct == 1:
            out[name] = "constant"
        elif distinct < MIN_DISTINCT:
            out[name] = f"too few distinct values ({distinct} < {MIN_DISTINCT})"
        elif trials.len() and trials.min() < MIN_TRIALS:
            out[name] = f"too few examples ({trials.min()} < {MIN_TRIALS})"
        elif chance.len() == sub.height and all(
                v <= _chance_top(c, n) for v, c, n in zip(
                    sub["value"], sub["chance"],
                    sub["n_trials"] if "n_trials" in sub.columns else [None] * sub.height)):
            out[name] = f"at chance at every checkpoint (chance {chance.mean():.3g})"
    return out


# a behavior whose fit cannot say whether size adds at fixed ppl (too few sizes, e.g. a
# generated set with its generator models left out) cannot vote "ppl rather than size"
NO_SIZE_TEST = "no size test (whether size adds at fixed ppl is not identified)"


def not_predicted(verdict: dict) -> str | None:
    """Why one verdict row's behavior is not predicted, or None (module docstring)."""
    loso, const = verdict.get("best_loso_rmse"), verdict.get("model_mean_rmse")
    if loso is None:
        return "no held-out prediction (leave-one-size-out fit not identified)"
    if const is None or not loso < PREDICTED_RATIO * const:
        return (f"not predicted: best fit ({verdict['best_spec']}) held-out RMSE "
                f"{loso:.3g} vs {const if const is None else f'{const:.3g}'} for a per-model "
                f"constant (needs < {PREDICTED_RATIO:g} x)")
    return None


def _gap_sets(rows: pl.DataFrame) -> set[str]:
    gaps = rows.filter(pl.col("kind") == "hallucination_gap")["set"].drop_nulls().unique()
    return {part for s in gaps for part in s.split(" - ")}


def measure_of(rows: pl.DataFrame) -> dict[str, str]:
    """behavior -> its measure (module docstring); from the identity columns of ``rows``."""
    if rows.is_empty():
        return {}
    ident = rows.select("behavior", "evaluator", "kind", "task", "set").unique("behavior")
    gap_sets = _gap_sets(rows)
    out = {}
    for name, evaluator, kind, task, set_ in ident.iter_rows():
        if evaluator == "bigbench-mc" and kind in ("accuracy", "macro_accuracy",
                                                   "macro_accuracy_norm"):
            out[name] = "BIG-bench accuracy (macro, normalized, tasks)"
        elif evaluator == "bigbench-mc" and kind == "option_ppl":
            out[name] = "BIG-bench option ppl (correct, incorrect)"
        elif evaluator == "sequences" and (kind == "hallucination_gap"
                                           or (kind == "logprob" and set_ in gap_sets)):
            out[name] = "hallucination gap and its sets"
        elif evaluator == "token-loss" and kind == "trend_fraction":
            out[name] = "token trend classes"
        elif evaluator == "recall-bigram" and task is not None:
            out[name] = f"recall-bigram {task} (loss, accuracy)"
        else:
            out[name] = name
    return out


def screen(verdicts: pl.DataFrame, rows: pl.DataFrame, follows: pl.Expr) -> pl.DataFrame:
    """One row per verdict: behavior, measure, follows (rule (b)), reason (null: counted).

    ``rows``: the behavior table (may be empty: then no degeneracy check, and every
    behavior is its own measure).
    """
    bad = degenerate(rows.filter(pl.col("behavior").is_in(verdicts["behavior"].implode()))
                     if not rows.is_empty() else rows)
    measures = measure_of(rows)
    flagged = verdicts.with_columns(follows.alias("follows"))
    out = []
    for v in flagged.iter_rows(named=True):
        name = v["behavior"]
        reason = bad.get(name) or not_predicted(v)
        if reason is None and v["follows"] is None:  # size_adds untestable (null)
            reason = NO_SIZE_TEST
        out.append((name, measures.get(name, name), bool(v["follows"]), reason))
    return pl.DataFrame(out, orient="row", schema=SCREEN_SCHEMA)


def votes(screened: pl.DataFrame) -> pl.DataFrame:
    """One row per measure with a counted behavior: measure, n_behaviors, n_follow, vote."""
    counted = screened.filter(pl.col("reason").is_null())
    per = (counted.group_by("measure").agg(pl.len().alias("n_behaviors"),
                                           pl.col("follows").sum().alias("n_follow"))
           .sort("measure"))
    share = pl.col("n_follow") / pl.col("n_behaviors")
    return per.with_columns(pl.when(share > 0.5).then(1.0).when(share < 0.5).then(0.0)
                            .otherwise(0.5).alias("vote"))


def excluded_text(screened: pl.DataFrame, limit: int = 4) -> str:
    """"excluded N: constant 2 (a, b), not predicted 5 (c, d, e, f, ...)" (or "")."""
    bad = screened.filter(pl.col("reason").is_not_null()).with_columns(
        pl.col("reason").str.split(" (").list.first().str.split(":").list.first().alias("why"))
    if bad.is_empty():
        return ""
    parts = []
    for why, names in (bad.group_by("why").agg(pl.col("behavior").sort())
                       .sort("why").iter_rows()):
        names = [n.split(" | ")[0] for n in names]  # a generated set: its a, b
        shown = ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")
        parts.append(f"{why} {len(names)} ({shown})")
    return f"excluded {bad.height} of {screened.height} behaviors: " + "; ".join(parts)
