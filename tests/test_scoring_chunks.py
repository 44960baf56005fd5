"""Head chunks are capped by logits count (memory flat in vocab) without changing results."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dynamics.tiny import tiny_gpt_neox
from evals import scoring


def test_vocab_capped_chunks_match_full_logits(monkeypatch):
    model = tiny_gpt_neox(vocab_size=300, hidden_size=32, seed=4)
    ids = torch.randint(0, 300, (3, 20), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        logits = model(input_ids=ids).logits
        ref = -F.cross_entropy(logits[:, :-1].reshape(-1, 300), ids[:, 1:].reshape(-1),
                               reduction="none").view(3, 19)
    scoring.check_head(model)  # one-off check, before counting head calls
    seen = []
    real_chunk = scoring._blocked_logprobs
    monkeypatch.setattr(scoring, "_blocked_logprobs",
                        lambda head, h, *a: seen.append(h.shape[0]) or real_chunk(head, h, *a))
    monkeypatch.setattr(scoring, "CHUNK_ELEMENTS", 300 * 7)  # 7 rows per chunk at vocab 300
    got = scoring.token_logprobs(model, ids, chunk_rows=2048)
    assert seen == [7] * 8 + [57 - 56]  # 3 x 19 = 57 rows in chunks of 7
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_fused_chunk_equals_cross_entropy_with_bias():
    """The blocked log-sum-exp path (float32 Linear head) equals cross-entropy, bias included."""
    g = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(16, 500, bias=True)
    torch.nn.init.normal_(head.weight, std=3.0, generator=g)  # large logits: tests the max shift
    torch.nn.init.normal_(head.bias, std=3.0, generator=g)
    h, t = torch.randn(37, 16, generator=g), torch.randint(0, 500, (37,), generator=g)
    with torch.inference_mode():
        ref = -F.cross_entropy(head(h), t, reduction="none")
        fused = scoring._blocked_logprobs(head, h, t)
    assert ref.abs().max() > 10
    torch.testing.assert_close(fused, ref, atol=1e-4, rtol=1e-5)


def test_blocked_logprobs_across_many_vocabulary_blocks(monkeypatch):
    """Blocks of 256 columns over a 1000-token vocabulary (4 blocks, the last one short)."""
    monkeypatch.setattr(scoring, "BLOCK_ELEMENTS", 1)  # width = the 256-column minimum
    g = torch.Generator().manual_seed(1)
    head = torch.nn.Linear(8, 1000, bias=False)
    torch.nn.init.normal_(head.weight, std=4.0, generator=g)
    h, t = torch.randn(5, 8, generator=g), torch.randint(0, 1000, (5,), generator=g)
    with torch.inference_mode():
        ref = -F.cross_entropy(head(h), t, reduction="none")
        got = scoring._blocked_logprobs(head, h, t)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-5)


def test_rows_that_overflow_the_first_block_shift_are_redone_exactly(monkeypatch):
    """A later block 200 nats above the first block's max: exp overflows, the row is redone."""
    monkeypatch.setattr(scoring, "BLOCK_ELEMENTS", 1)  # 256-column blocks
    g = torch.Generator().manual_seed(2)
    head = torch.nn.Linear(4, 600, bias=False)
    torch.nn.init.normal_(head.weight, std=0.1, generator=g)
    h = torch.randn(6, 4, generator=g)
    with torch.no_grad():
        head.weight[300:310] = 0.0
        head.weight[300:310, 0] = 200.0  # logit 200 * h[:, 0] in the second block
    h[:3, 0] = 1.0  # rows 0-2 overflow the shifted sum; rows 3-5 do not (h[:, 0] <= 0)
    h[3:, 0] = -1.0
    t = torch.tensor([305, 3, 599, 305, 3, 599])
    with torch.inference_mode():
        shifted = scoring._shifted_logsumexp(head, h)
        assert torch.isinf(shifted[:3]).all() and torch.isfinite(shifted[3:]).all()
        got = scoring._blocked_logprobs(head, h, t)
        ref = -F.cross_entropy(head(h).double(), t, reduction="none")
    torch.testing.assert_close(got.double(), ref, atol=1e-4, rtol=1e-5)
    # the ten tied huge logits take all the mass: log p = -log 10 for one of them, ~-200 else
    assert abs(got[0] + math.log(10)) < 1e-4 and got[1] < -150


