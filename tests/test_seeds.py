"""Issue 20: seeds recorded in the store and used as replicates at matched perplexity."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

from evals.store import Store
from stats.seeds import attach_seed_noise, pooled_seed_sd, seed_frame, seed_noise, with_seeds

KEYS = ("family", "model", "params", "step", "tokens_seen", "flops")


def simulate(family: str, groups: dict[str, int], n_seeds: int, sd: float, rng,
             shift: float = 0.0):
    """Runs whose behavior is 2 - 0.5 log ppl + shift + a per-run offset (the seed's effect).

    The offset is constant along a run, so at any matched ppl the values of one
    group's seeds differ by their offsets exactly (at_ppl is linear in log ppl).
    """
    rows, seeds, offsets = [], [], {}
    for group, params in groups.items():
        offsets[group] = rng.normal(0.0, sd, n_seeds)
        for k in range(n_seeds):
            model = f"{group}-seed{k}"
            seeds.append((model, group, k))
            scale = 1 + 0.05 * rng.standard_normal()  # seeds also differ in ppl
            for step in (0, 10, 100, 1000, 10_000):
                ppl = 80 * scale * (step + 1) ** -0.25
                value = 2 - 0.5 * math.log(ppl) + shift + offsets[group][k]
                rows.append((family, model, params, step, step * 1000, 6.0 * params * step,
                             "acc", value, ppl))
    frame = pl.DataFrame(rows, orient="row", schema=[
        *zip(KEYS, (pl.String, pl.String, pl.Int64, pl.Int64, pl.Int64, pl.Float64), strict=True),
        ("behavior", pl.String), ("value", pl.Float64), ("val_ppl", pl.Float64)])
    return frame, seeds, offsets


def test_seed_noise_recovers_the_spread_of_the_seed_offsets():
    rng = np.random.default_rng(0)
    rows, seeds, offsets = simulate("pythia", {"pythia-70m": 70, "pythia-160m": 160}, 6, 0.05,
                                    rng)
    seed_map = pl.DataFrame(seeds, orient="row", schema=["model", "seed_group", "seed"])
    noise = seed_noise(rows, seed_map, [20.0, 30.0])
    assert noise.height == 4 and set(noise["n_seeds"]) == {6}
    for g in ("pythia-70m", "pythia-160m"):
        got = noise.filter(pl.col("seed_group") == g)["seed_sd"].to_list()
        assert got == pytest.approx([np.std(offsets[g], ddof=1)] * 2, rel=1e-9)
        mean = noise.filter((pl.col("seed_group") == g) & (pl.col("ppl") == 20.0))["mean"][0]
        assert mean == pytest.approx(2 - 0.5 * math.log(20) + offsets[g].mean(), rel=1e-9)
    pooled = pooled_seed_sd(noise).filter(pl.col("ppl") == 20.0).row(0, named=True)
    want = math.sqrt((np.var(offsets["pythia-70m"], ddof=1)
                      + np.var(offsets["pythia-160m"], ddof=1)) / 2)
    assert pooled["seed_sd"] == pytest.approx(want, rel=1e-9)
    assert (pooled["seed_df"], pooled["n_groups"]) == (10, 2)


def test_pooled_seed_sd_docstring_example():
    noise = pl.DataFrame({"family": ["f", "f"], "seed_group": ["160m", "410m"],
                          "behavior": ["b", "b"], "ppl": [20.0, 20.0], "n_seeds": [3, 2],
                          "mean": [0.5, 0.63], "seed_sd": [0.04, math.sqrt(0.0018)]})
    row = pooled_seed_sd(noise).row(0, named=True)
    assert row["seed_sd"] == pytest.approx(0.0408, abs=1e-4) and row["seed_df"] == 3


def test_attach_seed_noise_beside_a_family_difference():
    rng = np.random.default_rng(1)
    a, seeds_a, off = simulate("pythia", {"pythia-160m": 160}, 5, 0.1, rng)
    b, _, _ = simulate("olmo", {"OLMo-1B-hf": 1000}, 1, 0.0, rng, shift=0.3)
    seed_map = pl.DataFrame(seeds_a, orient="row", schema=["model", "seed_group", "seed"])
    noise = seed_noise(pl.concat([a, b]), seed_map, [25.0])
    diffs = pl.DataFrame({"behavior": ["acc"], "ppl": [25.0], "family_a": ["pythia"],
                          "family_b": ["olmo"], "diff": [0.3]})
    out = attach_seed_noise(diffs, noise).row(0, named=True)
    assert out["seed_sd_a"] == pytest.approx(np.std(off["pythia-160m"], ddof=1), rel=1e-9)
    assert out["seed_df_a"] == 4
    assert out["seed_sd_b"] is None and out["seed_df_b"] is None  # OLMo has no seed runs


def test_with_seeds_fills_models_without_seed_runs():
    rows = pl.DataFrame({"model": ["pythia-160m-seed2", "OLMo-1B-hf"], "value": [1.0, 2.0]})
    seeds = pl.DataFrame({"model": ["pythia-160m-seed2"], "seed_group": ["pythia-160m"],
                          "seed": [2]})
    out = with_seeds(rows, seeds)
    assert out["seed_group"].to_list() == ["pythia-160m", "OLMo-1B-hf"]
    assert out["seed"].to_list() == [2, None]


def test_store_seeds_merge_and_read_back(tmp_path):
    store = Store(tmp_path)
    assert seed_frame(store).height == 0 and seed_frame(store).schema["seed"] == pl.Int64
    store.record_seeds({"a-seed1": {"group": "a", "seed": 1}})
    store.record_seeds({"a-seed2": {"group": "a", "seed": 2}})
    assert seed_frame(store).rows() == [("a-seed1", "a", 1), ("a-seed2", "a", 2)]


def test_a_run_records_the_suites_seed_runs(tmp_path):
    from evals.config import load_batch
    from evals.execute import execute

    (tmp_path / "val.jsonl").write_text(json.dumps({"text": "a b c"}) + "\n")
    cfg = load_batch({"suite": "crfm-gpt2+amber", "output": "out", "steps": "final",
                      "models": ["alias-gpt2-small-x21", "arwen-gpt2-medium-x21", "Amber"],
                      "evaluators": {"token-loss": {"dataset": "val.jsonl"}}}, tmp_path)
    execute(cfg, progress=False, evaluators=[])  # nothing to evaluate: no checkpoint is loaded
    recorded = json.loads((tmp_path / "out" / "seeds.json").read_text())
    assert recorded == {"alias-gpt2-small-x21": {"group": "gpt2-small", "seed": 21},
                        "arwen-gpt2-medium-x21": {"group": "gpt2-medium", "seed": 21}}


def test_seed_noise_beside_stats_families_differences():
    """Three PolyPythia-like sizes x 4 seeds vs three single-run sizes shifted by 0.3."""
    from stats.families import family_differences

    rng = np.random.default_rng(2)
    a, seeds_a, off = simulate("pythia", {"p-70m": 70, "p-160m": 160, "p-410m": 410}, 4, 0.05,
                               rng)
    b, _, _ = simulate("olmo", {"o-1b": 1000, "o-7b": 7000, "o-3b": 3000}, 1, 0.0, rng,
                       shift=0.3)
    rows = pl.concat([a, b])
    seed_map = pl.DataFrame(seeds_a, orient="row", schema=["model", "seed_group", "seed"])
    diffs = family_differences(rows, ["pythia", "olmo"], [25.0])
    out = attach_seed_noise(diffs, seed_noise(rows, seed_map, [25.0])).row(0, named=True)
    assert out["diff"] == pytest.approx(0.3 - np.mean([o.mean() for o in off.values()]), rel=1e-9)
    want = math.sqrt(np.mean([np.var(o, ddof=1) for o in off.values()]))
    assert out["seed_sd_a"] == pytest.approx(want, rel=1e-9) and out["seed_df_a"] == 9
    assert out["seed_sd_b"] is None


def test_seed_sd_is_the_equivalence_margin_where_the_suite_has_seeds():
    """Issue 27: "the families do not differ" is tested against the seed-to-seed SD at matched
    ppl (stats.equivalence); here one ppl, so the margin is pythia's pooled seed SD there."""
    from stats.families import compare

    rng = np.random.default_rng(2)
    a, seeds_a, off = simulate("pythia", {"p-70m": 70, "p-160m": 160, "p-410m": 410}, 4, 0.05,
                               rng)
    b, _, _ = simulate("olmo", {"o-1b": 1000, "o-7b": 7000, "o-3b": 3000}, 1, 0.0, rng,
                       shift=0.3)
    rows = pl.concat([a, b]).with_columns(pl.lit("acc").alias("kind"))
    seed_map = pl.DataFrame(seeds_a, orient="row", schema=["model", "seed_group", "seed"])
    got = compare(rows, ["pythia", "olmo"], [25.0], seeds=seed_map, margin=5.0)
    t = got.test.row(0, named=True)
    want = math.sqrt(np.mean([np.var(o, ddof=1) for o in off.values()]))
    assert t["margin_source"] == "seed sd" and t["margin"] == pytest.approx(want, rel=1e-9)
    assert t["outcome"] == "contradicted" and t["decision_low"] > want  # 0.3 >> seed noise
