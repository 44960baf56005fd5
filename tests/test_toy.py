"""The toy suite: corpus, exported evaluation data, tokenizer, trainer and what training learns."""

from __future__ import annotations

import json
import math
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
    assert checkpoint_steps(100, 4, (40, 60, 10)) == [0, 1, 2, 4, 8, 16, 25, 32, 40, 50, 60,
                                                      64, 75, 100]
    with pytest.raises(ValueError, match="every >= 1"):
        checkpoint_steps(100, 4, (40, 160, 10))
    for scale in SCALES.values():
        for arch in scale.archs:
            sizes = [(m.num_layers, m.hidden_size) for a, m in scale.jobs() if a == arch]
            # issue 26: 2+ sizes per family, each can form an induction head (2+ layers);
            # the sizes vary by width and by depth
            assert len(sizes) >= 2 and min(n for n, _ in sizes) >= 2, (arch, sizes)
            assert len({n for n, _ in sizes}) > 1 and len({d for _, d in sizes}) > 1


def test_sizes_per_family_with_their_own_lr_and_steps():
    """A size may belong to one architecture and carry its own lr and steps (issue 26)."""
    from dynamics.toy.train import _lr_at

    scale = ToyScale(models=(ModelSpec("a", 2, 8, 2), ModelSpec("b", 2, 8, 2, arch="opt",
                                                                 lr=0.05, steps=40)),
                     steps=100, lr=0.01, warmup=10, n_regular=4, dense=(30, 60, 10))
    assert [(a, m.size) for a, m in scale.jobs()] == [("neox", "a"), ("opt", "a"), ("opt", "b")]
    a, b = scale.models
    assert (scale.steps_of(a), scale.lr_of(a), scale.steps_of(b), scale.lr_of(b)) == (
        100, 0.01, 40, 0.05)
    assert _lr_at(9, scale, b) == pytest.approx(0.05) and _lr_at(9, scale, a) == pytest.approx(0.01)
    assert _lr_at(40, scale, b) == pytest.approx(0.005)  # cosine to a tenth at its own end
    assert _lr_at(40, scale, a) > 0.005
    # the dense window is clipped to a shorter run's steps
    assert scale.checkpoints_of(b) == [0, 1, 2, 4, 8, 10, 16, 20, 30, 32, 40]
    assert scale.checkpoints_of(a) == checkpoint_steps(100, 4, (30, 60, 10))
    with pytest.raises(ValueError, match="'gpt2'"):
        ToyScale(models=(ModelSpec("a", 2, 8, 2, arch="gpt2"),), steps=4)


@pytest.mark.parametrize("name", sorted(SCALES))
def test_checkpoints_fill_the_trend_windows_and_the_phase_change(name):
    """Issue 19: >= 8 checkpoints in each Xia window (after 10/30/50/70 % of training) of every
    model; issue 26: the dense window covers each family's phase change at its spacing or
    closer (GPTNeoX steps ~500-800, OPT ~900-1,500; BENCHMARKS.md "Induction formation")."""
    import numpy as np

    from stats.trajectories import TrendOptions, window

    scale = SCALES[name]
    phase = {"neox": (500, 800), "opt": (900, 1500)}
    every = scale.dense[2]
    for arch, spec in scale.jobs():
        steps = np.array(scale.checkpoints_of(spec))
        for start in (0.1, 0.3, 0.5, 0.7):
            cols = window(steps, len(steps) - 1, TrendOptions(start_fraction=start))
            assert len(cols) >= 8, (name, arch, spec.size, start, steps[cols])
        lo, hi = phase[arch]
        inside = steps[(steps >= lo - every) & (steps <= hi + every)]
        assert inside.min() <= lo and inside.max() >= hi, (arch, inside)
        assert np.diff(inside).max() <= every, (arch, inside)


def _arch_formula(arch: str, spec: ModelSpec, vocab: int, positions: int) -> int:
    from tests.test_tiny import neox_formula, opt_formula

    if arch == "neox":
        return neox_formula(vocab, spec.hidden_size, spec.num_layers, 4 * spec.hidden_size)
    return opt_formula(vocab, spec.hidden_size, spec.num_layers, 4 * spec.hidden_size, positions)


@pytest.mark.parametrize("name", sorted(SCALES))
def test_toy_model_sizes_and_architectures(name):
    """HF configs accept misspelled keys silently: check every size against its formula."""
    from dynamics.tiny import count_params
    from dynamics.toy.train import build_model

    scale = SCALES[name]
    vocab = len(toy_tokenizer(scale.corpus))
    assert scale.archs == ("neox", "opt")
    for arch, spec in scale.jobs():
        model = build_model(arch, spec, vocab, scale.corpus.row_len, 0)
        assert count_params(model) == _arch_formula(arch, spec, vocab, scale.corpus.row_len)
        cfg = model.config
        assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (
            spec.num_layers, spec.hidden_size, spec.num_heads)
        if arch == "opt":
            assert cfg.do_layer_norm_before and cfg.ffn_dim == 4 * spec.hidden_size
        else:
            assert cfg.use_parallel_residual and cfg.intermediate_size == 4 * spec.hidden_size


