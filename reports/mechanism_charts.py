"""Chart builders for circuits and attention-head components (Tigges et al. 2024 figures).

Same conventions as reports.charts: aggregated polars frames in, `alt.Chart`
out, models colored in order of size, tokens on a log axis.
"""

from __future__ import annotations

import altair as alt
import polars as pl

from reports.charts import (TRAINING_ORDER, _legend_selection, _model_color, _need, _positive,
                            _tooltip, x_axis)


def circuit_size_over_tokens(summary: pl.DataFrame) -> alt.FacetChart:
    """Circuit size (edges in the minimal faithful circuit) vs tokens seen, per task.

    Args:
        summary: the `circuit-summary` table (keys, task, circuit_edges, faithfulness);
            checkpoints where the task is not performed (circuit_edges null) are not drawn.
    """
    _need(summary, ("model", "task", "tokens_seen", "circuit_edges"), "circuit_size_over_tokens")
    summary = summary.filter(pl.col("circuit_edges").is_not_null())
    pick = _legend_selection()
    return (
        alt.Chart(_positive(summary, "tokens_seen")).mark_line(point=True)
        .encode(x_axis("tokens_seen"), alt.Y("circuit_edges:Q", title="circuit edges"),
                _model_color(summary), order=TRAINING_ORDER,
                opacity=alt.condition(pick, alt.value(1.0), alt.value(0.15)),
                tooltip=_tooltip(summary, "task", "circuit_edges", "faithfulness"))
        .add_params(pick).properties(width=240, height=180)
        .facet(facet=alt.Facet("task:N"), columns=3, title="Circuit size over training")
    )


def not_performed_notes(rows: pl.DataFrame) -> list[str]:
    """One report note per (model, task) with checkpoints where the task is not performed.

    Args:
        rows: stats.circuits.not_performed output (family, model, task, steps, n_checkpoints).
    """
    if rows.is_empty():
        return []
    lines = [f"{r['model']} / {r['task']}: steps {', '.join(map(str, r['steps']))} "
             f"({len(r['steps'])} of {r['n_checkpoints']} checkpoints)"
             for r in rows.iter_rows(named=True)]
    return ["Tasks not performed (no circuit: the clean metric is not > 0, or the bootstrap "
            "lower bound of clean - corrupted is not > 0; reason column of `circuit-summary`): "
            + "; ".join(lines) + "."]


def jaccard_over_tokens(similarity: pl.DataFrame, value: str = "jaccard") -> alt.FacetChart:
    """Circuit edge-set Jaccard similarity (e.g. with the final circuit) vs tokens seen.

    Args:
        similarity: keys, task, and the similarity column `value` (in [0, 1]).
    """
    _need(similarity, ("model", "task", "tokens_seen", value), "jaccard_over_tokens")
    pick = _legend_selection()
    return (
        alt.Chart(_positive(similarity, "tokens_seen")).mark_line(point=True)
        .encode(x_axis("tokens_seen"),
                alt.Y(f"{value}:Q", scale=alt.Scale(domain=[0, 1]), title="Jaccard similarity"),
                _model_color(similarity), order=TRAINING_ORDER,
                opacity=alt.condition(pick, alt.value(1.0), alt.value(0.15)),
                tooltip=_tooltip(similarity, "task", value))
        .add_params(pick).properties(width=240, height=180)
        .facet(facet=alt.Facet("task:N"), columns=3, title="Circuit similarity over training")
    )


def component_heatmap(components: pl.DataFrame, kind: str, model: str) -> alt.Chart:
    """Head x checkpoint heatmap of one component score (e.g. induction) for one model.

    Rows are heads labelled "L<layer>.H<head>" in layer order, columns are
    checkpoints in step order.

    Args:
        components: the `components` table (keys, layer, head, kind, score).
        kind: the score kind drawn.
        model: the model drawn.
    """
    _need(components, ("model", "step", "layer", "head", "kind", "score"), "component_heatmap")
    rows = components.filter((pl.col("kind") == kind) & (pl.col("model") == model))
    heads = rows.select("layer", "head").unique().sort("layer", "head")
    order = [f"L{a}.H{b}" for a, b in heads.iter_rows()]
    rows = rows.with_columns(pl.format("L{}.H{}", "layer", "head").alias("head_label"))
    return (
        alt.Chart(rows, title=f"{kind} score per head: {model}").mark_rect()
        .encode(alt.X("step:O", title="step"), alt.Y("head_label:N", sort=order, title="head"),
                alt.Color("score:Q", scale=alt.Scale(scheme="viridis"), title=f"{kind} score"),
                tooltip=_tooltip(rows, "head_label", "score"))
    )


def emergence_points(points: pl.DataFrame, label: str = "behavior") -> alt.Chart:
    """When each behavior or component emerges: tokens seen at emergence, per model.

    Args:
        points: one row per model x `label`: model, params, `label`, tokens_seen
            (the emergence point from stats; rows with null tokens_seen never emerged
            and are left out).
    """
    _need(points, ("model", label, "tokens_seen"), "emergence_points")
    rows = _positive(points.drop_nulls("tokens_seen"), "tokens_seen")
    pick = _legend_selection()
    return (
        alt.Chart(rows, title="Emergence points").mark_point(filled=True, size=80)
        .encode(x_axis("tokens_seen"), alt.Y(f"{label}:N", title=label), _model_color(points),
                opacity=alt.condition(pick, alt.value(1.0), alt.value(0.15)),
                tooltip=_tooltip(rows, label))
        .add_params(pick)
    )
