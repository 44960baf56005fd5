"""Stats layer on simulated data with known truth (issue #7)."""

import numpy as np
import polars as pl
import pytest

from stats.behaviors import behavior_from_frame, behavior_table, register_behavior
from stats.matched import at_ppl, compare_families, emergence
from stats.regression import fit_behaviors

SIZES = (70_000_000, 160_000_000, 410_000_000, 1_000_000_000)


def _sim(truth: str, seed: int = 0, binomial: bool = False, sizes=SIZES) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for params in sizes:
        for step in (0, 1000, 2000, 4000, 8000, 16000, 32000, 64000):
            tokens = step * 2_000_000
            lt = np.log(max(tokens, 1))
            log_ppl = 8.0 - 0.15 * np.log(params) - 0.1 * lt + rng.normal(0, 0.05)
            mean = (1.5 - 0.4 * log_ppl) if truth == "ppl" else 0.3 * np.log(params) - 5.0
            if binomial:
                p = 1 / (1 + np.exp(-mean))
                n = 200
                value, trials = rng.binomial(n, p) / n, n
            else:
                value, trials = mean + rng.normal(0, 0.02), None
            rows.append(("pythia", f"m{params}", params, step, tokens, 6.0 * params * tokens,
                         "b", value, trials, float(np.exp(log_ppl))))
    return pl.DataFrame(rows, orient="row", schema=[
        ("family", pl.String), ("model", pl.String), ("params", pl.Int64), ("step", pl.Int64),
        ("tokens_seen", pl.Int64), ("flops", pl.Float64), ("behavior", pl.String),
        ("value", pl.Float64), ("n_trials", pl.Int64), ("val_ppl", pl.Float64)])


def test_ppl_truth_ppl_wins_and_size_adds_nothing():
    fits = fit_behaviors(_sim("ppl"))
    v = fits.verdicts.row(0, named=True)
    assert v["best_spec"] in ("ppl", "ppl_size")
    assert not v["size_adds"]
    assert v["loso_ratio"] > 1
    assert all(m.startswith("fit") for m in fits.fits["mixed"])
    assert fits.fits["mixed_aic"].null_count() == 0
    slope = fits.coefficients.filter((pl.col("model_spec") == "ppl") & (pl.col("term") == "log_ppl"))
    assert slope["estimate"][0] == pytest.approx(-0.4, abs=0.05)


def test_size_truth_size_wins():
    fits = fit_behaviors(_sim("size"))
    v = fits.verdicts.row(0, named=True)
    assert v["best_spec"] in ("size_tokens", "ppl_size")
    assert v["size_adds"]
    c = fits.coefficients.filter((pl.col("model_spec") == "size_tokens") & (pl.col("term") == "log_params"))
    assert c["estimate"][0] == pytest.approx(0.3, abs=0.03)


def test_binomial_glm_and_loso_with_three_sizes():
    fits = fit_behaviors(_sim("ppl", binomial=True, sizes=SIZES[:3]))
    assert set(fits.fits["family_glm"]) == {"binomial"}
    assert fits.fits["loso_rmse"].null_count() == 0
    assert fits.fits["mixed"][0].startswith("skipped")
    slope = fits.coefficients.filter((pl.col("model_spec") == "ppl") & (pl.col("term") == "log_ppl"))
    assert slope["ci_low"][0] < -0.4 < slope["ci_high"][0]


def _piecewise() -> pl.DataFrame:
    ppl = [80.0, 40.0, 20.0, 10.0]
    val = [0.0, 0.1, 0.5, 0.6]
    return pl.DataFrame({"family": "f", "model": "m", "params": 1, "step": [1, 2, 3, 4],
                         "tokens_seen": [1, 2, 3, 4], "flops": 1.0, "behavior": "b",
                         "value": val, "n_trials": None, "val_ppl": ppl},
                        schema_overrides={"n_trials": pl.Int64})


def test_at_ppl_exact_and_refuses_extrapolation():
    out = at_ppl(_piecewise(), [np.sqrt(40 * 20), 40.0, 100.0, 5.0])
    assert out["value"][0] == pytest.approx(0.3)
    assert out["value"][1] == pytest.approx(0.1)
    assert out["value"][2] is None and out["value"][3] is None
    assert out["monotone"].all()


def test_at_ppl_non_monotone_flagged():
    rows = _piecewise().with_columns(pl.Series("val_ppl", [80.0, 40.0, 50.0, 10.0]))
    out = at_ppl(rows, [20.0])
    assert not out["monotone"][0]
    assert out["value"][0] is not None


