"""Mixture decoding (Xia et al. contrastive generation) against a brute-force reference."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from dynamics.checkpoints import CheckpointRef
from dynamics.loading import LoadedModel
from dynamics.tiny import tiny_gpt_neox, tiny_opt
from evals.base import build_evaluator
from evals.mixture import (
    MixtureError,
    MixtureOptions,
    generate,
    generate_set,
    mixture_probs,
    pick_prompts,
    write_sets,
)
from evals.sequences import load_sequence_sets
from tests.helpers import sample_texts, tiny_tokenizer

PAD_ROWS = 8  # padded embedding rows beyond the tokenizer (as Pythia has)


@pytest.fixture(scope="module", params=["neox", "opt"])
def pair(request):
    tok = tiny_tokenizer()
    build = {"neox": tiny_gpt_neox, "opt": tiny_opt}[request.param]
    small = build(vocab_size=len(tok) + PAD_ROWS, hidden_size=32, seed=1)
    large = build(vocab_size=len(tok) + PAD_ROWS, hidden_size=64, seed=2)
    return small, large, tok


def brute_force(small, large, prompt, options, vocab, tokens):
    """Full forward passes of both models at every step, mixture in numpy float64."""
    ids, dists = list(prompt), []
    for t in tokens:
        with torch.no_grad():
            x = torch.tensor([ids])
            ps, pl_ = (torch.softmax(m(input_ids=x).logits[0, -1, :vocab].double(), -1).numpy()
                       for m in (small, large))
        mix = np.maximum(options.a * ps + options.b * pl_, 0.0)
        dists.append(mix / mix.sum())
        ids.append(t)
    return dists


def test_worked_example():
    ps, pl_ = torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.2, 0.5, 0.3])
    got = mixture_probs(ps.log(), pl_.log(), 1.0, -1.0)
    assert torch.allclose(got, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    got = mixture_probs(ps.log(), pl_.log(), 1.0, 1.0)
    assert torch.allclose(got, ((ps + pl_) / 2).double())


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("a, b", [(1.0, -1.0), (-1.0, 1.0), (1.0, 1.0), (0.0, 1.0)])
def test_greedy_matches_brute_force(pair, use_cache, a, b):
    small, large, tok = pair
    prompt = tok("the cat sat on", add_special_tokens=False)["input_ids"]
    options = MixtureOptions(a=a, b=b, max_new_tokens=8, use_cache=use_cache)
    trace = []
    tokens = generate(small, large, prompt, options, len(tok), trace=trace)
    ref = brute_force(small, large, prompt, options, len(tok), tokens)
    assert len(tokens) == 8 and all(t < len(tok) for t in tokens)
    for step, (got, want) in enumerate(zip(trace, ref, strict=True)):
        assert np.allclose(got.numpy(), want, atol=1e-6), step
        assert tokens[step] == int(np.argmax(want))
    if a * b < 0:  # contrastive: some mass was clipped, and clipped tokens get exactly 0
        assert all((d.numpy() == 0).any() for d in trace)


def test_cache_and_no_cache_agree_when_sampling(pair):
    small, large, tok = pair
    prompt = tok("dogs ran past", add_special_tokens=False)["input_ids"]
    runs = {}
    for use_cache in (True, False):
        opts = MixtureOptions(a=1.0, b=-1.0, max_new_tokens=10, top_p=0.9, seed=3,
                              use_cache=use_cache)
        trace = []
        runs[use_cache] = (generate(small, large, prompt, opts, len(tok), trace=trace), trace)
    assert runs[True][0] == runs[False][0]
    tokens, trace = runs[True]
    for t, probs in zip(tokens, trace, strict=True):  # every sample lies in the nucleus
        p = probs.numpy()
        before = np.sort(p)[::-1].cumsum() - np.sort(p)[::-1]
        nucleus_min = np.sort(p)[::-1][before < 0.9].min()
        assert p[t] >= nucleus_min and p[t] > 0


def test_options_errors():
    with pytest.raises(MixtureError, match="a = 0, b = -1"):
        MixtureOptions(a=0, b=-1)
    with pytest.raises(MixtureError, match="top_p"):
        MixtureOptions(top_p=0.0)
    with pytest.raises(MixtureError, match="no positive mass"):
        mixture_probs(torch.zeros(3), torch.zeros(3), 1.0, -1.0)


def _lm(model, tok, name):
    ref = CheckpointRef("tiny", name, 1000, 10, 100, source="/nowhere", is_local=True)
    return LoadedModel(ref, model, tok)


def test_generated_sets_score_exactly_the_generated_token_ids(tmp_path):
    """Issue 17: sets were decoded to text and re-tokenized, so with a BPE tokenizer (here one
    trained with the `tokenizers` library, with merges) the scored tokens were not the
    generated ones. Now the generated ids are stored and scored."""
    from dynamics.tiny import train_bpe_tokenizer

    tok = train_bpe_tokenizer(sample_texts(300), vocab_size=400)
    assert len(tok) > 300  # 256 bytes + specials + merges (the corpus allows ~90)
    small = tiny_gpt_neox(vocab_size=len(tok), hidden_size=32, seed=1)
    large = tiny_gpt_neox(vocab_size=len(tok), hidden_size=64, seed=2)
    prompts = pick_prompts(sample_texts(60, seed=3), 12, seed=1)
    opts = MixtureOptions(a=1, b=-1, max_new_tokens=10)
    frame = generate_set(_lm(small, tok, "s"), _lm(large, tok, "l"), prompts, opts,
                         prompt_tokens=6)
    ids = [t[:6] for t in tok(prompts, add_special_tokens=False)["input_ids"]]
    generated = [generate(small, large, p, opts, len(tok), index=i) for i, p in enumerate(ids)]
    assert frame["text_ids"].to_list() == generated and frame["prefix_ids"].to_list() == ids
    retokenized = [tok(t, add_special_tokens=False)["input_ids"] for t in frame["text"]]
    assert sum(r != g for r, g in zip(retokenized, generated, strict=True)) >= 3  # BPE re-merges
    path = write_sets([frame], tmp_path / "gen.jsonl")
    ev = build_evaluator("sequences", {"dataset": str(path)})
    reqs = {r.example_id[1]: r for r in ev.requests(tok, 64)}
    assert len(reqs) >= 10
    for pair_id, req in reqs.items():
        assert req.continuation_ids == tuple(generated[int(pair_id)])
        assert req.context_ids == tuple(ids[int(pair_id)])
    out = ev.run(_lm(large, tok, "l"))["sequences"]
    assert {r["pair_id"]: r["n_tokens"] for r in out.iter_rows(named=True)} == {
        p: len(generated[int(p)]) for p in reqs}
    other = train_bpe_tokenizer(sample_texts(300), vocab_size=330)  # ids mean nothing to it
    for req in ev.requests(other, 64):
        row = frame.filter(pl.col("pair_id") == req.example_id[1]).row(0, named=True)
        assert req.continuation_ids == tuple(other(row["text"],
                                                    add_special_tokens=False)["input_ids"])


def test_generated_sets_score_with_the_sequences_evaluator(tmp_path):
    tok = tiny_tokenizer()
    small = tiny_gpt_neox(vocab_size=len(tok), hidden_size=32, seed=1)
    large = tiny_gpt_neox(vocab_size=len(tok), hidden_size=64, seed=2)
    s_lm, l_lm = _lm(small, tok, "s"), _lm(large, tok, "l")
    prompts = pick_prompts(sample_texts(50, seed=9), 4, seed=0)
    assert prompts == pick_prompts(sample_texts(50, seed=9), 4, seed=0)
    frames = [generate_set(s_lm, l_lm, prompts, MixtureOptions(a=a, b=b, max_new_tokens=6),
                           prompt_tokens=5) for a, b in [(1, -1), (-1, 1), (1, 0)]]
    assert frames[0]["set"][0] == "mix a=1 b=-1 | small: tiny/s@step10 | large: tiny/l@step10"
    path = write_sets(frames, tmp_path / "gen.jsonl")
    source = load_sequence_sets(str(path))
    assert source["set"].n_unique() == 3 and source["pair_id"].n_unique() >= 2
    out = build_evaluator("sequences", {"dataset": str(path)}).run(l_lm)["sequences"]
    assert out.height == source.height and out["logprob_nats"].is_finite().all()
    # contrastive (1, -1) text is less likely under the large model than (-1, 1) text
    per = out.group_by("set").agg((pl.col("logprob_nats").sum() / pl.col("n_tokens").sum())
                                  .alias("lp"))
    lp = dict(zip(per["set"].str.split(" |").list.first(), per["lp"], strict=True))
    assert lp["mix a=1 b=-1"] < lp["mix a=-1 b=1"]


def test_generate_from_suite_is_deterministic(tmp_path):
    from dynamics.suites import SuiteError
    from evals.mixture import generate_from_suite
    from tests.helpers import make_tiny_suite, write_val

    suite = make_tiny_suite(tmp_path / "suite", "neox", steps=(0, 10), n_models=2)
    val = write_val(tmp_path / "val.jsonl")
    kw = {"n_prompts": 3, "prompt_tokens": 4, "max_new_tokens": 5, "top_p": 0.9, "seed": 1}
    first = generate_from_suite(str(suite), "tiny-neox-0", "tiny-neox-1", str(val),
                                tmp_path / "a.jsonl", **kw)
    again = generate_from_suite(str(suite), "tiny-neox-0", "tiny-neox-1", str(val),
                                tmp_path / "b.jsonl", **kw)
    assert first.read_text() == again.read_text()
    sets = load_sequence_sets(str(first))
    assert sets["set"].n_unique() == 5
    assert all("tiny-neox-0@step10" in name for name in sets["set"].unique())
    with pytest.raises(SuiteError, match="7"):
        generate_from_suite(str(suite), "tiny-neox-0", "tiny-neox-1", str(val),
                            tmp_path / "c.jsonl", step_small=7, **kw)


@pytest.mark.parametrize("top_p", [None, 0.9])
def test_batched_rows_match_one_prompt_at_a_time(pair, top_p):
    from evals.mixture import generate_rows

    small, large, tok = pair
    prompts = [tok(t, add_special_tokens=False)["input_ids"][:4]
               for t in ("the cat sat on", "dogs ran past the", "a bird flew over")]
    assert {len(p) for p in prompts} == {4}
    opts = MixtureOptions(a=1.0, b=-1.0, max_new_tokens=6, top_p=top_p, seed=5)
    batched = generate_rows(small, large, prompts, opts, len(tok), indices=[3, 7, 9])
    alone = [generate(small, large, p, opts, len(tok), index=i)
             for p, i in zip(prompts, [3, 7, 9], strict=True)]
    assert batched == alone
    with pytest.raises(MixtureError, match="one length"):
        generate_rows(small, large, [prompts[0], prompts[1][:3]], opts, len(tok))
