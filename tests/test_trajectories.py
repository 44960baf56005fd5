"""Token trajectory classes, fractions, token sets and cross-size overlap (synthetic data)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import statsmodels.api as sm
from scipy import stats as sps

from evals.schema import table_schema
from evals.store import Store
from stats import token_overlap, trajectories
from stats.perplexity import validation_ppl
from stats.trajectories import TrendOptions, classify_shape, classify_xia, xia_slopes

DELTA = 0.2


def token_loss_frame(models: dict[str, tuple[int, list[int], np.ndarray]],
                     family: str = "synth") -> pl.DataFrame:
    """A token-loss table from {model: (params, steps, loss (token, checkpoint))}."""
    parts = []
    for model, (params, steps, loss) in models.items():
        n = loss.shape[0]
        for c, step in enumerate(steps):
            parts.append(pl.DataFrame({
                "family": family, "model": model, "params": params, "step": step,
                "tokens_seen": step * 1000, "flops": 6.0 * params * step * 1000,
                "doc_id": np.arange(n) // 10, "token_index": np.arange(n) % 10,
                "token_id": np.arange(n) % 37, "loss_nats": loss[:, c]}))
    return pl.concat(parts).cast(dict(table_schema("token-loss")))


def shaped(kind: str, n: int, n_ckpt: int, rng: np.random.Generator) -> np.ndarray:
    """n loss trajectories of one shape: moves of 2-6 delta, noise below delta / 8."""
    t = np.linspace(0, 1, n_ckpt)
    amp = rng.uniform(2, 6, (n, 1)) * DELTA
    base = rng.uniform(2, 6, (n, 1))
    curves = {
        "decreasing": base - amp * t,
        "stagnant": base + 0 * t,
        "increasing": base + amp * t,
        "double-descent": base - amp * np.sin(3 * np.pi * t) * (t < 1) - amp * 2 * t,
        "other": base + amp * np.sin(np.pi * t),  # rises, then falls back
    }
    return curves[kind] + rng.uniform(-DELTA / 16, DELTA / 16, (n, n_ckpt))


def test_shape_rule_recovers_every_class():
    rng = np.random.default_rng(0)
    for kind in trajectories.SHAPE_CLASSES:
        loss = shaped(kind, 200, 12, rng)
        assert (classify_shape(loss, DELTA) == kind).all(), kind


@pytest.mark.parametrize("scale, expected", [(0.95, "stagnant"), (1.05, "decreasing")])
def test_shape_threshold_for_a_fall(scale, expected):
    loss = np.array([[3.0, 3.0 - DELTA * scale / 2, 3.0 - DELTA * scale]])
    assert classify_shape(loss, DELTA)[0] == expected


@pytest.mark.parametrize("rise, expected", [(0.95, "decreasing"), (1.05, "double-descent")])
def test_shape_threshold_for_the_middle_rise(rise, expected):
    loss = np.array([[4.0, 3.0, 3.0 + DELTA * rise, 2.0]])
    assert classify_shape(loss, DELTA)[0] == expected


@pytest.mark.parametrize("end, expected", [(0.95, "decreasing"), (1.05, "increasing")])
def test_shape_threshold_for_a_final_rise(end, expected):
    loss = np.array([[4.0, 3.0, 3.0 + DELTA * end]])
    assert classify_shape(loss, DELTA)[0] == expected


def test_xia_slopes_match_statsmodels_ols():
    rng = np.random.default_rng(1)
    steps = np.array([100, 200, 400, 800, 1600, 3200, 6400])
    loss = rng.normal(3, 0.1, (5, len(steps))) + rng.normal(0, 0.05, (5, 1)) * np.log(steps)
    slope, p = xia_slopes(loss, steps)
    x = sm.add_constant(np.log(steps))
    for i in range(5):
        y = np.exp(loss[i] - loss[i, 0])
        fit = sm.OLS(y, x).fit()
        assert abs(fit.params[1] - slope[i]) < 1e-9 and abs(fit.pvalues[1] - p[i]) < 1e-9


def _series_with_p(target_p: float, steps: np.ndarray, sign: float) -> np.ndarray:
    """A ppl series whose OLS slope on log(step) has exactly the p-value target_p."""
    x = np.log(steps)
    xc = x - x.mean()
    e = np.resize([3.0, -3.0, -3.0, 3.0], len(x))  # large: never in the stagnant band
    e = e - e.mean() - (e @ xc) / (xc @ xc) * xc  # orthogonal to 1 and x: b_hat = b exactly
    se = np.sqrt((e @ e) / (len(x) - 2) / (xc @ xc))
    b = sign * se * sps.t.isf(target_p / 2, len(x) - 2)
    return 40 + b * x + e


@pytest.mark.parametrize("p, sign, expected", [
    (0.049, 1, "increasing"), (0.051, 1, "unclassified"),
    (0.049, -1, "decreasing"), (0.051, -1, "unclassified")])
def test_xia_rule_either_side_of_alpha(p, sign, expected):
    steps = np.array([10, 20, 40, 80, 160, 320, 640, 1280])
    ppl = _series_with_p(p, steps, sign)
    assert abs(xia_slopes(np.log(ppl)[None], steps)[1][0] - p) < 1e-9
    gmean = np.exp(np.log(ppl).mean())
    assert abs(gmean / ppl[0] - 1) > 0.05 or abs(gmean / ppl[-1] - 1) > 0.05
    assert classify_xia(np.log(ppl)[None], steps, 0.05, 0.05)[0] == expected


@pytest.mark.parametrize("factor, expected", [(0.99, "stagnant"), (1.01, "unclassified")])
def test_xia_stagnant_band(factor, expected):
    steps = 2 ** np.arange(1, 9)  # log steps symmetric: a symmetric series has slope 0
    r = 0.95 ** (-1 / 0.75) * factor  # gmean / first = r ** (2/8 - 1) hits 0.95 at factor 1
    ppl = np.array([r, 1, 1, 1, 1, 1, 1, r])
    assert classify_xia(np.log(ppl)[None], steps, 0.05, 0.05)[0] == expected


@pytest.mark.parametrize("factor, expected", [(0.9, "stagnant"), (1.1, "unclassified")])
def test_xia_stagnant_variance(factor, expected):
    steps = 2 ** np.arange(1, 9)
    shape = np.array([1, 1.04, 0.96, 1.0, 1.0, 0.96, 1.04, 1])  # symmetric: slope 0
    scale = np.exp(np.log(shape).mean()) / shape.var()  # var(s * shape) = gmean at this s
    ppl = shape * scale * factor
    assert classify_xia(np.log(ppl)[None], steps, 0.05, 0.05)[0] == expected


def test_options_are_checked():
    with pytest.raises(ValueError, match="method 'ols' not allowed.*'shape', 'xia'"):
        TrendOptions(method="ols")
    with pytest.raises(ValueError, match="start_fraction"):
        TrendOptions(start_fraction=1.0)
    assert TrendOptions().start_fraction == 0.1 and TrendOptions(method="shape").start_fraction == 0
    with pytest.raises(ValueError, match="min_points"):
        TrendOptions(min_points=2)


def _mixed_model(rng, per_class=30, n_ckpt=10):
    loss = np.concatenate([shaped(k, per_class, n_ckpt, rng) for k in trajectories.SHAPE_CLASSES])
    return loss, [0, *[2 ** i for i in range(n_ckpt - 1)]]


def test_classify_tokens_and_fractions():
    rng = np.random.default_rng(2)
    loss, steps = _mixed_model(rng)
    frame = token_loss_frame({"m": (1000, steps, loss)})
    shape = TrendOptions(method="shape")
    labels = trajectories.classify_tokens(frame, shape)
    expected = np.repeat(trajectories.SHAPE_CLASSES, 30)
    assert labels["trend"].to_list() == expected.tolist()
    assert labels["n_checkpoints"].unique().to_list() == [len(steps)]
    fr = trajectories.class_fractions(frame, shape)
    assert fr["step"].unique().sort().to_list() == steps[2:]  # windows of >= 3 checkpoints
    sums = fr.group_by("step").agg(pl.col("fraction").sum())["fraction"]
    assert np.allclose(sums.to_numpy(), 1.0)
    last = fr.filter(pl.col("step") == steps[-1])
    assert np.allclose(last["fraction"].to_numpy(), 1 / 5)
    vp = validation_ppl(frame).select("step", "val_ppl")
    joined = last.join(vp, on="step")
    assert np.allclose(joined["val_ppl"], joined["val_ppl_right"])
    late = trajectories.classify_tokens(frame, TrendOptions(method="shape", start_fraction=0.2))
    assert late["first_step"].unique().to_list() == [64]  # first step >= 0.2 * 256
    with pytest.warns(UserWarning, match="holds 2 checkpoint"):
        assert trajectories.classify_tokens(frame, TrendOptions(start_fraction=0.5)).height == 0
    xia = trajectories.classify_tokens(frame)  # the paper's rule, window from 0.1 * 256
    assert xia["first_step"].unique().to_list() == [32]
    assert set(xia["trend"]) <= set(trajectories.XIA_CLASSES)
    # the paper's rule agrees with the shapes on monotone tokens
    assert (xia["trend"][:30] == "decreasing").all() and (xia["trend"][60:90] == "increasing").all()


def test_fractions_by_start_and_token_sets():
    rng = np.random.default_rng(3)
    loss, steps = _mixed_model(rng)
    frame = token_loss_frame({"small": (10, steps, loss), "big": (20, steps, loss - 0.5)})
    fbs = trajectories.fractions_by_start(frame, starts=(0.01, 0.1))
    assert set(fbs["trend"]) == set(trajectories.XIA_CLASSES)
    assert fbs.height == 2 * 2 * len(trajectories.XIA_CLASSES)
    sums = fbs.group_by("model", "start_fraction").agg(pl.col("fraction").sum())
    assert np.allclose(sums["fraction"].to_numpy(), 1.0)
    labels = trajectories.classify_tokens(frame, TrendOptions(method="shape"))
    sets = labels.filter((pl.col("model") == "small") & (pl.col("trend") == "increasing")).select(
        "doc_id", "token_index", pl.lit("small:increasing").alias("token_set"))
    tracked = trajectories.token_set_ppl(frame, sets)
    assert tracked.height == 2 * len(steps) and (tracked["n_tokens"] == 30).all()
    all_sets = trajectories.token_sets_by_trend(labels, "small")
    assert set(all_sets["token_set"]) == {"small:" + c for c in trajectories.SHAPE_CLASSES}
    with pytest.raises(KeyError, match="'tiny'.*'big', 'small'"):
        trajectories.token_sets_by_trend(labels, "tiny")
    row = tracked.filter((pl.col("model") == "big") & (pl.col("step") == steps[4]))
    assert abs(row["ppl"].item() - np.exp(loss[60:90, 4].astype(np.float32).mean() - 0.5)) < 1e-4


def _schedule_frame(steps: list[int], rng) -> pl.DataFrame:
    """Two models on a Pythia step schedule: falling, flat and rising tokens in log(step)."""
    x = np.log(np.maximum(steps, 1))[None, :]
    slopes = np.repeat([-0.3, 0.0, 0.3], 20)[:, None]
    loss = 3 + slopes * x + rng.normal(0, 0.01, (60, len(steps)))
    return token_loss_frame({"small": (10, steps, loss), "big": (20, steps, loss - 0.5)})


def test_xia_batch_schedule_classifies_every_window():
    """Issue 17: the shipped batch's steps give every window t = 0.1 .. 0.7 enough points."""
    import tomllib
    from pathlib import Path

    from dynamics.checkpoints import select_steps
    from dynamics.suites import pythia_steps

    batch = Path(__file__).resolve().parents[1] / "batches" / "xia2023-pythia.toml"
    steps = select_steps(pythia_steps(), tomllib.loads(batch.read_text())["steps"])
    assert 30 <= len(steps) <= 60
    fbs = trajectories.fractions_by_start(_schedule_frame(steps, np.random.default_rng(7)))
    assert fbs["reason"].is_null().all() and fbs["trend"].is_not_null().all()
    per = fbs.group_by("model", "start_fraction").agg(pl.len(), pl.col("n_checkpoints").first(),
                                                       pl.col("fraction").sum())
    assert per.height == 2 * 4 and (per["len"] == len(trajectories.XIA_CLASSES)).all()
    assert (per["n_checkpoints"] >= 9).all() and np.allclose(per["fraction"].to_numpy(), 1.0)
    for t in (0.1, 0.3, 0.5, 0.7):
        row = fbs.filter((pl.col("model") == "small") & (pl.col("start_fraction") == t))
        got = dict(zip(row["trend"], row["n_tokens"], strict=True))
        # the 20 falling and 20 rising tokens, plus a few flat ones significant by chance
        assert 20 <= got["decreasing"] <= 24 and 20 <= got["increasing"] <= 24, (t, got)


