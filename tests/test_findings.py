"""stats.findings: each claim's outcome rule on frames with a known truth (issues 19, 27)."""

from __future__ import annotations

import math

import polars as pl
import pytest

from stats import findings as fnd
from stats import hallucination
from stats.claims import xia
from stats.equivalence import equivalence_outcome, family_outcomes
from stats.outcomes import CONTRADICTED, INCONCLUSIVE, NOT_TESTABLE, SUPPORTED, ClaimInputs, outcome
from stats.summary import analyze, emergence_points

EMPTY = pl.DataFrame()


def one(key: str, **inputs) -> dict:
    """The single row of claim ``key`` from ClaimInputs fields."""
    inputs.setdefault("emergence", EMPTY)
    (row,) = fnd.evaluate(key, ClaimInputs(**inputs))
    return row

STEPS = (0, 1, 2, 4, 8, 16, 32)
TOKENS_PER_STEP = 1000


def rows_for(values: dict[tuple[str, int], list[float]], *, evaluator: str, kind: str,
             task: str | None = None, family: str = "fa", ppl=None) -> pl.DataFrame:
    """Behavior rows: one series per (model, params) over STEPS; val_ppl falls with step."""
    out = []
    for (model, params), series in values.items():
        for step, value in zip(STEPS, series, strict=True):
            tokens = step * TOKENS_PER_STEP
            out.append({"family": family, "model": model, "params": params, "step": step,
                        "tokens_seen": tokens, "flops": 6.0 * params * tokens,
                        "behavior": f"{kind}:{task}", "evaluator": evaluator, "kind": kind,
                        "task": task, "set": None, "value": float(value), "n_trials": None,
                        "val_ppl": ppl(step, params) if ppl else 100.0 / (1 + step)})
    return pl.DataFrame(out, schema_overrides={"task": pl.String, "set": pl.String,
                                               "n_trials": pl.Int64})


def jump_at(step: int) -> list[float]:
    """A head score that is 0.05 until `step` and 0.8 from it on."""
    return [0.8 if s >= step else 0.05 for s in STEPS]


def induction(jumps: dict[tuple[str, int], int]) -> list[dict]:
    rows = rows_for({m: jump_at(s) for m, s in jumps.items()}, evaluator="circuits",
                    kind="head_score", task="induction")
    return fnd.evaluate("a", ClaimInputs(rows, emergence_points(rows)))


# -- (a) --------------------------------------------------------------------------------


def test_induction_at_matched_tokens_is_supported_with_the_spacing_interval():
    (row,) = induction({("s", 10): 4, ("m", 30): 4, ("l", 90): 4})
    assert row["verdict"] == SUPPORTED
    assert row["value"] == 1.0
    # each emerged after step 2 (2000 tokens) and by step 4 (4000): ratio within [1, 2]
    assert row["ci_low"] == 1.0 and row["ci_high"] == pytest.approx(2.0)
    assert row["interval"] == "bounds from checkpoint spacing"
    assert "s: step 4" in row["detail"] and "l: step 4" in row["detail"]


def test_induction_spread_over_sizes_is_contradicted_and_coarse_spacing_inconclusive():
    (row,) = induction({("s", 10): 4, ("m", 30): 8, ("l", 90): 8})
    # after steps 2 and 4, by steps 4 and 8: the ratio 2 lies in [1, 4]: spacing cannot tell
    assert row["verdict"].startswith("inconclusive: the ratio lies in [1, 4]")
    (row,) = induction({("s", 10): 2, ("m", 30): 8, ("l", 90): 32})
    assert row["verdict"] == CONTRADICTED
    assert row["value"] == pytest.approx(32 / 2)
    # after steps 1 and 16, by steps 2 and 32: lower bound 16/2 = 8, upper 32/1
    assert row["ci_low"] == pytest.approx(8.0) and row["ci_high"] == pytest.approx(32.0)


def test_induction_without_head_scores_or_with_one_forming_model_is_not_testable():
    rows = rows_for({("s", 10): jump_at(4)}, evaluator="bigbench-mc", kind="accuracy", task="t")
    (row,) = fnd.evaluate("a", ClaimInputs(rows, emergence_points(rows)))
    assert row["verdict"].startswith("not testable: no induction head scores")
    (row,) = induction({("s", 10): 4})
    assert row["verdict"] == "not testable: the head forms in 1 model(s)"


