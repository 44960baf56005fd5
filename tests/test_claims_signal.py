"""Claim (b) counts only evidence that carries signal (issue 34): small constructed stores
with a known answer for each rule of stats.claims.signal, and the generated-set rows."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from stats import findings as fnd
from stats import hallucination
from stats.claims import signal, xia
from stats.outcomes import CONTRADICTED, ClaimInputs

STEPS = (0, 1, 2, 4, 8, 16, 32)
MODELS = (("s", 10), ("m", 30), ("l", 90))
RISING = [0.30, 0.40, 0.50, 0.60, 0.70, 0.80, 0.90]


def rows_for(name: str, series: list[float], *, evaluator: str = "user", kind: str | None = None,
             task: str | None = None, set_: str | None = None, n_trials: int | None = None,
             chance: float | None = None) -> pl.DataFrame:
    """Behavior rows of one behavior: the same series for every model of MODELS over STEPS."""
    out = [{"family": "fa", "model": m, "params": p, "step": s, "tokens_seen": s * 1000,
            "flops": 6.0 * p * s * 1000, "behavior": name, "evaluator": evaluator,
            "kind": kind or name, "task": task, "set": set_, "value": float(v),
            "n_trials": n_trials, "chance": chance, "val_ppl": 100.0 / (1 + s)}
           for m, p in MODELS for s, v in zip(STEPS, series, strict=True)]
    return pl.DataFrame(out, schema_overrides={"task": pl.String, "set": pl.String,
                                               "n_trials": pl.Int64, "chance": pl.Float64})


def verdicts(spec: dict[str, str], unpredicted: tuple[str, ...] = ()) -> pl.DataFrame:
    """Verdict rows: behavior -> best_spec (size adds nothing); `unpredicted` ones predict held-out
    sizes no better than a per-model constant (held-out RMSE 0.1 = the constant's)."""
    names = list(spec)
    return pl.DataFrame({"behavior": names, "best_spec": [spec[n] for n in names],
                         "size_adds": False,
                         "best_loso_rmse": [0.1 if n in unpredicted else 0.01 for n in names],
                         "model_mean_rmse": 0.1})


def claim_b(rows: pl.DataFrame, verdict_frame: pl.DataFrame) -> dict:
    (row,) = fnd.evaluate("b", ClaimInputs(rows, pl.DataFrame(), verdict_frame))
    return row


def degenerate_store() -> tuple[pl.DataFrame, pl.DataFrame]:
    """Six behaviors that move (size_tokens fits best: they do not follow ppl) and six that
    follow ppl by their fits but carry no signal, one per exclusion rule."""
    good = [rows_for(f"good{i}", [v + 0.01 * i for v in RISING]) for i in range(6)]
    bad = [
        rows_for("constant", [0.5] * 7),
        rows_for("three_values", [0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.3]),
        rows_for("ten_examples", RISING, n_trials=10),
        # 100 examples, chance 0.25: band top 0.25 + 1.96 sqrt(0.25 0.75 / 100) = 0.3349
        rows_for("at_chance", [0.25, 0.20, 0.33, 0.22, 0.30, 0.334, 0.27], n_trials=100,
                 chance=0.25),
        # a macro average (n unknown): band top chance + 0.02; below chance counts too
        rows_for("below_chance", [0.20, 0.19, 0.21, 0.18, 0.22, 0.26, 0.17], chance=0.25),
        rows_for("noise", [0.5, 0.52, 0.49, 0.51, 0.47, 0.53, 0.5]),
    ]
    rows = pl.concat(good + bad)
    spec = {**{f"good{i}": "size_tokens" for i in range(6)},
            **{r["behavior"][0]: "ppl" for r in bad}}
    return rows, verdicts(spec, unpredicted=("noise",))


def test_behaviors_without_signal_leave_the_share_with_their_reason():
    rows, v = degenerate_store()
    row = claim_b(rows, v)
    # counted: the six that move, none follows ppl: 0 of 6, Wilson [0, 0.390]: contradicted
    # (counting the six without signal would give 6 of 12, [0.25, 0.75]: inconclusive)
    assert row["value"] == 0.0 and row["verdict"] == CONTRADICTED
    assert row["ci_high"] == pytest.approx(xia.wilson(0, 6)[1]) and row["ci_high"] < 0.5
    assert ("excluded 6 of 12 behaviors: at chance at every checkpoint 2 (at_chance, "
            "below_chance); constant 1 (constant); not predicted 1 (noise); too few distinct "
            "values 1 (three_values); too few examples 1 (ten_examples)") in row["detail"]
    got = signal.degenerate(rows)
    assert got == {"constant": "constant", "three_values": "too few distinct values (3 < 4)",
                   "ten_examples": "too few examples (10 < 20)",
                   "at_chance": "at chance at every checkpoint (chance 0.25)",
                   "below_chance": "at chance at every checkpoint (chance 0.25)"}


def test_the_chance_band_is_binomial_with_a_floor():
    # 0.335 is just above 0.25 + 1.96 sqrt(0.25 x 0.75 / 100) = 0.33487: it left chance once
    above = rows_for("a", [0.25, 0.20, 0.33, 0.22, 0.30, 0.335, 0.27], n_trials=100, chance=0.25)
    assert signal.degenerate(above) == {}
    assert signal._chance_top(0.25, 100) == pytest.approx(0.25 + 1.959964 * math.sqrt(
        0.25 * 0.75 / 100))
    assert signal._chance_top(0.25, 100_000) == pytest.approx(0.27)  # the floor
    assert signal._chance_top(0.25, None) == pytest.approx(0.27)


def test_all_behaviors_excluded_is_not_testable():
    rows = rows_for("constant", [0.5] * 7)
    row = claim_b(rows, verdicts({"constant": "ppl"}))
    assert row["verdict"] == ("not testable: no behavior moves and is predicted (1 fitted, all "
                              "excluded)")
    assert "excluded 1 of 1 behaviors: constant 1 (constant)" in row["detail"]


def measure_store() -> tuple[pl.DataFrame, pl.DataFrame]:
    """BIG-bench macro, its normalized twin and two of its tasks, the hallucination gap and its
    two sets (all follow ppl: 7 behaviors, 2 measures) and three other behaviors (do not)."""
    def up(i):
        return [v + 0.013 * i for v in RISING]

    parts = [rows_for("bigbench_macro", up(0), evaluator="bigbench-mc", kind="macro_accuracy"),
             rows_for("bigbench_macro_norm", up(1), evaluator="bigbench-mc",
                      kind="macro_accuracy_norm"),
             rows_for("bigbench:t1", up(2), evaluator="bigbench-mc", kind="accuracy", task="t1"),
             rows_for("bigbench:t2", up(3), evaluator="bigbench-mc", kind="accuracy", task="t2"),
             rows_for("hallucination_gap", up(4), evaluator="sequences",
                      kind="hallucination_gap", set_="factual - hallucinated"),
             rows_for("logprob_factual", up(5), evaluator="sequences", kind="logprob",
                      set_="factual"),
             rows_for("logprob_hallucinated", up(6), evaluator="sequences", kind="logprob",
                      set_="hallucinated"),
             *(rows_for(f"other{i}", up(7 + i)) for i in range(3))]
    rows = pl.concat(parts)
    names = rows["behavior"].unique(maintain_order=True).to_list()
    return rows, verdicts({n: "size_tokens" if n.startswith("other") else "ppl" for n in names})


def test_derived_behaviors_vote_once_per_measure():
    rows, v = measure_store()
    row = claim_b(rows, v)
    # 5 measures: BIG-bench accuracy (4 behaviors) and the gap with its sets (3) follow ppl,
    # the three others do not: 2 of 5 (per behavior it would be 7 of 10)
    assert row["value"] == pytest.approx(0.4)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(xia.wilson(2, 5))
    assert row["interval"] == xia.WILSON_MEASURES.format(n=5)
    assert ("2 of 5 measures follow ppl (one vote per measure; 7 of 10 counted behaviors)"
            in row["detail"])
    assert ("grouped: BIG-bench accuracy (macro, normalized, tasks) (4 behaviors), "
            "hallucination gap and its sets (3 behaviors)") in row["detail"]


def test_a_behavior_without_a_size_test_leaves_the_share():
    """size_adds is null where size cannot be tested at fixed ppl (e.g. a generated set's
    rows with its generator models left out): a ppl fit then says neither "follows ppl
    rather than size" nor "does not"; a non-ppl best fit still does not follow."""
    rows, v = measure_store()
    v = v.with_columns(pl.when(pl.col("behavior").is_in(["bigbench:t1", "other0"])).then(None)
                       .otherwise(pl.col("size_adds")).alias("size_adds"))
    screened = signal.screen(v, rows, xia.follows_ppl())
    reason = dict(zip(screened["behavior"], screened["reason"]))
    assert reason["bigbench:t1"] == signal.NO_SIZE_TEST  # best fit ppl, size untested
    assert reason["other0"] is None  # best fit size_tokens: does not follow, counted
    got = dict(zip(*signal.votes(screened).select("measure", "n_behaviors")))
    assert got["BIG-bench accuracy (macro, normalized, tasks)"] == 3


def test_a_measure_split_evenly_casts_half_a_vote():
    rows, v = measure_store()
    v = v.with_columns(pl.when(pl.col("behavior").is_in(["bigbench:t1", "bigbench:t2"]))
                       .then(pl.lit("flops")).otherwise(pl.col("best_spec")).alias("best_spec"))
    per = signal.votes(signal.screen(v, rows, xia.follows_ppl()))
    got = dict(zip(per["measure"], per["vote"]))
    assert got["BIG-bench accuracy (macro, normalized, tasks)"] == 0.5  # 2 of 4 follow
    assert got["hallucination gap and its sets"] == 1.0 and got["other0"] == 0.0
    assert claim_b(rows, v)["value"] == pytest.approx(1.5 / 5)


def test_noise_is_not_predicted_and_ppl_driven_behaviors_are():
    from stats.simulate_claims import behavior_mix

    inp = behavior_mix(np.random.default_rng(34), counts={"ppl": 3, "noise": 3})
    screened = signal.screen(inp.verdicts, inp.rows, xia.follows_ppl()).sort("behavior")
    reasons = dict(zip(screened["behavior"], screened["reason"]))
    assert all(reasons[f"ppl{i}"] is None for i in range(3)), reasons
    assert all(reasons[f"noise{i}"].startswith("not predicted: best fit") for i in range(3))
    v = inp.verdicts.sort("behavior")
    assert (v["best_loso_rmse"] < signal.PREDICTED_RATIO * v["model_mean_rmse"]).to_list() == [
        False] * 3 + [True] * 3


def test_verdicts_carry_the_held_out_error_and_the_per_model_constant_error():
    from stats.regression import fit_behaviors
    from stats.simulate import simulate_suite

    rows = simulate_suite(np.random.default_rng(0), n_sizes=3)
    fits = fit_behaviors(rows, mixed=False)
    v = fits.verdicts.row(0, named=True)
    best = fits.fits.filter(pl.col("model_spec") == v["best_spec"])["loso_rmse"][0]
    assert v["best_loso_rmse"] == pytest.approx(best)
    fitted = rows.filter(pl.col("tokens_seen") > 0).to_pandas()
    resid = fitted.value - fitted.groupby("model").value.transform("mean")
    assert v["model_mean_rmse"] == pytest.approx(float(np.sqrt((resid ** 2).mean())))


class _Store:
    def __init__(self, sequences: pl.DataFrame):
        self.sequences = sequences

    def tables(self):
        return ["sequences"]

    def read(self, name):
        return self.sequences


def test_generated_set_behavior_rows_leave_out_its_generator_models():
    name = "mix a=1 b=-1 | small: fa/s@step32 | large: fa/l@step32"
    seqs = pl.DataFrame([{"family": "fa", "model": m, "params": p, "step": s,
                          "tokens_seen": s * 1000, "flops": 6.0 * p * s * 1000, "set": set_,
                          "pair_id": "0", "logprob_nats": -10.0, "n_tokens": 5}
                         for m, p in MODELS for s in STEPS for set_ in (name, "factual")])
    rows = hallucination.behaviors(_Store(seqs))
    gen = rows.filter(pl.col("task") == hallucination.GENERATED)
    assert set(gen["model"]) == {"m"}  # s and l generated it
    assert set(rows.filter(pl.col("set") == "factual")["model"]) == {"s", "m", "l"}