def test_short_windows_are_reported_not_dropped():
    """Issue 17: "log-spaced 20" leaves 1 checkpoint after 70% of training: a row says why."""
    from dynamics.checkpoints import select_steps
    from dynamics.suites import pythia_steps

    steps = select_steps(pythia_steps(), "log-spaced 20")
    frame = _schedule_frame(steps, np.random.default_rng(8))
    with pytest.warns(UserWarning, match="t = 0.7 holds 1 checkpoint"):
        fbs = trajectories.fractions_by_start(frame)
    bad = fbs.filter(pl.col("reason").is_not_null())
    assert sorted(bad["start_fraction"].unique().to_list()) == [0.3, 0.5, 0.7]
    assert bad.height == 2 * 3 and bad["trend"].is_null().all() and bad["fraction"].is_null().all()
    assert bad.filter(pl.col("start_fraction") == 0.7)["n_checkpoints"].to_list() == [1, 1]
    assert "fewer than min_points = 3" in bad["reason"][0]
    ok = fbs.filter(pl.col("reason").is_null())
    assert ok.height == 2 * len(trajectories.XIA_CLASSES)  # only t = 0.1 (steps 22000 ..)
    from reports.xia_charts import unclassified_window_notes

    (note,) = unclassified_window_notes(fbs)
    assert "small from t = 0.7 (1 checkpoints)" in note and "big from t = 0.3" in note
    assert unclassified_window_notes(ok) == []


