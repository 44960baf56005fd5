"""Claims about when things are learned: (a) induction at matched tokens, (d) bigram first.

(a) Induction heads emerge at matched tokens across sizes and families
    (Tigges et al. 2024; Olsson et al. 2022). One row per head kind in
    INDUCTION_TASKS among the emergence points (stats.emergence, kind
    "head_score"). A model forms the head when its final score is at least
    FORMED_RATIO x its first (initialisation) score and at least FORMED_MIN
    (attention probabilities: a head with under 0.3 of its attention on the
    induction target at the end is no induction head, however much it grew);
    other models are listed and left out; fewer than 2 forming models: not
    testable. value = max / min over the forming models of tokens_seen at
    emergence. A model emerged after its previous checkpoint and at or before
    its emergence checkpoint, so the true ratio lies in [low, high] (interval
    kind "bounds from checkpoint spacing"; high is unbounded when a previous
    checkpoint is step 0). Rule: supported when high <= TOKEN_SPREAD_MAX,
    contradicted when low > TOKEN_SPREAD_MAX, inconclusive otherwise (the
    spacing cannot tell). Example: emergence at 4000 tokens in every model,
    previous checkpoints at 2000: ratio 1 in [1, 2]: supported.
(d) Bigram positions are learned before in-context recall (Bietti et al.
    2023). From evaluator "recall-bigram" rows: per model, the first checkpoint
    where the bigram and the recall measure (accuracy kinds if present, else
    loss kinds) have moved half-way from their first to their final value
    (stats.emergence.crossing_points). value = share of the models where both
    cross whose bigram crosses at an earlier step. Rule: supported when
    bigram is first in every such model, contradicted when recall is first in
    every such model, inconclusive when the models disagree, cross at the same
    checkpoint (spacing too coarse) or neither measure moves.
"""

from __future__ import annotations

import polars as pl

from stats.emergence import crossing_points
from stats.outcomes import Claim, ClaimInputs, decide, g, inconclusive, not_testable

INDUCTION_TASKS = ("induction", "trigger-induction")
TOKEN_SPREAD_MAX = 2.0
FORMED_RATIO = 2.0
FORMED_MIN = 0.3
RECALL_BIGRAM = "recall-bigram"
ORDER_KINDS = (("bigram_accuracy", "recall_accuracy"), ("bigram_loss", "recall_loss"))
# (d): a measure "moves" when its last value differs from its first by at least this much
# (accuracy, or mean nats): a recall accuracy flat at 0-1 % has no learning step
ORDER_MOVE_MIN = 0.05
SPACING = "bounds from checkpoint spacing"


def _previous_tokens(points: pl.DataFrame, rows: pl.DataFrame) -> pl.DataFrame:
    """points + prev_tokens: tokens_seen of the model's checkpoint before the emergence step."""
    before = (points.select("model", "behavior", "step").join(
        rows.select("model", "behavior", pl.col("step").alias("s"), "tokens_seen"),
        on=["model", "behavior"]).filter(pl.col("s") < pl.col("step"))
        .group_by("model", "behavior").agg(pl.col("tokens_seen").max().alias("prev_tokens")))
    return points.join(before, on=["model", "behavior"], how="left")


def induction_emergence(inp: ClaimInputs, claim: Claim) -> list[dict]:
    """Claim (a), one row per induction head kind (module docstring)."""
    heads = inp.emergence.filter((pl.col("kind") == "head_score")
                                 & pl.col("task").is_in(INDUCTION_TASKS))
    if heads.is_empty():
        return [claim.row(not_testable("no induction head scores (circuits evaluator with "
                                       "induction components)"))]
    return [_one_head_kind(claim, f"{claim.text} ({task} score)",
                           _previous_tokens(pts, inp.rows).sort("params", "model"))
            for (task,), pts in heads.group_by("task", maintain_order=True)]


def head_formed(start, final):
    """The rule of (a): a head formed when its final score is >= FORMED_RATIO x its first and
    >= FORMED_MIN. Floats give a bool, polars expressions an expression."""
    return (final >= FORMED_RATIO * start) & (final >= FORMED_MIN)