def test_models_whose_head_does_not_form_are_left_out():
    # "s" only drifts from 0.06 to 0.09 (a random-init score, no head): half its final value
    # is met at initialisation, half its change is not; it must not count as emerging at all
    drift = [0.06, 0.06, 0.06, 0.07, 0.08, 0.09, 0.09]
    rows = pl.concat([rows_for({("s", 10): drift}, evaluator="circuits", kind="head_score",
                               task="induction"),
                      rows_for({("m", 30): jump_at(8), ("l", 90): jump_at(8)},
                               evaluator="circuits", kind="head_score", task="induction")])
    (row,) = fnd.evaluate("a", ClaimInputs(rows, emergence_points(rows)))
    assert row["verdict"] == SUPPORTED and row["value"] == 1.0
    assert "no head formed (final < 2 x initial or < 0.3): s (0.06 -> 0.09)" in row["detail"]
    assert "s: step" not in row["detail"]


def test_a_head_that_grows_but_stays_weak_is_not_formed():
    # "w" grows 6x, from 0.02 to 0.12: no induction head puts 12 % of its attention on the
    # target (the toy OPT models do this); only "m" and "l" form the head
    weak = [0.02, 0.02, 0.02, 0.05, 0.12, 0.12, 0.12]
    rows = pl.concat([rows_for({("w", 20): weak}, evaluator="circuits", kind="head_score",
                               task="induction"),
                      rows_for({("m", 30): jump_at(8), ("l", 90): jump_at(8)},
                               evaluator="circuits", kind="head_score", task="induction")])
    (row,) = fnd.evaluate("a", ClaimInputs(rows, emergence_points(rows)))
    assert row["verdict"] == SUPPORTED and row["value"] == 1.0
    assert "w (0.02 -> 0.12)" in row["detail"] and "w: step" not in row["detail"]


# -- (b) --------------------------------------------------------------------------------


def verdicts(specs: list[tuple[str, bool]], evidence: list[str] | None = None) -> pl.DataFrame:
    frame = pl.DataFrame({"behavior": [f"b{i}" for i in range(len(specs))],
                          "best_spec": [s for s, _ in specs], "size_adds": [a for _, a in specs],
                          "best_loso_rmse": 0.01, "model_mean_rmse": 0.1})  # all predicted
    return frame.with_columns(pl.Series("evidence", evidence)) if evidence else frame


def test_ppl_predicts_supported_when_a_clear_majority_follows_ppl():
    row = one("b", rows=EMPTY, verdicts=verdicts([("ppl", False)] * 8 + [("ppl_size", False)]
                                                 + [("flops", False)]))
    assert row["value"] == pytest.approx(0.9)
    assert row["interval"] == xia.WILSON_MEASURES.format(n=10)
    low, high = xia.wilson(9, 10)
    assert (row["ci_low"], row["ci_high"]) == (low, high)
    assert low == pytest.approx(0.5958, abs=1e-4) and high == pytest.approx(0.9821, abs=1e-4)
    assert row["verdict"] == SUPPORTED
    assert ("9 of 10 measures follow ppl (one vote per measure; 9 of 10 counted behaviors); "
            "best fit: ppl 8, flops 1, ppl_size 1") in row["detail"]


def test_ppl_predicts_contradicted_when_size_adds_or_size_wins_else_inconclusive():
    # best spec on ppl, but size adds at fixed ppl: does not follow ppl
    specs = [("ppl", True)] * 5 + [("size_tokens", False)] * 3 + [("ppl", False)] * 2
    row = one("b", rows=EMPTY, verdicts=verdicts(specs, evidence=["a"] * 6 + ["b"] * 4))
    assert row["value"] == pytest.approx(0.2)
    # 2 of 10: Wilson [0.057, 0.510] contains 0.5: not shown to be a minority
    assert row["ci_high"] == pytest.approx(0.5098, abs=1e-4)
    assert row["verdict"].startswith("inconclusive: the CI contains 0.5; with 10 measures")
    assert "evidence: a: 6, b: 4" in row["detail"]
    assert "size adds at fixed ppl: 5" in row["detail"]
    row = one("b", rows=EMPTY, verdicts=verdicts(specs + [("size", False)] * 4))  # 2 of 14
    assert row["ci_high"] < 0.5 and row["verdict"] == CONTRADICTED
    assert one("b", rows=EMPTY, verdicts=None)["verdict"] == "not testable: no fitted behaviors"


