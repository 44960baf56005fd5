"""Seeds as replicates: how much a behavior varies across seeds at matched perplexity.

Suites with seed runs (PolyPythia, CRFM GPT-2; dynamics.suites_open) record
`model -> {group, seed}` in the store (`seeds.json`, evals.store.Store.seeds):
`group` is the configuration the seeds replicate ("pythia-160m"). Seeds of one
group differ only by the seed, so at one validation perplexity the spread of a
behavior across them is seed noise; a difference between families smaller
than that is not evidence of a family effect.

:func:`seed_frame(store)` -> model, seed_group, seed.

:func:`with_seeds(rows, seeds)` -> the behavior rows plus seed_group (String;
the model itself for a model without seed runs) and seed (Int64, null there).

:func:`seed_noise(rows, seeds, ppls, behavior=None)` -> one row per (family,
seed_group, behavior, ppl) with at least two seeds: n_seeds, mean, seed_sd
(sample SD, ddof = 1, of the seeds' values interpolated at that ppl by
stats.matched.at_ppl; seeds whose ppl range does not reach it are left out).

:func:`pooled_seed_sd(noise)` -> one row per (family, behavior, ppl):
seed_sd = sqrt(sum (n_g - 1) s_g^2 / sum (n_g - 1)) over the family's groups
(the pooled within-group SD), seed_df = sum (n_g - 1), n_groups.

:func:`attach_seed_noise(diffs, noise)` adds seed_sd_a, seed_df_a, seed_sd_b,
seed_df_b (null where a family has no seed runs at that ppl) to a frame with
behavior, ppl, family_a, family_b (stats.families.family_differences).

Example: groups 160m with seeds valued 0.50, 0.54, 0.46 (s = 0.04, 2 df) and
410m with 0.60, 0.66 (s = 0.0424, 1 df) at ppl 20: pooled seed_sd =
sqrt((2 * 0.0016 + 1 * 0.0018) / 3) = 0.0408 with seed_df 3.
"""

from __future__ import annotations

import polars as pl

from stats.matched import at_ppl

SEED_SCHEMA = {"model": pl.String, "seed_group": pl.String, "seed": pl.Int64}
NOISE_KEYS = ["family", "seed_group", "behavior", "ppl"]


def seed_frame(store) -> pl.DataFrame:
    """The store's seed runs as a frame (empty, with the schema, when it has none)."""
    rows = [(m, v["group"], int(v["seed"])) for m, v in sorted(store.seeds().items())]
    return pl.DataFrame(rows, orient="row", schema=SEED_SCHEMA)


def with_seeds(rows: pl.DataFrame, seeds: pl.DataFrame) -> pl.DataFrame:
    """Behavior rows + seed_group and seed (module docstring)."""
    out = rows.join(seeds.select(list(SEED_SCHEMA)).cast(SEED_SCHEMA), on="model", how="left")
    return out.with_columns(pl.coalesce("seed_group", "model").alias("seed_group"))


def seed_noise(rows: pl.DataFrame, seeds: pl.DataFrame, ppls: list[float],
               behavior: str | None = None) -> pl.DataFrame:
    """Spread across seeds of one group at matched ppl (module docstring)."""
    sub = rows.filter(pl.col("model").is_in(seeds["model"].to_list()))
    if behavior is not None:
        sub = sub.filter(pl.col("behavior") == behavior)
    interp = with_seeds(at_ppl(sub, list(ppls)).drop_nulls("value"), seeds)
    return (interp.group_by(NOISE_KEYS)
            .agg(pl.len().cast(pl.Int64).alias("n_seeds"), pl.col("value").mean().alias("mean"),
                 pl.col("value").std(ddof=1).alias("seed_sd"))
            .filter(pl.col("n_seeds") >= 2).sort(NOISE_KEYS))


def pooled_seed_sd(noise: pl.DataFrame) -> pl.DataFrame:
    """Pooled within-group seed SD per (family, behavior, ppl) (module docstring)."""
    df = pl.col("n_seeds") - 1
    return (noise.group_by(["family", "behavior", "ppl"])
            .agg(((df * pl.col("seed_sd") ** 2).sum() / df.sum()).sqrt().alias("seed_sd"),
                 df.sum().cast(pl.Int64).alias("seed_df"),
                 pl.len().cast(pl.Int64).alias("n_groups"))
            .sort("family", "behavior", "ppl"))


def attach_seed_noise(diffs: pl.DataFrame, noise: pl.DataFrame) -> pl.DataFrame:
    """diffs + seed_sd_a, seed_df_a, seed_sd_b, seed_df_b (module docstring)."""
    pooled = pooled_seed_sd(noise).select("family", "behavior", "ppl", "seed_sd", "seed_df")
    out = diffs
    for side in ("a", "b"):
        named = pooled.rename({"family": f"family_{side}", "seed_sd": f"seed_sd_{side}",
                               "seed_df": f"seed_df_{side}"})
        out = out.join(named, on=[f"family_{side}", "behavior", "ppl"], how="left")
    return out
