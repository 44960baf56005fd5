"""The toy suite: corpus, exported evaluation data, tokenizer, trainer and what training learns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dynamics.suites import get_suite
from dynamics.toy import world
from dynamics.toy.corpus import EOS, Corpus, CorpusSpec
from dynamics.toy.export import export_data, sequence_rows, trigger_rows
from dynamics.toy.probe import trigger_accuracy
from dynamics.toy.train import (SCALES, ModelSpec, ToyScale, build_toy_suite, checkpoint_steps,
                                toy_tokenizer)

SPEC = CorpusSpec()


def test_corpus_is_deterministic_for_a_seed():
    a, b, c = Corpus(SPEC, 0), Corpus(SPEC, 0), Corpus(SPEC, 1)
    assert a.documents(0, 40) == b.documents(0, 40)
    assert a.documents(0, 40) != c.documents(0, 40)
    assert a.facts == b.facts and a.facts != c.facts
    assert a.documents(0, 40)[:10] == a.documents(0, 10)  # prefix-stable
    assert a.documents(0, 40) != a.documents(1, 40)  # validation is another stream


def test_every_kind_appears_with_exact_row_length():
    docs = Corpus(SPEC, 0).documents(0, 200)
    assert {k for k, _ in docs} == set(SPEC.mix)
    assert {len(words) for _, words in docs} == {SPEC.row_len - 1}


def test_trigger_outputs_are_fixed_within_a_sequence():
    corpus = Corpus(SPEC, 0)
    rng = __import__("numpy").random.default_rng(3)
    for _ in range(20):
        seq, counts = corpus.trigger_tokens(rng, 63)
        outputs: dict[int, int] = {}
        for t in range(len(seq) - 1):
            if seq[t] < SPEC.n_triggers:
                assert outputs.setdefault(seq[t], seq[t + 1]) == seq[t + 1]
                assert counts[t] == seq[: t + 1].count(seq[t])
            else:
                assert counts[t] == 0


def _training_text(corpus: Corpus, n_rows: int) -> str:
    return " " + " ".join(" ".join(row) for row in corpus.training_rows(n_rows)) + " "


def test_evaluation_sequences_never_occur_in_the_training_stream():
    corpus = Corpus(SPEC, 0)
    text = _training_text(corpus, 3000)
    rows = sequence_rows(corpus)
    assert {r["set"] for r in rows} == {"factual", "hallucinated", "ungrammatical"}
    for r in rows:
        assert f" {r['text']} " not in text, r
    # the facts themselves are in training (in other templates)
    fact = corpus.facts[0]
    assert f" {fact.render(fact.training_templates()[0])} " in text or any(
        f" {fact.render(t)} " in text for t in fact.training_templates())


def test_sequence_sets_share_pair_ids_and_differ():
    rows = sequence_rows(Corpus(SPEC, 0))
    by_set: dict[str, dict[str, str]] = {}
    for r in rows:
        by_set.setdefault(r["set"], {})[r["pair_id"]] = r["text"]
    assert by_set["factual"].keys() == by_set["hallucinated"].keys() == by_set["ungrammatical"].keys()
    for pid, fact in by_set["factual"].items():
        assert fact != by_set["hallucinated"][pid] != by_set["ungrammatical"][pid]
        assert sorted(fact.split()) == sorted(by_set["ungrammatical"][pid].split())
        assert len(fact.split()) == len(by_set["hallucinated"][pid].split())


def test_trigger_pairs_have_equal_length_and_flip_the_answer():
    corpus = Corpus(SPEC, 0)
    for row in trigger_rows(corpus, 20):
        clean, corr = row["clean"].split(), row["corrupted"].split()
        assert len(clean) == len(corr) == row["n_tokens"]
        assert clean[-1] == corr[-1] == row["trigger"] and row["correct"] != row["incorrect"]
        after = [t for t in range(1, len(clean)) if clean[t - 1] == row["trigger"]]
        assert after and all(clean[t] == row["correct"] and corr[t] == row["incorrect"] for t in after)
        assert all(clean[t] == corr[t] for t in range(len(clean)) if t not in after)


def test_export_writes_bigbench_tasks(tmp_path):
    folder = export_data(Corpus(SPEC, 0), tmp_path / "data", n_val_docs=5, n_trigger_pairs=3)
    assert len((folder / "validation.jsonl").read_text().splitlines()) == 5
    for name in ("toy_world_qa", "toy_ioi"):
        task = json.loads((folder / "bigbench" / name / "task.json").read_text())
        assert task["name"] == name and task["metrics"] == ["multiple_choice_grade"]
        for ex in task["examples"]:
            assert sorted(ex["target_scores"].values())[-1] == 1
            assert sum(ex["target_scores"].values()) == 1 and ex["input"]
    qa = json.loads((folder / "bigbench" / "toy_world_qa" / "task.json").read_text())
    facts = {(f.entity, f.relation): f.value for f in Corpus(SPEC, 0).facts}
    ex = qa["examples"][0]
    answer = next(k for k, v in ex["target_scores"].items() if v == 1)
    assert answer == facts[(world.NAMES[0], "city")]


def test_tokenizer_round_trip(tmp_path):
    from transformers import AutoTokenizer

    toy_tokenizer(SPEC).save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert tok.eos_token == EOS and tok.eos_token_id is not None
    for _, words in Corpus(SPEC, 0).documents(1, 30):
        text = " ".join(words)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert len(ids) == len(words) and tok.unk_token_id not in ids
        assert tok.decode(ids) == text


def test_checkpoint_steps_log_spaced_plus_regular():
    assert checkpoint_steps(100, 4) == [0, 1, 2, 4, 8, 16, 25, 32, 50, 64, 75, 100]
    for scale in SCALES.values():
        assert len(checkpoint_steps(scale.steps, scale.n_regular)) >= 12
        sizes = [(m.num_layers, m.hidden_size) for m in scale.models]
        assert min(n for n, _ in sizes) == 1 and max(n for n, _ in sizes) >= 2


def _micro_scale() -> ToyScale:
    return ToyScale(models=(ModelSpec("a", 1, 8, 2), ModelSpec("b", 2, 16, 2)), steps=4,
                    batch_size=2, n_regular=2)


def test_build_writes_a_readable_suite_and_reuses_it(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = build_toy_suite(tmp_path, _micro_scale(), seed=0)
    suite = get_suite(str(folder))
    assert set(suite.models) == {"toy-custom-a", "toy-custom-b"}
    refs = suite.models["toy-custom-b"]
    assert [r.step for r in refs] == checkpoint_steps(4, 2)
    assert [r.tokens_seen for r in refs] == [s * 2 * SPEC.row_len for s in checkpoint_steps(4, 2)]
    assert refs[0].family == "toy" and refs[0].params > suite.models["toy-custom-a"][0].params
    model = AutoModelForCausalLM.from_pretrained(refs[-1].source)
    assert model.config.num_hidden_layers == 2
    assert AutoTokenizer.from_pretrained(refs[-1].source).eos_token == EOS
    assert (folder / "data" / "sequences.jsonl").is_file()

    from dynamics import cli
    from evals.config import load_batch_file

    cfg = load_batch_file(cli._demo_batch(folder, tmp_path))  # the demo batch validates
    assert set(cfg.evaluators) == set(cli.demo_evaluator_options(folder))

    import dynamics.toy.train as train

    def boom(*a, **k):
        raise AssertionError("retrained a cached suite")

    monkeypatch.setattr(train, "train_model", boom)
    assert build_toy_suite(tmp_path, _micro_scale(), seed=0) == folder
    (folder / train.MARKER).unlink()  # an interrupted build is redone, not reused
    with pytest.raises(AssertionError, match="retrained"):
        build_toy_suite(tmp_path, _micro_scale(), seed=0)


def test_build_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "toy-custom-seed0").mkdir()
    (tmp_path / "toy-custom-seed0" / "mine.txt").write_text("x")
    with pytest.raises(FileExistsError):
        build_toy_suite(tmp_path, _micro_scale(), seed=0)


def test_unknown_scale_names_the_allowed_ones(tmp_path):
    with pytest.raises(KeyError, match="fast"):
        build_toy_suite(tmp_path, "huge")


def test_demo_options_only_for_registered_evaluators(tmp_path, monkeypatch):
    from dynamics import cli
    from evals import base

    monkeypatch.setattr(base, "EVALUATORS", {"token-loss": base.EVALUATORS["token-loss"]})
    opts = cli.demo_evaluator_options(tmp_path)
    assert list(opts) == ["token-loss"]
    assert opts["token-loss"]["dataset"].endswith("data/validation.jsonl")


# ---------------------------------------------------------------- slow: the trained fast suite


def _val_loss(path: str, rows: torch.Tensor) -> float:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        return model(input_ids=rows, labels=rows).loss.item()


def _val_rows(suite: Path, tok) -> torch.Tensor:
    lines = (suite / "data" / "validation.jsonl").read_text().splitlines()[:64]
    vocab = tok.get_vocab()
    return torch.tensor([[vocab[EOS]] + [vocab[w] for w in json.loads(x)["text"].split()]
                         for x in lines])


@pytest.mark.slow
def test_held_out_loss_falls_and_larger_models_reach_lower_loss(toy_suite):
    suite = get_suite(str(toy_suite))
    rows = _val_rows(toy_suite, toy_tokenizer(SCALES["fast"].corpus))
    finals = {}
    for name, refs in suite.models.items():
        first, mid, last = (_val_loss(r.source, rows) for r in (refs[0], refs[len(refs) // 2],
                                                                  refs[-1]))
        assert last < mid < first and last < first - 1.0, (name, first, mid, last)
        finals[refs[0].params] = last
    by_size = [finals[p] for p in sorted(finals)]
    assert by_size == sorted(by_size, reverse=True), finals
    assert max(finals) >= 8 * min(finals)


@pytest.mark.slow
def test_induction_in_the_deep_model_not_the_one_layer_model(toy_suite):
    from transformers import AutoModelForCausalLM

    scale = SCALES["fast"]
    corpus, tok = Corpus(scale.corpus, 0), toy_tokenizer(scale.corpus)
    suite = get_suite(str(toy_suite))
    last = {refs[-1].params: refs[-1] for refs in suite.models.values()}
    small, large = last[min(last)], last[max(last)]
    res = {r.model: trigger_accuracy(AutoModelForCausalLM.from_pretrained(r.source), tok, corpus)
           for r in (small, large)}
    one, deep = res[small.model], res[large.model]
    assert AutoModelForCausalLM.from_pretrained(small.source).config.num_hidden_layers == 1
    assert deep["n"] > 100
    assert deep["accuracy"] > deep["baseline"] + 0.2, res
    assert deep["accuracy"] > one["accuracy"] + 0.2, res
    assert one["accuracy"] < one["baseline"] + 0.1, res