def test_unknown_architecture_names_the_allowed_ones():
    with pytest.raises(ValueError, match="neox, opt"):
        ToyScale(models=(ModelSpec("a", 1, 8, 2),), steps=4, archs=("gpt2",))


def _micro_scale() -> ToyScale:
    """Size a in both families; size b only in OPT, with its own lr and one step more."""
    return ToyScale(models=(ModelSpec("a", 1, 8, 2),
                            ModelSpec("b", 2, 16, 2, arch="opt", lr=0.03, steps=5)),
                    steps=4, batch_size=2, n_regular=2)


MICRO_MODELS = {"toy-neox-custom-a": "toy-neox", "toy-opt-custom-a": "toy-opt",
                "toy-opt-custom-b": "toy-opt"}


def test_build_writes_a_readable_suite_and_reuses_it(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = build_toy_suite(tmp_path, _micro_scale(), seed=0, workers=1)
    suite = get_suite(str(folder))
    assert {m: refs[0].family for m, refs in suite.models.items()} == MICRO_MODELS
    refs = suite.models["toy-opt-custom-b"]
    assert [r.step for r in refs] == checkpoint_steps(5, 2)
    assert [r.tokens_seen for r in refs] == [s * 2 * SPEC.row_len for s in checkpoint_steps(5, 2)]
    assert [r.step for r in suite.models["toy-opt-custom-a"]] == checkpoint_steps(4, 2)
    assert refs[0].params > suite.models["toy-opt-custom-a"][0].params
    model = AutoModelForCausalLM.from_pretrained(refs[-1].source)
    assert model.config.num_hidden_layers == 2 and model.config.model_type == "opt"
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
    assert build_toy_suite(tmp_path, _micro_scale(), seed=0, workers=1) == folder
    (folder / train.MARKER).unlink()  # an interrupted build is redone, not reused
    with pytest.raises(AssertionError, match="retrained"):
        build_toy_suite(tmp_path, _micro_scale(), seed=0, workers=1)


def _reference_logits(arch: str, spec: ModelSpec, scale: ToyScale, rows: torch.Tensor,
                      probe: torch.Tensor, vocab: int) -> dict[int, torch.Tensor]:
    """Logits on `probe` after each step of a plain AdamW loop over the same rows (in process)."""
    from dynamics.toy.train import _lr_at, build_model

    torch.set_num_threads(1)
    model = build_model(arch, spec, vocab, scale.corpus.row_len, 0)
    steps = scale.steps_of(spec)
    opt = torch.optim.AdamW(model.parameters(), lr=scale.lr_of(spec), betas=(0.9, 0.99),
                            weight_decay=0.01)
    out = {}
    for step in range(steps + 1):
        with torch.no_grad():
            out[step] = model.eval()(input_ids=probe).logits
        if step == steps:
            return out
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, scale, spec)
        batch = rows[step * scale.batch_size:(step + 1) * scale.batch_size].long()
        model.train()(input_ids=batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad()


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_training_saves_the_models_a_plain_loop_trains(tmp_path, workers):
    """Issue 19/18: each reloaded checkpoint (trained in `workers` processes) gives the
    logits of the same model trained here step by step on the same rows in the same order."""
    from transformers import AutoModelForCausalLM

    from dynamics.toy.train import training_tensor

    scale = _micro_scale()
    folder = build_toy_suite(tmp_path, scale, seed=0, workers=workers)
    suite, tok = get_suite(str(folder)), toy_tokenizer(SPEC)
    rows = training_tensor(Corpus(SPEC, 0), tok, scale.n_rows())
    assert rows.shape[0] == 5 * scale.batch_size  # size b's 5 steps, the longest
    probe = _val_rows(folder, tok)[:4]
    assert sorted(f"toy-{a}-custom-{m.size}" for a, m in scale.jobs()) == sorted(suite.models)
    for arch, spec in scale.jobs():
        want = _reference_logits(arch, spec, scale, rows, probe, len(tok))
        for ref in suite.models[f"toy-{arch}-custom-{spec.size}"]:
            model = AutoModelForCausalLM.from_pretrained(ref.source).eval()
            with torch.no_grad():
                got = model(input_ids=probe).logits
            torch.testing.assert_close(got, want[ref.step], rtol=0, atol=1e-5,
                                       msg=f"{ref.model} step {ref.step}")


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


def _val_rows(suite: Path, tok, n_rows: int = 64) -> torch.Tensor:
    """The suite's validation documents packed as training packs them (EOS-separated
    stream cut into rows; dynamics.toy.corpus)."""
    lines = (suite / "data" / "validation.jsonl").read_text().splitlines()
    vocab = tok.get_vocab()
    stream = [vocab[EOS]]
    for x in lines:
        stream += [vocab[w] for w in json.loads(x)["text"].split()] + [vocab[EOS]]
    L = SPEC.row_len
    assert len(stream) >= n_rows * L, "too few validation documents for the rows asked"
    return torch.tensor(stream[:n_rows * L]).view(n_rows, L)


def _by_family(suite) -> dict[str, dict[int, list]]:
    """family -> {params: checkpoint refs}."""
    out: dict[str, dict[int, list]] = {}
    for refs in suite.models.values():
        out.setdefault(refs[0].family, {})[refs[0].params] = refs
    return out


def val_ppl_rises(steps: list[int], ppl: list[float], total: int) -> list[tuple[int, float]]:
    """(step, ppl / running minimum) of every checkpoint after the first 10 % of training whose
    ppl is more than 3 % above the lowest ppl of the checkpoints before it (issue 26's rule;
    the ratio is the report's, stats.perplexity.ppl_over_best)."""
    import polars as pl

    from stats.perplexity import ppl_over_best

    frame = ppl_over_best(pl.DataFrame({"step": steps, "val_ppl": ppl}, schema_overrides={
        "val_ppl": pl.Float64}).with_columns(family=pl.lit("f"), model=pl.lit("m")))
    late = frame.filter((pl.col("step") >= 0.1 * total) & (pl.col("over_best") > 1.03))
    return list(late.select("step", "over_best").iter_rows())


@pytest.mark.slow
def test_validation_ppl_falls_and_never_rises_above_its_running_minimum(toy_suite):
    """Issue 26: every model of both families: held-out ppl (validation documents packed like
    training rows) falls by more than 0.5 nats overall and, after the first 10 % of training,
    never rises more than 3 % above its running minimum (the toy-opt ppl of issue 19 rose)."""
    suite = get_suite(str(toy_suite))
    rows = _val_rows(toy_suite, toy_tokenizer(SCALES["fast"].corpus))
    families = _by_family(suite)
    assert set(families) == {"toy-neox", "toy-opt"}
    for family, models in families.items():
        for refs in models.values():
            losses = [_val_loss(r.source, rows) for r in refs]
            assert losses[-1] < losses[0] - 0.5, (refs[0].model, losses)
            rises = val_ppl_rises([r.step for r in refs], [math.exp(x) for x in losses],
                                  refs[-1].step)  # each model's own training length
            assert not rises, (refs[0].model, rises)


def _induction_score(path: str) -> float:
    """The report's induction score of one checkpoint: the largest head's attention on the
    induction target of repeated random tokens, computed as the demo's circuits evaluator
    does (BOS first, two copies filling the context; evals.circuits.components)."""
    from transformers import AutoModelForCausalLM

    from evals.circuits import components as comp
    from evals.circuits.model_surgery import adapter_for

    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = toy_tokenizer(SCALES["fast"].corpus)
    n_pos = model.config.max_position_embeddings
    att = comp.attention_scores(adapter_for(model),
                                comp.random_id_range(len(tok), len(tok.all_special_ids)),
                                seq_len=(n_pos - 1) // 2, bos_id=tok.eos_token_id)
    return float(att["induction"].max())


@pytest.mark.slow
def test_induction_heads_form_in_both_families(toy_suite):
    """By the report's rule (final induction score >= 0.3 and >= 2x the step-0 score;
    stats.claims.emergence.head_formed), induction heads form in at least 3 of the 5
    models, in both families, and the strongest head of each family does what an
    induction head is for: trigger recall well above the in-context frequency baseline.

    Training numerics differ between CPUs (kernels sum in other orders), and a head that
    forms late forms at a different step: on one AMD EPYC host toy-opt m reached 0.61 and
    recalled, on another 0.35 and recalled below the baseline (the same code, seed and
    torch); toy-neox l and m and toy-opt s formed on both (0.51-0.73). So the test asserts
    what holds on both, not each marginal head.
    """
    from transformers import AutoModelForCausalLM

    from stats.claims.emergence import head_formed

    scale = SCALES["fast"]
    corpus, tok = Corpus(scale.corpus, 0), toy_tokenizer(scale.corpus)
    formed = {}  # family -> [(final score, last ref)]
    for family, sizes in _by_family(get_suite(str(toy_suite))).items():
        for refs in sizes.values():
            first, last = _induction_score(refs[0].source), _induction_score(refs[-1].source)
            if head_formed(first, last):
                formed.setdefault(family, []).append((last, refs[-1]))
    assert set(formed) == {"toy-neox", "toy-opt"}, formed
    assert sum(len(v) for v in formed.values()) >= 3, formed
    for family, heads in formed.items():
        _, ref = max(heads, key=lambda h: h[0])
        model = AutoModelForCausalLM.from_pretrained(ref.source)
        recall = trigger_accuracy(model, tok, corpus)
        assert recall["n"] > 100 and recall["accuracy"] > recall["baseline"] + 0.2, (
            ref.model, recall)
