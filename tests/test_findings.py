"""stats.findings: each claim's verdict rule on synthetic frames whose truth is known (issue 19)."""

from __future__ import annotations

import math

import polars as pl
import pytest

from stats import findings as fnd
from stats.summary import analyze, emergence_points

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
    return fnd.induction_emergence(emergence_points(rows), rows)


# -- (a) --------------------------------------------------------------------------------


def test_induction_at_matched_tokens_is_supported_with_the_spacing_interval():
    (row,) = induction({("s", 10): 4, ("m", 30): 4, ("l", 90): 4})
    assert row["verdict"] == fnd.SUPPORTED
    assert row["value"] == 1.0
    # each emerged after step 2 (2000 tokens) and by step 4 (4000): ratio within [1, 2]
    assert row["ci_low"] == 1.0 and row["ci_high"] == pytest.approx(2.0)
    assert "s: step 4" in row["detail"] and "l: step 4" in row["detail"]


def test_induction_spread_over_sizes_is_not_supported():
    (row,) = induction({("s", 10): 2, ("m", 30): 8, ("l", 90): 32})
    assert row["verdict"] == fnd.NOT_SUPPORTED
    assert row["value"] == pytest.approx(32 / 2)
    # after steps 1 and 16, by steps 2 and 32: lower bound 16/2 = 8, upper 32/1
    assert row["ci_low"] == pytest.approx(8.0) and row["ci_high"] == pytest.approx(32.0)


def test_induction_without_head_scores_or_with_one_forming_model_is_not_testable():
    rows = rows_for({("s", 10): jump_at(4)}, evaluator="bigbench-mc", kind="accuracy", task="t")
    (row,) = fnd.induction_emergence(emergence_points(rows), rows)
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
    (row,) = fnd.induction_emergence(emergence_points(rows), rows)
    assert row["verdict"] == fnd.SUPPORTED and row["value"] == 1.0
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
    (row,) = fnd.induction_emergence(emergence_points(rows), rows)
    assert row["verdict"] == fnd.SUPPORTED and row["value"] == 1.0
    assert "w (0.02 -> 0.12)" in row["detail"] and "w: step" not in row["detail"]


# -- (b) --------------------------------------------------------------------------------


def verdicts(specs: list[tuple[str, bool]], evidence: list[str] | None = None) -> pl.DataFrame:
    frame = pl.DataFrame({"behavior": [f"b{i}" for i in range(len(specs))],
                          "best_spec": [s for s, _ in specs], "size_adds": [a for _, a in specs]})
    return frame.with_columns(pl.Series("evidence", evidence)) if evidence else frame


def test_ppl_predicts_supported_when_a_clear_majority_follows_ppl():
    row = fnd.ppl_predicts(verdicts([("ppl", False)] * 8 + [("ppl_size", False)]
                                    + [("flops", False)]))
    assert row["value"] == pytest.approx(0.9)
    low, high = fnd.wilson(9, 10)
    assert (row["ci_low"], row["ci_high"]) == (low, high)
    assert low == pytest.approx(0.5958, abs=1e-4) and high == pytest.approx(0.9821, abs=1e-4)
    assert row["verdict"] == fnd.SUPPORTED
    assert "9 of 10 behaviors follow ppl; best fit: ppl 8, flops 1, ppl_size 1" in row["detail"]


def test_ppl_predicts_not_supported_when_size_adds_or_size_wins():
    # best spec on ppl, but size adds at fixed ppl: does not follow ppl
    row = fnd.ppl_predicts(verdicts([("ppl", True)] * 5 + [("size_tokens", False)] * 3
                                    + [("ppl", False)] * 2, evidence=["a"] * 6 + ["b"] * 4))
    assert row["value"] == pytest.approx(0.2)
    assert row["verdict"] == fnd.NOT_SUPPORTED
    assert "evidence: a: 6, b: 4" in row["detail"]
    assert "size adds at fixed ppl: 5" in row["detail"]
    assert fnd.ppl_predicts(None)["verdict"] == "not testable: no fitted behaviors"


# -- (c) --------------------------------------------------------------------------------


