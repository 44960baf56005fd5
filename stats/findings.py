"""Findings: one row per paper claim, generated from this run's frames (polars only).

:func:`findings` returns FINDINGS_SCHEMA: claim, source (the paper), statistic
(what `value` is, in words), value, ci_low, ci_high (an interval for value whose
meaning the statistic names; null when there is none), verdict ("supported",
"not supported by this run" or "not testable: <why>"), detail (the numbers
behind the verdict, per model where there are models).

Verdict rules, one per claim (constants below):

(a) Induction heads emerge at matched tokens across sizes and families
    (Tigges et al. 2024; Olsson et al. 2022). One row per head kind in
    INDUCTION_TASKS found among the emergence points (stats.emergence) with
    kind "head_score". A model forms the head when its final score is at
    least FORMED_RATIO x its first (initialisation) score and at least
    FORMED_MIN (the scores are attention probabilities: a head that puts under
    0.3 of its attention on the induction target at the end of training is not
    an induction head, however much it grew from a near-zero start); models
    that do not (a 1-layer model cannot form an induction head) are listed and left out,
    and fewer than 2 forming models make the claim not testable. value = max /
    min over the forming models of tokens_seen at emergence; ci = the range
    that ratio can take given checkpoint spacing (a model emerged after its
    previous checkpoint and at or before its emergence checkpoint; ci_high is
    null when a previous checkpoint is step 0). Supported when value <=
    TOKEN_SPREAD_MAX. The detail also gives val_ppl at emergence, so matched
    tokens can be compared with matched ppl.
(b) Behaviors are predicted by perplexity rather than by size or compute (Xia
    et al. 2023). A fitted behavior follows ppl when its best_spec (lowest AIC)
    is "ppl" or "ppl_size" and size_adds is False (the CI of log(params) at
    fixed ppl covers 0). value = share of fitted behaviors that follow ppl, ci
    = its 95 % Wilson interval (behaviors treated as independent, an
    approximation). Supported when ci_low > 0.5 (a clear majority). An
    `evidence` column in the verdicts (dependence-aware tests) is counted in
    the detail.
(c1) The factual-minus-hallucinated gap grows as ppl falls (Xia et al. 2023).
    Per model, Spearman rho of (val_ppl, hallucination_gap) over checkpoints
    with tokens_seen > 0. value = median rho, ci = min and max over models.
    Supported when every model's rho < 0 and the median <= GAP_RHO_MAX.
(c2) Larger models raise the ppl of the a=1, b=-1 generated set late in
    training (Xia et al. 2023, finding 2). Per model, rise = set ppl at the
    final checkpoint / minimum set ppl over its checkpoints. value = the
    largest model's rise. Supported when it is >= RISE_MIN and larger than the
    smallest model's rise.
(d) Bigram positions are learned before in-context recall (Bietti et al.
    2023). From evaluator "recall-bigram" rows: per model, the first
    checkpoint at which the bigram and the recall measure (accuracy kinds if
    present, else loss kinds) have moved half-way from their first to their
    final value (stats.emergence.crossing_points: falling losses and rising
    accuracies alike). value = share of models where bigram gets there at an
    earlier step than recall. Supported when both cross in at least one model
    and bigram is first in every model where both cross.
(e) At matched perplexity, model families do not differ (ppl as the common
    axis, Xia et al. 2023, tested across families). With the family test
    (stats.families.family_test: value ~ log ppl + family per behavior,
    leave-one-model-out jackknife): a behavior differs when its p_value <
    ALPHA / n_tested (Bonferroni); value = the family term (b - a at fixed
    ppl) of the behavior with the smallest p, ci = its CI; the detail counts
    the differing behaviors and gives the largest |b - a| at matched ppl;
    supported when none differs;
    not testable (with the test's evidence, e.g. too few models) when no
    behavior could be tested. Without the test: family differences
    (behavior, ppl, family_a, family_b, diff, ci_low, ci_high, and p_value
    and/or evidence). A row differs when p_value < ALPHA / n_rows (Bonferroni)
    or, without p_value, when its CI excludes 0. value = number of differing
    rows, ci = the CI of the largest |diff|. Supported when no row differs
    (with p values) or at most ALPHA of the rows (CIs only: what 95 % CIs give
    by chance). None -> "not testable: one family" or "not testable: family
    differences not computed".
"""

from __future__ import annotations

import math

import polars as pl

from stats.emergence import crossing_points

FINDINGS_SCHEMA = {"claim": pl.String, "source": pl.String, "statistic": pl.String,
                   "value": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
                   "verdict": pl.String, "detail": pl.String}
