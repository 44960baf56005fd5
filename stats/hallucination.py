"""Factual vs hallucinated sequence likelihoods per checkpoint (Xia et al. 2023, section 2).

Input is the `sequences` table (keys + set, pair_id, logprob_nats, n_tokens).
A sequence's per-token log-prob is logprob_nats / n_tokens. The hallucination
gap of a checkpoint is the mean over pairs of

    per-token logprob(factual version) - per-token logprob(hallucinated version)

(positive: the model prefers the true statement), with a percentile bootstrap
CI over pairs. Worked example: pairs p1 (factual -2.0/4 tokens, hallucinated
-6.0/4) and p2 (-3.0/3, -3.0/2): differences -0.5 - -1.5 = 1.0 and
-1.0 - -1.5 = 0.5, gap = 0.75.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from evals.schema import KEY_COLUMNS

KEYS = list(KEY_COLUMNS)
# Generated (mixture) sets are named by evals.mixture: "mix a=1 b=-1 | small: ... | large: ...".
# This is the one place that reads that name; everything downstream uses the a, b columns.
MIX_PATTERN = r"^mix a=(-?[0-9.e+]+) b=(-?[0-9.e+]+)"
# ... and the two checkpoints it was decoded from: "| small: <family>/<model>@step<N> |"
GENERATOR_PATTERN = r"\| {role}: (.+?)@step-?[0-9]+(?: \||$)"
GENERATOR_ROLES = ("small", "large")
GENERATED = "generated"  # the task of a generated set's behavior rows (identity columns)


def _per_token(frame: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    lazy = frame.lazy() if isinstance(frame, pl.DataFrame) else frame
    return lazy.with_columns(
        (pl.col("logprob_nats") / pl.col("n_tokens")).alias("logprob_per_token"))


def set_logprobs(sequences: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Per checkpoint and set: mean per-token logprob over sequences, and the set's ppl.

    Returns keys + set, n_sequences, n_tokens, logprob_per_token (mean over
    sequences of logprob_nats / n_tokens), ppl (token-weighted:
    exp(-sum logprob_nats / sum n_tokens), the paper's set perplexity).
    """
    return (
        _per_token(sequences)
        .group_by([*KEYS, "set"])
        .agg(
            pl.len().alias("n_sequences"),
            pl.col("n_tokens").sum().alias("n_tokens"),
            pl.col("logprob_per_token").mean().alias("logprob_per_token"),
            (-pl.col("logprob_nats").sum() / pl.col("n_tokens").sum()).exp().alias("ppl"),
        )
        .sort("family", "model", "step", "set")
        .collect()
    )


def mixture_weights(set_name: pl.Expr) -> list[pl.Expr]:
    """Columns a, b (Float64) of a generated set parsed from its name; null for labeled sets.

    Example: "mix a=1 b=-1 | small: toy/s@step9" -> a = 1.0, b = -1.0; "factual" -> null, null.
    """
    return [set_name.str.extract(MIX_PATTERN, i).cast(pl.Float64).alias(name)
            for i, name in ((1, "a"), (2, "b"))]


def generator_marks(set_name: pl.Expr) -> list[pl.Expr]:
    """Which models generated a set, from its name (evals.mixture records both checkpoints).

    Columns generator_small, generator_large ("<family>/<model>" of the two
    checkpoints the set was decoded from; null when the name records none) and
    generator: the role of the row's own model (family/model) in making the set:
    "small", "large", "small, large" (one model both), "no", or null when the
    name records no generators. A generator model's trajectory on its own set is
    partly built in (the set is, by construction, text its checkpoint likes or
    dislikes), so claims decide on the other models and charts mark these.

    Example: set "mix a=1 b=-1 | small: toy/toy-s@step300 | large: toy/toy-l@step300";
    the row of model toy-l in family toy gets generator "large", toy-m gets "no".
    """
    own = pl.concat_str(pl.col("family"), pl.lit("/"), pl.col("model"))
    small, large = (set_name.str.extract(GENERATOR_PATTERN.format(role=r), 1)
                    for r in GENERATOR_ROLES)
    role = (pl.when(small.is_null() & large.is_null()).then(None)
            .when((small == own) & (large == own)).then(pl.lit("small, large"))
            .when(small == own).then(pl.lit("small"))
            .when(large == own).then(pl.lit("large"))
            .otherwise(pl.lit("no")))
    return [small.alias("generator_small"), large.alias("generator_large"),
            role.alias("generator")]


def is_generator() -> pl.Expr:
    """True where the row's model generated the row's set (:func:`generator_marks` columns)."""
    return pl.col("generator").is_not_null() & (pl.col("generator") != "no")


