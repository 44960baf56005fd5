"""Simulated stores with a known truth for every claim of the Findings (issue 27).

Each scenario simulates what one claim is decided from, with the dependence
real data has: a model's checkpoints are one run, so every series carries
stationary AR(1) noise (rho 0.8) along its checkpoints (stats.simulate), and
models are the independent units. Checkpoints are log-spaced over steps 1,000
to 143,000 (Pythia's 2,097,152 tokens per step), 15 per model.

:data:`SCENARIOS` lists (claim key, scenario, truth, simulate): ``truth`` is
"holds" (a "contradicted" outcome is wrong) or "fails" (a "supported" outcome
is wrong); ``simulate(rng)`` returns the claim's :class:`ClaimInputs`.
:func:`run_scenario` gives the outcome word. The rates over replicates are
``bench/bench_calibration.py --claims``; tests/test_claims_calibration.py
checks one seeded replicate of each.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import polars as pl

from stats.hallucination import generator_marks
from stats.outcomes import ClaimInputs, outcome
from stats.simulate import FIRST_STEP, LAST_STEP, TOKENS_PER_STEP, _ar1, simulate_suite

RHO, N_CHECKPOINTS = 0.8, 15
STEPS = np.unique(np.round(np.geomspace(FIRST_STEP, LAST_STEP, N_CHECKPOINTS))).astype(np.int64)
TOKENS = STEPS * TOKENS_PER_STEP
MID_TOKENS = float(np.sqrt(float(TOKENS[0]) * float(TOKENS[-1])))  # mid-training
EMPTY = pl.DataFrame()


def _series_rows(values: np.ndarray, *, evaluator: str, kind: str, task: str | None = None,
                 family: str = "sim") -> pl.DataFrame:
    """Behavior rows of (models, checkpoints) values; params log-spaced, val_ppl falling."""
    n_models = values.shape[0]
    params = np.round(np.geomspace(7e7, 1.2e10, n_models)).astype(np.int64)
    lt = np.log(TOKENS.astype(float))
    log_ppl = 4.2 - 0.12 * (np.log(params.astype(float))[:, None] - 18) - 0.3 * (lt - 21)
    return pl.DataFrame({
        "family": family, "model": [f"{family}-{p}" for p in params.repeat(STEPS.size)],
        "params": params.repeat(STEPS.size), "step": np.tile(STEPS, n_models),
        "tokens_seen": np.tile(TOKENS, n_models),
        "flops": 6.0 * params.repeat(STEPS.size) * np.tile(TOKENS, n_models).astype(float),
        "behavior": f"{kind}:{task}", "evaluator": evaluator, "kind": kind, "task": task,
        "set": None, "value": values.ravel(), "n_trials": None,
        "val_ppl": np.exp(log_ppl.ravel())},
        schema_overrides={"task": pl.String, "set": pl.String, "n_trials": pl.Int64})


def _sigmoid_curves(rng, centres: np.ndarray, low: float, high: float, noise_sd: float,
                    width: float = 0.25) -> np.ndarray:
    """(models, checkpoints): low -> high around each model's centre (tokens), + AR(1)."""
    z = (np.log(TOKENS)[None, :] - np.log(centres)[:, None]) / width
    curve = low + (high - low) / (1 + np.exp(-z))
    return curve + _ar1(rng, curve.shape, RHO, noise_sd)


# -- (a) induction at matched tokens ---------------------------------------------------------


def induction(rng, ratio: float, n_models: int = 3, noise_sd: float = 0.03) -> ClaimInputs:
    """Head scores 0.05 -> 0.8; the models' emergence tokens span ``ratio`` (1: matched)."""
    from stats.summary import emergence_points

    centres = MID_TOKENS * np.geomspace(1.0, ratio, n_models) * np.exp(rng.uniform(-0.3, 0.3))
    rows = _series_rows(_sigmoid_curves(rng, centres, 0.05, 0.8, noise_sd),
                        evaluator="circuits", kind="head_score", task="induction")
    return ClaimInputs(rows, emergence_points(rows))


# -- (b) behaviors follow ppl ---------------------------------------------------------------


def ppl_share(rng, share: float, n_behaviors: int = 12, n_sizes: int = 3,
              size_effect: float = 0.04) -> ClaimInputs:
    """``n_behaviors`` simulated suites of two families (n_sizes each; fb's log ppl 0.3 higher
    at equal size and tokens, so ppl is not a function of size and tokens alone);
    round(share x n) behaviors depend on ppl alone, the others also on size at fixed ppl
    (``size_effect`` per log param)."""
    from stats.regression import fit_behaviors

    n_ppl = int(round(share * n_behaviors))
    parts = [simulate_suite(rng, n_sizes=n_sizes, size_effect=0.0 if i < n_ppl else size_effect,
                            families=("fa", "fb"), ppl_offset={"fb": 0.3})
             .with_columns(pl.lit(f"sim{i}").alias("behavior")) for i in range(n_behaviors)]
    rows = pl.concat(parts)
    return ClaimInputs(rows, EMPTY, fit_behaviors(rows, mixed=False).verdicts)


