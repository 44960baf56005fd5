"""The figures of Xia et al. 2023 (issue #12), each against validation ppl, tokens and FLOPs.

Same conventions as reports.charts: aggregated polars frames in (stats/ does
the work), `alt` charts out, models colored in order of size with a legend
selection shared by the three panels.
"""

from __future__ import annotations

import warnings

import altair as alt
import polars as pl

from reports.charts import (AXIS_TITLES, TRAINING_ORDER, _legend_selection, _model_color, _need,
                            _positive, _tooltip, model_order, x_axis)

AXES = ("val_ppl", "tokens_seen", "flops")


def axis_panels(frame: pl.DataFrame, y: str, title: str, *, y_title: str | None = None,
                log_y: bool = False, width: int = 240,
                dash: alt.StrokeDash | None = None) -> alt.HConcatChart:
    """`y` against validation ppl (log, reversed), tokens and FLOPs (log), side by side.

    One line per model (colored by size, joined in step order); the y scale is
    shared and a click on a legend entry highlights that model in all panels.
    Axes missing from `frame` are left out. `dash`: a stroke-dash channel (e.g.
    the generator models of a generated set).
    """
    _need(frame, ("model", "step", y, "val_ppl"), "axis_panels")
    pick = _legend_selection()
    y_enc = alt.Y(f"{y}:Q", title=y_title or y,
                  scale=alt.Scale(type="log" if log_y else "linear", zero=False))
    panels = []
    for axis in (a for a in AXES if a in frame.columns):
        rows = _positive(frame.drop_nulls(axis), axis)
        extra = {"strokeDash": dash} if dash is not None else {}
        panels.append(
            alt.Chart(rows, title=f"vs {AXIS_TITLES[axis]}").mark_line(point=True)
            .encode(x_axis(axis), y_enc, _model_color(frame), order=TRAINING_ORDER,
                    opacity=alt.condition(pick, alt.value(1.0), alt.value(0.15)),
                    tooltip=_tooltip(rows, "val_ppl", y, "generator"), **extra)
            .add_params(pick).properties(width=width, height=200))
    with warnings.catch_warnings():  # the shared legend selection is merged on purpose
        warnings.filterwarnings("ignore", "Automatically deduplicated selection", UserWarning)
        return alt.hconcat(*panels, title=title).resolve_scale(y="shared")


def token_set_ppl_panels(set_ppl: pl.DataFrame, token_set: str) -> alt.HConcatChart:
    """Ppl of one token set (e.g. the tokens the largest model finds "increasing") in every model.

    Args:
        set_ppl: stats.trajectories.token_set_ppl output (keys, token_set, ppl, val_ppl).
        token_set: the set drawn ("<model>:<class>").
    """
    _need(set_ppl, ("token_set", "ppl"), "token_set_ppl_panels")
    rows = set_ppl.filter(pl.col("token_set") == token_set)
    return axis_panels(rows, "ppl", f"Token set {token_set}: its perplexity in every model",
                       y_title="token-set perplexity", log_y=True)


def fractions_by_start_chart(fractions: pl.DataFrame) -> alt.FacetChart:
    """Fraction of tokens per trajectory class vs where the window starts (fraction of training).

    Args:
        fractions: stats.trajectories.fractions_by_start output
            (family, model, params, start_fraction, trend, n_tokens, fraction); windows
            it could not classify (trend null, with a reason) are not drawn.
    """
    _need(fractions, ("model", "start_fraction", "trend", "fraction"), "fractions_by_start_chart")
    fractions = fractions.filter(pl.col("trend").is_not_null())
    pick = alt.selection_point(fields=["trend"], bind="legend")
    return (
        alt.Chart(fractions).mark_line(point=True)
        .encode(alt.X("start_fraction:Q", title="window starts at this fraction of training"),
                alt.Y("fraction:Q", title="fraction of tokens"),
                alt.Color("trend:N", title="trajectory class"),
                opacity=alt.condition(pick, alt.value(1.0), alt.value(0.1)),
                tooltip=_tooltip(fractions, "trend", "start_fraction", "fraction", "n_tokens"))
        .add_params(pick).properties(width=200, height=160)
        .facet(facet=alt.Facet("model:N", sort=model_order(fractions)), columns=3,
               title="Token trajectory classes vs fraction of training")
    )


def unclassified_window_notes(fractions: pl.DataFrame) -> list[str]:
    """One report note listing the trend windows too short to classify (or none).

    Args:
        fractions: stats.trajectories.fractions_by_start output (rows with a `reason`).
    """
    bad = fractions.filter(pl.col("reason").is_not_null()).sort("model", "start_fraction")
    if bad.is_empty():
        return []
    parts = [f"{r['model']} from t = {r['start_fraction']:g} ({r['n_checkpoints']} checkpoints)"
             for r in bad.iter_rows(named=True)]
    return ["Trend windows not classified (fewer checkpoints than the rule needs; add "
            "checkpoints late in training): " + "; ".join(parts) + "."]


