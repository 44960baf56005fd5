"""Per-token loss trajectories over a model's checkpoints (Xia et al. 2023, section 1).

Input is the `token-loss` table (keys + doc_id, token_index, token_id,
loss_nats) of one fixed validation set scored at every checkpoint. A token is
identified by (doc_id, token_index); its trajectory is its loss at each of a
model's checkpoints in step order, restricted to a window that starts at a
fraction `start_fraction` of training (the checkpoints with
step >= start_fraction * last step of the window; default 0.1 for "xia", the
paper's smallest t, and 0 for "shape").

Two classification rules (`TrendOptions.method`):

- "xia" (the default; the paper's rule, spec trajectories.md section 1): see below.
- "shape" (ours; the only rule with a double-descent class): on the loss
  (nats) trajectory, with one threshold delta = `min_change_nats` (default 0.2
  nats, a ~22% change of the token's ppl):

  * double-descent: falls by >= delta, then rises by >= delta, then falls by
    >= delta (in that order, anywhere in the window);
  * increasing: otherwise, ends >= delta above its lowest loss (rose after its
    best point: the paper's "increasing" tokens, a rise not yet followed by a
    second fall);
  * decreasing: otherwise, ends >= delta below where it started;
  * stagnant: never moves: max - min < delta;
  * other: moved by >= delta but none of the above (e.g. rose, then fell back).

  Worked example, delta = 0.2, losses [3.0, 2.0, 2.5, 1.9]: falls 1.0 (3.0 ->
  2.0), rises 0.5 (-> 2.5), falls 0.6 (-> 1.9): double-descent. [3.0, 2.0,
  2.5]: no second fall, ends 0.5 above its minimum: increasing. [3.0, 2.0, 2.1]:
  decreasing. [3.0, 3.1, 2.95]: stagnant.

- "xia": y = token ppl /
  its first value in the window, OLS y ~ 1 + log(step) over the window (step 0
  is excluded: log 0); increasing if slope > 0 and p < `alpha`, decreasing if
  slope < 0 and p < `alpha`; stagnant if neither and the window's geometric
  mean ppl m satisfies 1 - band < m / first < 1 + band and 1 - band < m / last
  < 1 + band (`band` = 0.05) and var(ppl) < m; else unclassified.

Cross-size overlap of the most improved tokens (`improvement_overlap`) lives
in `stats.token_overlap`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numpy as np
import polars as pl
from scipy import stats as sps

from evals.schema import KEY_COLUMNS
from stats.perplexity import validation_ppl

KEYS = list(KEY_COLUMNS)
SHAPE_CLASSES = ("decreasing", "stagnant", "increasing", "double-descent", "other")
XIA_CLASSES = ("decreasing", "stagnant", "increasing", "unclassified")
METHODS = ("shape", "xia")
TOKEN_ID = ["doc_id", "token_index"]


@dataclass(frozen=True)
class TrendOptions:
    """How token trajectories are classified (see the module docstring).

    Attributes:
        method: "xia" (the paper's rule, default) or "shape" (ours: four shapes, double
            descent included, from one loss threshold).
        min_change_nats: shape: the smallest fall/rise in loss (nats) that counts as a move.
        start_fraction: both: the window starts at this fraction of the last step (0 = all);
            None: 0.1 for "xia" (the paper's smallest t), 0.0 for "shape".
        alpha: xia: significance level of the OLS slope.
        band: xia: stagnant tokens keep their geometric mean ppl within this relative band.
        min_points: windows with fewer checkpoints are not classified.
    """

    method: str = "xia"
    min_change_nats: float = 0.2
    start_fraction: float | None = None
    alpha: float = 0.05
    band: float = 0.05
    min_points: int = 3

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r} not allowed; choose one of {METHODS}")
        if self.min_change_nats <= 0:
            raise ValueError(f"min_change_nats must be > 0, got {self.min_change_nats}")
        if self.start_fraction is None:
            object.__setattr__(self, "start_fraction", 0.1 if self.method == "xia" else 0.0)
        if not 0.0 <= self.start_fraction < 1.0:
            raise ValueError(f"start_fraction must be in [0, 1), got {self.start_fraction}")
        if not 0.0 < self.alpha < 1.0 or not 0.0 < self.band < 1.0:
            raise ValueError(f"alpha and band must be in (0, 1), got {self.alpha}, {self.band}")
        if self.min_points < 3:
            raise ValueError(f"min_points must be >= 3 (a trend needs 3 points), "
                             f"got {self.min_points}")

    @property
    def classes(self) -> tuple[str, ...]:
        return SHAPE_CLASSES if self.method == "shape" else XIA_CLASSES


@dataclass(frozen=True)
class Trajectories:
    """One model's token losses as a dense matrix.

    Attributes:
        checkpoints: keys of each checkpoint (rows in step order).
        tokens: doc_id, token_index, token_id of each token (rows of `loss`).
        loss: (token, checkpoint) loss in nats.
    """

    checkpoints: pl.DataFrame
    tokens: pl.DataFrame
    loss: np.ndarray

    @property
    def steps(self) -> np.ndarray:
        return self.checkpoints["step"].to_numpy()


def model_trajectories(token_loss: pl.DataFrame | pl.LazyFrame) -> dict[tuple, Trajectories]:
    """(family, model) -> Trajectories; every checkpoint of a model must score the same tokens."""
    frame = token_loss.collect() if isinstance(token_loss, pl.LazyFrame) else token_loss
    out = {}
    for (family, model), group in frame.group_by("family", "model", maintain_order=True):
        group = group.sort("step", *TOKEN_ID)
        ckpts = group.select(KEYS).unique(maintain_order=True)
        n = group.height // max(ckpts.height, 1)
        tokens = group.head(n).select(*TOKEN_ID, "token_id")
        if n * ckpts.height != group.height or any(
            not group.slice(i * n, n).select(*TOKEN_ID, "token_id").equals(tokens)
            for i in range(1, ckpts.height)
        ):
            raise ValueError(f"{family}/{model}: checkpoints scored different tokens; the "
                             "token-loss table must hold one validation set per model")
        loss = group["loss_nats"].cast(pl.Float64).to_numpy().reshape(ckpts.height, n).T
        out[(family, model)] = Trajectories(ckpts, tokens, loss)
    return out


def classify_shape(loss: np.ndarray, min_change: float) -> np.ndarray:
    """The "shape" rule on a (token, checkpoint) loss matrix; returns class names.

    The three moves of double descent are found in one pass each: the deepest
    fall into every point, the highest rise from a qualifying trough, and the
    deepest fall after a qualifying peak.
    """
    fall_in = np.maximum.accumulate(loss, axis=1) - loss  # fall from the running max
    troughs = np.where(fall_in >= min_change, loss, np.inf)
    rise_in = loss - np.minimum.accumulate(troughs, axis=1)  # rise since a fallen-to trough
    later_min = np.minimum.accumulate(loss[:, ::-1], axis=1)[:, ::-1]
    fall_out = np.where(rise_in >= min_change, loss - later_min, -np.inf)
    double = fall_out.max(axis=1) >= min_change
    last, first = loss[:, -1], loss[:, 0]
    lo, hi = loss.min(axis=1), loss.max(axis=1)
    out = np.full(loss.shape[0], "other", dtype=object)
    out[hi - lo < min_change] = "stagnant"
    out[(first - last >= min_change) & (last - lo < min_change)] = "decreasing"
    out[last - lo >= min_change] = "increasing"
    out[double] = "double-descent"
    return out


def xia_slopes(loss: np.ndarray, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OLS of normalized token ppl on log(step), per token: (slope, two-sided p-value)."""
    x = np.log(steps.astype(np.float64))
    y = np.exp(loss - loss[:, :1])  # ppl / first ppl
    n = len(x)
    xc = x - x.mean()
    sxx = (xc**2).sum()
    slope = (y - y.mean(axis=1, keepdims=True)) @ xc / sxx
    resid = y - y.mean(axis=1, keepdims=True) - np.outer(slope, xc)
    se = np.sqrt((resid**2).sum(axis=1) / (n - 2) / sxx)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, slope / se, np.where(slope == 0, 0.0, np.inf))
    return slope, 2 * sps.t.sf(np.abs(t), n - 2)