def test_compare_families_and_errors():
    rows = pl.concat([_piecewise(), _piecewise().with_columns(pl.lit("g").alias("family"),
                                                                pl.col("value") + 0.2)])
    out = compare_families(rows, ["f", "g"], [20.0])
    assert out.filter(pl.col("family") == "g")["mean"][0] == pytest.approx(0.7)
    assert out["ci_low"].null_count() == out.height  # one model per family: no interval
    two = pl.concat([rows, _piecewise().with_columns(pl.lit("m2").alias("model"),
                                                      pl.col("value") + 0.1)])
    assert compare_families(two, ["f"], [20.0])["ci_low"][0] is None  # 2 models: no CI
    three = pl.concat([two, _piecewise().with_columns(pl.lit("m3").alias("model"),
                                                       pl.col("value") - 0.1)])
    ci = compare_families(three, ["f"], [20.0]).row(0, named=True)
    assert ci["n_models"] == 3 and ci["ci_low"] < ci["mean"] < ci["ci_high"]
    with pytest.raises(KeyError, match="available"):
        compare_families(rows, ["nope"], [20.0])


def test_emergence_recovered():
    em = emergence(_piecewise(), chance=0.0, margin=0.3)
    assert em["step"][0] == 3 and em["val_ppl"][0] == 20.0
    assert emergence(_piecewise(), chance=0.9)["step"][0] is None


class _Store:
    def __init__(self, tl):
        self.tl = tl

    def tables(self):
        return ["token-loss"]

    def scan(self, name):
        return self.tl.lazy()


def test_behavior_table_registry_and_missing(monkeypatch):
    import stats.behaviors as sb
    monkeypatch.setattr(sb, "PROVIDERS", {"ghost": "stats.no_such_module:behaviors"})
    tl = pl.DataFrame({"family": "f", "model": "m", "params": 1, "step": [1, 1, 2],
                       "tokens_seen": [1, 1, 2], "flops": 1.0, "loss_nats": [1.0, 3.0, 1.0]})
    register_behavior("user", lambda s: behavior_from_frame(
        tl.unique(["step"]).with_columns(pl.lit(1.0).alias("x")), "x", "user_x"))
    bt = behavior_table(_Store(tl))
    assert any(m.startswith("ghost") for m in bt.missing)
    vl = bt.rows.filter((pl.col("behavior") == "val_loss") & (pl.col("step") == 1))
    assert vl["value"][0] == pytest.approx(2.0) and vl["val_ppl"][0] == pytest.approx(np.exp(2))
    assert "user_x" in set(bt.rows["behavior"])
    with pytest.raises(ImportError):
        behavior_table(_Store(tl), providers=["ghost"])


def _two_family_store(root):
    """fa and fb, 3 models each, 4 checkpoints; logprob_factual = -2 val_loss + shift + offset.

    Offsets (0.1, -0.2, 0.1) average 0 and are orthogonal to the models' loss offsets, so
    at any matched ppl fb - fa = 0.5 exactly, and the family term of value ~ log ppl +
    family is 0.5 too. Losses are exact in float32.
    """
    from evals.store import Store

    store = Store(root)
    ints = {c: pl.Int64 for c in ("params", "step", "tokens_seen", "doc_id", "token_index",
                                  "token_id", "n_tokens")}
    for fam, shift in (("fa", 0.0), ("fb", 0.5)):
        for idx, off in enumerate((0.1, -0.2, 0.1)):
            for step in (1, 2, 3, 4):
                loss = 4.0 - 0.5 * step + 0.125 * idx + (0.25 if fam == "fb" else 0.0)
                keys = {"family": fam, "model": f"{fam}-{idx}", "params": 10 * 2**idx,
                        "step": step, "tokens_seen": step * 100, "flops": 1.0}
                store.write("token-loss", pl.DataFrame(
                    {**keys, "doc_id": [0, 1], "token_index": [0, 0], "token_id": [5, 6],
                     "loss_nats": [loss, loss]},
                    schema_overrides={**ints, "loss_nats": pl.Float32}))
                store.write("sequences", pl.DataFrame(
                    {**keys, "set": ["factual"], "pair_id": ["p0"],
                     "logprob_nats": [-2 * loss + shift + off], "n_tokens": [1]},
                    schema_overrides=ints))
    return store


def test_compare_verb_prints_and_writes_the_differences(tmp_path, capsys):
    """Issue 16: `dynamics compare` on a real store prints fb - fa with its CI, values checked."""
    from dynamics.cli import main

    _two_family_store(tmp_path / "store")
    out_csv = tmp_path / "diff.csv"
    assert main(["compare", str(tmp_path / "store"), "--families", "fa,fb", "--at-ppl",
                 f"{np.exp(3.0)},{np.exp(2.75)}", "--out", str(out_csv)]) == 0
    text = capsys.readouterr().out
    rows = [line.split() for line in text.splitlines() if line.startswith("logprob_factual")]
    # two ppl rows: behavior ppl fa fb diff [lo, hi] models; then the family-test row
    assert [r[1] for r in rows[:2]] == ["15.64", "20.09"]
    assert rows[1][2:5] == ["-6.000", "-5.500", "+0.500"]
    assert rows[0][2:5] == ["-5.500", "-5.000", "+0.500"]
    lo, hi = float(rows[1][5].strip("[,")), float(rows[1][6].strip("]"))
    assert 0.05 < lo < 0.17 and 0.83 < hi < 0.95  # 0.5 -+ t(4) * 0.141 (Welch, 3 + 3 models)
    assert rows[1][7] == "3/3"
    assert rows[2][1:3] == ["value", "+0.500"]  # family term at fixed ppl
    assert "val_loss" not in text
    written = pl.read_csv(out_csv).filter(pl.col("behavior") == "logprob_factual")
    assert written["diff"].to_list() == pytest.approx([0.5, 0.5])
    test = pl.read_csv(tmp_path / "diff.family_test.csv").filter(
        pl.col("behavior") == "logprob_factual")
    assert test["estimate"][0] == pytest.approx(0.5) and test["outcome"][0] == "contradicted"
    # the printed family-test row: estimate, the Bonferroni interval it used, its kind, outcome
    assert rows[2][2] == "+0.500" and rows[2][-1] == "contradicted"
    assert "% CI (Bonferroni)" in " ".join(rows[2])
    # issue 27: a declared margin of 1 makes the same 0.5 "no difference" (90 % CI inside +-1)
    assert main(["compare", str(tmp_path / "store"), "--families", "fa,fb", "--behavior",
                 "logprob_factual", "--margin", "1"]) == 0
    row = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("logprob_factual")
           and "TOST" in ln]
    assert len(row) == 1 and row[0].endswith("supported") and "+-1 (declared)" in row[0]
    assert main(["compare", str(tmp_path / "store"), "--families", "fa,nope"]) == 2
    assert "available: ['fa', 'fb']" in capsys.readouterr().err