def test_share_mde_is_the_share_that_passes_with_80_percent_power():
    from scipy.stats import binom

    n = 10  # Wilson ci_low > 0.5 needs 9 of 10 (8 of 10 gives 0.490)
    assert xia.wilson(8, 10)[0] < 0.5 < xia.wilson(9, 10)[0]
    p = xia.share_mde(n)
    assert binom.sf(8, n, p) >= 0.8 > binom.sf(8, n, p - 0.002)
    assert xia.share_mde(3) is None  # 3 of 3: Wilson ci_low 0.44


# -- (c) --------------------------------------------------------------------------------


def gap_rows(sign: float) -> pl.DataFrame:
    """Gap = sign x step-rank: grows as ppl falls when sign > 0."""
    series = [sign * i for i in range(len(STEPS))]
    return rows_for({("s", 10): series, ("l", 90): [2 * v for v in series]},
                    evaluator="sequences", kind="hallucination_gap")


def test_gap_growing_as_ppl_falls_is_supported():
    row = one("c1", rows=gap_rows(+1.0))
    assert row["verdict"] == SUPPORTED and row["value"] == pytest.approx(-1.0)
    assert "s: rho -1 over 6 checkpoints" in row["detail"]  # step 0 left out
    assert row["interval"] == "95 % CI over 2 models (t)"
    assert "range over models [-1, -1]" in row["detail"]


def test_gap_shrinking_as_ppl_falls_is_contradicted():
    row = one("c1", rows=gap_rows(-1.0))
    assert row["verdict"] == CONTRADICTED and row["value"] == pytest.approx(1.0)


def test_gap_trend_ci_is_a_t_interval_over_models():
    # three models with rho -0.8, -0.4, +0.2: mean -1/3, sd 0.503, t(2) CI by hand
    import numpy as np

    mean, low, high, detect = xia._rho_ci(np.array([-0.8, -0.4, 0.2]))
    se = 0.503322 / np.sqrt(3)
    assert mean == pytest.approx(-1 / 3)
    assert -1 / 3 - 4.302653 * se < -1 and low == -1.0  # clipped to [-1, 1]
    assert high == pytest.approx(-1 / 3 + 4.302653 * se, abs=1e-5)
    assert low < 0 < high  # contains 0: inconclusive
    assert detect == pytest.approx((4.302653 + 1.060660) * se, abs=1e-5)
    # every model at rho -1: the CI is the point -1, not widened by a clipped Fisher z
    assert xia._rho_ci(np.array([-1.0, -1.0, -0.8]))[2] < 0


MIX = "mix a={a:g} b={b:g} | small: fa/{small}@step32 | large: fa/{large}@step32"


def generated(series: dict[tuple[str, int], list[float]], a=1.0, b=-1.0, small="gs",
              large="gl") -> pl.DataFrame:
    """generated_set_ppl rows of one set generated by models `small` and `large` of family fa."""
    rows = rows_for(series, evaluator="sequences", kind="x")
    name = MIX.format(a=a, b=b, small=small, large=large)
    return rows.select("family", "model", "params", "step", "tokens_seen",
                       pl.lit(name).alias("set"), pl.lit(a).alias("a"), pl.lit(b).alias("b"),
                       pl.col("value").alias("ppl")).with_columns(
        hallucination.generator_marks(pl.col("set")))


FALLS = [50, 40, 30, 25, 22, 21, 20]
DIPS = [50, 40, 30, 25, 20, 22, 26]  # lowest at step 8 (8 / 32 = 25 % of training), final x1.3


def test_larger_model_raising_the_generated_set_ppl_late_is_supported():
    row = one("c2", rows=EMPTY, generated=generated({("s", 10): FALLS, ("l", 90): DIPS}))
    assert row["verdict"] == SUPPORTED and row["value"] == pytest.approx(1.3)
    assert "l: x1.3 (lowest at step 8, 25% of training; final step 32)" in row["detail"]
    assert "generator" not in row["detail"]


