"""The shipped batches' inputs by name, each on a fixture of its dataset's exact schema served
by the loopback hub: the Pile's validation split (streamed), CounterFact through its adapter,
a BIG-bench clone's layout, and the recall-bigram probe built from validation text."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import torch

from evals.base import build_evaluator
from evals.bigbench_tasks import select_tasks, xia74
from evals.counterfact import shuffled_words
from evals.recall_probe import ProbeError, ProbeSettings, bigram_pairs, build_probe
from evals.sequences import SequenceSetError, load_sequence_sets
from evals.texts import TextSource
from evals.token_loss import build_stream
from tests.helpers import tiny_tokenizer
from tests.hub_datasets import (FACTS, counterfact_files, pile_docs, pile_val_files, use_hub,
                                write_bigbench)
from tests.hub_server import TinyHub

PILE = "EleutherAI/pile_val_test"
CF = "azhx/counterfact"


@pytest.fixture
def hub(monkeypatch, tmp_path):
    server = TinyHub()
    server.add_dataset(PILE, pile_val_files())
    server.add_dataset(CF, counterfact_files())
    server.serve()
    use_hub(monkeypatch, server.url, tmp_path / "hf")
    yield server
    server.close()


def test_token_loss_streams_the_pile_validation_split_only_as_far_as_it_scores(hub):
    """The stream is the first documents of val.jsonl (not test.jsonl), cut to max_tokens,
    and only the documents needed are read."""
    tok = tiny_tokenizer()
    ev = build_evaluator("token-loss", {"dataset": PILE, "split": "validation",
                                        "data_files": {"validation": "val.jsonl"},
                                        "max_tokens": 500})
    stream = ev.stream(tok)
    docs = [d["text"] for d in pile_docs(120, 0)]
    assert np.array_equal(stream.token_ids, build_stream(docs, tok, 500).token_ids)
    assert len(stream.token_ids) == 500
    n_read, n_used = ev.texts().n_read, int(stream.doc_id[-1]) + 1
    assert n_used <= n_read <= n_used + 64  # one tokenizer call past the budget at most
    assert n_read < 120
    assert not any(t.startswith("TEST ") for t in ev.texts().head(n_read))


def test_text_source_errors_name_the_column(hub):
    with pytest.raises(ValueError, match=r"no column 'body'; columns are \['text', 'meta'\]"):
        next(TextSource(PILE, split="validation", column="body").documents())


def test_counterfact_adapter_on_the_hub_schema(hub):
    frame = load_sequence_sets(CF, split="test", adapter="counterfact")
    assert frame.height == 3 * 4 and sorted(frame["set"].unique()) == [
        "factual", "hallucinated", "ungrammatical"]
    row = {r["set"]: r for r in frame.filter(pl.col("pair_id") == "cf-2").iter_rows(named=True)}
    assert (row["factual"]["prefix"], row["factual"]["text"]) == (
        "Toko Yasuda, that was created by", " Nintendo")
    assert (row["hallucinated"]["prefix"], row["hallucinated"]["text"]) == (
        "Toko Yasuda, that was created by", " Apple")
    noisy = row["ungrammatical"]
    assert noisy["prefix"] == "" and noisy["text"] == shuffled_words(
        "Toko Yasuda, that was created by Nintendo", 2)
    assert sorted(noisy["text"].split()) == sorted("Toko Yasuda, that was created by "
                                                   "Nintendo".split())
    assert noisy["text"] != "Toko Yasuda, that was created by Nintendo"
    few = load_sequence_sets(CF, split="test", adapter="counterfact", max_pairs=2)
    assert sorted(few["pair_id"].unique()) == ["cf-2", "cf-3"]


def test_shuffled_words_is_seeded_and_never_the_original():
    assert shuffled_words("a b c d e", 7) == shuffled_words("a b c d e", 7)
    for seed in range(50):  # two words: half the permutations are the identity -> rotated
        assert shuffled_words("a b", seed) == "b a"
    with pytest.raises(ValueError, match="one-word sentence 'Paris'"):
        shuffled_words("Paris", 0)


def test_counterfact_adapter_errors_name_the_field(tmp_path):
    from evals.counterfact import to_sequences

    raw = pl.DataFrame({"case_id": [1], "requested_rewrite": [{"prompt": "{} is", "subject":
                                                               "x", "target_true": {"id": "a"}}]})
    with pytest.raises(SequenceSetError, match="lacks a CounterFact field"):
        to_sequences(raw, "cf.parquet")
    with pytest.raises(SequenceSetError, match=r"missing columns \['requested_rewrite'\]"):
        to_sequences(pl.DataFrame({"case_id": [1]}), "cf.parquet")
    bad = pl.DataFrame([r for r in _records(prompt="no slot")])
    with pytest.raises(SequenceSetError, match=r"case_id 0\): prompt 'no slot' needs a '\{\}'"):
        to_sequences(bad, "cf.parquet")
    with pytest.raises(ValueError, match="adapter = 'rome' is not known; allowed: counterfact"):
        build_evaluator("sequences", {"dataset": CF, "adapter": "rome"})


def _records(**change) -> list[dict]:
    from tests.hub_datasets import counterfact_records

    out = counterfact_records(FACTS[:1])
    out[0]["requested_rewrite"].update(change)
    return out


def test_xia74_and_all_on_a_clone_layout_leave_out_what_is_not_multiple_choice(tmp_path):
    folder = write_bigbench(tmp_path / "BIG-bench")
    assert xia74(folder) == ["animal_facts", "two_parts"]  # huge_task has 1,000 examples
    assert select_tasks(folder, "all") == ["animal_facts", "huge_task", "two_parts"]
    ev = build_evaluator("bigbench-mc", {"folder": str(folder), "tasks": "xia74", "k": 2})
    assert sorted({e.task for e in ev.examples}) == ["animal_facts", "two_parts/first",
                                                     "two_parts/second"]


def _stream(n_docs=60, seed=0):
    tok = tiny_tokenizer()
    texts = [d["text"] for d in pile_docs(n_docs, seed)]
    return tok, build_stream(texts, tok, 10**6).token_ids


def test_probe_positions_follow_the_papers_definitions():
    tok, ids = _stream()
    specials = set(tok.all_special_ids)
    pairs, _ = bigram_pairs(ids, specials, 10, 0.5)
    settings = ProbeSettings(n_sequences=16, seq_len=64, n_triggers=3, occurrences=4)
    rows, kinds = build_probe(ids, specials, settings)
    assert (rows, kinds) == build_probe(ids, specials, settings)  # seeded
    assert len(rows) == 16
    for row, kind in zip(rows, kinds):
        assert len(row) == len(kind) == 64 and kind[0] == "start"
        outputs: dict[int, int] = {}
        assert kind.count("bigram") == settings.n_bigram_blocks
        assert kind.count("recall") == 3 * 3 and kind.count("first") == 3
        for i in range(1, 64):
            prev, tok_i = row[i - 1], row[i]
            if kind[i] == "bigram":  # the global bigram of the previous token
                assert pairs[prev] == tok_i and prev not in outputs
            elif kind[i] in ("first", "recall"):  # a trigger's sequence-specific output
                assert (kind[i] == "recall") == (prev in outputs)
                assert outputs.setdefault(prev, tok_i) == tok_i
                assert pairs.get(prev) != tok_i  # recall and bigram disagree
            else:
                assert kind[i] == "other" and i % 2 == 0
        bigram_pairs_used = [(row[i - 1], row[i]) for i in range(64) if kind[i] == "bigram"]
        assert len(set(bigram_pairs_used)) == len(bigram_pairs_used)  # none recallable


def test_probe_says_what_to_change_when_the_text_is_too_poor():
    tok, ids = _stream(3)
    with pytest.raises(ProbeError, match=r"usable bigram pairs for 58 per sequence"):
        build_probe(ids, set(tok.all_special_ids), ProbeSettings(seq_len=128, n_triggers=3,
                                                                 occurrences=1 + 1))
    problems = ProbeSettings(seq_len=24, occurrences=4).problems()
    assert problems == ["seq_len = 24 leaves no room for bigram pairs beside 3 triggers x 4 "
                        "occurrences; need seq_len > 24"]


class GlobalBigramLM(torch.nn.Module):
    """A mock LM that always predicts the global bigram successor (uniform elsewhere)."""

    def __init__(self, pairs: dict[int, int], vocab: int):
        super().__init__()
        table = torch.zeros(vocab, vocab)
        for a, b in pairs.items():
            table[a, b] = 10.0
        self.table = torch.nn.Parameter(table, requires_grad=False)

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.table[input_ids])


def test_recall_bigram_from_text_scores_a_bigram_model_right_only_at_bigram_positions(tmp_path):
    """A model that knows the global bigrams but cannot recall gets bigram accuracy 1 and
    recall accuracy 0 on the probe, with the probe's position counts."""
    tok, ids = _stream()
    val = tmp_path / "val.jsonl"
    val.write_text("".join(json.dumps(d) + "\n" for d in pile_docs(60, 0)))
    ev = build_evaluator("recall-bigram", {"text": {"dataset": str(val)}, "seq_len": 64,
                                           "n_sequences": 8, "batch_rows": 3})
    pairs, _ = bigram_pairs(ids, set(tok.all_special_ids), 10, 0.5)
    lm = SimpleNamespace(model=GlobalBigramLM(pairs, len(tok)), tokenizer=tok,
                         context_length=128)
    got = {r["position_kind"]: r for r in ev.run(lm)["recall-bigram"].iter_rows(named=True)}
    n_bigram = 8 * ProbeSettings(seq_len=64).n_bigram_blocks
    assert (got["bigram"]["n_tokens"], got["bigram"]["n_correct"]) == (n_bigram, n_bigram)
    assert (got["recall"]["n_tokens"], got["recall"]["n_correct"]) == (8 * 3 * 3, 0)
    assert got["first"]["n_tokens"] == 8 * 3 and got["start"]["n_tokens"] == 8


def test_recall_bigram_options_need_one_source():
    with pytest.raises(ValueError, match="give one of dataset"):
        build_evaluator("recall-bigram", {})
    with pytest.raises(ValueError, match=r"text: unknown keys \['file'\]"):
        build_evaluator("recall-bigram", {"text": {"file": "x.jsonl"}})