def test_behavior_identity_columns_are_data():
    """Issue 19: behaviors carry evaluator/kind/task/set as columns, not only in the label."""
    from stats import bigbench, circuits, hallucination
    from stats.behaviors import BEHAVIOR_COLUMNS, _conform

    keys = {"family": "f", "model": "m", "params": 10, "step": 1, "tokens_seen": 1, "flops": 1.0}
    frames = {
        "sequences": pl.DataFrame({**keys, "set": ["factual", "hallucinated"] * 2,
                                   "pair_id": ["a", "a", "b", "b"],
                                   "logprob_nats": [-2.0, -4.0, -3.0, -5.0], "n_tokens": 2}),
        "circuit-summary": pl.DataFrame({**keys, "task": ["ioi"], "metric_clean": [1.0],
                                         "metric_corrupted": [0.0], "circuit_edges": [7],
                                         "faithfulness": [0.9], "reason": [None]},
                                        schema_overrides={"reason": pl.String}),
        "components": pl.DataFrame({**keys, "layer": [0, 1], "head": 0,
                                    "kind": ["induction", "induction"], "score": [0.2, 0.7]}),
    }

    class Store:
        def tables(self):
            return list(frames)

        def read(self, name):
            return frames[name]

    rows = pl.concat([_conform(f) for f in (hallucination.behaviors(Store()),
                                            circuits.behaviors(Store()))])
    assert rows.columns == list(BEHAVIOR_COLUMNS)
    got = {r["behavior"]: (r["evaluator"], r["kind"], r["task"], r["set"], r["value"])
           for r in rows.iter_rows(named=True)}
    assert got["logprob_factual"] == ("sequences", "logprob", None, "factual", -1.25)
    assert got["hallucination_gap"][:2] == ("sequences", "hallucination_gap")
    assert got["hallucination_gap"][4] == pytest.approx(1.0)
    assert got["circuit_size:ioi"] == ("circuits", "circuit_size", "ioi", None, 7.0)
    assert got["induction_max"] == ("circuits", "head_score", "induction", None, 0.7)
    assert bigbench.behaviors(Store()) is None
    # a frame without identity columns is filled, not dropped
    plain = pl.DataFrame({**keys, "behavior": ["x"], "value": [1.0], "n_trials": [None]})
    filled = _conform(plain)
    assert filled.row(0, named=True)["evaluator"] == "user" and filled["kind"][0] == "x"


def test_compare_verb_shows_seed_noise_when_the_store_has_seed_runs(tmp_path, capsys):
    """Issue 20: seeds as replicates; fb's three models are seeds of one configuration.

    At matched ppl their logprob_factual values differ only by the offsets 0.1, -0.2, 0.1,
    so the seed SD is std([0.1, -0.2, 0.1], ddof=1) = 0.1732; fa has no seed runs.
    """
    from dynamics.cli import main

    store = _two_family_store(tmp_path / "store")
    store.record_seeds({f"fb-{i}": {"group": "fb-base", "seed": i} for i in range(3)})
    assert main(["compare", str(tmp_path / "store"), "--families", "fa,fb"]) == 0
    out = capsys.readouterr().out
    assert "seed sd" in out
    rows = [ln for ln in out.splitlines() if ln.startswith("logprob_factual")]
    assert rows and all(" -/0.173 " in ln for ln in rows[:5])


def test_mixed_model_convergence_warnings_are_recorded_not_printed(recwarn):
    """The demo printed dozens of statsmodels ConvergenceWarnings; they go in the `mixed` column."""
    fits = fit_behaviors(_sim("ppl"))
    assert not [w for w in recwarn if "statsmodels" in w.filename]
    assert fits.fits["mixed_aic"].null_count() == 0
    assert all(m == "fit" or m.startswith("fit (not converged: ") for m in fits.fits["mixed"])