def behavior_mix(rng, counts: dict[str, int], n_sizes: int = 3, size_effect: float = 0.04,
                 tokens_slope: float = -0.09, noise_sd: float = 0.03) -> ClaimInputs:
    """One suite of two families (``n_sizes`` each, fb's log ppl 0.3 higher at equal size and
    tokens), with ``counts[kind]`` behaviors of each kind, all measured on the SAME models
    (so they share the models' ppl and are not independent votes). Per kind, value =

    - "ppl": 0.5 - 0.3 (log ppl - 3) (depends on ppl alone);
    - "size": the same + ``size_effect`` x (log params - mean) (size matters at fixed ppl);
    - "tokens": 0.5 + ``tokens_slope`` (log tokens - 21) (tokens alone; about the ppl
      slope's size in value, since log ppl falls 0.3 per log token);
    - "noise": 0.5 (nothing predicts it);

    each + its own AR(1) noise (rho 0.8, sd ``noise_sd``) along every model's checkpoints.
    """
    from stats.regression import fit_behaviors

    unknown = sorted(set(counts) - {"ppl", "size", "tokens", "noise"})
    if unknown:
        raise KeyError(f"behavior kinds {unknown}; kinds: ppl, size, tokens, noise")
    base = simulate_suite(rng, n_sizes=n_sizes, families=("fa", "fb"), ppl_offset={"fb": 0.3})
    n_models = base["model"].n_unique()
    shape = (n_models, base.height // n_models)
    log_ppl = np.log(base["val_ppl"].to_numpy()).reshape(shape)
    lp = np.log(base["params"].to_numpy().astype(float)).reshape(shape)
    lt = np.log(base["tokens_seen"].to_numpy().astype(float)).reshape(shape)
    ppl_driven = 0.5 - 0.3 * (log_ppl - 3)
    means = {"ppl": ppl_driven, "size": ppl_driven + size_effect * (lp - lp.mean()),
             "tokens": 0.5 + tokens_slope * (lt - 21), "noise": np.full(shape, 0.5)}
    parts = [base.with_columns(pl.Series("value", (means[kind] + _ar1(rng, shape, RHO, noise_sd))
                                         .ravel()), pl.lit(f"{kind}{i}").alias("behavior"))
             for kind, n in counts.items() for i in range(n)]
    rows = pl.concat(parts)
    return ClaimInputs(rows, EMPTY, fit_behaviors(rows, mixed=False).verdicts)


# -- (c1) hallucination gap vs ppl -----------------------------------------------------------


def gap_trend(rng, slope: float, n_models: int = 3, noise_sd: float = 0.1) -> ClaimInputs:
    """gap = slope x log val_ppl + AR(1) noise: slope < 0, the gap grows as ppl falls."""
    base = _series_rows(np.zeros((n_models, STEPS.size)), evaluator="sequences",
                        kind="hallucination_gap")
    log_ppl = np.log(base["val_ppl"].to_numpy()).reshape(n_models, STEPS.size)
    value = slope * (log_ppl - 3) + _ar1(rng, log_ppl.shape, RHO, noise_sd)
    return ClaimInputs(base.with_columns(pl.Series("value", value.ravel())), EMPTY)


# -- (c2) generated-set ppl rises late in the larger models ------------------------------------


def generated_rise(rng, rise_large: float, rise_small: float = 1.0, n_models: int = 3,
                   noise_sd: float = 0.01, generators: tuple[int, int] | None = None,
                   generator_rise: float = 1.0, turn: float = 0.7) -> ClaimInputs:
    """Set ppl falls by a factor e over the first ``turn`` (70 %) of log steps (to about 24 %
    of training in tokens), then over the rest rises by a factor from ``rise_small``
    (smallest model) to ``rise_large`` (largest), + AR(1) noise on log ppl. ``turn`` 0.35:
    the lowest point is at about 4 % of training, an early rise (not Xia's late one).

    ``generators``: (small, large) indices of the models that generated the set (recorded in
    its name, as evals.mixture does); their rise is ``generator_rise`` instead, and the
    others' rises run from rise_small to rise_large. None: the name records no generators.
    """
    base = _series_rows(np.zeros((n_models, STEPS.size)), evaluator="sequences", kind="x")
    frac = np.linspace(0, 1, STEPS.size)
    late = np.clip((frac - turn) / (1 - turn), 0, 1)
    gens = () if generators is None else generators
    others = [i for i in range(n_models) if i not in gens]
    rises = np.full(n_models, np.log(generator_rise))
    rises[others] = np.log(np.geomspace(rise_small, rise_large, len(others)))
    log_ppl = ((np.log(40.0) - np.minimum(frac, turn) / turn)[None, :]
               + rises[:, None] * late[None, :])
    ppl = np.exp(log_ppl + _ar1(rng, log_ppl.shape, RHO, noise_sd))
    models = base["model"].unique(maintain_order=True).to_list()
    name = "mix a=1 b=-1" + ("" if generators is None else
                             f" | small: sim/{models[gens[0]]}@step{STEPS[-1]}"
                             f" | large: sim/{models[gens[1]]}@step{STEPS[-1]}")
    gen = base.select("family", "model", "params", "step", "tokens_seen",
                      pl.lit(name).alias("set"), pl.lit(1.0).alias("a"), pl.lit(-1.0).alias("b"),
                      pl.Series("ppl", ppl.ravel())).with_columns(generator_marks(pl.col("set")))
    return ClaimInputs(base, EMPTY, generated=gen)


# -- (d) bigram before recall -------------------------------------------------------------------


def learning_order(rng, lead: float, n_models: int = 3, noise_sd: float = 0.03) -> ClaimInputs:
    """Bigram and recall accuracies 0.1 -> 0.9; recall's transition ``lead`` x later in tokens
    than bigram's (lead > 1: bigram first; 1: together; < 1: recall first)."""
    centres = MID_TOKENS / np.sqrt(lead) * np.exp(rng.uniform(-0.5, 0.5, n_models))
    parts = [_series_rows(_sigmoid_curves(rng, c, 0.1, 0.9, noise_sd), evaluator="recall-bigram",
                          kind=kind)
             for kind, c in (("bigram_accuracy", centres), ("recall_accuracy", centres * lead))]
    return ClaimInputs(pl.concat(parts), EMPTY)


# -- (e) families at matched ppl -----------------------------------------------------------------

MARGIN = 0.06  # declared margin in value units (2 x the AR(1) noise sd of 0.03)


def families(rng, shift: float, per_family: int = 4, margin: float = MARGIN) -> ClaimInputs:
    """Two families, fb's value ``shift`` higher at equal ppl (and its ppl 0.15 higher in log at
    equal size and tokens); the family test with the declared ``margin``."""
    from stats.equivalence import family_outcomes
    from stats.families import family_test

    rows = simulate_suite(rng, n_sizes=per_family, families=("fa", "fb"),
                          family_shift={"fb": shift}, ppl_offset={"fb": 0.15})
    test = family_outcomes(family_test(rows, ("fa", "fb")), rows, declared=margin)
    return ClaimInputs(rows, EMPTY, family_test=test)


SCENARIOS = (
    ("a", "emergence tokens matched (ratio 1)", "holds", partial(induction, ratio=1.0)),
    ("a", "emergence tokens 4x apart", "fails", partial(induction, ratio=4.0)),
    ("b", "11 of 12 behaviors follow ppl", "holds", partial(ppl_share, share=0.9)),
    ("b", "1 of 12 behaviors follows ppl", "fails", partial(ppl_share, share=0.1)),
    ("c1", "gap grows as ppl falls (slope -0.3)", "holds", partial(gap_trend, slope=-0.3)),
    ("c1", "no trend", "fails", partial(gap_trend, slope=0.0)),
    ("c1", "gap shrinks as ppl falls (slope +0.3)", "fails", partial(gap_trend, slope=0.3)),
    ("c2", "largest rises x1.2, smallest not", "holds", partial(generated_rise, rise_large=1.2)),
    ("c2", "no model rises", "fails", partial(generated_rise, rise_large=1.0)),
    ("d", "recall 3x later than bigram", "holds", partial(learning_order, lead=3.0)),
    ("d", "together", "fails", partial(learning_order, lead=1.0)),
    ("d", "recall 3x earlier", "fails", partial(learning_order, lead=1 / 3)),
    ("e", "no shift (margin 0.06)", "holds", partial(families, shift=0.0)),
    ("e", "shift = margin (0.06)", "fails", partial(families, shift=MARGIN)),
    ("e", "shift = 2 x margin", "fails", partial(families, shift=2 * MARGIN)),
    ("b", "24 of 24 behaviors follow ppl", "holds",  # appended: earlier seeds stay put
     partial(ppl_share, share=1.0, n_behaviors=24)),
    # one suite, behaviors sharing its models (issue 34): (b) false in new ways, and true
    # among noise
    ("b", "one suite: 12 behaviors all noise", "fails",
     partial(behavior_mix, counts={"noise": 12})),
    ("b", "one suite: 6 noise + 6 size-driven at fixed ppl", "fails",
     partial(behavior_mix, counts={"noise": 6, "size": 6})),
    ("b", "one suite: 12 behaviors driven by tokens only", "fails",
     partial(behavior_mix, counts={"tokens": 12})),
    ("b", "one suite: 6 ppl-driven + 6 noise", "holds",
     partial(behavior_mix, counts={"ppl": 6, "noise": 6})),
    ("c2", "only the generator (largest) rises x1.2", "fails",
     partial(generated_rise, rise_large=1.0, n_models=4, generators=(0, 3),
             generator_rise=1.2)),
    ("c2", "non-generator large model rises x1.2", "holds",
     partial(generated_rise, rise_large=1.2, n_models=4, generators=(0, 3))),
    ("c2", "largest rises x1.2 from an early low (4 % of training)", "fails",
     partial(generated_rise, rise_large=1.2, turn=0.35)),
)


def run_scenario(key: str, simulate, rng) -> str:
    """The outcome word of claim ``key`` on one simulated store."""
    from stats.findings import evaluate

    rows = evaluate(key, simulate(rng))
    return outcome(rows[0]["verdict"])
