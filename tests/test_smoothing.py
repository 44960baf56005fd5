"""EMA smoothing of BIG-bench accuracy (Xia et al.: weight 0.5 macro, 0.8 per task), by hand."""

from __future__ import annotations

import polars as pl
import pytest

from stats.bigbench import EMA_MACRO, EMA_TASK, smoothed_accuracy
from stats.smoothing import ema


def _hand(xs: list[float], w: float) -> list[float]:
    out = [xs[0]]
    for x in xs[1:]:
        out.append(w * out[-1] + (1 - w) * x)
    return out


def test_ema_matches_a_hand_computation_per_model_in_step_order():
    # rows shuffled on purpose: the EMA follows step, per (family, model)
    frame = pl.DataFrame({"family": ["t"] * 6, "model": ["a", "b", "a", "a", "b", "a"],
                          "step": [30, 0, 0, 10, 10, 20],
                          "v": [0.8, 1.0, 0.2, 0.6, 0.0, 0.4]})
    out = ema(frame, "v", 0.5).sort("model", "step")
    assert out["v_ema"].to_list()[:4] == pytest.approx([0.2, 0.4, 0.4, 0.6])  # a: 0.2 .6 .4 .8
    assert out["v_ema"].to_list()[4:] == pytest.approx([1.0, 0.5])  # b restarts from its own x0
    # worked example of the docstring: x = [0, 2, 4]
    x = pl.DataFrame({"family": "t", "model": "m", "step": [0, 1, 2], "v": [0.0, 2.0, 4.0]})
    assert ema(x, "v", 0.5)["v_ema"].to_list() == pytest.approx([0, 1, 2.5])
    assert ema(x, "v", 0.8)["v_ema"].to_list() == pytest.approx([0, 0.4, 1.12])
    assert ema(x, "v", 0.0)["v_ema"].to_list() == [0, 2, 4]  # no smoothing
    xs = [0.1, 0.9, 0.3, 0.7, 0.5]
    y = pl.DataFrame({"family": "t", "model": "m", "step": range(5), "v": xs})
    assert ema(y, "v", 0.8, out="s")["s"].to_list() == pytest.approx(_hand(xs, 0.8))


def test_ema_rejects_bad_weights_and_missing_columns():
    frame = pl.DataFrame({"family": ["t"], "model": ["m"], "step": [0], "v": [1.0]})
    for w in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            ema(frame, "v", w)
    with pytest.raises(ValueError, match=r"lacks columns \['task'\]"):
        ema(frame, "v", 0.5, by=("model", "task"))


def test_smoothed_accuracy_uses_the_papers_weights_per_task_and_macro():
    xs = {"x": [0.0, 1.0, 1.0], "y": [1.0, 0.0, 0.5]}
    tasks = pl.DataFrame([{"family": "t", "model": "m", "step": s, "task": t, "accuracy": v,
                           "accuracy_norm": 1 - v}
                          for t, vals in xs.items() for s, v in enumerate(vals)])
    out = smoothed_accuracy(tasks).sort("task", "step")
    assert EMA_TASK == 0.8 and EMA_MACRO == 0.5
    assert out["accuracy_ema"].to_list() == pytest.approx(_hand(xs["x"], 0.8) +
                                                          _hand(xs["y"], 0.8))
    assert out["accuracy_norm_ema"].to_list()[:3] == pytest.approx(
        _hand([1.0, 0.0, 0.0], 0.8))
    macro = smoothed_accuracy(tasks.filter(pl.col("task") == "x").drop("task"))
    assert macro["accuracy_ema"].to_list() == pytest.approx(_hand(xs["x"], 0.5))
    assert set(macro["ema_weight"]) == {0.5}