def generated_set_panels(set_ppl: pl.DataFrame, name: str) -> alt.HConcatChart:
    """Ppl of one generated set (e.g. "mix a=1 b=-1 | small: ... | large: ...") in every model.

    The models that generated the set are drawn dashed (legend "generated this set":
    small, large; "no" solid): their trajectory on it is partly built in, and the
    Findings decide on the other models.

    Args:
        set_ppl: stats.hallucination.generated_set_ppl output joined with val_ppl
            (keys, set, generator, ppl, val_ppl); without `generator` nothing is dashed.
        name: the set drawn.
    """
    _need(set_ppl, ("set", "ppl"), "generated_set_panels")
    rows = set_ppl.filter(pl.col("set") == name)
    dash, note = None, ""
    if "generator" in rows.columns and rows["generator"].null_count() < rows.height:
        rows = rows.with_columns(pl.col("generator").fill_null("no"))
        roles = sorted(rows["generator"].unique(), key=lambda r: (r == "no", r))
        dash = alt.StrokeDash("generator:N", title="generated this set",
                              scale=alt.Scale(domain=roles, range=[
                                  [6, 3] if r != "no" else [1, 0] for r in roles]))
        note = " (dashed: the models that generated it)"
    return axis_panels(rows, "ppl", f"Generated set {name}: its perplexity in every "
                       f"model{note}", y_title="set perplexity", log_y=True, dash=dash)


def _smoothed_layers(rows: pl.DataFrame, x: alt.X, color: alt.Color, pick, y: str,
                     y_title: str) -> list:
    """Raw points (faint), the EMA line (opaque) and, when known, the random baseline rule."""
    base = alt.Chart(rows)
    fade = alt.condition(pick, alt.value(0.35), alt.value(0.05))
    points = (base.mark_point(filled=True, size=25)
              .encode(x, alt.Y(f"{y}:Q", title=y_title), color, opacity=fade,
                      tooltip=_tooltip(rows, "val_ppl", y, f"{y}_ema")))
    line = (base.mark_line()
            .encode(x, alt.Y(f"{y}_ema:Q"), color, order=TRAINING_ORDER,
                    opacity=alt.condition(pick, alt.value(1.0), alt.value(0.15)))
            .add_params(pick))
    layers = [points, line]
    if "random_baseline" in rows.columns:
        layers.append(base.mark_rule(color="gray", strokeDash=[4, 4])
                      .encode(y="mean(random_baseline):Q",
                              tooltip=[alt.Tooltip("mean(random_baseline):Q",
                                                   title="random baseline")]))
    return layers


def bigbench_smoothed_panels(accuracy: pl.DataFrame, *, y: str = "accuracy",
                             width: int = 240) -> alt.HConcatChart:
    """Macro BIG-bench accuracy, raw points and EMA line, vs ppl, tokens and FLOPs (Xia fig.).

    Args:
        accuracy: stats.bigbench.smoothed_accuracy(macro_accuracy(...)) joined with
            val_ppl: keys, `y`, `<y>_ema`, ema_weight, val_ppl, and optionally
            random_baseline (a dashed gray rule at its mean).
        y: "accuracy" or "accuracy_norm" (picked by per-token log-prob).
    """
    _need(accuracy, ("model", "step", y, f"{y}_ema", "val_ppl"), "bigbench_smoothed_panels")
    pick = _legend_selection()
    weight = accuracy["ema_weight"][0] if "ema_weight" in accuracy.columns else None
    smooth = f"EMA weight {weight:g}" if weight is not None else "EMA"
    panels = []
    for axis in (a for a in AXES if a in accuracy.columns):
        rows = _positive(accuracy.drop_nulls(axis), axis)
        panels.append(alt.layer(*_smoothed_layers(rows, x_axis(axis), _model_color(accuracy),
                                                  pick, y, "accuracy (macro over tasks)"),
                                title=f"vs {AXIS_TITLES[axis]}")
                      .properties(width=width, height=200))
    title = f"BIG-bench accuracy: points raw, lines {smooth}, dashed: random baseline"
    with warnings.catch_warnings():  # the shared legend selection is merged on purpose
        warnings.filterwarnings("ignore", "Automatically deduplicated selection", UserWarning)
        return alt.hconcat(*panels, title=title).resolve_scale(y="shared")


def bigbench_task_smoothed(accuracy: pl.DataFrame, columns: int = 4) -> alt.FacetChart:
    """Per-task accuracy vs validation ppl: raw points, EMA line, dashed random baseline.

    Args:
        accuracy: stats.bigbench.smoothed_accuracy(task_accuracy(...)) joined with
            val_ppl (keys, task, accuracy, accuracy_ema, val_ppl, random_baseline).
    """
    _need(accuracy, ("model", "step", "task", "accuracy", "accuracy_ema", "val_ppl"),
          "bigbench_task_smoothed")
    rows = _positive(accuracy.drop_nulls("val_ppl"), "val_ppl")
    weight = rows["ema_weight"][0] if "ema_weight" in rows.columns and rows.height else None
    layers = _smoothed_layers(rows, x_axis("val_ppl"), _model_color(accuracy),
                              _legend_selection(), "accuracy", "accuracy")
    smooth = f"EMA weight {weight:g}" if weight is not None else "EMA"
    return (alt.layer(*layers, data=rows).properties(width=160, height=120)
            .facet(facet=alt.Facet("task:N"), columns=columns,
                   title=f"BIG-bench accuracy per task (lines: {smooth}; dashed: random)"))