def test_shifted_and_online_logsumexp_agree_with_bias_over_blocks(monkeypatch):
    monkeypatch.setattr(scoring, "BLOCK_ELEMENTS", 1)
    g = torch.Generator().manual_seed(3)
    head = torch.nn.Linear(8, 1000, bias=True)
    torch.nn.init.normal_(head.weight, std=3.0, generator=g)
    torch.nn.init.normal_(head.bias, std=5.0, generator=g)
    h = torch.randn(7, 8, generator=g)
    with torch.inference_mode():
        ref = torch.logsumexp(head(h).double(), dim=1)
        for fn in (scoring._shifted_logsumexp, scoring._online_logsumexp):
            torch.testing.assert_close(fn(head, h).double(), ref, atol=1e-4, rtol=1e-6)


def test_bf16_head_blocks_match_its_own_logits_cross_entropy(monkeypatch):
    """A bf16 head: logits rounded to bf16 as its forward gives them, then float32 math."""
    monkeypatch.setattr(scoring, "BLOCK_ELEMENTS", 1)  # 256-column blocks over 1000
    g = torch.Generator().manual_seed(4)
    for bias in (False, True):
        head = torch.nn.Linear(16, 1000, bias=bias)
        torch.nn.init.normal_(head.weight, std=2.0, generator=g)
        head = head.to(torch.bfloat16)
        h = torch.randn(9, 16, generator=g).to(torch.bfloat16)
        t = torch.randint(0, 1000, (9,), generator=g)
        with torch.inference_mode():
            ref = -F.cross_entropy(head(h).float(), t, reduction="none")  # what HF users do
            got = scoring._blocked_logprobs(head, h, t)
            online = scoring._online_logsumexp(head, h)
        assert got.dtype == torch.float32 and ref.abs().max() > 5
        # same bf16 logits; only the float32 summation order differs
        torch.testing.assert_close(got, ref, atol=2e-3, rtol=1e-4)
        torch.testing.assert_close(online, torch.logsumexp(head(h).float(), 1),
                                   atol=2e-3, rtol=1e-4)


