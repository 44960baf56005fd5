"""Chart builders for families compared at matched perplexity (issue 16).

Frames come from :mod:`stats.families` (no fitting here): the chart draws
:func:`stats.families.family_differences` output as it is.
"""

from __future__ import annotations

import altair as alt
import polars as pl

from reports.charts import _need

DIFF_COLUMNS = ("behavior", "ppl", "family_a", "family_b", "diff", "ci_low", "ci_high",
                "n_models_a", "n_models_b")


def family_difference_chart(diffs: pl.DataFrame, columns: int = 3) -> alt.FacetChart:
    """family_b - family_a at matched validation ppl, one panel per behavior.

    Points are the difference of the family means, bars its 95% CI (absent where a
    family has too few models for one), the rule marks 0 (no difference). ppl is
    on a log axis, reversed so that training runs left to right. Panels have
    their own y scale: behaviors have different units.

    Args:
        diffs: ``stats.families.family_differences`` output (DIFF_COLUMNS at least).
        columns: panels per row.
    """
    _need(diffs, DIFF_COLUMNS, "family_difference_chart")
    a, b = (diffs["family_a"][0], diffs["family_b"][0]) if diffs.height else ("a", "b")
    x = alt.X("ppl:Q", scale=alt.Scale(type="log", reverse=True, nice=False),
              title="validation perplexity (matched)")
    tooltip = [c for c in (*DIFF_COLUMNS, "mean_a", "mean_b", "note") if c in diffs.columns]
    base = alt.Chart()
    zero = base.mark_rule(color="gray", strokeDash=[4, 4]).encode(y=alt.datum(0))
    bars = base.mark_errorbar(ticks=True).encode(
        x, alt.Y("ci_low:Q", title=f"{b} - {a}"), alt.Y2("ci_high:Q"))
    points = base.mark_point(filled=True, size=50).encode(
        x, alt.Y("diff:Q", title=f"{b} - {a}"), tooltip=tooltip)
    return (
        alt.layer(zero, bars, points, data=diffs)
        .properties(width=220, height=160)
        .facet(facet=alt.Facet("behavior:N", title=None), columns=columns,
               title=f"{b} minus {a} at matched validation perplexity (95% CI over models)")
        .resolve_scale(y="independent")
    )
