"""Plain-text tables for the terminal (the `dynamics compare` output).

:func:`text_table` lays out a frame as aligned columns: ``columns`` maps a
header to a function of the row dict that returns the cell text; None prints
as "-". Numbers are right-aligned, text left-aligned. No fitting here.

Example::

    text_table(frame, {"ppl": lambda r: f"{r['ppl']:.4g}", "note": lambda r: r["note"]})
"""

from __future__ import annotations

from typing import Callable

import polars as pl


def signed(x: float | None, fmt: str = ".3f") -> str | None:
    """"+0.125" / "-0.125"; None stays None."""
    return None if x is None else f"{x:+{fmt}}"


def interval(lo: float | None, hi: float | None, fmt: str = ".3f") -> str | None:
    """"[-0.010, +0.170]"; None when either end is missing."""
    return None if lo is None or hi is None else f"[{lo:+{fmt}}, {hi:+{fmt}}]"


def _is_number(text: str) -> bool:
    return text[:1] in "+-0123456789[" and text != "-"


def text_table(frame: pl.DataFrame, columns: dict[str, Callable[[dict], str | None]]) -> str:
    """Aligned text table of ``frame`` (module docstring)."""
    cells = [[("-" if (v := fn(row)) is None else str(v)) for fn in columns.values()]
             for row in frame.iter_rows(named=True)]
    heads = list(columns)
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(heads)]
    numeric = [bool(cells) and all(_is_number(r[i]) or r[i] == "-" for r in cells)
               for i in range(len(heads))]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(heads), line(["-" * w for w in widths]), *map(line, cells)])


def _seed_columns(diffs: pl.DataFrame) -> dict:
    """Seed-noise columns (stats.seeds.attach_seed_noise) when a family has seed runs."""
    if "seed_sd_a" not in diffs.columns or diffs.select(
            pl.col("seed_sd_a").is_null().all() & pl.col("seed_sd_b").is_null().all()).item():
        return {}
    return {"seed sd": lambda r: "/".join("-" if v is None else f"{v:.3f}"
                                          for v in (r["seed_sd_a"], r["seed_sd_b"]))}


def comparison_text(diffs: pl.DataFrame, tests: pl.DataFrame) -> str:
    """The `dynamics compare` printout: differences at matched ppl, then the family test.

    ``diffs`` is :func:`stats.families.family_differences` output, ``tests`` is
    :func:`stats.families.compare`'s test (family_test with the outcome columns of
    :func:`stats.equivalence.family_outcomes`).
    """
    if diffs.is_empty():
        return "no behavior has both families at those perplexities (outside the models' ranges?)"
    a, b = diffs["family_a"][0], diffs["family_b"][0]
    parts = [
        f"Families at matched validation perplexity: diff = {b} - {a}; 95% CI from a "
        "bootstrap over models (t reference; descriptive: the outcomes below decide); null "
        "with < 3 models per family.",
        text_table(diffs, {
            "behavior": lambda r: r["behavior"], "ppl": lambda r: f"{r['ppl']:.4g}",
            a: lambda r: f"{r['mean_a']:.3f}", b: lambda r: f"{r['mean_b']:.3f}",
            "diff": lambda r: signed(r["diff"]), "95% CI": lambda r: interval(
                r["ci_low"], r["ci_high"]),
            "models": lambda r: f"{r['n_models_a']}/{r['n_models_b']}",
            **_seed_columns(diffs),
            "note": lambda r: r["note"]}),
    ]
    if not tests.is_empty():
        parts += ["", f"Family at fixed ppl: value ~ log ppl + family ({b} term; logit units "
                  "for accuracies), leave-one-model-out jackknife, t(models - 1). Outcome of "
                  f"'{a} and {b} do not differ' (stats.equivalence): supported = 90% CI inside "
                  "+-margin (TOST), contradicted = Bonferroni CI excludes 0, else inconclusive "
                  "(with the smallest difference detectable at 80% power). The interval shown "
                  "is the one the outcome used.",
                  text_table(tests, {
                      "behavior": lambda r: r["behavior"], "scale": lambda r: r["scale"],
                      "estimate": lambda r: signed(r["estimate"]),
                      "interval": lambda r: interval(r.get("decision_low"),
                                                     r.get("decision_high")),
                      "kind": lambda r: r.get("interval"),
                      "margin": lambda r: None if r.get("margin") is None else
                      f"+-{r['margin']:.3g} ({r['margin_source']})",
                      "p": lambda r: None if r["p_value"] is None else f"{r['p_value']:.3g}",
                      "outcome": lambda r: r.get("outcome")})]
    return "\n".join(parts)
