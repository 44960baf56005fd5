"""The benchmarks' own logic: token alignment with lm-eval, prefetch overlap, helpers."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from bench import bench_streaming as bs
from bench import bench_token_loss as bt
from bench._common import matmul_ceiling, matmul_params, table
from dynamics.tiny import tiny_gpt_neox
from evals.token_loss import TokenLossOptions
from tests.helpers import make_tiny_suite, sample_texts, tiny_tokenizer, write_val


def _model_and_lm():
    tok = tiny_tokenizer()
    model = tiny_gpt_neox(vocab_size=len(tok), hidden_size=32, max_positions=64, seed=3)
    return model, tok, bt.loaded(model, tok, "tiny")


@pytest.mark.slow  # imports lm-eval (heavy) and runs it three times
def test_ours_agrees_with_plain_hf_and_lm_eval_rolling(tmp_path):
    pytest.importorskip("lm_eval")
    model, tok, lm = _model_and_lm()
    text = " ".join(sample_texts(60, seed=5))
    context = 16
    agree = bt.agreement(model, tok, lm, text, context, tmp_path)
    assert agree["tokens"] == 3 * (context - 1)
    assert agree["max_abs_ours_vs_hf"] < 1e-4
    assert agree["mean_diff_ours_vs_lm_eval"] < 1e-4
    # Control: lm-eval windows one token longer put tokens in other contexts.
    text = bt.whole_windows_text(text, tok, 3 * (context - 1))
    (shifted,), _ = bt.run_lm_eval(model, tok, [text], context, 4)
    (aligned,), _ = bt.run_lm_eval(model, tok, [text], context - 1, 4)
    assert abs(shifted - aligned) / agree["tokens"] > 1e-4


def test_whole_windows_text_tokenizes_to_exact_count():
    tok = tiny_tokenizer()
    text = " ".join(sample_texts(40, seed=2))
    cut = bt.whole_windows_text(text, tok, 45)
    assert len(tok(cut, add_special_tokens=False)["input_ids"]) == 45
    assert text.startswith(cut)


def test_eos_first_stream_prepends_eos(tmp_path):
    tok = tiny_tokenizer()
    path = write_val(tmp_path / "v.jsonl", n=3)
    plain = bt.TokenLoss(TokenLossOptions(dataset=str(path))).stream(tok)
    shifted = bt.EosFirstTokenLoss(TokenLossOptions(dataset=str(path))).stream(tok)
    assert shifted.token_ids[0] == tok.eos_token_id
    np.testing.assert_array_equal(shifted.token_ids[1:], plain.token_ids)


def test_matmul_params_excludes_input_embedding():
    model = tiny_gpt_neox(vocab_size=100, hidden_size=32)
    total = sum(p.numel() for p in model.parameters())
    assert matmul_params(model) == total - 100 * 32


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matmul_ceiling_is_2n3_over_the_fastest_repeat(dtype, monkeypatch):
    """On a scripted clock: repeats of 3, 1 and 2 ms -> 2 * 64^3 flop / 1 ms, whatever the CPU."""
    import bench._common as common

    ticks = iter([0.0, 0.003, 1.0, 1.001, 2.0, 2.002])  # (start, end) per timed repeat
    monkeypatch.setattr(common.time, "perf_counter", lambda: next(ticks))
    assert matmul_ceiling(n=64, repeats=3, dtype=dtype) == pytest.approx(2 * 64**3 / 1e-3 / 1e9)
    assert next(ticks, None) is None  # exactly `repeats` timed calls


def test_410m_shape_has_pythia_410m_parameter_count():
    from bench._common import build_model

    with torch.device("meta"):  # build_model checks the count; meta allocates nothing
        model = build_model("410m")
    assert sum(p.numel() for p in model.parameters()) == 405_334_016
    assert matmul_params(model) == 405_334_016 - 50304 * 1024  # Pythia's 302,311,424 + head


@pytest.mark.slow  # imports lm-eval; the GPU benchmark's bf16 path, run on the CPU
def test_bf16_path_runs_all_three_tools(capsys):
    pytest.importorskip("lm_eval")
    bt.main(["--quick", "--skip-memory", "--dtype", "bfloat16", "--shapes", "14m",
             "--tokens", "1024"])
    out = capsys.readouterr().out
    assert "bfloat16 on CPU" in out
    # the agreement the benchmark measured, against its bounds (bench_token_loss.tolerances)
    line = next(x for x in out.splitlines() if x.startswith("[14m] agreement on "))
    agree = json.loads(line.split(": ", 1)[1])
    assert agree["max_abs_ours_vs_hf"] < 1e-4  # the same bf16 logits: 1.9e-6 measured
    assert agree["mean_diff_ours_vs_lm_eval"] < 0.05  # lm-eval's bf16 log-softmax
    rows = [line for line in out.splitlines() if line.startswith("| 14m |")]
    assert [r.split("|")[2].strip() for r in rows] == ["ours (TokenLoss)", "plain HF loop",
                                                      "lm-eval rolling"]


def test_table_formats_rows():
    out = table([{"a": 1, "b": "x"}], ["a", "b"]).splitlines()
    assert out == ["| a | b |", "|---|---|", "| 1 | x |"]


@pytest.mark.slow  # six tiny sweeps with sleeps
def test_prefetch_hides_simulated_downloads(tmp_path):
    """With prefetch, checkpoint i+1 loads while checkpoint i computes; without, after it.

    Checked on the order of recorded events, not on wall-clock differences (a
    timing threshold failed on a loaded CI machine: exposed 0.87 s vs 1.36 s).
    """
    suite = make_tiny_suite(tmp_path / "suite", steps=(0, 1, 2))
    val = write_val(tmp_path / "v.jsonl", n=5)
    delay = 0.3
    events: list[tuple[str, int, float]] = []

    class SlowCompute(bt.TokenLoss):
        def run(self, lm):  # compute must be >= load for prefetch to hide the load
            events.append(("compute_start", lm.ref.step, time.monotonic()))
            time.sleep(delay)
            out = super().run(lm)
            events.append(("compute_end", lm.ref.step, time.monotonic()))
            return out

    ev = SlowCompute(TokenLossOptions(dataset=str(val), max_tokens=64, context=32))
    ev.stream(tiny_tokenizer())

    def loader(ref, options):
        events.append(("load_start", ref.step, time.monotonic()))
        time.sleep(delay)
        return bs.load_checkpoint(ref, options)

    for prefetch in (False, True):
        events.clear()
        bs.time_sweep(suite, tmp_path / f"out-{prefetch}", ev, prefetch, loader)
        at = {(kind, step): t for kind, step, t in events}
        assert sorted(step for kind, step, _ in events if kind == "compute_end") == [0, 1, 2]
        for prev, nxt in ((0, 1), (1, 2)):
            overlapped = at[("load_start", nxt)] < at[("compute_end", prev)]
            assert overlapped == prefetch, (prefetch, prev, nxt, events)


def test_ideal_pipeline():
    assert bs.ideal(load=2.0, comp=3.0, n=4) == pytest.approx(14.0)
    assert bs.ideal(load=3.0, comp=2.0, n=4) == pytest.approx(14.0)


@pytest.mark.slow  # imports lm-eval
def test_bigbench_packed_scores_equal_lm_eval_loglikelihood():
    """bench_bigbench's third path: lm-eval scores the same token ids as our packed rows."""
    pytest.importorskip("lm_eval")
    from bench import bench_bigbench as bb
    from evals.bigbench_mc import shared_prompt_scores
    from tests.test_bigbench import _random_items

    model, tok, _ = _model_and_lm()
    items = _random_items(n=6, seed=7)
    ours, _ = shared_prompt_scores(model, items, max_length=64)
    theirs, _ = bb.lm_eval_totals(model, tok, items, batch_size=4)
    totals = [[float(x.double().sum()) for x in lps] for lps in ours]
    assert max(abs(a - b) for x, y in zip(totals, theirs) for a, b in zip(x, y)) < 1e-4
    assert bb.accuracies(items, totals) == bb.accuracies(items, theirs)
