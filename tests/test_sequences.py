"""Sequence likelihoods: exact log-probs vs a direct forward pass, prefixes, source errors, gap."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from dynamics.loading import load_checkpoint
from dynamics.suites import get_suite
from evals.base import build_evaluator
from evals.config import load_batch
from evals.execute import run_batch
from evals.sequences import SequenceSetError, load_sequence_sets
from evals.store import Store
from stats import hallucination
from tests.helpers import make_tiny_suite, sample_texts

FACTS = [("p1", "the cat sat on a mat.", "the cat sat on a star."),
         ("p2", "dogs ran past red houses.", "dogs ran past blue rivers."),
         ("p3", "quiet rivers under bright stars.", "quiet stars under bright rivers."),
         ("p4", "every night before dawn.", "every dawn before night.")]


def write_sets(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def fact_rows(prefix: str | None = None) -> list[dict]:
    rows = []
    for pid, good, bad in FACTS:
        for name, text in (("factual", good), ("hallucinated", bad)):
            row = {"pair_id": pid, "set": name, "text": text if prefix is None else " " + text}
            if prefix is not None:
                row["prefix"] = prefix
            rows.append(row)
    return rows


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return make_tiny_suite(tmp_path_factory.mktemp("seq"), "neox", steps=(0, 10), n_models=2)


@pytest.fixture(scope="module")
def lm(suite):
    return load_checkpoint(get_suite(suite).checkpoints("tiny-neox-0")[-1])


@pytest.fixture(scope="module")
def opt_lm():
    from dynamics.checkpoints import CheckpointRef
    from dynamics.loading import LoadedModel
    from dynamics.tiny import tiny_opt
    from tests.helpers import tiny_tokenizer

    tok = tiny_tokenizer()
    ref = CheckpointRef("tiny-opt", "o", 1, 0, 0, source="/nowhere", is_local=True)
    return LoadedModel(ref, tiny_opt(vocab_size=len(tok), seed=7), tok)


def direct_logprob(model, ids: list[int], n_scored: int) -> float:
    """Sum of log p(ids[t] | ids[:t]) over the last n_scored tokens, one plain forward pass."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    lp = torch.log_softmax(logits[:-1], -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
    return float(lp[-n_scored:].sum())


def run_eval(lm, path: Path, **opts) -> pl.DataFrame:
    ev = build_evaluator("sequences", {"dataset": str(path), **opts})
    return ev.run(lm)["sequences"]


@pytest.mark.parametrize("arch", ["neox", "opt"])
@pytest.mark.parametrize("prefix", [None, "near quiet rivers"])
def test_logprobs_match_direct_forward(request, tmp_path, arch, prefix):
    lm = request.getfixturevalue({"neox": "lm", "opt": "opt_lm"}[arch])
    path = write_sets(tmp_path / "s.jsonl", fact_rows(prefix))
    out = run_eval(lm, path, batch_tokens=40, chunk_rows=3)  # several batches and head chunks
    assert out.height == 2 * len(FACTS)
    tok = lm.tokenizer
    for row in out.iter_rows(named=True):
        text = next(r["text"] for r in fact_rows(prefix)
                    if r["set"] == row["set"] and r["pair_id"] == row["pair_id"])
        cont = tok(text, add_special_tokens=False)["input_ids"]
        ctx = tok(prefix, add_special_tokens=False)["input_ids"] if prefix else [tok.bos_token_id]
        assert row["n_tokens"] == len(cont)
        expected = direct_logprob(lm.model, ctx + cont, len(cont))
        assert abs(row["logprob_nats"] - expected) < 1e-4


def test_prefix_changes_scores_but_not_token_count(tmp_path, lm):
    bare = run_eval(lm, write_sets(tmp_path / "a.jsonl", fact_rows(None)))
    rows = fact_rows("near quiet rivers")
    for r in rows:  # same text as the bare version
        r["text"] = r["text"][1:]
    pre = run_eval(lm, write_sets(tmp_path / "b.jsonl", rows))
    joined = bare.join(pre, on=["set", "pair_id"], suffix="_p")
    assert (joined["n_tokens"] == joined["n_tokens_p"]).all()
    assert (joined["logprob_nats"] - joined["logprob_nats_p"]).abs().max() > 1e-3


