"""Do models of different sizes improve the same tokens at the same perplexity?

Xia et al.'s finding 1: at a given validation ppl, independent of size, a
similar subset of tokens sees the largest loss reduction. Our direct statistic:
take a window of model A's training (checkpoints i -> i + span), find the
`top_frac` most improved tokens (largest loss drop), and do the same for model
B over the window that (a) ends at the same validation ppl (both ends matched
to A's val ppl, nearest checkpoint of B) or (b) covers the same steps. The
Jaccard overlap of the two token sets is compared between (a) and (b).

Worked example: A's checkpoints at steps [0, 100, 200] have val ppl [90, 40,
30]; B's at the same steps have [80, 30, 20]; max_log_ppl_gap = 0.3.
- A's window 0 -> 100 (ppl 90 -> 40). By step: B 0 -> 100. By ppl: B's
  checkpoint nearest 90 in log ppl is step 0 (80, gap 0.12), nearest 40 is
  step 100 (30, gap 0.29): B 0 -> 100, kept (both gaps <= 0.3).
- A's window 100 -> 200 (ppl 40 -> 30). By step: B 100 -> 200. By ppl: both
  ends map to B's step 100 (ppl 30), an empty window: skipped.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from stats.perplexity import validation_ppl
from stats.trajectories import Trajectories, model_trajectories

OUT_SCHEMA = {
    "family": pl.String, "model_a": pl.String, "params_a": pl.Int64, "model_b": pl.String,
    "params_b": pl.Int64, "match": pl.String, "step_a_start": pl.Int64, "step_a_end": pl.Int64,
    "val_ppl_a_end": pl.Float64, "step_b_start": pl.Int64, "step_b_end": pl.Int64,
    "val_ppl_b_end": pl.Float64, "log_ppl_gap": pl.Float64, "n_tokens": pl.Int64,
    "top_k": pl.Int64, "jaccard": pl.Float64, "jaccard_random": pl.Float64,
}


def top_improved(loss: np.ndarray, start: int, end: int, k: int) -> set[int]:
    """Row indices of the k tokens whose loss fell most from column start to end."""
    drop = loss[:, start] - loss[:, end]
    return set(np.argsort(-drop, kind="stable")[:k].tolist())


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else float("nan")


def _nearest(values: np.ndarray, target: float) -> int:
    return int(np.argmin(np.abs(values - target)))


def _b_windows(a_steps, a_logppl, b_steps, b_logppl, i, j, max_gap):
    """(match, b_start, b_end, log_ppl_gap) windows of B matched to A's window i -> j."""
    out = []
    bs, be = _nearest(b_steps, a_steps[i]), _nearest(b_steps, a_steps[j])
    if be > bs:
        gap = max(abs(b_logppl[bs] - a_logppl[i]), abs(b_logppl[be] - a_logppl[j]))
        out.append(("step", bs, be, gap))
    ps, pe = _nearest(b_logppl, a_logppl[i]), _nearest(b_logppl, a_logppl[j])
    gap = max(abs(b_logppl[ps] - a_logppl[i]), abs(b_logppl[pe] - a_logppl[j]))
    if pe > ps and gap <= max_gap:
        out.append(("val_ppl", ps, pe, gap))
    return out


def _pair_rows(a: Trajectories, b: Trajectories, a_lp: np.ndarray, b_lp: np.ndarray,
               top_frac: float, span: int, max_gap: float) -> list[tuple]:
    n = a.loss.shape[0]
    k = max(1, int(round(top_frac * n)))
    rows = []
    for i in range(len(a.steps) - span):
        j = i + span
        top_a = top_improved(a.loss, i, j, k)
        for match, bs, be, gap in _b_windows(a.steps, a_lp, b.steps, b_lp, i, j, max_gap):
            top_b = top_improved(b.loss, bs, be, k)
            rows.append((match, int(a.steps[i]), int(a.steps[j]), float(np.exp(a_lp[j])),
                         int(b.steps[bs]), int(b.steps[be]), float(np.exp(b_lp[be])), gap,
                         n, k, jaccard(top_a, top_b), k / (2 * n - k)))
    return rows


def improvement_overlap(token_loss: pl.DataFrame | pl.LazyFrame, *, top_frac: float = 0.1,
                        span: int = 1, max_log_ppl_gap: float = 0.1) -> pl.DataFrame:
    """Jaccard of the top-`top_frac` most improved tokens, model pairs of a family.

    Args:
        token_loss: the token-loss table; models of a family must score the same tokens.
        top_frac: fraction of tokens counted as "most improved" (k = round(top_frac * n)).
        span: A's windows run from checkpoint i to i + span.
        max_log_ppl_gap: ppl-matched windows whose ends are further than this in
            |log val ppl| from A's are dropped (B never reached A's ppl).

    Returns:
        One row per (A, B, A's window, match in {"step", "val_ppl"}); A is the
        smaller model. `jaccard_random` = k / (2n - k), the overlap two random
        k-sets of n tokens have on average (ratio of expectations: E|A & B| =
        k^2 / n). Columns: see OUT_SCHEMA.
    """
    if not 0 < top_frac < 1:
        raise ValueError(f"top_frac must be in (0, 1), got {top_frac}")
    if span < 1 or max_log_ppl_gap < 0:
        raise ValueError(f"span must be >= 1 and max_log_ppl_gap >= 0, got {span}, "
                         f"{max_log_ppl_gap}")
    frame = token_loss.collect() if isinstance(token_loss, pl.LazyFrame) else token_loss
    trajs = model_trajectories(frame)
    vp = validation_ppl(frame)
    logppl = {(f, m): np.log(vp.filter((pl.col("family") == f) & (pl.col("model") == m))
                             .sort("step")["val_ppl"].to_numpy()) for f, m in trajs}
    rows = []
    families = sorted({f for f, _ in trajs})
    for family in families:
        models = sorted(((m, t) for (f, m), t in trajs.items() if f == family),
                        key=lambda mt: int(mt[1].checkpoints["params"][0]))
        for ia, (ma, a) in enumerate(models):
            for mb, b in models[ia + 1:]:
                if not a.tokens.equals(b.tokens):
                    raise ValueError(f"{family}: models {ma} and {mb} scored different tokens; "
                                     "overlap needs one validation set and one tokenizer")
                for r in _pair_rows(a, b, logppl[family, ma], logppl[family, mb], top_frac,
                                    span, max_log_ppl_gap):
                    rows.append((family, ma, int(a.checkpoints["params"][0]), mb,
                                 int(b.checkpoints["params"][0]), *r))
    return pl.DataFrame(rows, schema=OUT_SCHEMA, orient="row")


def overlap_summary(overlap: pl.DataFrame) -> pl.DataFrame:
    """Mean Jaccard per model pair and match kind (with the number of windows)."""
    return (overlap.group_by("family", "model_a", "params_a", "model_b", "params_b", "match")
            .agg(pl.len().alias("n_windows"), pl.col("jaccard").mean().alias("jaccard"),
                 pl.col("jaccard_random").mean().alias("jaccard_random"))
            .sort("family", "params_a", "params_b", "match"))