def generated_set_ppl(sequences: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """:func:`set_logprobs` of the generated (mixture) sets only, with their a, b columns
    and which models generated each set (:func:`generator_marks`).

    Returns keys + set, a, b, generator_small, generator_large, generator, n_sequences,
    n_tokens, logprob_per_token, ppl; empty (same columns) when no set name is a mixture name.
    """
    rows = set_logprobs(sequences)
    return (rows.with_columns(*mixture_weights(pl.col("set")))
            .filter(pl.col("a").is_not_null())
            .with_columns(generator_marks(pl.col("set")))
            .select(*KEYS, "set", "a", "b", "generator_small", "generator_large", "generator",
                    "n_sequences", "n_tokens", "logprob_per_token", "ppl"))


def bootstrap_mean_ci(values: np.ndarray, n_boot: int, level: float,
                      rng: np.random.Generator) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of `values` (resampling its entries)."""
    if len(values) < 2:
        return float("nan"), float("nan")
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    means = values[idx].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def pair_differences(sequences: pl.DataFrame | pl.LazyFrame, factual: str = "factual",
                     hallucinated: str = "hallucinated") -> pl.DataFrame:
    """Keys + pair_id + diff (per-token logprob factual minus hallucinated), one row per pair.

    Raises KeyError naming the missing set and the sets present.
    """
    per = _per_token(sequences).select(*KEYS, "set", "pair_id", "logprob_per_token").collect()
    present = sorted(per["set"].unique())
    for name in (factual, hallucinated):
        if name not in present:
            raise KeyError(f"set {name!r} not in the sequences table; sets present: {present}")
    f = per.filter(pl.col("set") == factual).drop("set").rename({"logprob_per_token": "f"})
    h = per.filter(pl.col("set") == hallucinated).drop("set").rename({"logprob_per_token": "h"})
    return (f.join(h, on=[*KEYS, "pair_id"], how="inner")
            .select(*KEYS, "pair_id", (pl.col("f") - pl.col("h")).alias("diff"))
            .sort(*KEYS, "pair_id"))


def hallucination_gap(sequences: pl.DataFrame | pl.LazyFrame, *, factual: str = "factual",
                      hallucinated: str = "hallucinated", n_boot: int = 1000,
                      level: float = 0.95, seed: int = 0) -> pl.DataFrame:
    """The hallucination gap per checkpoint with a seeded bootstrap CI over pairs.

    Args:
        sequences: the `sequences` table (any number of checkpoints).
        factual, hallucinated: the two set names compared.
        n_boot: bootstrap resamples of the pairs.
        level: CI level (0.95 -> the 2.5% and 97.5% quantiles).
        seed: every checkpoint uses a fresh generator with this seed (reproducible,
            and independent of which other checkpoints are in the frame).

    Returns:
        keys + n_pairs, gap, ci_low, ci_high (CI is NaN with fewer than 2 pairs).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    diffs = pair_differences(sequences, factual, hallucinated)
    rows = []
    for key, group in diffs.group_by(KEYS, maintain_order=True):
        d = group["diff"].to_numpy()
        low, high = bootstrap_mean_ci(d, n_boot, level, np.random.default_rng(seed))
        rows.append((*key, len(d), float(d.mean()), low, high))
    schema = {**{c: diffs.schema[c] for c in KEYS}, "n_pairs": pl.Int64, "gap": pl.Float64,
              "ci_low": pl.Float64, "ci_high": pl.Float64}
    return pl.DataFrame(rows, schema=schema, orient="row").sort("family", "model", "step")


def behaviors(store, *, factual: str = "factual",
              hallucinated: str = "hallucinated") -> pl.DataFrame | None:
    """Behavior rows (keys, behavior, value, n_trials) from a store's `sequences` table.

    Behaviors: `logprob_<set>` (mean per-token logprob of each set; generated
    mixture sets get task "generated", labeled sets task null) and, when both
    sets exist, `hallucination_gap`. n_trials is null (not accuracies). A
    generated set's rows leave out the models that generated it
    (:func:`generator_marks`): they do not vote on their own set in any fit or claim.
    Returns None when the store has no `sequences` table.
    """
    from stats.behaviors import identity

    if "sequences" not in store.tables():
        return None
    seqs = store.read("sequences")
    per_set = set_logprobs(seqs).with_columns(generator_marks(pl.col("set"))).filter(
        ~is_generator()).select(
        *KEYS, pl.concat_str(pl.lit("logprob_"), pl.col("set")).alias("behavior"),
        *identity("sequences", "logprob", task=pl.when(mixture_weights(pl.col("set"))[0]
                                                       .is_not_null()).then(pl.lit(GENERATED)),
                  set=pl.col("set")),
        pl.col("logprob_per_token").alias("value"))
    parts = [per_set]
    if {factual, hallucinated} <= set(seqs["set"].unique()):
        gap = hallucination_gap(seqs, factual=factual, hallucinated=hallucinated, n_boot=1)
        parts.append(gap.select(*KEYS, pl.lit("hallucination_gap").alias("behavior"),
                                *identity("sequences", "hallucination_gap",
                                          set=f"{factual} - {hallucinated}"),
                                pl.col("gap").alias("value")))
    return (pl.concat(parts)
            .with_columns(pl.col("value").cast(pl.Float64),
                          pl.lit(None, pl.Int64).alias("n_trials"))
            .sort("family", "model", "step", "behavior"))
