"""Recall vs bigram positions (issue 19, Bietti et al.'s order of learning)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import torch

from dynamics.tiny import word_tokenizer
from dynamics.toy.corpus import Corpus, CorpusSpec
from dynamics.toy.export import position_kinds, recall_bigram_rows
from evals.base import build_evaluator
from stats.birth import behaviors, learning_order

SPEC = CorpusSpec()


def test_position_kinds_worked_example():
    # triggers z0, z1 (n_triggers=2): z5 z0 z17 z3 z0 z17
    seq, counts = [5, 0, 17, 3, 0, 17], [0, 1, 0, 0, 2, 0]
    assert position_kinds(seq, counts, 2) == ["start", "bigram", "first", "bigram", "bigram",
                                              "recall"]


def test_recall_positions_repeat_the_trigger_output_and_bigram_ones_follow_a_non_trigger():
    corpus = Corpus(SPEC, 0)
    rows = recall_bigram_rows(corpus, 20)
    triggers = set(corpus.words[:SPEC.n_triggers])
    n_recall = 0
    for row in rows:
        words = row["text"].split()
        assert len(words) == len(row["kinds"]) == SPEC.row_len - 1
        for i, kind in enumerate(row["kinds"][1:], start=1):
            prev = words[i - 1]
            earlier = [j for j in range(i - 1) if words[j] == prev]
            if kind == "recall":
                n_recall += 1
                assert prev in triggers and earlier and words[earlier[0] + 1] == words[i]
            elif kind == "bigram":
                assert prev not in triggers
            else:
                assert kind == "first" and prev in triggers and not earlier
    assert n_recall > 50


class BigramLM(torch.nn.Module):
    """A mock LM with fixed logits: logits at a position = TABLE[token at that position]."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Parameter(table, requires_grad=False)

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.table[input_ids])


def _lm(tmp_path, rows):
    tok = word_tokenizer(["a", "b", "c"])  # ids: specials 0-2, a=3, b=4, c=5
    table = torch.tensor(np.random.default_rng(0).normal(size=(6, 6)), dtype=torch.float32)
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ev = build_evaluator("recall-bigram", {"dataset": str(path), "batch_rows": 1})
    lm = SimpleNamespace(model=BigramLM(table), tokenizer=tok, context_length=8)
    return ev, lm, table, tok


def test_evaluator_sums_losses_and_counts_hits_per_kind(tmp_path):
    rows = [{"text": "a b c", "kinds": ["start", "bigram", "recall"]},
            {"text": "c a", "kinds": ["start", "recall"]}]  # shorter row: padded in batches > 1
    ev, lm, table, tok = _lm(tmp_path, rows)
    logp = torch.log_softmax(table, -1).numpy()
    bos = tok.bos_token_id
    want: dict[str, list] = {}
    for row in rows:
        ids = [bos] + tok(row["text"], add_special_tokens=False)["input_ids"]
        for prev, cur, kind in zip(ids[:-1], ids[1:], row["kinds"]):
            w = want.setdefault(kind, [0.0, 0, 0])
            w[0] -= logp[prev, cur]
            w[1] += int(np.argmax(logp[prev]) == cur)
            w[2] += 1
    for batch_rows in (1, 2):
        ev = build_evaluator("recall-bigram", {"dataset": ev.options.dataset,
                                               "batch_rows": batch_rows})
        got = ev.run(lm)["recall-bigram"]
        assert got["position_kind"].to_list() == sorted(want)
        for r in got.iter_rows(named=True):
            loss, n_correct, n_tokens = want[r["position_kind"]]
            assert r["loss_nats"] == pytest.approx(loss, rel=1e-5)
            assert (r["n_correct"], r["n_tokens"]) == (n_correct, n_tokens)
    assert sum(w[1] for w in want.values()) > 0  # the argmax check is exercised


def test_evaluator_rejects_a_label_count_that_does_not_match(tmp_path):
    ev, lm, _, _ = _lm(tmp_path, [{"text": "a b c", "kinds": ["start", "bigram"]}])
    with pytest.raises(ValueError, match="row 1 has 3 tokens and 2 kinds"):
        ev.run(lm)


def _store(rows: list[tuple]) -> SimpleNamespace:
    frame = pl.DataFrame(rows, orient="row", schema=[
        ("step", pl.Int64), ("position_kind", pl.String), ("loss_nats", pl.Float64),
        ("n_correct", pl.Int64), ("n_tokens", pl.Int64)]).select(
        pl.lit("f").alias("family"), pl.lit("m").alias("model"),
        pl.lit(10, pl.Int64).alias("params"), "step", (pl.col("step") * 100).alias("tokens_seen"),
        pl.lit(1.0).alias("flops"), pl.all().exclude("step"))
    return SimpleNamespace(tables=lambda: ["recall-bigram"], read=lambda name: frame)


def test_behaviors_and_learning_order_docstring_example():
    bigram, recall = (0.1, 0.5, 0.6, 0.6), (0.2, 0.2, 0.3, 0.9)
    rows = []
    for step, b, r in zip((0, 10, 100, 1000), bigram, recall):
        rows += [(step, "bigram", 30.0, round(b * 10), 10),
                 (step, "recall", 8.0, round(r * 10), 10), (step, "first", 1.0, 0, 2)]
    out = behaviors(_store(rows))
    assert set(out["behavior"]) == {"recall_loss", "bigram_loss", "recall_accuracy",
                                    "bigram_accuracy"}  # "first" positions are not behaviors
    one = {r["behavior"]: r for r in out.filter(pl.col("step") == 10).iter_rows(named=True)}
    assert one["bigram_loss"]["value"] == pytest.approx(3.0)
    assert one["bigram_loss"]["n_trials"] is None
    assert (one["recall_accuracy"]["value"], one["recall_accuracy"]["n_trials"]) == (0.2, 10)
    assert (one["recall_loss"]["evaluator"], one["recall_loss"]["kind"],
            one["recall_loss"]["task"]) == ("recall-bigram", "recall_loss", "recall")
    order = learning_order(out).row(0, named=True)
    assert (order["bigram_step"], order["recall_step"], order["bigram_first"]) == (10, 1000, True)
    assert order["bigram_threshold"] == pytest.approx(0.35)
    assert order["recall_threshold"] == pytest.approx(0.55)
    assert (order["bigram_rise"], order["recall_rise"]) == pytest.approx((0.5, 0.7))


def test_learning_order_without_a_rise_is_null():
    rows = []
    for step in (0, 10, 100):
        rows += [(step, "bigram", 30.0, 5, 10), (step, "recall", 8.0, 5 - step // 100, 10)]
    order = learning_order(behaviors(_store(rows))).row(0, named=True)
    assert order["bigram_step"] is None and order["recall_step"] is None
    assert order["bigram_first"] is None
    with pytest.raises(ValueError, match="fraction"):
        learning_order(behaviors(_store(rows)), fraction=1.5)