def _one_head_kind(claim: Claim, text: str, pts: pl.DataFrame) -> dict:
    formed = pts.filter(head_formed(pl.col("start_value"), pl.col("final_value")))
    lacking = ", ".join(f"{m} ({g(a)} -> {g(b)})" for m, a, b in pts.join(
        formed.select("model"), on="model", how="anti")
        .select("model", "start_value", "final_value").iter_rows())
    lacking = (f"no head formed (final < {FORMED_RATIO:g} x initial or < {FORMED_MIN:g}): "
               f"{lacking}" if lacking else "")
    if formed.height < 2:
        return claim.row(not_testable(f"the head forms in {formed.height} model(s)"), lacking,
                         text=text)
    detail = "; ".join(f"{r['model']}: step {r['step']}, {g(r['tokens_seen'])} tokens, "
                       f"ppl {g(r['val_ppl'])}" for r in formed.iter_rows(named=True))
    tok = formed["tokens_seen"].cast(pl.Float64)
    prev = formed["prev_tokens"].cast(pl.Float64).fill_null(0.0)
    ratio = tok.max() / tok.min()
    low = max(1.0, prev.max() / tok.min())
    high = tok.max() / prev.min() if prev.min() > 0 else None
    ppl = formed["val_ppl"]
    detail += f"; ppl at emergence max/min = {g(ppl.max() / ppl.min())}"
    detail += f"; {lacking}" if lacking else ""
    verdict = decide(high is not None and high <= TOKEN_SPREAD_MAX, low > TOKEN_SPREAD_MAX,
                     f"the ratio lies in [{g(low)}, {g(high)}] (checkpoint spacing), which "
                     f"contains {TOKEN_SPREAD_MAX:g}: denser checkpoints would tell")
    return claim.row(verdict, detail, ratio, (low, high), SPACING, text=text)


def learning_order(inp: ClaimInputs, claim: Claim) -> list[dict]:
    """Claim (d) from evaluator "recall-bigram" rows (module docstring)."""
    rb = inp.rows.filter(pl.col("evaluator") == RECALL_BIGRAM)
    kinds = next((pair for pair in ORDER_KINDS if set(pair) <= set(rb["kind"].unique())), None)
    if kinds is None:
        return [claim.row(not_testable("no recall-bigram results"))]
    steps = crossing_points(rb.filter(pl.col("kind").is_in(kinds)),
                            by=("family", "model", "params", "kind"))
    # a measure that does not move has no learning step (a flat series still crosses half
    # of its tiny change somewhere): its model gives no order
    steps = steps.with_columns(pl.when((pl.col("final_value") - pl.col("start_value")).abs()
                                       >= ORDER_MOVE_MIN).then(pl.col("step")).alias("step"))
    wide = (steps.filter(pl.col("kind") == kinds[0]).select("params", "model", "step").join(
        steps.filter(pl.col("kind") == kinds[1]).select("model", pl.col("step").alias("recall")),
        on="model").sort("params", "model"))
    both = wide.drop_nulls(["step", "recall"])
    detail = f"{kinds[0]} vs {kinds[1]}: " + "; ".join(
        f"{m}: step {g(s)} vs {g(r)}" for _, m, s, r in wide.iter_rows())
    if both.is_empty():
        return [claim.row(inconclusive(
            f"no model where both measures move (by >= {ORDER_MOVE_MIN:g} from the first to "
            "the last checkpoint)"), detail)]
    first = both.filter(pl.col("step") < pl.col("recall")).height
    later = both.filter(pl.col("step") > pl.col("recall")).height
    tied = both.height - first - later
    verdict = decide(first == both.height, later == both.height,
                     f"bigram first in {first}, recall first in {later}, same checkpoint in "
                     f"{tied} of {both.height} models")
    return [claim.row(verdict, detail, first / both.height)]


INDUCTION = Claim(
    "a", "Induction heads emerge at matched tokens across sizes and families",
    "Tigges et al. 2024; Olsson et al. 2022",
    "max/min tokens seen at emergence over the models that form the head",
    f"supported: the spacing bounds lie <= {TOKEN_SPREAD_MAX:g}; contradicted: they lie > "
    f"{TOKEN_SPREAD_MAX:g}; else inconclusive", induction_emergence)
LEARNING_ORDER = Claim(
    "d", "Bigram positions are learned before in-context recall", "Bietti et al. 2023",
    "share of models whose bigram measure moves half-way before the recall measure",
    "supported: bigram first in every model where both move; contradicted: recall first in "
    "every one; else inconclusive", learning_order)