SUPPORTED, NOT_SUPPORTED = "supported", "not supported by this run"
INDUCTION_TASKS = ("induction", "trigger-induction")
TOKEN_SPREAD_MAX = 2.0
FORMED_RATIO = 2.0
FORMED_MIN = 0.3
FOLLOWS_PPL_SPECS = ("ppl", "ppl_size")
GAP_RHO_MAX = -0.5
RISE_MIN = 1.05
GENERATED_AB = (1.0, -1.0)
RECALL_BIGRAM = "recall-bigram"
ORDER_KINDS = (("bigram_accuracy", "recall_accuracy"), ("bigram_loss", "recall_loss"))
ALPHA = 0.05
Z95 = 1.959963984540054


NOT_TESTABLE = "not testable"
OUTCOMES = (SUPPORTED, NOT_SUPPORTED, NOT_TESTABLE)


def not_testable(why: str) -> str:
    return f"{NOT_TESTABLE}: {why}"


def outcome(verdict: str) -> str:
    """The verdict without its reason: one of OUTCOMES ("not testable: one family" -> "not
    testable"); ValueError on anything else."""
    head = verdict.split(":", 1)[0]
    if head not in OUTCOMES:
        raise ValueError(f"verdict {verdict!r} is none of {OUTCOMES}")
    return head


def _row(claim: str, source: str, statistic: str, verdict: str, detail: str = "",
         value: float | None = None, ci: tuple[float | None, float | None] = (None, None)) -> dict:
    return {"claim": claim, "source": source, "statistic": statistic, "value": value,
            "ci_low": ci[0], "ci_high": ci[1], "verdict": verdict, "detail": detail}