def test_overlap_is_higher_at_matched_ppl_than_at_matched_step():
    """B passes the same stages as A at half the steps: same val ppl, same improving tokens."""
    rng = np.random.default_rng(4)
    groups, size, n_ckpt = 10, 20, 11
    g = np.repeat(np.arange(groups), size)
    drop = 2 + rng.uniform(0, 0.5, len(g))
    progress = np.arange(n_ckpt)  # group k's loss falls when progress reaches k + 1
    loss = 1 + rng.uniform(0, 1, (len(g), 1)) + drop[:, None] * (progress[None] < g[:, None] + 1)
    steps_a, steps_b = [10 * s for s in progress], [5 * s for s in progress]
    frame = token_loss_frame({"a": (100, steps_a, loss), "b": (400, steps_b, loss)})
    ov = token_overlap.improvement_overlap(frame, top_frac=size / len(g))
    summary = token_overlap.overlap_summary(ov)
    by = dict(zip(summary["match"], summary["jaccard"], strict=True))
    assert by["val_ppl"] == pytest.approx(1.0) and by["step"] < 0.2
    assert (ov["model_a"] == "a").all() and (ov["top_k"] == size).all()
    with pytest.raises(ValueError, match="top_frac"):
        token_overlap.improvement_overlap(frame, top_frac=1.5)


def test_behaviors_from_store(tmp_path):
    rng = np.random.default_rng(5)
    loss, steps = _mixed_model(rng, per_class=4, n_ckpt=5)
    frame = token_loss_frame({"m": (1000, steps, loss)})
    store = Store(tmp_path / "store")
    assert trajectories.behaviors(store) is None
    for _, part in frame.group_by("step"):
        store.write("token-loss", part.sort("doc_id", "token_index"))
    rows = trajectories.behaviors(store)
    assert rows.columns == ["family", "model", "params", "step", "tokens_seen", "flops",
                            "behavior", "evaluator", "kind", "task", "set", "value", "n_trials"]
    assert set(rows["behavior"]) == {"frac_" + c for c in trajectories.XIA_CLASSES}
    shape = trajectories.behaviors(store, TrendOptions(method="shape"))
    assert "frac_double_descent" in set(shape["behavior"])
    assert rows["n_trials"].is_null().all() and rows["value"].dtype == pl.Float64
