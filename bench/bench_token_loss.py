"""Token-loss throughput: our evaluator vs a plain HF loop vs lm-eval's rolling loglikelihood.

    .venv/bin/python -m bench.bench_token_loss --quick   # ~2 min on 2 idle cores
    .venv/bin/python -m bench.bench_token_loss           # full run

Same random-init Pythia-shaped GPTNeoX object for all three tools (70m and 14m
shapes, vocab 50304), same text (the licence texts in /usr/share/common-licenses,
real English), same locally trained byte-level BPE tokenizer. Reports tokens/s,
speed ratios, and MFU = 2 * params(excluding the input embedding) * tokens/s
divided by the fp32 2048^3 matmul rate measured at the start of the same run.

On a GPU (issue #10: bf16, Pythia-410m shape):

    .venv/bin/python -m bench.bench_token_loss --device cuda --dtype bfloat16 --shapes 410m 70m

runs the same three tools on the GPU in bf16, with MFU against the bf16 8192^3
matmul rate measured on that GPU in the same run, and reports each tool's peak
GPU memory (the RSS grid is CPU-only). The agreement bounds are `tolerances`:
in bf16 on the CPU ours and the plain loop take the same bf16 logits (1e-4, as in
fp32); lm-eval takes its log-softmax in bf16 (0.05 nats per token). `--device cpu
--dtype bfloat16` runs the same path on the CPU (a smoke test of the GPU path;
tests/test_bench.py runs it on a tiny model).

Agreement: lm-eval scores each document on its own behind an EOT prefix in
windows of `max_length` tokens that each predict `max_length` tokens; our
evaluator scores one EOS-joined stream in windows of `context` tokens that
each predict `context - 1` tokens. With our stream = [EOS] + document and
lm-eval's max_length = context - 1, every token is predicted from exactly the
same context by both (worked example, context 4, document t0..t6: ours
windows [EOS t0 t1 t2], [t2 t3 t4 t5], [t5 t6 EOS] score t0-t2 | t3-t5 | t6;
lm-eval windows of 3: [EOT t0 t1], [t2 t3 t4], [t5] (+ t4 as context) score
t0-t2 | t3-t5 | t6). lm-eval returns only the document total, so we compare
totals (as mean per-token difference); the plain HF loop is compared per token.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench._common import (
    SLOW_DTYPE_MAX_N,
    build_model,
    licence_texts,
    licence_tokenizer,
    matmul_ceiling,
    matmul_params,
    peak_rss_mb,
    reset_peak_rss,
    run_child,
    sync,
    table,
    write_jsonl,
)
from dynamics.checkpoints import CheckpointRef
from dynamics.loading import LoadedModel, cpu_dtype_problem
from evals.token_loss import TokenLoss, TokenLossOptions, TokenStream, window_starts

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# Max per-token |ours - plain HF loop| (nats). In bf16 on a CPU with native bf16 both score
# the model's own bf16 logits: measured 1.9e-6 for the 14m and 70m shapes at contexts 512
# and 2048 (issues #18, #22).
HF_TOL = 1e-4
# bf16 where batch composition changes the body's bf16 rounding (ours batches windows,
# the plain loop runs one at a time): on a GPU (not measured: no GPU lent yet), and on a
# CPU without native bf16 (oneDNN capped with ONEDNN_MAX_CPU_ISA=AVX2): 70m at context
# 2048, 2 of 16,397 tokens moved by 2.0e-3 (a bf16 logit rounding the other way; one ulp
# at |logit| in [8, 16) is 0.0625), 1.9e-6 at context 512 (issue #22).
HF_TOL_BF16_BATCHED = 0.25
# Mean per-token |ours - lm-eval| (nats). fp32: the same math. bf16: lm-eval rounds its
# log-softmax to bf16 (half an ulp at |log p| in [8, 16) is 2^-5 = 0.031); measured
# 2.1e-2 (70m) and 2.8e-3 (14m) on the CPU (BENCHMARKS.md).
LM_EVAL_TOL = {"float32": 1e-4, "bfloat16": 0.05}
AGREE_WINDOWS = 3  # the agreement document fills this many windows
WARMUP_TOKENS = 64  # one forward before timing (allocator, kernels)


def tolerances(dtype: str, device: str) -> tuple[float, float]:
    """(max |ours - plain HF| per token, mean |ours - lm-eval| per token) accepted."""
    on_gpu = torch.device(device).type == "cuda"
    batched = dtype != "float32" and (on_gpu or cpu_dtype_problem(dtype) is not None)
    hf = HF_TOL_BF16_BATCHED if batched else HF_TOL
    return hf, LM_EVAL_TOL[dtype]


def loaded(model, tokenizer, shape: str) -> LoadedModel:
    ref = CheckpointRef("bench", f"neox-{shape}", sum(p.numel() for p in model.parameters()),
                        0, 0, source="/nonexistent", is_local=True)
    return LoadedModel(ref=ref, model=model, tokenizer=tokenizer)


class EosFirstTokenLoss(TokenLoss):
    """TokenLoss whose stream starts with EOS, to line up with lm-eval's EOT prefix."""

    def stream(self, tokenizer) -> TokenStream:
        s = super().stream(tokenizer)
        eos = np.asarray([tokenizer.eos_token_id], np.int64)
        return TokenStream(np.concatenate([eos, s.token_ids]), np.concatenate([[-1], s.doc_id]),
                           np.concatenate([[-1], s.token_index]))


