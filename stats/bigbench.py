"""BIG-bench multiple-choice accuracy, random baselines and option perplexity (polars only).

Input: the `bigbench-mc` table (keys + task, example_id, choice_index,
logprob_nats, n_tokens, is_target, target_score). Subtasks are stored as
"parent/subtask"; as in BIG-bench, a task's score is the mean over its subtasks.

Outputs:
- `task_accuracy`: keys + task, n_examples, accuracy, accuracy_norm,
  random_baseline, is_count (one row per checkpoint x top-level task). `accuracy` is
  BIG-bench's multiple_choice_grade: the target_score of the highest-scoring
  choice (partial credit where several choices score), by total log-prob;
  `accuracy_norm` picks by per-token log-prob. random_baseline = mean over
  examples of sum(target_scores) / number of choices. is_count is True when
  accuracy is a real proportion of successes, accuracy = n_correct / n_examples:
  one unit (no subtasks, whose means are averaged unweighted) and every grade 0
  or 1 (no partial credit). Only then does `behaviors` give n_trials, so a
  binomial likelihood sees real counts (issue 16); other task accuracies and the
  macro averages have n_trials null and are fitted as fractional responses
  (stats.inference). accuracy_norm is never given counts: its behaviors are
  the macro ones only.
- `macro_accuracy`: keys + n_tasks, accuracy, accuracy_norm, random_baseline
  (unweighted means over tasks).
- `option_ppl`: keys + option ("correct" | "incorrect"), n_tokens, option_ppl:
  exp(-sum log-prob / sum tokens) over all options of that kind, i.e. the
  token-weighted geometric mean over tasks of each task's option perplexity.
"""

from __future__ import annotations

import polars as pl

from evals.schema import KEY_COLUMNS

KEYS = list(KEY_COLUMNS)


def _top_task(col: str = "task") -> pl.Expr:
    return pl.col(col).str.split("/").list.first()


def example_grades(mc: pl.DataFrame) -> pl.DataFrame:
    """One row per example: grade by raw and by per-token log-prob, and its random baseline."""
    ex = KEYS + ["task", "example_id"]
    scored = mc.with_columns((pl.col("logprob_nats") / pl.col("n_tokens")).alias("lp_norm"))
    return scored.group_by(ex).agg(
        pl.col("target_score").sort_by("logprob_nats", descending=True).first().alias("grade"),
        pl.col("target_score").sort_by("lp_norm", descending=True).first().alias("grade_norm"),
        (pl.col("target_score").sum() / pl.len()).alias("random"),
    )


def task_accuracy(mc: pl.DataFrame) -> pl.DataFrame:
    """Accuracy per checkpoint x top-level task (subtasks averaged)."""
    grades = example_grades(mc)
    per_unit = grades.group_by(KEYS + ["task"]).agg(
        pl.len().alias("n_examples"),
        pl.col("grade").mean().alias("accuracy"),
        pl.col("grade_norm").mean().alias("accuracy_norm"),
        pl.col("random").mean().alias("random_baseline"),
        pl.col("grade").is_in([0.0, 1.0]).all().alias("graded_01"),
    )
    return (
        per_unit.with_columns(_top_task().alias("task"))
        .group_by(KEYS + ["task"])
        .agg(
            pl.col("n_examples").sum(),
            pl.col("accuracy").mean(),
            pl.col("accuracy_norm").mean(),
            pl.col("random_baseline").mean(),
            ((pl.len() == 1) & pl.col("graded_01").all()).alias("is_count"),
        )
        .sort(["family", "model", "step", "task"])
    )


def macro_accuracy(mc: pl.DataFrame) -> pl.DataFrame:
    """Unweighted mean over tasks per checkpoint."""
    return (
        task_accuracy(mc)
        .group_by(KEYS)
        .agg(
            pl.len().alias("n_tasks"),
            pl.col("accuracy").mean(),
            pl.col("accuracy_norm").mean(),
            pl.col("random_baseline").mean(),
        )
        .sort(["family", "model", "step"])
    )