def test_token_logprobs_bf16_model_on_cpu_equals_full_logits():
    model = tiny_gpt_neox(vocab_size=300, hidden_size=32, seed=5).to(torch.bfloat16)
    ids = torch.randint(0, 300, (3, 20), generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[:, :-1].float()
        ref = -F.cross_entropy(logits.reshape(-1, 300), ids[:, 1:].reshape(-1),
                               reduction="none").view(3, 19)
        got = scoring.token_logprobs(model, ids)
    torch.testing.assert_close(got, ref, atol=2e-3, rtol=1e-4)


def test_windows_per_batch_defaults_to_a_token_budget():
    import pytest

    from evals.token_loss import TokenLossOptions

    o = TokenLossOptions(dataset="v.jsonl")
    assert o.windows_per_batch(512, "cpu") == 8
    assert o.windows_per_batch(2048, "cpu") == 2
    assert o.windows_per_batch(8192, "cpu") == 1  # never zero
    assert o.windows_per_batch(2048, "cuda") == 16
    assert TokenLossOptions(dataset="v.jsonl", batch_tokens=1024).windows_per_batch(256, "cpu") == 4
    assert TokenLossOptions(dataset="v.jsonl", batch_size=3).windows_per_batch(512, "cpu") == 3
    with pytest.raises(ValueError, match="batch_tokens must be >= 1, got 0"):
        TokenLossOptions(dataset="v.jsonl", batch_tokens=0)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        TokenLossOptions(dataset="v.jsonl", batch_size=0)
    with pytest.raises(ValueError, match="context must be >= 2 tokens, got 1"):
        TokenLossOptions(dataset="v.jsonl", context=1)


def test_token_losses_do_not_depend_on_the_batching(tmp_path):
    from bench.bench_token_loss import loaded
    from evals.token_loss import TokenLoss, TokenLossOptions
    from tests.helpers import tiny_tokenizer, write_val

    tok = tiny_tokenizer()
    model = tiny_gpt_neox(vocab_size=len(tok), hidden_size=32, max_positions=64, seed=2)
    lm = loaded(model, tok, "tiny")
    val = write_val(tmp_path / "val.jsonl", n=40)
    frames = [TokenLoss(TokenLossOptions(dataset=str(val), context=16, **kw)).run(lm)["token-loss"]
              for kw in ({"batch_size": 1}, {}, {"batch_tokens": 48}, {"batch_size": 1000})]
    first = frames[0]["loss_nats"].to_numpy()
    assert len(first) > 200
    for f in frames[1:]:
        assert f.drop("loss_nats").equals(frames[0].drop("loss_nats"))
        assert abs(f["loss_nats"].to_numpy() - first).max() < 1e-5


def test_head_path_by_device_and_head():
    """CUDA: the compiled fused head; the CPU: vocabulary blocks; custom heads: plain logits."""
    lin = torch.nn.Linear(8, 50, bias=False)
    cpu, cuda, mps = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
    assert scoring.head_path(lin, cpu) == "blocked"
    assert scoring.head_path(lin.to(torch.bfloat16), cpu) == "blocked"
    assert scoring.head_path(lin, cuda) == "fused"  # no CUDA tensor needed: a device object
    assert scoring.head_path(lin.to(torch.bfloat16), cuda) == "fused"
    assert scoring.head_path(lin.to(torch.bfloat16), mps) == "logits"
    assert scoring.head_path(lin.float(), mps) == "blocked"
    assert scoring.head_path(torch.nn.Sequential(lin), cuda) == "logits"


def test_fused_head_function_equals_cross_entropy_on_the_heads_own_logits():
    """head_logprobs (what CUDA compiles): the head's bf16 logits, then float32 log-softmax."""
    g = torch.Generator().manual_seed(3)
    head = torch.nn.Linear(24, 700, bias=True)
    torch.nn.init.normal_(head.weight, std=2.0, generator=g)
    torch.nn.init.normal_(head.bias, std=2.0, generator=g)
    h, t = torch.randn(41, 24, generator=g), torch.randint(0, 700, (41,), generator=g)
    for dtype in (torch.float32, torch.bfloat16):
        hd, hh = head.to(dtype), h.to(dtype)
        with torch.inference_mode():
            ref = -F.cross_entropy(hd(hh).float(), t, reduction="none")
            got = scoring.head_logprobs(hh, hd.weight, hd.bias, t)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, ref, atol=2e-6, rtol=1e-6)


def test_fused_head_falls_back_to_eager_when_compile_fails(monkeypatch, caplog):
    """A backend that cannot compile (no Triton, an old GPU) fails on the first call: the
    values come from the uncompiled function, a warning says so once, later calls skip it."""
    calls = []

    def broken_compile(fn, **kw):
        def run(*a):
            calls.append(1)
            raise RuntimeError("no triton here")
        return run

    monkeypatch.setattr(scoring, "_FUSED", {})
    monkeypatch.setattr(torch, "compile", broken_compile)
    head = torch.nn.Linear(8, 30)
    h, t = torch.randn(5, 8), torch.randint(0, 30, (5,))
    with torch.inference_mode():
        ref = scoring.head_logprobs(h, head.weight, head.bias, t)
        first = scoring._fused_head()(h, head.weight, head.bias, t)
        second = scoring._fused_head()(h, head.weight, head.bias, t)
    torch.testing.assert_close(first, ref)
    torch.testing.assert_close(second, ref)
    assert len(calls) == 1 and scoring._FUSED["fn"] is scoring.head_logprobs
    assert sum("torch.compile of the output head failed" in r.message
               for r in caplog.records) == 1