def gap_rows(sign: float) -> pl.DataFrame:
    """Gap = sign x step-rank: grows as ppl falls when sign > 0."""
    series = [sign * i for i in range(len(STEPS))]
    return rows_for({("s", 10): series, ("l", 90): [2 * v for v in series]},
                    evaluator="sequences", kind="hallucination_gap")


def test_gap_growing_as_ppl_falls_is_supported():
    row = fnd.hallucination_gap_trend(gap_rows(+1.0))
    assert row["verdict"] == fnd.SUPPORTED and row["value"] == pytest.approx(-1.0)
    assert "s: rho -1 over 6 checkpoints" in row["detail"]  # step 0 left out


def test_gap_shrinking_as_ppl_falls_is_not_supported():
    row = fnd.hallucination_gap_trend(gap_rows(-1.0))
    assert row["verdict"] == fnd.NOT_SUPPORTED and row["value"] == pytest.approx(1.0)


def generated(series: dict[tuple[str, int], list[float]], a=1.0, b=-1.0) -> pl.DataFrame:
    rows = rows_for(series, evaluator="sequences", kind="x")
    return rows.select("family", "model", "params", "step", "tokens_seen", pl.lit(a).alias("a"),
                       pl.lit(b).alias("b"), pl.col("value").alias("ppl"))


def test_larger_model_raising_the_generated_set_ppl_late_is_supported():
    falls = [50, 40, 30, 25, 22, 21, 20]
    dips = [50, 40, 30, 25, 20, 22, 26]  # lowest at step 8, final 26: x1.3
    row = fnd.generated_set_rise(generated({("s", 10): falls, ("l", 90): dips}))
    assert row["verdict"] == fnd.SUPPORTED and row["value"] == pytest.approx(1.3)
    assert "l: x1.3 (lowest at step 8, final step 32)" in row["detail"]


def test_generated_set_ppl_that_keeps_falling_is_not_supported():
    falls = [50, 40, 30, 25, 22, 21, 20]
    row = fnd.generated_set_rise(generated({("s", 10): falls, ("l", 90): falls}))
    assert row["verdict"] == fnd.NOT_SUPPORTED and row["value"] == pytest.approx(1.0)
    # the other (a, b) sets do not count
    other = fnd.generated_set_rise(generated({("s", 10): falls, ("l", 90): falls}, a=-1, b=1))
    assert other["verdict"] == "not testable: no a=1, b=-1 generated set"


# -- (d) --------------------------------------------------------------------------------


def order_rows(bigram_step: int, recall_step: int, kinds=("bigram_accuracy",
                                                          "recall_accuracy")) -> pl.DataFrame:
    models = (("s", 10), ("l", 90))
    parts = [rows_for({m: jump_at(step) for m in models}, evaluator="recall-bigram", kind=kind)
             for kind, step in zip(kinds, (bigram_step, recall_step), strict=True)]
    return pl.concat(parts)


def test_bigram_before_recall_is_supported():
    row = fnd.learning_order(order_rows(2, 8))
    assert row["verdict"] == fnd.SUPPORTED and row["value"] == 1.0
    assert "s: step 2 vs 8" in row["detail"]


def test_recall_before_bigram_is_not_supported():
    row = fnd.learning_order(order_rows(8, 2))
    assert row["verdict"] == fnd.NOT_SUPPORTED and row["value"] == 0.0


def test_learning_order_on_falling_losses_and_without_results():
    losses = order_rows(1, 16, ("bigram_loss", "recall_loss")).with_columns(
        (1.0 - pl.col("value")).alias("value"))  # losses fall where accuracies rise
    row = fnd.learning_order(losses)
    assert row["verdict"] == fnd.SUPPORTED and "step 1 vs 16" in row["detail"]
    none = fnd.learning_order(order_rows(1, 2).with_columns(pl.lit("x").alias("evaluator")))
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


def diffs(p_values: list[float] | None, cis: list[tuple[float, float]]) -> pl.DataFrame:
    frame = pl.DataFrame({"behavior": [f"b{i}" for i in range(len(cis))],
                          "ppl": [20.0] * len(cis), "family_a": "fa", "family_b": "fb",
                          "diff": [(lo + hi) / 2.0 for lo, hi in cis],
                          "ci_low": [float(lo) for lo, _ in cis],
                          "ci_high": [float(hi) for _, hi in cis]})
    return frame.with_columns(pl.Series("p_value", p_values)) if p_values else frame