def classify_xia(loss: np.ndarray, steps: np.ndarray, alpha: float, band: float) -> np.ndarray:
    """The paper's rule on a (token, checkpoint) loss matrix over steps > 0."""
    slope, p = xia_slopes(loss, steps)
    ppl = np.exp(loss)
    gmean = np.exp(loss.mean(axis=1))
    near = lambda v: (1 - band < gmean / v) & (gmean / v < 1 + band)  # noqa: E731
    stagnant = near(ppl[:, 0]) & near(ppl[:, -1]) & (ppl.var(axis=1) < gmean)
    out = np.full(loss.shape[0], "unclassified", dtype=object)
    out[stagnant] = "stagnant"
    out[(slope > 0) & (p < alpha)] = "increasing"
    out[(slope < 0) & (p < alpha)] = "decreasing"
    return out


def window(steps: np.ndarray, end: int, options: TrendOptions) -> np.ndarray:
    """Checkpoint indices of the window ending at index `end` (see module docstring).

    Example: steps [0, 10, 100, 1000], end 3, start_fraction 0.05 -> steps >= 50:
    indices [2, 3]; "xia" also drops step 0.
    """
    idx = np.arange(end + 1)
    keep = steps[idx] >= options.start_fraction * steps[end]
    if options.method == "xia":
        keep &= steps[idx] > 0
    return idx[keep]