def test_generated_set_ppl_that_keeps_falling_is_contradicted():
    row = one("c2", rows=EMPTY, generated=generated({("s", 10): FALLS, ("l", 90): FALLS}))
    assert row["verdict"] == CONTRADICTED and row["value"] == pytest.approx(1.0)
    both = one("c2", rows=EMPTY, generated=generated({("s", 10): DIPS, ("l", 90): DIPS}))
    assert both["verdict"].startswith("inconclusive: the smallest model rises as much")
    # the other (a, b) sets do not count
    other = one("c2", rows=EMPTY,
                generated=generated({("s", 10): FALLS, ("l", 90): FALLS}, a=-1, b=1))
    assert other["verdict"] == "not testable: no a=1, b=-1 generated set"


def test_generator_models_do_not_vote_on_their_own_set():
    # issue 34: the largest model generated the set (large) and rises x1.3 on it; the largest
    # model that did not generate it keeps falling: contradicted, decided on "m"
    models = {("g", 5): FALLS, ("s", 10): FALLS, ("m", 30): FALLS, ("l", 90): DIPS}
    row = one("c2", rows=EMPTY, generated=generated(models, small="g", large="l"))
    assert row["verdict"] == CONTRADICTED and row["value"] == pytest.approx(1.0)
    assert row["detail"].endswith("generator models, not counted: g (small), l (large)")
    assert "l: x" not in row["detail"] and "m: x1 (lowest at step 32" in row["detail"]
    # the same store with no generator recorded in the set name: "l" decides (old rule)
    unmarked = generated(models).with_columns(pl.lit(None, pl.String).alias("generator"))
    assert one("c2", rows=EMPTY, generated=unmarked)["verdict"] == SUPPORTED
    # with only the generators (or one other) left, there is nothing to decide on
    row = one("c2", rows=EMPTY, generated=generated(
        {("g", 5): FALLS, ("l", 90): DIPS}, small="g", large="l"))
    assert row["verdict"] == ("not testable: only the generator models (g (small), "
                              "l (large)) have scores of this set")
    row = one("c2", rows=EMPTY, generated=generated(
        {("g", 5): FALLS, ("s", 10): FALLS, ("l", 90): DIPS}, small="g", large="l"))
    assert row["verdict"].startswith("not testable: one model besides the generator models")
    row = one("c2", rows=EMPTY, generated=generated(models, small="m", large="m"))
    assert row["verdict"] == SUPPORTED and "m (small, large)" in row["detail"]


def test_a_rise_counts_only_when_late_and_after_a_fall():
    # Xia et al. finding 2 as a rule: the set ppl falls first, its lowest point lies after
    # 20 % of training (tokens), and the final ppl is >= 1.05 x the lowest
    early = [50, 40, 20, 22, 24, 25, 26]  # lowest at step 2: 2 / 32 = 6 % of training
    row = one("c2", rows=EMPTY, generated=generated({("s", 10): FALLS, ("l", 90): early}))
    assert row["verdict"] == ("inconclusive: the largest model rises x1.3 but its lowest point "
                              "is early (6% of training, < 20%): not a late rise")
    no_fall = [20, 20.5, 20.4, 20.2, 20.1, 24, 26]  # step 1 (first with tokens) barely above
    row = one("c2", rows=EMPTY, generated=generated({("s", 10): FALLS, ("l", 90): no_fall}))
    assert row["verdict"] == ("inconclusive: the largest model rises x1.29 but its set ppl did "
                              "not fall first (first / lowest x1.02 < 1.05)")
    assert xia.LATE_FRACTION == 0.2 and xia.RISE_MIN == 1.05


def test_each_generated_set_is_decided_on_its_own():
    models = {("g", 5): FALLS, ("s", 10): FALLS, ("m", 30): FALLS, ("l", 90): DIPS}
    one_set = generated(models, small="g", large="l")
    other = generated({**models, ("m", 30): DIPS}, small="x", large="y")  # no generator here
    rows = fnd.evaluate("c2", ClaimInputs(EMPTY, EMPTY, generated=pl.concat([one_set, other])))
    assert [outcome(r["verdict"]) for r in rows] == [CONTRADICTED, SUPPORTED]
    assert rows[0]["claim"].endswith("(" + MIX.format(a=1, b=-1, small="g", large="l") + ")")


# -- (d) --------------------------------------------------------------------------------


