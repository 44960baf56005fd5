"""Each finding of a demo store against the data it is computed from (issue 19; slow).

The store is the demo batch run on the cached fast toy suite (the `toy_suite`
fixture); every statistic is recomputed here from the store's own tables by
a different route (numpy, scipy, plain loops) and compared with the finding.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy.stats import spearmanr

from evals.store import Store
from stats.claims import emergence as cem
from stats.claims import signal, xia
from stats.hallucination import pair_differences
from stats.outcomes import CONTRADICTED, INCONCLUSIVE, SUPPORTED, outcome
from stats.perplexity import validation_ppl
from stats.summary import analyze_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_store(toy_suite, tmp_path_factory):
    from dynamics import cli
    from evals.config import load_batch_file
    from evals.execute import run_batch

    out = tmp_path_factory.mktemp("demo")
    cfg = load_batch_file(cli._demo_batch(toy_suite, out))
    assert not run_batch(cfg, progress=False).failed
    return Store(cfg.output_dir)


@pytest.fixture(scope="module")
def analysis(demo_store):
    return analyze_store(demo_store)


def _finding(analysis, prefix: str) -> list[dict]:
    rows = [r for r in analysis.findings.iter_rows(named=True) if r["claim"].startswith(prefix)]
    assert rows, f"no finding starting with {prefix!r}"
    return rows


def test_induction_emergence_lies_where_the_head_score_crosses_the_threshold(demo_store,
                                                                               analysis):
    comps = demo_store.read("components")
    found = _finding(analysis, "Induction heads emerge")
    kinds = [r["claim"].rsplit("(", 1)[1].split()[0] for r in found]
    assert sorted(kinds) == ["induction", "trigger-induction"]
    for kind, row in zip(kinds, found, strict=True):
        tokens, formed = [], []
        for model in comps["model"].unique().sort():
            best = (comps.filter((pl.col("model") == model) & (pl.col("kind") == kind))
                    .group_by("step", "tokens_seen").agg(pl.col("score").max()).sort("step"))
            score, steps = best["score"].to_numpy(), best["step"].to_list()
            if score[-1] < max(cem.FORMED_RATIO * score[0], cem.FORMED_MIN):
                assert f"{model} (" in row["detail"]  # listed as not forming the head
                continue
            threshold = score[0] + 0.5 * (score[-1] - score[0])
            first = int(np.argmax(score >= threshold))  # the crossing, by another route
            assert first > 0 and (score[:first] < threshold).all()
            tokens.append(best["tokens_seen"][first])
            formed.append((model, steps[first]))
        if len(formed) < 2:  # no emergence steps are reported then
            assert row["verdict"] == f"not testable: the head forms in {len(formed)} model(s)"
            continue
        for model, step in formed:
            assert f"{model}: step {step}," in row["detail"]
        assert row["value"] == pytest.approx(max(tokens) / min(tokens))
        assert row["ci_low"] <= row["value"] and row["interval"] == cem.SPACING
        if row["verdict"] == SUPPORTED:
            assert row["ci_high"] is not None and row["ci_high"] <= cem.TOKEN_SPREAD_MAX
        if row["verdict"] == CONTRADICTED:
            assert row["ci_low"] > cem.TOKEN_SPREAD_MAX


def test_share_following_ppl_equals_the_count_in_the_verdict_table(analysis):
    (row,) = _finding(analysis, "Behaviors are predicted by perplexity")
    verdicts = analysis.fits.verdicts.to_dicts()
    assert len(verdicts) >= 10
    # issue 34: only behaviors that move and are predicted count, one vote per measure
    screened = signal.screen(analysis.fits.verdicts, analysis.behaviors, xia.follows_ppl())
    counted = {r["behavior"]: r["measure"] for r in screened.to_dicts() if r["reason"] is None}
    by_measure: dict[str, list[bool]] = {}
    for v in verdicts:
        if v["behavior"] in counted:
            follows = v["best_spec"] in ("ppl", "ppl_size") and not v["size_adds"]
            by_measure.setdefault(counted[v["behavior"]], []).append(follows)
    votes = [1.0 if np.mean(f) > 0.5 else 0.0 if np.mean(f) < 0.5 else 0.5
             for f in by_measure.values()]
    if not votes:
        assert row["verdict"].startswith("not testable: no behavior moves and is predicted")
        return
    assert row["value"] == pytest.approx(sum(votes) / len(votes))
    assert f"of {len(votes)} measures follow ppl" in row["detail"]
    assert row["ci_low"] <= row["value"] <= row["ci_high"]
    assert (row["verdict"] == SUPPORTED) == (row["ci_low"] > 0.5)
    assert (row["verdict"] == CONTRADICTED) == (row["ci_high"] < 0.5)


def test_hallucination_gap_trend_from_the_sequences_table(demo_store, analysis):
    (row,) = _finding(analysis, "The factual-minus-hallucinated gap")
    ppl = validation_ppl(demo_store.scan("token-loss"))
    gap = (pair_differences(demo_store.read("sequences")).filter(pl.col("tokens_seen") > 0)
           .group_by("model", "step").agg(pl.col("diff").mean())
           .join(ppl.select("model", "step", "val_ppl"), on=["model", "step"]))
    rhos = [spearmanr(g["val_ppl"], g["diff"]).statistic
            for _, g in gap.group_by("model")]
    from scipy import stats as st

    # the mean over models and its t CI (models are the units), by another route
    assert row["value"] == pytest.approx(float(np.mean(rhos)))
    half = st.t.ppf(0.975, len(rhos) - 1) * np.std(rhos, ddof=1) / np.sqrt(len(rhos))
    assert row["ci_low"] == pytest.approx(max(-1.0, np.mean(rhos) - half))
    assert row["ci_high"] == pytest.approx(min(1.0, np.mean(rhos) + half))
    assert row["interval"] == f"95 % CI over {len(rhos)} models (t)"
    assert f"range over models [{min(rhos):.3g}, {max(rhos):.3g}]" in row["detail"]
    assert (row["verdict"] == SUPPORTED) == (row["ci_high"] < 0)
    assert (row["verdict"] == CONTRADICTED) == (row["ci_low"] > 0)


def test_generated_set_rise_from_the_sequences_table(demo_store, analysis):
    (row,) = _finding(analysis, "Larger models raise the perplexity")
    seqs = demo_store.read("sequences").filter(pl.col("set").str.starts_with("mix a=1 b=-1 "))
    assert seqs.height, "the demo generates the a=1, b=-1 set"
    (name,) = seqs["set"].unique()
    # the generator checkpoints, by another route: "| small: <family>/<model>@step<N> |"
    parts = dict(p.split(": ", 1) for p in name.split(" | ")[1:])
    generators = {parts[r].rsplit("@", 1)[0].split("/", 1)[1] for r in ("small", "large")}
    rise = {}
    for (model, params), g in seqs.filter(pl.col("tokens_seen") > 0).group_by("model", "params"):
        if model in generators:
            continue
        per_step = g.group_by("step", "tokens_seen").agg(
            pl.col("logprob_nats").sum(), pl.col("n_tokens").sum()).sort("step")
        ppl = np.exp(-per_step["logprob_nats"].to_numpy() / per_step["n_tokens"].to_numpy())
        low = int(np.argmin(ppl))
        late = (ppl[0] / ppl[low] >= xia.RISE_MIN and ppl[-1] / ppl[low] >= xia.RISE_MIN
                and per_step["tokens_seen"][low] / per_step["tokens_seen"][-1]
                >= xia.LATE_FRACTION)
        rise[params] = (ppl[-1] / ppl[low], late)
    for model in generators:
        assert f"{model} (" in row["detail"] and f"{model}: x" not in row["detail"]
    if len(rise) < 2:
        assert row["verdict"].startswith("not testable")
        return
    sizes = sorted(rise)
    (big, big_late), (small, _) = rise[sizes[-1]], rise[sizes[0]]
    assert row["value"] == pytest.approx(big)
    assert (row["verdict"] == SUPPORTED) == (big_late and big > small)
    assert (row["verdict"] == CONTRADICTED) == (big < xia.RISE_MIN)


def test_learning_order_and_family_findings_say_what_the_store_lacks(demo_store, analysis):
    (order,) = _finding(analysis, "Bigram positions are learned")
    if "recall-bigram" not in demo_store.tables():
        assert order["verdict"] == "not testable: no recall-bigram results"
    else:
        assert outcome(order["verdict"]) in (SUPPORTED, CONTRADICTED, INCONCLUSIVE)
    (fam,) = _finding(analysis, "At matched perplexity")
    n_families = demo_store.read("token-loss")["family"].n_unique()
    if n_families == 1:
        assert fam["verdict"] == "not testable: one family"
    else:
        assert fam["verdict"] != "not testable: one family"
        assert_family_claim_matches_its_interval(fam, analysis.family_test)


def assert_family_claim_matches_its_interval(fam: dict, test: pl.DataFrame) -> None:
    """Issue 27: the outcome of "families do not differ" and the printed interval agree: a
    supported claim has its whole 90 % TOST interval inside +-margin (and so has every
    behavior), a contradicted one a Bonferroni interval that excludes 0, an inconclusive one a
    TOST interval that is not inside its margin."""
    word = outcome(fam["verdict"])
    if word == SUPPORTED:
        assert fam["interval"] == "90 % CI (TOST vs +-margin)"
        assert -fam["margin"] < fam["ci_low"] <= fam["value"] <= fam["ci_high"] < fam["margin"]
        tested = test.drop_nulls("tost_low")
        assert (tested["tost_low"] > -tested["margin"]).all()
        assert (tested["tost_high"] < tested["margin"]).all()
    elif word == CONTRADICTED:
        assert "Bonferroni" in fam["interval"]
        assert fam["ci_low"] > 0 or fam["ci_high"] < 0
    elif word == INCONCLUSIVE:
        assert fam["interval"] == "90 % CI (TOST vs +-margin)"
        assert not (-fam["margin"] < fam["ci_low"] and fam["ci_high"] < fam["margin"])
        assert "could detect only differences >=" in fam["verdict"]


def test_compare_verb_on_the_demo_store_prints_the_differences(demo_store, capsys):
    """Issue 16: `dynamics compare` on the demo store; each printed family mean is recomputed
    here: every model's (log val_ppl, value) over its monotone ppl envelope, np.interp at the
    matched ppl, averaged over the family's models."""
    from dynamics.cli import main
    from stats.behaviors import behavior_table

    rows = behavior_table(demo_store).rows
    fams = sorted(rows["family"].unique())
    assert len(fams) == 2
    name = "logprob_factual"
    assert main(["compare", str(demo_store.root), "--families", ",".join(fams),
                 "--behavior", name]) == 0
    out = capsys.readouterr().out
    table = out.split("Family at fixed ppl")[0]  # the differences, before the family test
    diff_rows = [ln.split() for ln in table.splitlines() if ln.startswith(name + " ")]
    diff_rows = [c for c in diff_rows if "-" not in (c[2], c[3])]  # "-": no model there
    assert len(diff_rows) >= 3  # the default matched-ppl grid has 5 points
    for cells in diff_rows:
        ppl, mean_a, mean_b, diff = (float(c) for c in cells[1:5])
        means = []
        for fam in fams:
            vals = []
            for model in rows.filter(pl.col("family") == fam)["model"].unique():
                sub = rows.filter((pl.col("model") == model) & (pl.col("behavior") == name)
                                  ).sort("step")
                x, y = np.log(sub["val_ppl"].to_numpy()), sub["value"].to_numpy()
                keep = np.array([x[i] < x[:i].min() if i else True for i in range(len(x))])
                xs, ys = x[keep][::-1], y[keep][::-1]
                if xs[0] - 1e-9 <= np.log(ppl) <= xs[-1] + 1e-9:
                    vals.append(np.interp(np.log(ppl), xs, ys))
            means.append(np.mean(vals))
        # printed with 3 decimals (ppl with 4 significant digits: a small interpolation shift)
        assert mean_a == pytest.approx(means[0], abs=2e-3 + 1e-3 * abs(means[0]))
        assert mean_b == pytest.approx(means[1], abs=2e-3 + 1e-3 * abs(means[1]))
        assert diff == pytest.approx(mean_b - mean_a, abs=2e-3)