def run_ours(ev: TokenLoss, lm) -> tuple[np.ndarray, float]:
    """Per-token losses (stream order, first token dropped) and seconds, tokenization excluded."""
    ev.stream(lm.tokenizer)
    t0 = time.perf_counter()
    frame = ev.run(lm)["token-loss"]
    return frame["loss_nats"].to_numpy(), time.perf_counter() - t0


def run_plain_hf(model, ids: np.ndarray, context: int) -> tuple[np.ndarray, float]:
    """One window at a time, full logits, F.cross_entropy: what a user would write."""
    device = next(model.parameters()).device
    sync(device)
    t0 = time.perf_counter()
    out = []
    ids_t = torch.from_numpy(ids).to(device)
    with torch.no_grad():
        for s in window_starts(len(ids), context):
            window = ids_t[s: s + context].unsqueeze(0)
            logits = model(input_ids=window).logits[0].float()
            out.append(F.cross_entropy(logits[:-1], window[0, 1:], reduction="none").cpu().numpy())
    return np.concatenate(out), time.perf_counter() - t0


def run_lm_eval(model, tokenizer, texts: list[str], max_length: int,
                batch_size: int) -> tuple[list[float], float]:
    """lm-eval HFLM.loglikelihood_rolling on the same model object; (per-doc logprob, s)."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    param = next(model.parameters())
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size,
              device=str(param.device), max_length=max_length,
              dtype=str(param.dtype).removeprefix("torch."))
    reqs = [Instance(request_type="loglikelihood_rolling", doc={}, arguments=(t,), idx=i)
            for i, t in enumerate(texts)]
    t0 = time.perf_counter()
    res = lm.loglikelihood_rolling(reqs, disable_tqdm=True)
    return [float(r) for r in res], time.perf_counter() - t0


def docs_for_budget(texts: list[str], tokenizer, budget: int) -> list[str]:
    """Whole documents (cut on a paragraph) totalling about `budget` tokens, EOS included."""
    out, n = [], 0
    for t in texts:
        paras = t.split("\n\n")
        doc = []
        for p in paras:
            k = len(tokenizer(p + "\n\n", add_special_tokens=False)["input_ids"])
            if n + k + 1 > budget:
                break
            doc.append(p)
            n += k
        if doc:
            out.append("\n\n".join(doc))
            n += 1
        if n >= budget - 8:
            break
    return out


def whole_windows_text(text: str, tokenizer, n_tokens: int) -> str:
    """A prefix of `text` that tokenizes to exactly its first `n_tokens` tokens.

    lm-eval's last, partial window reaches back a full `max_length` of context,
    so the agreement document must fill whole windows.
    """
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    cut = text[: enc["offset_mapping"][n_tokens - 1][1]]
    if tokenizer(cut, add_special_tokens=False)["input_ids"] != enc["input_ids"][:n_tokens]:
        raise ValueError(f"the first {n_tokens} tokens of the text do not re-tokenize alone")
    return cut


def agreement(model, tokenizer, lm_model, text: str, context: int, tmp: Path,
              with_lm_eval: bool = True) -> dict:
    """Max |per-token diff| ours vs plain HF, and mean per-token total diff ours vs lm-eval
    (nan without lm-eval: --skip-lm-eval, e.g. on a GPU image that lacks it)."""
    text = whole_windows_text(text, tokenizer, AGREE_WINDOWS * (context - 1))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    path = write_jsonl([text], tmp / "agree.jsonl")
    ev = EosFirstTokenLoss(TokenLossOptions(dataset=str(path), context=context,
                                            max_tokens=len(ids) + 2, batch_size=4))
    ours, _ = run_ours(ev, lm_model)
    ours = ours[:-1]  # drop the EOS build_stream appends after the document
    stream = np.asarray([tokenizer.eos_token_id] + ids, np.int64)
    plain, _ = run_plain_hf(model, stream, context)
    lm_diff = float("nan")
    if with_lm_eval:
        (lme,), _ = run_lm_eval(model, tokenizer, [text], context - 1, 4)
        lm_diff = abs(-float(ours.astype(np.float64).sum()) - lme) / len(ids)
    return {"tokens": len(ids), "max_abs_ours_vs_hf": float(np.abs(ours - plain).max()),
            "mean_diff_ours_vs_lm_eval": lm_diff}


def reset_gpu_peak(device) -> None:
    if torch.device(device).type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats()


def gpu_peak_mib(device) -> float | None:
    if torch.device(device).type != "cuda":
        return None
    return torch.cuda.max_memory_allocated() / 2**20


def bench_shape(shape: str, args, tokenizer, texts, tmp: Path, ceiling: float) -> list[dict]:
    model = build_model(shape).to(device=args.device, dtype=DTYPES[args.dtype])
    lm_model = loaded(model, tokenizer, shape)
    ctx = args.context
    tol_hf, tol_lm_eval = tolerances(args.dtype, args.device)
    with torch.inference_mode():  # warm-up (allocator, kernels)
        model(input_ids=torch.zeros(1, WARMUP_TOKENS, dtype=torch.long, device=args.device))
    agree = agreement(model, tokenizer, lm_model, texts[0][: args.agree_chars], args.agree_context,
                      tmp, with_lm_eval=not args.skip_lm_eval)
    docs = docs_for_budget(texts, tokenizer, args.tokens)
    path = write_jsonl(docs, tmp / f"docs-{shape}.jsonl")
    opts = TokenLossOptions(dataset=str(path), context=ctx, max_tokens=10**9,
                            batch_size=args.batch_size, chunk_rows=args.chunk_rows)
    ev_ours = TokenLoss(opts)
    times = []
    reset_gpu_peak(args.device)
    for _ in range(args.repeats):  # same evaluator: tokenized once, like a sweep (lm-eval
        # tokenizes inside every call, as it would at every checkpoint of a sweep)
        ours, t = run_ours(ev_ours, lm_model)
        times.append(t)
    t_ours = min(times)
    peaks = [gpu_peak_mib(args.device)]
    if args.repeats > 1:
        print(f"[{shape}] ours, {args.repeats} runs: "
              + ", ".join(f"{len(ours) / t:,.0f}" for t in times) + " tok/s", flush=True)
    n = len(ours)
    rows = [{"tool": "ours (TokenLoss)", "tokens": n, "seconds": t_ours}]
    if not args.skip_plain:
        ev = TokenLoss(opts)
        stream = ev.stream(tokenizer).token_ids
        reset_gpu_peak(args.device)
        runs = [run_plain_hf(model, stream, ctx) for _ in range(args.repeats)]
        plain, t_plain = runs[0][0], min(t for _, t in runs)
        peaks.append(gpu_peak_mib(args.device))
        diff = np.abs(plain - ours)
        print(f"[{shape}] ours vs plain HF loop over the run: max |diff| {diff.max():.1e} on "
              f"{len(diff)} tokens, {int((diff > HF_TOL).sum())} above {HF_TOL:g} "
              f"(bound {tol_hf:g})", flush=True)
        assert diff.max() < tol_hf, diff.max()
        rows.append({"tool": "plain HF loop", "tokens": len(plain), "seconds": t_plain})
    if not args.skip_lm_eval:
        reset_gpu_peak(args.device)
        bs = opts.windows_per_batch(ctx, args.device)  # lm-eval gets the same windows/batch
        t_lme = min(run_lm_eval(model, tokenizer, docs, ctx, bs)[1]
                    for _ in range(args.repeats))
        peaks.append(gpu_peak_mib(args.device))
        n_lme = sum(len(tokenizer(d, add_special_tokens=False)["input_ids"]) for d in docs)
        rows.append({"tool": "lm-eval rolling", "tokens": n_lme, "seconds": t_lme})
    assert agree["max_abs_ours_vs_hf"] < tol_hf, agree
    assert args.skip_lm_eval or agree["mean_diff_ours_vs_lm_eval"] < tol_lm_eval, agree
    flop_per_tok = 2 * matmul_params(model)
    for r, peak in zip(rows, peaks, strict=True):
        r["peak GPU MiB"] = "" if peak is None else f"{peak:,.0f}"
        r["tok/s"] = r["tokens"] / r["seconds"]
        r["MFU"] = r["tok/s"] * flop_per_tok / (ceiling * 1e9)
        r["vs ours"] = rows[0]["tok/s"] / r["tok/s"]
        r.update(shape=shape, **{k: v for k, v in agree.items() if k != "tokens"})
    print(f"[{shape}] agreement on {agree['tokens']} tokens (context {args.agree_context}): "
          + json.dumps(agree), flush=True)
    return rows


def forward_rate(shape: str, args, n_tokens: int = 64) -> float:
    """Tokens/s of one `n_tokens` forward of the shape's model in --dtype, after a warm-up.

    Where bf16 is emulated the model's linear layers run at 13-28 GFLOP/s but a plain
    2048^3 matmul at 0.6 (measured with oneDNN capped to AVX2), so a run is estimated
    from the model itself, not from the ceiling.
    """
    model = build_model(shape).to(device=args.device, dtype=DTYPES[args.dtype])
    ids = torch.zeros(1, n_tokens, dtype=torch.long, device=args.device)
    with torch.inference_mode():
        model(input_ids=ids[:, :16])
        t0 = time.perf_counter()
        model(input_ids=ids)
        sync(args.device)
        return n_tokens / (time.perf_counter() - t0)


def estimated_seconds(args, rates: dict[str, float]) -> float:
    """Seconds of model forwards in a run at `rates` (tokens/s per shape).

    Per shape: each tool's `tokens` x `repeats`, the agreement's three tools on three
    windows, and the warm-up.
    """
    tools = 1 + (not args.skip_plain) + (not args.skip_lm_eval)
    agree = 3 * AGREE_WINDOWS * (args.agree_context - 1)  # ours, the plain loop, lm-eval
    tokens = args.tokens * args.repeats * tools + agree + WARMUP_TOKENS
    return sum(tokens / rates[shape] for shape in args.shapes)


def memory_child(impl: str, shape: str, vocab: int, batch: int, seq: int, chunk_rows: int) -> None:
    """Subprocess body: peak RSS of one scoring call (printed as JSON)."""
    from evals.scoring import token_logprobs

    torch.set_num_threads(2)
    model = build_model(shape, vocab_size=vocab, max_positions=max(seq, 2048))
    ids = torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        model(input_ids=ids[:1, :8])
    gc.collect()
    base = reset_peak_rss()
    with torch.inference_mode():
        if impl == "ours":
            token_logprobs(model, ids, chunk_rows)
        else:
            logits = model(input_ids=ids).logits
            F.cross_entropy(logits[:, :-1].reshape(-1, vocab), ids[:, 1:].reshape(-1),
                            reduction="none")
    print(json.dumps({"base_mb": base, "peak_mb": peak_rss_mb()}))


def memory_grid(quick: bool, chunk_rows: int) -> list[dict]:
    grid = [(50304, 1, 512), (50304, 4, 512), (50304, 4, 2048), (100608, 4, 512)]
    if not quick:
        grid += [(50304, 16, 512), (201216, 4, 512)]
    rows = []
    for vocab, batch, seq in grid:
        r = {"vocab": vocab, "batch x seq": f"{batch} x {seq}"}
        for impl in ("ours", "full-logits"):
            m = run_child("bench.bench_token_loss",
                          ["--memory-child", impl, "14m", str(vocab), str(batch), str(seq),
                           str(chunk_rows)])
            r[f"{impl} +MiB"] = round(m["peak_mb"] - m["base_mb"])
        rows.append(r)
        print(json.dumps(r), flush=True)
    return rows


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small run (~1-2 min on idle cores)")
    p.add_argument("--shapes", nargs="+", default=["70m", "14m"], choices=["410m", "70m", "14m"])
    p.add_argument("--device", default="cpu", help="cpu or cuda (GPU: use --dtype bfloat16)")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--tokens", type=int, default=None, help="tokens per tool (default 16384)")
    p.add_argument("--context", type=int, default=None, help="window (default 2048; quick 512)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="windows per batch for every tool (default: the evaluator's, "
                        "4096 tokens per batch on the CPU, 32768 on a GPU)")
    p.add_argument("--chunk-rows", type=int, default=2048)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1,
                   help="runs of each tool on the same model and data; the best is reported")
    p.add_argument("--skip-plain", action="store_true")
    p.add_argument("--skip-lm-eval", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--ceiling-n", type=int, default=None,
                   help="matmul size of the MFU ceiling (default 8192 on a GPU, 2048 on the "
                        f"CPU, {SLOW_DTYPE_MAX_N} where the CPU has no native --dtype)")
    p.add_argument("--max-minutes", type=float, default=15.0,
                   help="where the CPU has no native --dtype (bf16 emulated: 20-100x slower "
                        "than fp32), stop with the estimate instead of running longer")
    p.add_argument("--memory-child", nargs=6, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.tokens = args.tokens or (4096 if args.quick else 16384)
    args.context = args.context or (512 if args.quick else 2048)
    args.agree_context, args.agree_chars = 128, 6000
    return args


def main(argv=None) -> None:
    args = parse(argv)
    if args.memory_child:
        impl, shape, vocab, batch, seq, chunk = args.memory_child
        return memory_child(impl, shape, int(vocab), int(batch), int(seq), int(chunk))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    on_gpu = torch.device(args.device).type == "cuda"
    if on_gpu and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch {torch.__version__} sees no CUDA device")
    slow = None if on_gpu else cpu_dtype_problem(args.dtype)
    n_ceiling = args.ceiling_n or (8192 if on_gpu else SLOW_DTYPE_MAX_N if slow else 2048)
    repeats = 3 if slow else 10

    def measure() -> float:
        return matmul_ceiling(n_ceiling, repeats, device=args.device, dtype=DTYPES[args.dtype])

    if slow:
        print(f"note: {slow}; the ceiling is measured at {n_ceiling}^3 (2048^3 takes "
              "minutes per product there)", flush=True)
    ceiling = measure()
    where = torch.cuda.get_device_name() if on_gpu else f"CPU, {args.threads} threads"
    print(f"matmul ceiling: {ceiling:,.0f} GFLOP/s ({args.dtype} {n_ceiling}^3, best of "
          f"{repeats}, {where})", flush=True)
    if slow:
        rates = {shape: forward_rate(shape, args) for shape in args.shapes}
        minutes = estimated_seconds(args, rates) / 60
        print(f"note: through the models {args.dtype} runs at "
              + ", ".join(f"{r:,.0f} tok/s ({s})" for s, r in rates.items())
              + f"; estimated ~{minutes:.1f} min (--max-minutes {args.max_minutes:g}); MFU is "
              "not reported (the emulated rate depends on the matmul's layout)", flush=True)
        if minutes > args.max_minutes:
            raise SystemExit(f"stopping: {args.dtype} on this CPU would take ~{minutes:.0f} min "
                             f"(no native {args.dtype}); use --dtype float32, fewer --tokens or "
                             f"--shapes, or raise --max-minutes")
    texts = licence_texts()
    tokenizer = licence_tokenizer()
    print(f"text: {len(texts)} licence files, tokenizer vocab {len(tokenizer)}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes:
            rows += bench_shape(shape, args, tokenizer, texts, Path(tmp), ceiling)
            print(json.dumps(rows[-1], default=str), flush=True)
    after = measure()
    for r in rows:
        r["seconds"] = f"{r['seconds']:.1f}"
        r["tok/s"] = f"{r['tok/s']:,.0f}"
        r["MFU"] = "n/a (emulated)" if slow else f"{100 * r['MFU']:.0f} %"
        r["vs ours"] = f"{r['vs ours']:.2f}x"
        r["max_abs_ours_vs_hf"] = f"{r['max_abs_ours_vs_hf']:.1e}"
        r["mean_diff_ours_vs_lm_eval"] = f"{r['mean_diff_ours_vs_lm_eval']:.1e}"
    windows = TokenLossOptions(dataset="-", batch_size=args.batch_size).windows_per_batch(
        args.context, args.device)
    print(f"\n## Token loss: context {args.context}, batch {windows} windows, "
          f"chunk_rows {args.chunk_rows}, {args.dtype} on {where}, matmul ceiling "
          f"{ceiling:,.0f} GFLOP/s (after: {after:,.0f})\n")
    print(table(rows, ["shape", "tool", "tokens", "seconds", "tok/s", "vs ours", "MFU",
                       "max_abs_ours_vs_hf", "mean_diff_ours_vs_lm_eval"]
                + (["peak GPU MiB"] if on_gpu else [])))
    if not args.skip_memory and not on_gpu:  # the RSS grid measures the CPU fp32 path
        mem = memory_grid(args.quick, args.chunk_rows)
        print("\n## Peak RSS above the loaded 14m-shaped model (MiB)\n")
        print(table(mem, ["vocab", "batch x seq", "ours +MiB", "full-logits +MiB"]))


if __name__ == "__main__":
    main()