def classify(traj: Trajectories, cols: np.ndarray, options: TrendOptions) -> np.ndarray:
    """Class of every token over the checkpoint columns `cols` (None if too few)."""
    loss = traj.loss[:, cols]
    if options.method == "shape":
        return classify_shape(loss, options.min_change_nats)
    return classify_xia(loss, traj.steps[cols], options.alpha, options.band)


def classify_tokens(token_loss: pl.DataFrame | pl.LazyFrame,
                    options: TrendOptions = TrendOptions()) -> pl.DataFrame:
    """One row per model x token: family, model, params, doc_id, token_index, token_id, trend.

    The window ends at each model's last checkpoint; also records the window's
    first_step, last_step and n_checkpoints. Models whose window has fewer than
    `min_points` checkpoints are left out, with a warning naming them.
    """
    parts = []
    for (family, model), traj in model_trajectories(token_loss).items():
        cols = window(traj.steps, len(traj.steps) - 1, options)
        if len(cols) < options.min_points:
            warnings.warn(f"{model}: the trend window (start_fraction {options.start_fraction}) "
                          f"holds {len(cols)} checkpoint(s), fewer than min_points = "
                          f"{options.min_points}; its tokens are not classified", stacklevel=2)
            continue
        parts.append(traj.tokens.with_columns(
            pl.lit(family).alias("family"), pl.lit(model).alias("model"),
            pl.lit(int(traj.checkpoints["params"][0]), pl.Int64).alias("params"),
            pl.Series("trend", classify(traj, cols, options), pl.String),
            pl.lit(int(traj.steps[cols[0]]), pl.Int64).alias("first_step"),
            pl.lit(int(traj.steps[cols[-1]]), pl.Int64).alias("last_step"),
            pl.lit(len(cols), pl.Int64).alias("n_checkpoints")))
    cols = ["family", "model", "params", *TOKEN_ID, "token_id", "trend", "first_step",
            "last_step", "n_checkpoints"]
    if not parts:
        return pl.DataFrame(schema={c: pl.String if c in ("family", "model", "trend")
                                    else pl.Int64 for c in cols})
    return pl.concat(parts).select(cols)


def _fraction_rows(counts: np.ndarray, classes: tuple[str, ...]) -> dict:
    n = counts.sum()
    return {"trend": list(classes), "n_tokens": counts.tolist(),
            "fraction": (counts / n).tolist()}


def class_fractions(token_loss: pl.DataFrame | pl.LazyFrame,
                    options: TrendOptions = TrendOptions()) -> pl.DataFrame:
    """Fraction of tokens per class in windows ending at each checkpoint, with its val ppl.

    For every checkpoint e of a model whose window (ending at e) has at least
    `min_points` checkpoints: keys of e + trend, n_tokens (in the class),
    fraction, val_ppl (validation ppl of e from the same token-loss table).
    Every class gets a row (zero counts included), so fractions sum to 1.
    """
    frame = token_loss.collect() if isinstance(token_loss, pl.LazyFrame) else token_loss
    rows = []
    for traj in model_trajectories(frame).values():
        for end in range(len(traj.steps)):
            cols = window(traj.steps, end, options)
            if len(cols) < options.min_points:
                continue
            labels = classify(traj, cols, options)
            counts = np.array([(labels == c).sum() for c in options.classes])
            key = traj.checkpoints.row(end, named=True)
            rows.append(pl.DataFrame(_fraction_rows(counts, options.classes)).select(
                *[pl.lit(key[c], frame.schema[c]).alias(c) for c in KEYS], pl.all()))
    if not rows:
        schema = {**{c: frame.schema[c] for c in KEYS}, "trend": pl.String,
                  "n_tokens": pl.Int64, "fraction": pl.Float64, "val_ppl": pl.Float64}
        return pl.DataFrame(schema=schema)
    ppl = validation_ppl(frame).select(*KEYS, "val_ppl")
    return pl.concat(rows).join(ppl, on=KEYS, how="left").sort("family", "model", "step")


FRACTIONS_BY_START_SCHEMA = {"family": pl.String, "model": pl.String, "params": pl.Int64,
                             "start_fraction": pl.Float64, "n_checkpoints": pl.Int64,
                             "trend": pl.String, "n_tokens": pl.Int64, "fraction": pl.Float64,
                             "reason": pl.String}


def _unclassified_row(base: dict, steps: np.ndarray, min_points: int) -> dict:
    """The row of a window too short to classify, with the reason; warns once per window."""
    reason = (f"window from t = {base['start_fraction']} holds {len(steps)} checkpoint(s) "
              f"(steps {steps.tolist()}), fewer than min_points = {min_points}")
    warnings.warn(f"{base['model']}: {reason}; not classified", stacklevel=3)
    return {**base, "trend": None, "n_tokens": None, "fraction": None, "reason": reason}