def test_families_that_match_are_supported_and_a_difference_is_not():
    same = fnd.families_match(diffs([0.4, 0.9, 0.02], [(-1, 1), (-0.5, 0.7), (-0.1, 2)]), 2)
    assert same["verdict"] == fnd.SUPPORTED and same["value"] == 0  # 0.02 > 0.05 / 3
    assert (same["ci_low"], same["ci_high"]) == (-0.1, 2)  # the largest |diff| row
    differ = fnd.families_match(diffs([0.4, 0.9, 0.001], [(-1, 1), (-0.5, 0.7), (1, 3)]), 2)
    assert differ["verdict"] == fnd.NOT_SUPPORTED and differ["value"] == 1
    assert "differing: b2" in differ["detail"]


def test_families_with_cis_only_and_without_a_frame():
    cis = [(-1.0, 1.0)] * 19 + [(0.5, 1.5)]  # 1 of 20 excludes 0: what 95 % CIs give by chance
    assert fnd.families_match(diffs(None, cis), 2)["verdict"] == fnd.SUPPORTED
    cis = [(-1.0, 1.0)] * 18 + [(0.5, 1.5)] * 2
    assert fnd.families_match(diffs(None, cis), 2)["verdict"] == fnd.NOT_SUPPORTED
    assert fnd.families_match(None, 1)["verdict"] == "not testable: one family"
    assert (fnd.families_match(None, 2)["verdict"]
            == "not testable: family differences not computed")


def test_families_decided_by_the_family_test_with_bonferroni():
    test = pl.DataFrame({"behavior": ["b0", "b1", "b2"], "p_value": [0.5, 0.02, 0.001],
                         "estimate": [0.1, 0.3, 1.5], "ci_low": [-1.0, 0.1, 1.2],
                         "ci_high": [1.2, 0.5, 1.8], "scale": "value", "family_a": "fa",
                         "family_b": "fb", "evidence": ["jackknife"] * 3})
    got = fnd.families_match(diffs(None, [(-1, 1), (-0.5, 0.7), (1, 3)]), 2, test)
    # 0.02 > 0.05 / 3 is not a difference after Bonferroni; 0.001 is
    assert got["verdict"] == fnd.NOT_SUPPORTED and "1 of 3 behaviors differ" in got["detail"]
    assert ": b2;" in got["detail"] and "fb - fa = 2" in got["detail"]  # largest at matched ppl
    # the statistic: the smallest-p behavior's family term with its CI
    assert (got["value"], got["ci_low"], got["ci_high"]) == (1.5, 1.2, 1.8)
    none = fnd.families_match(None, 2, test.with_columns(pl.lit(0.3).alias("p_value")))
    assert none["verdict"] == fnd.SUPPORTED and "0 of 3 behaviors differ" in none["detail"]
    untested = test.with_columns(pl.lit(None, pl.Float64).alias("p_value"),
                                 pl.lit("too few models (2)").alias("evidence"))
    assert fnd.families_match(None, 2, untested)["verdict"] == "not testable: too few models (2)"


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
    assert table.height == 6  # (a) one head kind, (b), (c1), (c2), (d), (e)
    assert table["verdict"][0] == fnd.SUPPORTED
    assert set(an.emergence["kind"]) == {"head_score"}  # val_loss is not a rising kind
    assert "val_loss" not in set(an.fits.verdicts["behavior"])  # nor fitted
    text = fnd.summary_text(table)
    assert len(text.splitlines()) == 6
    assert text.splitlines()[0].startswith("- [supported] Induction heads")
    assert "[not testable: one family]" in text


def test_outcome_strips_the_reason_and_refuses_other_words():
    assert fnd.outcome("not testable: one family") == fnd.NOT_TESTABLE
    assert fnd.outcome(fnd.NOT_SUPPORTED) == fnd.NOT_SUPPORTED
    assert fnd.outcome(fnd.SUPPORTED) == fnd.SUPPORTED
    with pytest.raises(ValueError, match="none of"):
        fnd.outcome("maybe")
