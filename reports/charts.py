"""Altair chart builders: one function per figure, each `frame -> alt.Chart`.

Every builder takes an already aggregated polars frame (one row per
checkpoint, or per checkpoint x class/set/task/head: stats/ does the
aggregation and the fits) and returns a chart whose data is inlined in the
spec. Models are colored in order of size (params), with a legend selection
that fades the other models, and every mark has a tooltip. When a frame holds
several families, each family gets its own hue (blues, oranges, greens, ...)
and its models shades of it, light to dark by size: color says the family.

Validation perplexity axes are log scales reversed (high ppl on the left), so
training runs left to right as on the tokens and FLOPs axes.
"""

from __future__ import annotations

import warnings

import altair as alt
import polars as pl

TOOLTIP_KEYS = ("model", "step", "tokens_seen")
TRAINING_ORDER = alt.Order("step:Q")  # lines join checkpoints in step order, whatever the x
AXIS_TITLES = {"val_ppl": "validation perplexity", "tokens_seen": "tokens seen",
               "flops": "training FLOPs", "step": "step"}


class ChartDataError(ValueError):
    """A frame given to a chart builder lacks the columns the chart needs."""


def _need(frame: pl.DataFrame, columns: tuple[str, ...] | list[str], chart: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ChartDataError(f"{chart}: frame lacks columns {missing}; has {frame.columns}")


# Light-to-dark shades per family (ColorBrewer blues, oranges, greens, purples, reds, greys).
FAMILY_SHADES = (
    ("#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c", "#08306b"),
    ("#fdae6b", "#fd8d3c", "#f16913", "#d94801", "#a63603", "#7f2704"),
    ("#a1d99b", "#74c476", "#41ab5d", "#238b45", "#006d2c", "#00441b"),
    ("#bcbddc", "#9e9ac8", "#807dba", "#6a51a3", "#54278f", "#3f007d"),
    ("#fc9272", "#fb6a4a", "#ef3b2c", "#cb181d", "#a50f15", "#67000d"),
    ("#bdbdbd", "#969696", "#737373", "#525252", "#252525", "#000000"),
)


def model_order(frame: pl.DataFrame) -> list[str]:
    """Model names sorted by size (params), then name: the color order of every chart.

    With several families, models are grouped by family first (then by size).
    """
    if "params" not in frame.columns:
        return sorted(frame["model"].unique().to_list())
    by = ["family", "params", "model"] if _n_families(frame) > 1 else ["params", "model"]
    pairs = frame.select(*by).unique().sort(*by)
    return pairs["model"].unique(maintain_order=True).to_list()


def _n_families(frame: pl.DataFrame) -> int:
    return frame["family"].n_unique() if "family" in frame.columns else 1


def family_palette(frame: pl.DataFrame) -> tuple[list[str], list[str]] | None:
    """(models, colors): each family a hue, its models shades by size; None for one family.

    Example: families a (models a1 < a2) and b (b1): a1, a2 in two blues, b1 in an orange.
    """
    if _n_families(frame) < 2 or "params" not in frame.columns:
        return None
    models, colors = [], []
    pairs = frame.select("family", "params", "model").unique().sort("family", "params", "model")
    for i, (_, rows) in enumerate(pairs.group_by("family", maintain_order=True)):
        shades = FAMILY_SHADES[i % len(FAMILY_SHADES)]
        names = rows["model"].unique(maintain_order=True).to_list()
        step = max(1, (len(shades) - 1) // max(1, len(names) - 1)) if len(names) > 1 else 0
        for j, name in enumerate(names):
            models.append(name)
            colors.append(shades[min(1 + j * step, len(shades) - 1)] if step else shades[3])
    return models, colors


def _model_color(frame: pl.DataFrame) -> alt.Color:
    palette = family_palette(frame)
    if palette is None:
        return alt.Color("model:N", sort=model_order(frame), title="model (by size)")
    models, colors = palette
    return alt.Color("model:N", sort=models, scale=alt.Scale(domain=models, range=colors),
                     title="model (hue: family, shade: size)")


def _legend_selection() -> alt.Parameter:
    return alt.selection_point(fields=["model"], bind="legend")


def x_axis(column: str, *, log: bool = True) -> alt.X:
    """An x encoding for a training axis; ppl is log and reversed (training runs left to right)."""
    # nice=False: a nice log domain snaps to powers of ten and squeezes the data into a sliver
    scale = alt.Scale(type="log" if log else "linear", reverse=column == "val_ppl", nice=False)
    return alt.X(f"{column}:Q", scale=scale, title=AXIS_TITLES.get(column, column))


def _positive(frame: pl.DataFrame, column: str) -> pl.DataFrame:
    """Rows a log axis can show (drops step 0's tokens_seen = 0, flops = 0)."""
    return frame.filter(pl.col(column) > 0)


def _tooltip(frame: pl.DataFrame, *extra: str) -> list[str]:
    return [c for c in (*TOOLTIP_KEYS, *extra) if c in frame.columns]


def ppl_vs_tokens(ppl: pl.DataFrame) -> alt.Chart | alt.LayerChart:
    """Validation ppl vs tokens seen, one line per model (log-log).

    Args:
        ppl: stats.perplexity.validation_ppl output (keys, val_ppl), optionally with
            ppl_rises (stats.perplexity.flag_ppl_rises): those checkpoints, where
            ppl went back up, get a red ring.
    """
    _need(ppl, ("model", "params", "tokens_seen", "val_ppl"), "ppl_vs_tokens")
    pick = _legend_selection()
    rows = _positive(ppl, "tokens_seen")
    y = alt.Y("val_ppl:Q", scale=alt.Scale(type="log", nice=False), title="validation perplexity")
    line = (
        alt.Chart(rows, title="Validation perplexity vs tokens seen")
        .mark_line(point=True)
        .encode(x_axis("tokens_seen"), y, _model_color(ppl), order=TRAINING_ORDER,
                opacity=alt.condition(pick, alt.value(1.0), alt.value(0.15)),
                tooltip=_tooltip(ppl, "val_ppl"))
        .add_params(pick)
    )
    if "ppl_rises" not in ppl.columns or not rows["ppl_rises"].any():
        return line
    rises = alt.Chart(rows.filter(pl.col("ppl_rises"))).mark_point(
        shape="circle", size=220, filled=False, color="#d62728", strokeWidth=2).encode(
        x_axis("tokens_seen"), y, tooltip=[*_tooltip(rows, "val_ppl"),
                                          alt.Tooltip("ppl_rises:N", title="ppl rose again")])
    return alt.layer(line, rises, title="Validation perplexity vs tokens seen "
                     "(red ring: ppl above the model's best so far)")


def behavior_vs_axis(frame: pl.DataFrame, behavior: str, axis: str = "val_ppl",
                     curves: pl.DataFrame | None = None,
                     pick: alt.Parameter | None = None) -> alt.LayerChart:
    """One behavior against one training axis, colored by size, with fitted curves.

    Args:
        frame: behavior rows: keys, behavior, value, and val_ppl (the stats
            behavior table); only rows of `behavior` are drawn.
        behavior: the behavior name.
        axis: "val_ppl" (log, reversed), "tokens_seen" or "flops" (log).
        curves: optional fitted curves from stats: model, `axis`, fitted (a line per model).
        pick: the legend selection (pass one to link several panels); a new one if None.
    """
    _need(frame, ("model", "behavior", "value", axis), "behavior_vs_axis")
    rows = _positive(frame.filter(pl.col("behavior") == behavior), axis)
    pick = pick if pick is not None else _legend_selection()
    color = _model_color(frame)
    points = (
        alt.Chart(rows).mark_point(filled=True)
        .encode(x_axis(axis), alt.Y("value:Q", title=behavior), color,
                opacity=alt.condition(pick, alt.value(0.9), alt.value(0.1)),
                tooltip=_tooltip(rows, "val_ppl", "value"))
        .add_params(pick)
    )
    if curves is None or curves.is_empty():
        line = alt.Chart(rows).mark_line(opacity=0.4).encode(
            x_axis(axis), alt.Y("value:Q"), color, detail="model:N", order=TRAINING_ORDER)
        return alt.layer(points, line, title=f"{behavior} vs {AXIS_TITLES[axis]}")
    _need(curves, ("model", axis, "fitted"), "behavior_vs_axis curves")
    fit = alt.Chart(_positive(curves, axis)).mark_line(strokeDash=[6, 3]).encode(
        x_axis(axis), alt.Y("fitted:Q"), color, tooltip=_tooltip(curves, "fitted"))
    return alt.layer(points, fit, title=f"{behavior} vs {AXIS_TITLES[axis]} (dashed: fit)")


def behavior_panels(frame: pl.DataFrame, behavior: str,
                    curves: pl.DataFrame | None = None) -> alt.HConcatChart:
    """The same behavior vs validation ppl, tokens and FLOPs side by side (shared y).

    `curves` (model, val_ppl, fitted) is drawn on the ppl panel only.
    """
    pick = _legend_selection()
    panels = [behavior_vs_axis(frame, behavior, "val_ppl", curves, pick).properties(width=260)]
    for axis in ("tokens_seen", "flops"):
        if axis in frame.columns:
            panels.append(behavior_vs_axis(frame, behavior, axis, pick=pick)
                          .properties(width=260))
    with warnings.catch_warnings():  # the shared legend selection is merged on purpose
        warnings.filterwarnings("ignore", "Automatically deduplicated selection", UserWarning)
        return alt.hconcat(*panels).resolve_scale(y="shared")


def class_fractions_vs_ppl(fractions: pl.DataFrame) -> alt.FacetChart:
    """Fraction of tokens per trajectory class vs validation ppl, one panel per model.

    Args:
        fractions: stats.trajectories.class_fractions output (keys, trend, fraction, val_ppl).
    """
    _need(fractions, ("model", "trend", "fraction", "val_ppl"), "class_fractions_vs_ppl")
    pick = alt.selection_point(fields=["trend"], bind="legend")
    return (
        alt.Chart(fractions).mark_line(point=True)
        .encode(x_axis("val_ppl"), alt.Y("fraction:Q", title="fraction of tokens"),
                alt.Color("trend:N", title="trajectory class"), order=TRAINING_ORDER,
                opacity=alt.condition(pick, alt.value(1.0), alt.value(0.1)),
                tooltip=_tooltip(fractions, "trend", "fraction", "val_ppl"))
        .add_params(pick).properties(width=220, height=180)
        .facet(facet=alt.Facet("model:N", sort=model_order(fractions)), columns=3,
               title="Token trajectory classes vs validation perplexity")
    )


def set_logprob_vs_ppl(set_lp: pl.DataFrame) -> alt.Chart:
    """Mean per-token log-prob of each sequence set (factual, hallucinated, ...) vs ppl.

    Args:
        set_lp: stats.hallucination.set_logprobs output joined with val_ppl
            (keys, set, logprob_per_token, val_ppl); color = model, dash = set.
    """
    _need(set_lp, ("model", "set", "logprob_per_token", "val_ppl"), "set_logprob_vs_ppl")
    pick = _legend_selection()
    return (
        alt.Chart(set_lp, title="Per-token log-prob of sequence sets vs validation perplexity")
        .mark_line(point=True)
        .encode(x_axis("val_ppl"), alt.Y("logprob_per_token:Q", title="log-prob per token (nats)"),
                _model_color(set_lp), alt.StrokeDash("set:N", title="set"),
                order=TRAINING_ORDER,
                opacity=alt.condition(pick, alt.value(1.0), alt.value(0.15)),
                tooltip=_tooltip(set_lp, "set", "logprob_per_token", "val_ppl"))
        .add_params(pick)
    )


def gap_vs_ppl(gap: pl.DataFrame) -> alt.LayerChart:
    """Hallucination gap (factual minus hallucinated log-prob per token) with its CI band.

    Args:
        gap: stats.hallucination.hallucination_gap joined with val_ppl
            (keys, gap, ci_low, ci_high, val_ppl).
    """
    _need(gap, ("model", "gap", "ci_low", "ci_high", "val_ppl"), "gap_vs_ppl")
    color = _model_color(gap)
    band = alt.Chart(gap).mark_area(opacity=0.2).encode(
        x_axis("val_ppl"), alt.Y("ci_low:Q", title="hallucination gap (nats/token)"),
        alt.Y2("ci_high:Q"), color, order=TRAINING_ORDER)
    line = alt.Chart(gap).mark_line(point=True).encode(
        x_axis("val_ppl"), alt.Y("gap:Q"), color, order=TRAINING_ORDER,
        tooltip=_tooltip(gap, "gap", "ci_low", "ci_high", "val_ppl"))
    zero = alt.Chart(pl.DataFrame({"y": [0.0]})).mark_rule(color="gray").encode(y="y:Q")
    return alt.layer(band, line, zero, title="Hallucination gap vs validation perplexity")


def bigbench_macro_vs_ppl(accuracy: pl.DataFrame) -> alt.LayerChart:
    """Macro-averaged BIG-bench accuracy vs validation ppl, one line per model.

    Args:
        accuracy: one row per checkpoint: keys, accuracy, val_ppl, and optionally
            random_baseline (drawn as a gray rule at its mean).
    """
    _need(accuracy, ("model", "accuracy", "val_ppl"), "bigbench_macro_vs_ppl")
    pick = _legend_selection()
    line = (
        alt.Chart(accuracy).mark_line(point=True)
        .encode(x_axis("val_ppl"), alt.Y("accuracy:Q", title="accuracy (macro over tasks)"),
                _model_color(accuracy), order=TRAINING_ORDER,
                opacity=alt.condition(pick, alt.value(1.0), alt.value(0.15)),
                tooltip=_tooltip(accuracy, "accuracy", "val_ppl"))
        .add_params(pick)
    )
    layers = [line]
    if "random_baseline" in accuracy.columns:
        base = accuracy.select(pl.col("random_baseline").mean().alias("y"))
        layers.append(alt.Chart(base).mark_rule(color="gray", strokeDash=[4, 4])
                      .encode(y="y:Q", tooltip=[alt.Tooltip("y:Q", title="random baseline")]))
    return alt.layer(*layers, title="BIG-bench accuracy vs validation perplexity")


def bigbench_tasks_vs_ppl(accuracy: pl.DataFrame, columns: int = 4) -> alt.FacetChart:
    """Per-task BIG-bench accuracy vs validation ppl, one small panel per task.

    Args:
        accuracy: keys, task, accuracy, val_ppl (one row per checkpoint x task), and
            optionally random_baseline (a dashed gray rule in each task's panel).
    """
    _need(accuracy, ("model", "task", "accuracy", "val_ppl"), "bigbench_tasks_vs_ppl")
    pick = _legend_selection()
    base = alt.Chart(accuracy)
    line = (
        base.mark_line(point=True)
        .encode(x_axis("val_ppl"), alt.Y("accuracy:Q"), _model_color(accuracy),
                order=TRAINING_ORDER,
                opacity=alt.condition(pick, alt.value(1.0), alt.value(0.15)),
                tooltip=_tooltip(accuracy, "task", "accuracy", "val_ppl"))
        .add_params(pick)
    )
    layers = [line]
    if "random_baseline" in accuracy.columns:  # constant per task: max() just picks it
        layers.append(base.mark_rule(color="gray", strokeDash=[4, 4])
                      .encode(y="max(random_baseline):Q"))
    return (
        alt.layer(*layers).properties(width=160, height=120)
        .facet(facet=alt.Facet("task:N"), columns=columns,
               title="BIG-bench accuracy per task vs validation perplexity (dashed: random)")
    )
