"""Token loss, sequences and BIG-bench on a tiny Llama (issue 20): values equal a plain HF
loop, with a Llama-style tokenizer (a BOS distinct from EOS that encoding adds by default)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dynamics.checkpoints import CheckpointRef
from dynamics.loading import LoadedModel
from dynamics.tiny import count_params, tiny_llama
from evals.base import build_evaluator
from tests.helpers import sample_texts

CTX = 24  # the tiny Llama's max_position_embeddings: the context cap under test


def llama_style_tokenizer():
    """Byte-level BPE with `<s>` (BOS, id 1) != `</s>` (EOS, id 2) and a post-processor that
    prepends `<s>` when special tokens are added, as Llama's tokenizers do."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<unk>", "<s>", "</s>", "<pad>"])
    tok.train_from_iterator(sample_texts(300), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>")


@pytest.fixture(scope="module")
def lm():
    tok = llama_style_tokenizer()
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 3)
    assert tok("the cat")["input_ids"][0] == 1  # encoding adds BOS by default, like Llama's
    model = tiny_llama(vocab_size=len(tok), max_positions=CTX, seed=11, bos_token_id=1,
                       eos_token_id=2, pad_token_id=3)
    assert count_params(model) == 2 * len(tok) * 32 + 2 * (3072 + 6144 + 64) + 32
    ref = CheckpointRef("tiny-llama", "l", count_params(model), 0, 0, source="/nowhere",
                        is_local=True)
    return LoadedModel(ref, model, tok)


def _plain_logprobs(model, ids: list[int]) -> np.ndarray:
    """log p(ids[t] | ids[:t]) for t >= 1 from one plain HF forward (full logits)."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    lp = torch.log_softmax(logits[:-1], -1)
    return lp.gather(1, torch.tensor(ids[1:])[:, None])[:, 0].numpy()


@pytest.mark.parametrize("context", [None, 100])
def test_token_loss_equals_a_plain_loop_with_the_context_capped(tmp_path, lm, context):
    """Windows of max_position_embeddings = 24 tokens (asking for 100 is capped), overlapping
    by one; the stream is the documents without BOS, joined by EOS (the first token of the
    stream is not scored)."""
    texts = sample_texts(12, seed=4)
    val = tmp_path / "val.jsonl"
    val.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    opts = {"dataset": str(val), "batch_size": 2, "chunk_rows": 5}
    if context is not None:
        opts["context"] = context
    frame = build_evaluator("token-loss", opts).run(lm)["token-loss"]
    tok = lm.tokenizer
    stream = [t for text in texts for t in tok(text, add_special_tokens=False)["input_ids"] + [2]]
    assert 1 not in stream and len(stream) > 3 * CTX  # no BOS anywhere; several windows
    assert frame["token_id"].to_list() == stream[1:]
    expected = np.full(len(stream), np.nan)
    for start in range(0, len(stream) - 1, CTX - 1):
        window = stream[start: start + CTX]
        expected[start + 1: start + len(window)] = -_plain_logprobs(lm.model, window)
    np.testing.assert_allclose(frame["loss_nats"].to_numpy(), expected[1:], atol=2e-5, rtol=0)


def test_sequences_condition_unprefixed_texts_on_one_bos(tmp_path, lm):
    """The start-token rule: an unprefixed text is conditioned on BOS (`<s>`, not EOS) exactly
    once (the tokenizer's own BOS is not added again); a prefixed one on the prefix alone."""
    rows = []
    pairs = {"a": ("the cat sat on a mat.", "the cat sat on a star."),
             "b": ("dogs ran past red houses.", "dogs ran past blue trees.")}
    for pid, (good, bad) in pairs.items():
        rows += [{"pair_id": pid, "set": "factual", "text": good},
                 {"pair_id": pid, "set": "hallucinated", "text": bad},
                 {"pair_id": pid, "set": "prefixed", "prefix": "near quiet", "text": " " + good}]
    for r in rows:
        r.setdefault("prefix", None)
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = build_evaluator("sequences", {"dataset": str(path), "batch_tokens": 30,
                                        "chunk_rows": 3}).run(lm)["sequences"]
    assert out.height == 6
    tok = lm.tokenizer
    for row in out.iter_rows(named=True):
        src = next(r for r in rows if (r["set"], r["pair_id"]) == (row["set"], row["pair_id"]))
        cont = tok(src["text"], add_special_tokens=False)["input_ids"]
        ctx = tok(src["prefix"], add_special_tokens=False)["input_ids"] if src["prefix"] else [1]
        assert row["n_tokens"] == len(cont)
        expected = _plain_logprobs(lm.model, ctx + cont)[-len(cont):].sum()
        assert row["logprob_nats"] == pytest.approx(expected, abs=1e-4)
        if not src["prefix"]:  # conditioning on EOS or on BOS twice would differ
            for other in ([2], [1, 1]):
                assert abs(row["logprob_nats"] - _plain_logprobs(
                    lm.model, other + cont)[-len(cont):].sum()) > 1e-4


def test_sequences_longer_than_the_context_are_an_error(tmp_path, lm):
    from evals.sequences import SequenceSetError

    long = " ".join(["the cat sat on a mat"] * 8)
    rows = [{"pair_id": p, "set": s, "text": long if (p, s) == ("b", "x") else "the cat"}
            for p in ("a", "b") for s in ("x", "y")]
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SequenceSetError, match=f"exceed the model's context of {CTX} tokens"):
        build_evaluator("sequences", {"dataset": str(path)}).run(lm)


def _bigbench_items(seed: int, vocab: int = 120):
    from evals.bigbench_mc import Tokenized
    from evals.bigbench_tasks import MCExample

    g = torch.Generator().manual_seed(seed)

    def ids(lo, hi):
        n = int(torch.randint(lo, hi, (1,), generator=g))
        return torch.randint(4, vocab, (n,), generator=g).tolist()

    items = []
    for i in range(8):
        choices = [ids(1, 5) for _ in range(int(torch.randint(2, 5, (1,), generator=g)))]
        items.append(Tokenized(MCExample("t", i, "", ["c"] * len(choices),
                                         [0.0] * len(choices)), ids(1, 20), choices))
    return items


@pytest.mark.parametrize("attn", ["sdpa", "eager", "split"])
def test_bigbench_packed_llama_equals_one_sequence_per_choice(monkeypatch, attn):
    """Packed rows (positions restarting at len(prompt) for every choice, rotary) equal a plain
    HF forward of prompt + choice alone; "split": the long-prompt path (prompt pass with the
    key/value cache, then the choices). Larger init: peaked attention, so positions matter."""
    from evals import bigbench_mc

    model = tiny_llama(vocab_size=120, max_positions=CTX, seed=3, initializer_range=0.2)
    if attn == "split":
        monkeypatch.setattr(bigbench_mc, "SPLIT_PROMPT", 8)
    else:
        model.config._attn_implementation = attn
    items = _bigbench_items(seed=1)
    assert any(len(t.prompt) + sum(map(len, t.choices)) > CTX for t in items)  # rows split too
    packed, truncated = bigbench_mc.shared_prompt_scores(model, items, max_length=CTX,
                                                         batch_tokens=40)
    assert truncated == 0
    worst = 0.0
    for t, scores in zip(items, packed, strict=True):
        for c, got in zip(t.choices, scores, strict=True):
            expected = _plain_logprobs(model, t.prompt + c)[-len(c):]
            worst = max(worst, float(np.abs(got.numpy() - expected).max()))
    assert worst < 1e-4