def fractions_by_start(token_loss: pl.DataFrame | pl.LazyFrame,
                       starts: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7),
                       options: TrendOptions = TrendOptions()) -> pl.DataFrame:
    """The paper's figure: fraction per class vs the start of the window (fraction of training).

    Windows end at each model's last checkpoint and start at t * its last step
    (t in `starts`). Returns family, model, params, start_fraction, n_checkpoints
    (in the window), trend, n_tokens, fraction, reason: one row per class for a
    classified window (reason null); a window with fewer than `min_points`
    checkpoints is never dropped silently: it gets one row with trend, n_tokens
    and fraction null and `reason` saying why, and a warning. Example: Pythia
    "log-spaced 20" ends ..., 22000, 41000, 77000, 143000, so the window from
    t = 0.7 (steps >= 100100) holds 1 checkpoint: reported, not classified.
    """
    frame = token_loss.collect() if isinstance(token_loss, pl.LazyFrame) else token_loss
    rows = []
    for (family, model), traj in model_trajectories(frame).items():
        params = int(traj.checkpoints["params"][0])
        for t in starts:
            opts = replace(options, start_fraction=t)
            cols = window(traj.steps, len(traj.steps) - 1, opts)
            base = {"family": family, "model": model, "params": params,
                    "start_fraction": float(t), "n_checkpoints": len(cols)}
            if len(cols) < options.min_points:
                rows.append(_unclassified_row(base, traj.steps[cols], options.min_points))
                continue
            labels = classify(traj, cols, opts)
            counts = [int((labels == c).sum()) for c in options.classes]
            rows.extend({**base, "trend": c, "n_tokens": n, "fraction": n / len(labels),
                         "reason": None} for c, n in zip(options.classes, counts, strict=True))
    return (pl.DataFrame(rows, schema=FRACTIONS_BY_START_SCHEMA, orient="row")
            .sort("family", "model", "start_fraction", "trend", nulls_last=True))


def token_sets_by_trend(labels: pl.DataFrame, model: str) -> pl.DataFrame:
    """The token sets one model's classification defines: doc_id, token_index, token_set.

    `labels` is `classify_tokens` output; token_set is "<model>:<trend>", one set per class.
    """
    if model not in set(labels["model"]):
        raise KeyError(f"model {model!r} not in the labels; models: "
                       f"{sorted(labels['model'].unique())}")
    return labels.filter(pl.col("model") == model).select(
        *TOKEN_ID, pl.concat_str(pl.lit(model + ":"), pl.col("trend")).alias("token_set"))


def token_set_ppl(token_loss: pl.DataFrame | pl.LazyFrame,
                  token_sets: pl.DataFrame) -> pl.DataFrame:
    """Ppl of token sets at every checkpoint of every model, with the checkpoint's val ppl.

    Args:
        token_loss: the token-loss table (all models share the validation set).
        token_sets: doc_id, token_index, token_set (a label); e.g. the tokens one
            model classifies in each class: `token_sets_by_trend(classify_tokens(tl), "m")`.
    Returns:
        keys + token_set, n_tokens, ppl (exp of the mean loss over the set), val_ppl.
    """
    lazy = token_loss.lazy() if isinstance(token_loss, pl.DataFrame) else token_loss
    sets = token_sets.select(*TOKEN_ID, "token_set").lazy()
    out = (lazy.join(sets, on=TOKEN_ID, how="inner")
           .group_by(*KEYS, "token_set")
           .agg(pl.len().alias("n_tokens"),
                pl.col("loss_nats").cast(pl.Float64).mean().exp().alias("ppl"))
           .collect())
    ppl = validation_ppl(lazy).select(*KEYS, "val_ppl")
    return out.join(ppl, on=KEYS, how="left").sort("token_set", "family", "model", "step")


def behaviors(store, options: TrendOptions = TrendOptions()) -> pl.DataFrame | None:
    """Behavior rows: keys, behavior ("frac_<class>"), value, n_trials (null).

    Returns None when the store has no `token-loss` table.
    """
    from stats.behaviors import identity

    if "token-loss" not in store.tables():
        return None
    fracs = class_fractions(store.scan("token-loss"), options)
    return fracs.select(
        *KEYS, pl.concat_str(pl.lit("frac_"), pl.col("trend").str.replace_all("-", "_"))
        .alias("behavior"), *identity("token-loss", "trend_fraction", pl.col("trend")), pl.col("fraction").cast(pl.Float64).alias("value"),
        pl.lit(None, pl.Int64).alias("n_trials")).sort("family", "model", "step", "behavior")