def order_rows(bigram_step: int, recall_step: int, kinds=("bigram_accuracy",
                                                          "recall_accuracy")) -> pl.DataFrame:
    models = (("s", 10), ("l", 90))
    parts = [rows_for({m: jump_at(step) for m in models}, evaluator="recall-bigram", kind=kind)
             for kind, step in zip(kinds, (bigram_step, recall_step), strict=True)]
    return pl.concat(parts)


def test_bigram_before_recall_is_supported():
    row = one("d", rows=order_rows(2, 8))
    assert row["verdict"] == SUPPORTED and row["value"] == 1.0
    assert "s: step 2 vs 8" in row["detail"]


def test_recall_before_bigram_is_contradicted_and_together_inconclusive():
    row = one("d", rows=order_rows(8, 2))
    assert row["verdict"] == CONTRADICTED and row["value"] == 0.0
    row = one("d", rows=order_rows(4, 4))
    assert row["verdict"] == ("inconclusive: bigram first in 0, recall first in 0, same "
                              "checkpoint in 2 of 2 models")


def test_a_recall_measure_that_does_not_move_gives_no_order():
    """Recall accuracy flat near 0 (a model that never learns recall) still crosses half of
    its tiny change somewhere: that is no learning step, and no order (was: 'recall first')."""
    rows = order_rows(8, 2)
    flat = pl.col("kind") == "recall_accuracy"
    rows = rows.with_columns(pl.when(flat).then(0.004 * pl.col("value")).otherwise(
        pl.col("value")).alias("value"))  # recall: 0 -> 0.004
    row = one("d", rows=rows)
    assert row["verdict"].startswith("inconclusive: no model where both measures move")
    assert "s: step 8 vs -" in row["detail"]


def test_learning_order_on_falling_losses_and_without_results():
    losses = order_rows(1, 16, ("bigram_loss", "recall_loss")).with_columns(
        (1.0 - pl.col("value")).alias("value"))  # losses fall where accuracies rise
    row = one("d", rows=losses)
    assert row["verdict"] == SUPPORTED and "step 1 vs 16" in row["detail"]
    none = one("d", rows=order_rows(1, 2).with_columns(pl.lit("x").alias("evaluator")))
    assert none["verdict"] == "not testable: no recall-bigram results"


def test_crossing_points_worked_example_both_directions_and_no_change():
    from stats.emergence import crossing_points

    falling = rows_for({("s", 10): [4.0, 3.5, 2.0, 1.0, 1.0, 1.0, 1.0]}, evaluator="e", kind="k")
    rising = falling.with_columns(pl.lit("up").alias("behavior"), -pl.col("value"))
    flat = falling.with_columns(pl.lit("flat").alias("behavior"), pl.lit(1.0).alias("value"))
    got = crossing_points(pl.concat([falling, rising, flat]))
    assert dict(zip(got["behavior"], got["step"])) == {"k:None": 2, "up": 2, "flat": None}
    assert dict(zip(got["behavior"], got["threshold"])) == {"k:None": 2.5, "up": -2.5,
                                                            "flat": 1.0}
    assert got.filter(pl.col("behavior") == "up")["tokens_seen"].to_list() == [2000]


# -- (e) --------------------------------------------------------------------------------


def family_test_frame(estimates, std_errs, n_models=(4, 4), scale="value") -> pl.DataFrame:
    """A stats.families.family_test frame: jackknife SEs, t on G - 1 = 7 df, p from them."""
    from scipy import stats as st

    df = sum(n_models) - 1
    p = [float(2 * st.t.sf(abs(e / s), df)) for e, s in zip(estimates, std_errs, strict=True)]
    return pl.DataFrame({"behavior": [f"b{i}" for i in range(len(estimates))],
                         "family_a": "fa", "family_b": "fb", "response": "ols", "scale": scale,
                         "estimate": [float(e) for e in estimates],
                         "std_err": [float(x) for x in std_errs], "ci_low": 0.0, "ci_high": 0.0,
                         "p_value": p, "n_models_a": n_models[0], "n_models_b": n_models[1],
                         "evidence": "cluster-jackknife CI (8 models)", "ppl_turns_up": None})


def two_family_rows() -> pl.DataFrame:
    return pl.DataFrame({"family": ["fa", "fb"], "behavior": ["b0", "b0"], "value": [0.0, 1.0]})


