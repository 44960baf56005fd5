"""Per model of a toy-suite store, the phenomena issue 26 asks for (a table, from the store alone).

    python bench/toy_phenomena.py demo-out/results

Columns: validation ppl at step 0, its minimum and its final value; the largest rise above
the running minimum after the first 10 % of the model's training (issue 26's rule: <= 3 %);
the best head's induction and trigger-induction scores at step 0 and at the end, whether
the head formed by the report's rule (final >= 0.3 and >= 2x initial;
stats.claims.emergence) and the step where the score first crossed half-way; the steps
where bigram and recall accuracy (recall-bigram evaluator) cross half-way (Bietti et al.:
bigram first).
"""

from __future__ import annotations

import sys

import polars as pl

from evals.store import Store
from stats.claims.emergence import head_formed
from stats.emergence import crossing_points
from stats.perplexity import ppl_over_best, validation_ppl


def max_rise(g: pl.DataFrame) -> float:
    """Largest val_ppl / its lowest earlier value - 1 (stats.perplexity.ppl_over_best) after the
    first 10 % of one model's training (0 if none)."""
    late = g.filter(pl.col("step") >= 0.1 * g["step"].max())["over_best"].drop_nulls()
    return max(0.0, late.max() - 1) if len(late) else 0.0


def table(root: str) -> pl.DataFrame:
    store = Store(root)
    ppl = ppl_over_best(validation_ppl(store.scan("token-loss")))
    comps = store.read("components")
    rb = store.read("recall-bigram")
    rows = []
    for (family, model), g in ppl.group_by("family", "model", maintain_order=True):
        g = g.sort("step")
        row = {"family": family, "model": model, "params": int(g["params"][0]),
               "last_step": int(g["step"][-1]), "ppl_0": g["val_ppl"][0],
               "ppl_min": g["val_ppl"].min(), "ppl_end": g["val_ppl"][-1],
               "max_rise_%": 100 * max_rise(g)}
        for kind in ("induction", "trigger-induction"):
            best = (comps.filter((pl.col("model") == model) & (pl.col("kind") == kind))
                    .group_by("step", "tokens_seen").agg(pl.col("score").max().alias("value"))
                    .sort("step"))
            first, last = best["value"][0], best["value"][-1]
            half = first + 0.5 * (last - first)
            cross = best.filter(pl.col("value") >= half)["step"]
            row |= {f"{kind}_0": first, f"{kind}_end": last,
                    f"{kind}_formed": bool(head_formed(first, last)),
                    f"{kind}_step": int(cross[0]) if len(cross) else None}
        acc = (rb.filter((pl.col("model") == model)
                         & pl.col("position_kind").is_in(["bigram", "recall"]))
               .group_by("step", "tokens_seen", "position_kind")
               .agg((pl.col("n_correct").sum() / pl.col("n_tokens").sum()).alias("value"))
               .with_columns(pl.lit(0.0).alias("val_ppl"), pl.lit(model).alias("model")))
        pts = crossing_points(acc, by=("model", "position_kind"))
        for kind in ("bigram", "recall"):
            hit = pts.filter(pl.col("position_kind") == kind)
            row[f"{kind}_acc_end"] = hit["final_value"][0] if hit.height else None
            row[f"{kind}_step"] = hit["step"][0] if hit.height else None
        rows.append(row)
    return pl.DataFrame(rows)


def markdown(t: pl.DataFrame) -> str:
    """The table as Markdown, one row per model (what BENCHMARKS.md shows)."""
    def f(x, d=3):
        return "-" if x is None else f"{x:.{d}g}" if isinstance(x, float) else str(x)

    head = ("| model | params | steps | val ppl 0 / min / end | max rise after 10 % | "
            "induction 0 -> end (formed, half-way step) | trigger-induction 0 -> end "
            "(formed, step) | bigram / recall half-way step |")
    lines = [head, "|" + "---|" * 8]
    for r in t.iter_rows(named=True):
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['last_step']} | {f(r['ppl_0'], 4)} / "
            f"{f(r['ppl_min'], 4)} / {f(r['ppl_end'], 4)} | {r['max_rise_%']:.2f} % | "
            f"{f(r['induction_0'], 2)} -> {f(r['induction_end'], 2)} "
            f"({'yes' if r['induction_formed'] else 'no'}, {f(r['induction_step'])}) | "
            f"{f(r['trigger-induction_0'], 2)} -> {f(r['trigger-induction_end'], 2)} "
            f"({'yes' if r['trigger-induction_formed'] else 'no'}, "
            f"{f(r['trigger-induction_step'])}) | {f(r['bigram_step'])} / {f(r['recall_step'])} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(table(sys.argv[1] if len(sys.argv) > 1 else "demo-out/results")))