def _g(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


# -- (a) induction emergence ------------------------------------------------------------


def _previous_tokens(points: pl.DataFrame, rows: pl.DataFrame) -> pl.DataFrame:
    """points + prev_tokens: tokens_seen of the model's checkpoint before the emergence step."""
    before = (points.select("model", "behavior", "step").join(
        rows.select("model", "behavior", pl.col("step").alias("s"), "tokens_seen"),
        on=["model", "behavior"]).filter(pl.col("s") < pl.col("step"))
        .group_by("model", "behavior").agg(pl.col("tokens_seen").max().alias("prev_tokens")))
    return points.join(before, on=["model", "behavior"], how="left")


def induction_emergence(emergence: pl.DataFrame, rows: pl.DataFrame) -> list[dict]:
    """Claim (a), one row per induction head kind (module docstring)."""
    claim = "Induction heads emerge at matched tokens across sizes and families"
    source = "Tigges et al. 2024; Olsson et al. 2022"
    stat = "max/min tokens seen at emergence over models (CI: range allowed by checkpoint spacing)"
    heads = emergence.filter((pl.col("kind") == "head_score")
                             & pl.col("task").is_in(INDUCTION_TASKS))
    if heads.is_empty():
        return [_row(claim, source, stat, not_testable("no induction head scores (circuits "
                                                       "evaluator with induction components)"))]
    out = []
    for (task,), pts in heads.group_by("task", maintain_order=True):
        out.append(_one_head_kind(f"{claim} ({task} score)", source, stat,
                                  _previous_tokens(pts, rows).sort("params", "model")))
    return out


def _one_head_kind(claim: str, source: str, stat: str, pts: pl.DataFrame) -> dict:
    formed = pts.filter((pl.col("final_value") >= FORMED_RATIO * pl.col("start_value"))
                        & (pl.col("final_value") >= FORMED_MIN))
    lacking = ", ".join(f"{m} ({_g(a)} -> {_g(b)})" for m, a, b in pts.join(
        formed.select("model"), on="model", how="anti")
        .select("model", "start_value", "final_value").iter_rows())
    lacking = (f"no head formed (final < {FORMED_RATIO:g} x initial or < {FORMED_MIN:g}): "
               f"{lacking}" if lacking else "")
    if formed.height < 2:
        return _row(claim, source, stat,
                    not_testable(f"the head forms in {formed.height} model(s)"), lacking)
    detail = "; ".join(f"{r['model']}: step {r['step']}, {_g(r['tokens_seen'])} tokens, "
                       f"ppl {_g(r['val_ppl'])}" for r in formed.iter_rows(named=True))
    tok = formed["tokens_seen"].cast(pl.Float64)
    prev = formed["prev_tokens"].cast(pl.Float64).fill_null(0.0)
    ratio = tok.max() / tok.min()
    low = max(1.0, prev.max() / tok.min())
    high = tok.max() / prev.min() if prev.min() > 0 else None
    ppl = formed["val_ppl"]
    detail += f"; ppl at emergence max/min = {_g(ppl.max() / ppl.min())}"
    detail += f"; {lacking}" if lacking else ""
    verdict = SUPPORTED if ratio <= TOKEN_SPREAD_MAX else NOT_SUPPORTED
    return _row(claim, source, stat, verdict, detail, ratio, (low, high))


# -- (b) ppl vs size ---------------------------------------------------------------------


def wilson(k: int, n: int) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k / n (n > 0)."""
    p, z2 = k / n, Z95 ** 2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return centre - half, centre + half


def follows_ppl() -> pl.Expr:
    """Boolean expression over a verdicts frame: the behavior follows ppl (rule (b))."""
    return pl.col("best_spec").is_in(FOLLOWS_PPL_SPECS) & ~pl.col("size_adds")


def _ppl_detail(verdicts: pl.DataFrame, follow: pl.DataFrame) -> str:
    best = verdicts.group_by("best_spec").len().sort("len", "best_spec", descending=[True, False])
    detail = (f"{follow.height} of {verdicts.height} behaviors follow ppl; best fit: "
              + ", ".join(f"{spec} {c}" for spec, c in best.iter_rows())
              + f"; size adds at fixed ppl: {verdicts['size_adds'].sum()}")
    if follow.height:
        names = sorted({b.split(" | ")[0] for b in follow["behavior"]})  # generated sets: a, b
        detail += "; following ppl: " + ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    if "evidence" in verdicts.columns:
        counts = verdicts.group_by("evidence").len().sort("evidence")
        detail += "; evidence: " + ", ".join(f"{e}: {c}" for e, c in counts.iter_rows())
    return detail


def ppl_predicts(verdicts: pl.DataFrame | None) -> dict:
    """Claim (b) (module docstring)."""
    claim = "Behaviors are predicted by perplexity rather than by size or compute"
    source = "Xia et al. 2023"
    stat = ("share of fitted behaviors whose best fit is on ppl and where size adds nothing "
            "at fixed ppl (CI: 95 % Wilson)")
    if verdicts is None or verdicts.is_empty():
        return _row(claim, source, stat, not_testable("no fitted behaviors"))
    follow = verdicts.filter(follows_ppl())
    k, n = follow.height, verdicts.height
    low, high = wilson(k, n)
    detail = _ppl_detail(verdicts, follow)
    return _row(claim, source, stat, SUPPORTED if low > 0.5 else NOT_SUPPORTED, detail,
                k / n, (low, high))


# -- (c) hallucination pattern -----------------------------------------------------------


def hallucination_gap_trend(rows: pl.DataFrame) -> dict:
    """Claim (c1) from the behavior rows of kind "hallucination_gap" (module docstring)."""
    claim = "The factual-minus-hallucinated gap grows as perplexity falls"
    source = "Xia et al. 2023"
    stat = "median over models of Spearman rho(val_ppl, gap) (CI: min and max over models)"
    gap = rows.filter((pl.col("kind") == "hallucination_gap") & (pl.col("tokens_seen") > 0))
    if gap.is_empty():
        return _row(claim, source, stat, not_testable("no factual and hallucinated sets"))
    rho = (gap.group_by("params", "model").agg(
        pl.corr("val_ppl", "value", method="spearman").alias("rho"), pl.len().alias("n"))
        .filter(pl.col("n") >= 3).sort("params", "model"))
    if rho.is_empty() or rho["rho"].null_count() == rho.height:
        return _row(claim, source, stat, not_testable("fewer than 3 checkpoints per model"))
    rho = rho.with_columns(pl.col("rho").fill_nan(None))
    med = rho["rho"].median()
    detail = "; ".join(f"{m}: rho {_g(r)} over {n} checkpoints" for _, m, r, n in rho.iter_rows())
    ok = med is not None and med <= GAP_RHO_MAX and (rho["rho"].fill_null(0.0) < 0).all()
    return _row(claim, source, stat, SUPPORTED if ok else NOT_SUPPORTED, detail, med,
                (rho["rho"].min(), rho["rho"].max()))


def generated_set_rise(generated: pl.DataFrame | None) -> dict:
    """Claim (c2) from stats.hallucination.generated_set_ppl output (module docstring)."""
    a, b = GENERATED_AB
    claim = (f"Larger models raise the perplexity of the a={a:g}, b={b:g} generated set "
             "late in training")
    source = "Xia et al. 2023"
    stat = "largest model's set ppl at its final checkpoint / its minimum over training"
    sub = (None if generated is None or generated.is_empty()
           else generated.filter((pl.col("a") == a) & (pl.col("b") == b)))
    if sub is None or sub.is_empty():
        return _row(claim, source, stat, not_testable(f"no a={a:g}, b={b:g} generated set"))
    rise = (sub.sort("step").group_by("params", "model").agg(
        (pl.col("ppl").last() / pl.col("ppl").min()).alias("rise"),
        pl.col("step").get(pl.col("ppl").arg_min()).alias("min_step"),
        pl.col("step").last().alias("last_step")).sort("params", "model"))
    if rise.height < 2:
        return _row(claim, source, stat, not_testable("one model"))
    detail = "; ".join(f"{m}: x{_g(r)} (lowest at step {s0}, final step {s1})"
                       for _, m, r, s0, s1 in rise.iter_rows())
    largest, smallest = rise["rise"][-1], rise["rise"][0]
    ok = largest >= RISE_MIN and largest > smallest
    return _row(claim, source, stat, SUPPORTED if ok else NOT_SUPPORTED, detail, largest)


# -- (d) order of learning ----------------------------------------------------------------


def learning_order(rows: pl.DataFrame) -> dict:
    """Claim (d) from evaluator "recall-bigram" rows (module docstring)."""
    claim = "Bigram positions are learned before in-context recall"
    source = "Bietti et al. 2023"
    stat = "share of models whose bigram measure moves half-way before the recall measure"
    rb = rows.filter(pl.col("evaluator") == RECALL_BIGRAM)
    kinds = next((pair for pair in ORDER_KINDS if set(pair) <= set(rb["kind"].unique())), None)
    if kinds is None:
        return _row(claim, source, stat, not_testable("no recall-bigram results"))
    steps = crossing_points(rb.filter(pl.col("kind").is_in(kinds)),
                            by=("family", "model", "params", "kind"))
    wide = (steps.filter(pl.col("kind") == kinds[0]).select("params", "model", "step").join(
        steps.filter(pl.col("kind") == kinds[1]).select("model", pl.col("step").alias("recall")),
        on="model").sort("params", "model"))
    both = wide.drop_nulls(["step", "recall"])
    detail = f"{kinds[0]} vs {kinds[1]}: " + "; ".join(
        f"{m}: step {_g(s)} vs {_g(r)}" for _, m, s, r in wide.iter_rows())
    if both.is_empty():
        return _row(claim, source, stat, NOT_SUPPORTED, detail + " (neither moves in any model)")
    first = both.filter(pl.col("step") < pl.col("recall")).height
    verdict = SUPPORTED if first == both.height else NOT_SUPPORTED
    return _row(claim, source, stat, verdict, detail, first / both.height)


# -- (e) families at matched ppl ----------------------------------------------------------


def differing(diffs: pl.DataFrame) -> pl.Expr:
    """Boolean expression: a family-difference row differs (rule (e))."""
    if "p_value" in diffs.columns:
        return pl.col("p_value") < ALPHA / max(diffs.height, 1)
    return (pl.col("ci_low") > 0) | (pl.col("ci_high") < 0)


def _largest_difference(diffs: pl.DataFrame | None) -> tuple[str, tuple]:
    """Text and CI of the largest |b - a| at matched ppl (empty when there is none)."""
    if diffs is None or diffs.drop_nulls("diff").is_empty():
        return "", (None, None)
    top = diffs.drop_nulls("diff").sort(pl.col("diff").abs(), descending=True).row(0, named=True)
    ci = "" if top["ci_low"] is None else f" [{_g(top['ci_low'])}, {_g(top['ci_high'])}]"
    return (f"largest difference at matched ppl: {top['behavior']} at ppl {_g(top['ppl'])}: "
            f"{top['family_b']} - {top['family_a']} = {_g(top['diff'])}{ci}"
            + (" (see the family section's notes: ppl turns up)" if "ppl turns up" in
               (top.get("note") or "") else ""), (top["ci_low"], top["ci_high"]))


def _families_by_test(test: pl.DataFrame, diffs: pl.DataFrame | None, head: tuple) -> dict:
    """Claim (e) from the family term at fixed ppl (stats.families.family_test)."""
    tested = test.drop_nulls("p_value")
    if tested.is_empty():
        why = test["evidence"].drop_nulls()
        return _row(*head, not_testable(why[0] if why.len() else "no behavior could be tested"))
    flagged = tested.filter(pl.col("p_value") < ALPHA / tested.height)
    top = tested.sort("p_value").row(0, named=True)
    detail = (f"{flagged.height} of {tested.height} behaviors differ (family term at fixed ppl, "
              f"leave-one-model-out jackknife, Bonferroni: p < {ALPHA / tested.height:.2g})")
    if flagged.height:
        detail += ": " + ", ".join(sorted(flagged["behavior"])[:8])
    scale = f" ({top['scale']} scale)" if top.get("scale") not in (None, "value") else ""
    detail += (f"; smallest p: {top['behavior']} (p = {_g(top['p_value'])}), "
               f"{top.get('family_b', 'b')} - {top.get('family_a', 'a')} = "
               f"{_g(top['estimate'])}{scale}")
    text, _ = _largest_difference(diffs)
    detail += ("; " + text) if text else ""
    verdict = SUPPORTED if flagged.height == 0 else NOT_SUPPORTED
    return _row(*head, verdict, detail, top["estimate"], (top["ci_low"], top["ci_high"]))


def families_match(diffs: pl.DataFrame | None, n_families: int,
                   test: pl.DataFrame | None = None) -> dict:
    """Claim (e) (module docstring)."""
    claim = "At matched perplexity, model families do not differ"
    source = "Xia et al. 2023 (ppl as the common axis), across families"
    stat = "family term b - a at fixed ppl, behavior with the smallest p"
    head = (claim, source, stat)
    if n_families < 2:
        return _row(*head, not_testable("one family"))
    if test is not None and not test.is_empty():
        return _families_by_test(test, diffs, head)
    if diffs is None:
        return _row(*head, not_testable("family differences not computed"))
    diffs = diffs.drop_nulls("diff")
    if diffs.is_empty():
        return _row(*head, not_testable("no behavior at a ppl both families reach"))
    if diffs.drop_nulls("ci_low").is_empty() and "p_value" not in diffs.columns:
        return _row(*head, not_testable("no CIs (fewer than 3 models per family)"))
    flagged = diffs.filter(differing(diffs))
    text, ci = _largest_difference(diffs)
    rule = "Bonferroni p" if "p_value" in diffs.columns else "95 % CI excludes 0"
    detail = f"{flagged.height} of {diffs.height} differ ({rule}); {text}"
    if flagged.height:
        detail += "; differing: " + ", ".join(sorted(set(flagged["behavior"]))[:8])
    allowed = 0 if "p_value" in diffs.columns else ALPHA * diffs.height
    verdict = SUPPORTED if flagged.height <= allowed else NOT_SUPPORTED
    return _row(*head, verdict, detail, float(flagged.height), ci)


# -- all claims ----------------------------------------------------------------------------


def findings(*, rows: pl.DataFrame, emergence: pl.DataFrame, verdicts: pl.DataFrame | None,
             generated: pl.DataFrame | None = None,
             family_differences: pl.DataFrame | None = None,
             family_test: pl.DataFrame | None = None) -> pl.DataFrame:
    """Every claim's row (FINDINGS_SCHEMA), in the order of the module docstring.

    Args:
        rows: the behavior table (stats.behaviors; identity columns and val_ppl).
        emergence: emergence points with the identity columns (stats.summary).
        verdicts: stats.regression.Fits.verdicts, or None when nothing was fitted.
        generated: stats.hallucination.generated_set_ppl output, or None.
        family_differences: families at matched ppl with CIs (see claim (e)), or None.
        family_test: stats.families.family_test (claim (e) decides on it when given).
    """
    out = [*induction_emergence(emergence, rows), ppl_predicts(verdicts),
           hallucination_gap_trend(rows), generated_set_rise(generated), learning_order(rows),
           families_match(family_differences, rows["family"].n_unique(), family_test)]
    return pl.DataFrame(out, schema=FINDINGS_SCHEMA)


def summary_text(table: pl.DataFrame) -> str:
    """One line per finding, for a terminal: "- [<verdict>] <claim>; <statistic> = <value> [ci]"."""
    lines = []
    for r in table.iter_rows(named=True):
        line = f"- [{r['verdict']}] {r['claim']}"
        if r["value"] is not None:
            line += f"; {r['statistic'].split(' (CI')[0]} = {_g(r['value'])}"
            if r["ci_low"] is not None or r["ci_high"] is not None:
                line += f" [{_g(r['ci_low'])}, {_g(r['ci_high'])}]"
        lines.append(line)
    return "\n".join(lines)