def test_equivalence_outcome_worked_example():
    # stats.equivalence docstring: 0.02 +- t(0.95, 7) x 0.01 = [0.001, 0.039] inside +-0.05
    got = equivalence_outcome(0.02, 0.01, 7, 0.05)
    assert (got["tost_low"], got["tost_high"]) == pytest.approx((0.00105, 0.03895), abs=1e-5)
    assert got["outcome"] == SUPPORTED
    # the same estimate with a margin of 0.03: the 90 % CI reaches past it, and 0 is inside
    # the 95 % CI (p = 0.085): inconclusive, with the detectable difference (t.975 + t.8) SE
    got = equivalence_outcome(0.02, 0.01, 7, 0.03)
    assert got["outcome"].startswith("inconclusive: 90 % CI [0.00105, 0.0389] not inside +-0.03")
    assert got["mde"] == pytest.approx((2.3646 + 0.8960) * 0.01, abs=1e-4)
    assert "could detect only differences >= 0.0326 at 80% power" in got["outcome"]
    # 0.05 +- 2.365 x 0.01 excludes 0 and the 90 % CI crosses the margin: contradicted
    assert equivalence_outcome(0.05, 0.01, 7, 0.03)["outcome"] == CONTRADICTED
    # Bonferroni over 10 behaviors: t(1 - 0.0025, 7) = 4.03: 0.035 / 0.01 no longer differs
    assert equivalence_outcome(0.035, 0.01, 7, 0.03)["outcome"] == CONTRADICTED
    assert outcome(equivalence_outcome(0.035, 0.01, 7, 0.03, m=10)["outcome"]) == INCONCLUSIVE


def test_families_supported_only_when_every_90_percent_ci_lies_inside_the_margin():
    test = family_outcomes(family_test_frame([0.01, -0.02, 0.0], [0.01, 0.01, 0.005]),
                           two_family_rows(), declared=0.05)
    row = one("e", rows=two_family_rows(), family_test=test)
    assert row["verdict"] == SUPPORTED and row["interval"] == "90 % CI (TOST vs +-margin)"
    # the deciding behavior is b1, whose CI comes closest to the margin: -0.02 +- 1.895 x 0.01
    assert row["value"] == -0.02 and row["margin"] == 0.05
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((-0.03895, -0.00105), abs=1e-5)
    assert -row["margin"] < row["ci_low"] and row["ci_high"] < row["margin"]
    assert "of 3 behaviors: 3 within their margin, 0 differ" in row["detail"]


def test_not_significant_is_not_no_difference():
    # issue 27: estimate 0.92, CI wide, nothing significant after Bonferroni: inconclusive
    test = family_outcomes(family_test_frame([0.92, 0.1], [0.4, 0.05]), two_family_rows(),
                           declared=0.2)
    row = one("e", rows=two_family_rows(), family_test=test)
    assert outcome(row["verdict"]) == INCONCLUSIVE
    assert "b0: 90 % CI [0.162, 1.68] vs +-0.2 (declared)" in row["verdict"]
    assert "could detect only differences >=" in row["verdict"]
    assert row["value"] == 0.92 and row["interval"] == "90 % CI (TOST vs +-margin)"


def test_families_contradicted_by_a_bonferroni_difference_and_not_testable_cases():
    test = family_outcomes(family_test_frame([0.5, 0.01, 0.0], [0.05, 0.01, 0.01]),
                           two_family_rows(), declared=0.05)
    row = one("e", rows=two_family_rows(), family_test=test)
    assert row["verdict"] == CONTRADICTED and row["value"] == 0.5
    assert row["interval"] == "98.33 % CI (Bonferroni, 3 behaviors)"
    from scipy import stats as st

    half = st.t.ppf(1 - 0.05 / 6, 7) * 0.05
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((0.5 - half, 0.5 + half))
    assert "contradicted: b0" in row["detail"]
    one_family = pl.DataFrame({"family": ["fa"], "behavior": ["b0"], "value": [0.0]})
    assert one("e", rows=one_family)["verdict"] == "not testable: one family"
    assert one("e", rows=two_family_rows())["verdict"] == "not testable: family test not computed"
    untested = family_test_frame([0.5], [0.05]).with_columns(
        pl.lit(None, pl.Float64).alias("p_value"), pl.lit("too few models (2)").alias("evidence"))
    got = one("e", rows=two_family_rows(), family_test=untested)
    assert got["verdict"] == "not testable: too few models (2)"