def test_csv_source_and_set_filter(tmp_path, lm):
    rows = fact_rows() + [{"pair_id": p, "set": "ungrammatical", "text": "mat the on sat"}
                          for p, _, _ in FACTS]
    path = tmp_path / "s.csv"
    pl.DataFrame(rows).select("pair_id", "set", "text").write_csv(path)
    out = run_eval(lm, path, sets=["factual", "ungrammatical"])
    assert sorted(out["set"].unique()) == ["factual", "ungrammatical"]
    with pytest.raises(SequenceSetError, match=r"sets \['nope'\] not found.*'factual'"):
        load_sequence_sets(str(path), sets=["nope"])


@pytest.mark.parametrize("edit, message", [
    (lambda rows: rows[:2] + [r for r in rows[2:] if r["pair_id"] == "zz"],
     r"set 'factual' has 1 pair\(s\) \(\['p1'\]\); need at least 2"),
    (lambda rows: [r for r in rows if not (r["set"] == "hallucinated" and r["pair_id"] == "p3")],
     r"pair ids differ between sets 'factual' and 'hallucinated': only in 'factual': \['p3'\]"),
    (lambda rows: [{**r, "text": "  "} if r["pair_id"] == "p2" and r["set"] == "factual" else r
                   for r in rows], r"row 3 \(set 'factual', pair_id 'p2'\) has an empty 'text'"),
    (lambda rows: rows + [rows[0]],
     r"pair_id 'p1' appears more than once in set 'factual' \(rows \[1, 9\]\)"),
    (lambda rows: [{k: v for k, v in r.items() if k != "set"} for r in rows],
     r"missing columns \['set'\]"),
])
def test_source_errors_name_the_problem(tmp_path, edit, message):
    path = write_sets(tmp_path / "bad.jsonl", edit(fact_rows()))
    with pytest.raises(SequenceSetError, match=message) as err:
        load_sequence_sets(str(path))
    assert "bad.jsonl" in str(err.value)


def test_too_long_for_context_is_an_error(tmp_path, lm):
    rows = fact_rows()
    rows[5]["text"] = " ".join(sample_texts(40, seed=3))  # far more than 128 tokens
    path = write_sets(tmp_path / "long.jsonl", rows)
    with pytest.raises(SequenceSetError, match=r"row 6 .*pair_id 'p3'.*exceed the model's "
                                                r"context of 128 tokens"):
        run_eval(lm, path)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_sequence_sets(str(tmp_path / "nope.jsonl"))


def test_gap_per_checkpoint_and_size(tmp_path, suite):
    seqs = write_sets(tmp_path / "s.jsonl", fact_rows())
    cfg = load_batch({"suite": str(suite), "output": str(tmp_path / "out"), "prefetch": False,
                      "evaluators": {"sequences": {"dataset": str(seqs)}}})
    assert not run_batch(cfg, progress=False).failed
    store = Store(tmp_path / "out")
    table = store.read("sequences")
    gap = hallucination.hallucination_gap(table, n_boot=200, seed=1)
    assert gap.height == 4 and gap["model"].n_unique() == 2 and gap["step"].n_unique() == 2
    # recompute one checkpoint by hand
    one = table.filter((pl.col("model") == "tiny-neox-1") & (pl.col("step") == 10))
    per = {(r["set"], r["pair_id"]): r["logprob_nats"] / r["n_tokens"]
           for r in one.iter_rows(named=True)}
    diffs = np.array([per["factual", p] - per["hallucinated", p] for p, _, _ in FACTS])
    row = gap.filter((pl.col("model") == "tiny-neox-1") & (pl.col("step") == 10)).row(0, named=True)
    assert row["n_pairs"] == len(FACTS) and abs(row["gap"] - diffs.mean()) < 1e-12
    lo, hi = diffs.min() - 1e-12, diffs.max() + 1e-12
    assert lo <= row["ci_low"] <= row["gap"] <= row["ci_high"] <= hi
    assert hallucination.hallucination_gap(table, n_boot=200, seed=1).equals(gap)
    rows = hallucination.behaviors(store)
    assert rows.columns == ["family", "model", "params", "step", "tokens_seen", "flops",
                            "behavior", "evaluator", "kind", "task", "set", "value", "n_trials"]
    assert sorted(rows["behavior"].unique()) == ["hallucination_gap", "logprob_factual",
                                                 "logprob_hallucinated"]
    got = rows.filter((pl.col("behavior") == "hallucination_gap") & (pl.col("step") == 10)
                      & (pl.col("model") == "tiny-neox-1"))["value"].item()
    assert abs(got - diffs.mean()) < 1e-12
    assert hallucination.behaviors(Store(tmp_path / "empty")) is None