def option_ppl(mc: pl.DataFrame) -> pl.DataFrame:
    """Perplexity of correct and of incorrect options per checkpoint (token-weighted)."""
    return (
        mc.with_columns(
            pl.when(pl.col("is_target")).then(pl.lit("correct")).otherwise(pl.lit("incorrect"))
            .alias("option")
        )
        .group_by(KEYS + ["option"])
        .agg(pl.col("n_tokens").sum(), pl.col("logprob_nats").sum().alias("lp"))
        .with_columns((-pl.col("lp") / pl.col("n_tokens")).exp().alias("option_ppl"))
        .drop("lp")
        .sort(["family", "model", "step", "option"])
    )


def behaviors(store) -> pl.DataFrame | None:
    """Behavior rows: per-task accuracy, macro accuracy, option ppl; chance = the
    accuracies' random baseline.

    n_trials = n_examples only where the task's accuracy is a real count
    proportion (``is_count``, module docstring); null otherwise.
    """
    from stats.behaviors import identity

    if "bigbench-mc" not in store.tables():
        return None
    mc = store.read("bigbench-mc")
    tasks = task_accuracy(mc)
    per_task = tasks.select(
        *KEYS,
        pl.concat_str(pl.lit("bigbench:"), pl.col("task")).alias("behavior"),
        *identity("bigbench-mc", "accuracy", pl.col("task")),
        pl.col("accuracy").cast(pl.Float64).alias("value"),
        pl.when(pl.col("is_count")).then(pl.col("n_examples")).otherwise(None)
        .cast(pl.Int64).alias("n_trials"),
        pl.col("random_baseline").cast(pl.Float64).alias("chance"),
    )
    macro = macro_accuracy(mc)
    macro_rows = [
        macro.select(*KEYS, pl.lit(name).alias("behavior"),
                     *identity("bigbench-mc", kind), pl.col(col).alias("value"),
                     pl.lit(None, dtype=pl.Int64).alias("n_trials"),
                     pl.col("random_baseline").cast(pl.Float64).alias("chance"))
        for name, kind, col in (("bigbench_macro", "macro_accuracy", "accuracy"),
                                ("bigbench_macro_norm", "macro_accuracy_norm", "accuracy_norm"))
    ]
    opt = option_ppl(mc).select(
        *KEYS,
        pl.concat_str(pl.lit("option_ppl_"), pl.col("option")).alias("behavior"),
        *identity("bigbench-mc", "option_ppl", set=pl.col("option")),
        pl.col("option_ppl").alias("value"),
        pl.lit(None, dtype=pl.Int64).alias("n_trials"),
        pl.lit(None, dtype=pl.Float64).alias("chance"),
    )
    return pl.concat([per_task, *macro_rows, opt], how="vertical")


EMA_MACRO = 0.5  # Xia et al.: EMA weight for the average over tasks
EMA_TASK = 0.8  # ... and for single tasks (noisier)


def smoothed_accuracy(accuracy: pl.DataFrame, weight: float | None = None) -> pl.DataFrame:
    """`macro_accuracy` or `task_accuracy` output with `accuracy_ema` and `accuracy_norm_ema`.

    The EMA (stats.smoothing.ema) runs over each model's checkpoints in step
    order, per task when the frame has a task column; `weight` defaults to the
    paper's: 0.8 per task, 0.5 for the macro average.
    """
    from stats.smoothing import ema

    by = ["family", "model"] + (["task"] if "task" in accuracy.columns else [])
    if weight is None:
        weight = EMA_TASK if "task" in accuracy.columns else EMA_MACRO
    out = ema(accuracy, "accuracy", weight, by=by)
    if "accuracy_norm" in out.columns:
        out = ema(out, "accuracy_norm", weight, by=by)
    return out.with_columns(pl.lit(weight).alias("ema_weight"))