def test_margin_sources_seed_sd_then_declared_then_default_and_logit_units():
    from stats.equivalence import DEFAULT_MARGIN_SPREAD, behavior_margins

    rows = pl.DataFrame({"family": ["fa", "fb"] * 2, "behavior": ["b0"] * 2 + ["b1"] * 2,
                         "value": [0.2, 0.4, 0.6, 0.8]})
    test = family_test_frame([0.0, 0.0], [0.01, 0.01]).with_columns(
        pl.Series("scale", ["value", "logit"]))
    default = behavior_margins(test, rows)
    assert default["b0"] == (pytest.approx(DEFAULT_MARGIN_SPREAD * 0.141421, rel=1e-4),
                             "default")
    declared = behavior_margins(test, rows, declared=0.05)
    assert declared["b0"] == (0.05, "declared")
    assert declared["b1"] == (pytest.approx(0.05 / (0.7 * 0.3)), "declared")  # logit units
    seeds = pl.DataFrame({"behavior": ["b0", "b0"], "seed_sd_a": [0.03, None],
                          "seed_sd_b": [0.04, 0.05]})
    got = behavior_margins(test, rows, seeds, declared=0.05)
    assert got["b0"] == (pytest.approx(((0.03**2 + 0.04**2 + 0.05**2) / 3) ** 0.5), "seed sd")
    assert got["b1"][1] == "declared"
    with pytest.raises(ValueError, match="margin -1"):
        behavior_margins(test, rows, declared=-1)


# -- all together ---------------------------------------------------------------------------


def test_analyze_gives_one_finding_per_claim_and_a_summary_line_each():
    def ppl(step, params):
        return 100.0 / (1 + step) * (1 + 10 / params)

    heads = rows_for({("s", 10): jump_at(4), ("m", 30): jump_at(4), ("l", 90): jump_at(4)},
                     evaluator="circuits", kind="head_score", task="induction", ppl=ppl)
    loss = rows_for({("s", 10): [math.log(ppl(s, 10)) for s in STEPS],
                     ("m", 30): [math.log(ppl(s, 30)) for s in STEPS],
                     ("l", 90): [math.log(ppl(s, 90)) for s in STEPS]},
                    evaluator="token-loss", kind="val_loss", ppl=ppl)
    an = analyze(pl.concat([heads, loss]))
    table = an.findings
    assert table.columns == list(fnd.FINDINGS_SCHEMA)
    assert table["rule"].null_count() == 0
    assert table.height == 6  # (a) one head kind, (b), (c1), (c2), (d), (e)
    assert table["verdict"][0] == SUPPORTED
    assert set(an.emergence["kind"]) == {"head_score"}  # val_loss is not a rising kind
    assert "val_loss" not in set(an.fits.verdicts["behavior"])  # nor fitted
    text = fnd.summary_text(table)
    assert len(text.splitlines()) == 6
    assert text.splitlines()[0].startswith("- [supported] Induction heads")
    assert "[not testable: one family]" in text


def test_outcome_strips_the_reason_and_refuses_other_words():
    assert outcome("not testable: one family") == NOT_TESTABLE
    assert outcome("inconclusive: too few models") == INCONCLUSIVE
    assert outcome(CONTRADICTED) == CONTRADICTED
    assert outcome(SUPPORTED) == SUPPORTED
    with pytest.raises(ValueError, match="none of"):
        outcome("not supported by this run")
    with pytest.raises(ValueError, match="takes no reason"):
        outcome("supported: mostly")


def test_an_interval_needs_its_kind_and_every_claim_is_one_entry():
    with pytest.raises(ValueError, match="needs its kind"):
        fnd.CLAIMS[0].row(SUPPORTED, value=1.0, ci=(0.0, 2.0))
    assert [c.key for c in fnd.CLAIMS] == ["a", "b", "c1", "c2", "d", "e"]
    assert all(c.rule and c.statistic and c.citation for c in fnd.CLAIMS)
    with pytest.raises(KeyError, match="claims: "):
        fnd.claim("z")