def _suite_and_sets(request, tmp_path) -> tuple[Path, Path, Path]:
    """The toy suite with its exported sets and validation text when the fixture exists;
    otherwise (toy suite not built yet) a tiny random suite with the FACTS sets."""
    try:
        toy = Path(request.getfixturevalue("toy_suite"))
    except pytest.FixtureLookupError:
        toy = None
    if toy is not None and (toy / "data" / "sequences.jsonl").is_file():
        val = next((toy / "data").glob("val*"), None)
        if val is not None:
            return toy, toy / "data" / "sequences.jsonl", val
    from tests.helpers import write_val

    suite = make_tiny_suite(tmp_path / "suite", "neox", steps=(0, 5, 10, 20), n_models=2)
    return suite, write_sets(tmp_path / "s.jsonl", fact_rows()), write_val(tmp_path / "v.jsonl")


@pytest.mark.slow
def test_suite_end_to_end_sequences_and_trajectories(request, tmp_path):
    from stats import token_overlap, trajectories

    suite, seqs, val = _suite_and_sets(request, tmp_path)
    cfg = load_batch({"suite": str(suite), "output": str(tmp_path / "out"), "prefetch": False,
                      "evaluators": {"sequences": {"dataset": str(seqs)},
                                     "token-loss": {"dataset": str(val), "max_tokens": 4000}}})
    assert not run_batch(cfg, progress=False).failed
    store = Store(tmp_path / "out")
    table = store.read("sequences")
    refs = get_suite(suite).select(None, "all")
    # factual per-token log-probs equal a direct forward pass at every checkpoint
    source = load_sequence_sets(str(seqs))
    for ref in refs:
        lm = load_checkpoint(ref)
        got = table.filter((pl.col("model") == ref.model) & (pl.col("step") == ref.step)
                           & (pl.col("set") == "factual"))
        for row in got.head(20).iter_rows(named=True):
            src = source.filter((pl.col("set") == "factual")
                                & (pl.col("pair_id") == row["pair_id"])).row(0, named=True)
            cont = lm.tokenizer(src["text"], add_special_tokens=False)["input_ids"]
            ctx = (lm.tokenizer(src["prefix"], add_special_tokens=False)["input_ids"]
                   if src["prefix"] else [lm.tokenizer.bos_token_id])
            want = direct_logprob(lm.model, ctx + cont, len(cont)) / len(cont)
            assert abs(row["logprob_nats"] / row["n_tokens"] - want) < 1e-4
    gap = hallucination.hallucination_gap(table)
    assert gap.height == len(refs) and gap["gap"].is_finite().all()
    assert (gap["ci_low"] <= gap["gap"]).all() and (gap["gap"] <= gap["ci_high"]).all()
    fr = trajectories.class_fractions(store.scan("token-loss"))
    assert fr["val_ppl"].is_not_null().all() and fr["model"].n_unique() == len(
        get_suite(suite).model_names())
    assert trajectories.behaviors(store)["behavior"].n_unique() == len(
        trajectories.XIA_CLASSES)
    ov = token_overlap.improvement_overlap(store.scan("token-loss"), max_log_ppl_gap=10.0)
    assert ov.height > 0 and ov["jaccard"].is_between(0, 1).all()


def test_datasets_source_folder(tmp_path):
    folder = tmp_path / "facts"
    folder.mkdir()
    write_sets(folder / "data.jsonl", fact_rows("near"))
    frame = load_sequence_sets(str(folder))  # a `datasets` source (local folder, no hub)
    assert frame.height == 8 and set(frame["prefix"]) == {"near"}
