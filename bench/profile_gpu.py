"""Where the GPU time of token-loss scoring goes: body vs head, attention kernels, batch shape.

    python -m bench.profile_gpu --shapes 410m 1.4b --out DIR     # on a CUDA machine

For each Pythia shape (random init, bf16, context 2048) on one batch of windows:
the body (`final_hidden`) alone; each way of turning final hidden states into
target log-probabilities (the current chunked logits + float32 cross-entropy at
several chunk sizes, the blocked log-sum-exp the CPU uses, and a torch.compile'd
logits -> float32 log-sum-exp that reads the bf16 logits once); the body under
each attention backend (sdpa's default choice, flash only, eager) and compiled;
the whole `token_logprobs` at several batch sizes; and a torch.profiler table of
one `token_logprobs` call (top kernels by GPU time). Every head variant is
checked against a float32 reference on the same hidden states (max |diff|).

MFU counts non-embedding matmul FLOPs (2 x params per token, the head included),
as bench_token_loss does, and also with causal attention's 2 x layers x T x d per
token, against the bf16 8192^3 matmul rate measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench._common import build_model, matmul_ceiling, matmul_params, table
from evals import scoring

# 1.4b: Pythia-1.4b's shape (24 layers, d 2048, 16 heads), checked only here.
EXTRA_SHAPES = {"1.4b": dict(hidden_size=2048, num_layers=24, num_heads=16,
                             intermediate_size=8192, expected_params=None)}


def model_for(shape: str, device, dtype):
    if shape in EXTRA_SHAPES:
        from dynamics.tiny import tiny_gpt_neox
        m = tiny_gpt_neox(vocab_size=50304, max_positions=2048, **EXTRA_SHAPES[shape]).eval()
    else:
        m = build_model(shape)
    return m.to(device=device, dtype=dtype)


def cuda_time(fn, repeats: int, warmup: int = 2) -> float:
    """Median seconds of fn() over `repeats` runs (CUDA events), after `warmup` runs."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return sorted(times)[len(times) // 2]


def head_ce(head, h, t, rows):
    """The current GPU path: chunk logits in the head's dtype, float32 cross-entropy."""
    out = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
    for s in range(0, h.shape[0], rows):
        out[s: s + rows] = -F.cross_entropy(head(h[s: s + rows]).float(), t[s: s + rows],
                                            reduction="none")
    return out


def _lse_rows(h, w, t):
    logits = (h @ w.T).float()
    return logits.gather(1, t[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1)


_lse_compiled = torch.compile(_lse_rows, dynamic=True)


def head_compiled(head, h, t, rows):
    out = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
    for s in range(0, h.shape[0], rows):
        out[s: s + rows] = _lse_compiled(h[s: s + rows], head.weight, t[s: s + rows])
    return out


def head_blocked(head, h, t, rows, block):
    old = scoring.BLOCK_ELEMENTS
    scoring.BLOCK_ELEMENTS = block
    try:
        out = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
        for s in range(0, h.shape[0], rows):
            out[s: s + rows] = scoring._blocked_logprobs(head, h[s: s + rows], t[s: s + rows])
        return out
    finally:
        scoring.BLOCK_ELEMENTS = old


def reference(head, h, t):
    out = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
    w = head.weight.float()
    for s in range(0, h.shape[0], 2048):
        logits = h[s: s + 2048].float() @ w.T
        out[s: s + 2048] = logits.log_softmax(-1).gather(1, t[s: s + 2048, None]).squeeze(1)
    return out


def set_attn(model, impl: str) -> None:
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(impl)
    else:
        model.config._attn_implementation = impl


def profile_shape(shape: str, args, ceiling: float, out_dir: Path) -> list[dict]:
    dev, dtype = torch.device("cuda"), torch.bfloat16
    model = model_for(shape, dev, dtype)
    cfg = model.config
    ctx, windows = args.context, args.windows
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (windows, ctx), generator=g).to(dev)
    tokens = windows * (ctx - 1)
    mm_flop = 2 * matmul_params(model)
    attn_flop = 2 * cfg.num_hidden_layers * ctx * cfg.hidden_size  # causal, per token
    rows = []

    def add(what: str, seconds: float, n_tok: int = tokens, flop_per_tok: float | None = None,
            **extra):
        fpt = mm_flop if flop_per_tok is None else flop_per_tok
        r = {"shape": shape, "what": what, "ms": round(seconds * 1e3, 2),
             "tok/s": round(n_tok / seconds), "MFU": round(100 * n_tok * fpt / seconds
                                                           / (ceiling * 1e9), 1), **extra}
        if flop_per_tok is None:
            r["MFU+attn"] = round(100 * n_tok * (fpt + attn_flop) / seconds / (ceiling * 1e9), 1)
        rows.append(r)
        print(json.dumps(r), flush=True)

    with torch.inference_mode():
        scoring.check_head(model)
        add("token_logprobs (fused head)", cuda_time(lambda: scoring.token_logprobs(model, ids),
                                                     args.repeats))
        real_path = scoring.head_path
        scoring.head_path = lambda head, device: "logits"
        try:
            add("token_logprobs, logits + f32 CE head (before)", cuda_time(
                lambda: scoring.token_logprobs(model, ids), args.repeats))
        finally:
            scoring.head_path = real_path
        add("plain HF forward + float32 CE",
            cuda_time(lambda: F.cross_entropy(model(input_ids=ids).logits[:, :-1].float()
                                              .reshape(-1, cfg.vocab_size),
                                              ids[:, 1:].reshape(-1), reduction="none"),
                      args.repeats))
        body_s = cuda_time(lambda: scoring.final_hidden(model, ids), args.repeats)
        head_params = model.get_output_embeddings().weight.numel()
        add("body only (final_hidden)", body_s, flop_per_tok=mm_flop - 2 * head_params)
        hidden = scoring.final_hidden(model, ids)[:, :-1].reshape(tokens, -1)
        t = ids[:, 1:].reshape(-1)
        head = model.get_output_embeddings()
        ref = reference(head, hidden, t)
        variants = {f"head: chunk logits + f32 CE, rows {r}": (lambda r=r: head_ce(head, hidden,
                                                                                   t, r))
                    for r in (2048, 8192)}
        for r in (2048, 8192):
            variants[f"head: compiled logits->f32 lse, rows {r}"] = (
                lambda r=r: head_compiled(head, hidden, t, r))
        for block in (4 * 2**20, 64 * 2**20):
            variants[f"head: blocked lse (CPU path), block {block >> 20}M"] = (
                lambda b=block: head_blocked(head, hidden, t, 2048, b))
        head32 = torch.nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        head32 = head32.to(dev).requires_grad_(False)
        head32.weight.copy_(head.weight.float())
        hidden32 = hidden[:8192].float()
        ref32 = reference(head32, hidden32, t[:8192])
        variants["fp32 head, 8192 rows: blocked lse (before)"] = (
            lambda: head_blocked(head32, hidden32, t[:8192], 2048, scoring.BLOCK_ELEMENTS))
        variants["fp32 head, 8192 rows: compiled lse"] = (
            lambda: head_compiled(head32, hidden32, t[:8192], 2048))
        for name, fn in variants.items():
            try:
                t0 = time.perf_counter()
                got = fn()
                torch.cuda.synchronize()
                first = time.perf_counter() - t0
                err = (got - (ref32 if name.startswith("fp32") else ref)).abs()
                add(name, cuda_time(fn, args.repeats), flop_per_tok=2 * head_params,
                    n_tok=8192 if name.startswith("fp32") else tokens,
                    first_call_s=round(first, 2), max_err=f"{err.max().item():.1e}",
                    mean_err=f"{err.mean().item():.1e}")
            except Exception as e:  # noqa: BLE001 - a variant that fails is a finding
                rows.append({"shape": shape, "what": name, "error": repr(e)[:300]})
                print(json.dumps(rows[-1]), flush=True)
        del hidden, ref, hidden32, ref32, head32
        torch.cuda.empty_cache()

        from torch.nn.attention import SDPBackend, sdpa_kernel
        for name, backends in (("flash only", [SDPBackend.FLASH_ATTENTION]),
                               ("cudnn only", [SDPBackend.CUDNN_ATTENTION]),
                               ("efficient only", [SDPBackend.EFFICIENT_ATTENTION])):
            try:
                with sdpa_kernel(backends):
                    add(f"body, sdpa {name}", cuda_time(lambda: scoring.final_hidden(model, ids),
                                                        args.repeats),
                        flop_per_tok=mm_flop - 2 * head_params)
            except Exception as e:  # noqa: BLE001
                rows.append({"shape": shape, "what": f"body, sdpa {name}", "error": repr(e)[:300]})
                print(json.dumps(rows[-1]), flush=True)
        impl = getattr(cfg, "_attn_implementation", None)
        try:
            set_attn(model, "eager")
            add("body, eager attention", cuda_time(lambda: scoring.final_hidden(model, ids),
                                                   max(2, args.repeats // 2)),
                flop_per_tok=mm_flop - 2 * head_params)
        except Exception as e:  # noqa: BLE001
            rows.append({"shape": shape, "what": "body, eager attention", "error": repr(e)[:300]})
        finally:
            set_attn(model, impl or "sdpa")
        for w in (4, 8, 32):
            if w == windows:
                continue
            ids_w = torch.randint(0, cfg.vocab_size, (w, ctx), generator=g).to(dev)
            add(f"token_logprobs, {w} windows", cuda_time(
                lambda ids_w=ids_w: scoring.token_logprobs(model, ids_w), args.repeats),
                n_tok=w * (ctx - 1))
    if not args.skip_compile:
        base = model.base_model
        try:
            compiled = torch.compile(base)
            with torch.inference_mode():
                t0 = time.perf_counter()
                compiled(input_ids=ids, use_cache=False)
                torch.cuda.synchronize()
                first = time.perf_counter() - t0
                add("body, torch.compile(base_model)", cuda_time(
                    lambda: compiled(input_ids=ids, use_cache=False), args.repeats),
                    flop_per_tok=mm_flop - 2 * head_params, first_call_s=round(first, 1))
        except Exception as e:  # noqa: BLE001
            rows.append({"shape": shape, "what": "body, torch.compile", "error": repr(e)[:300]})
            print(json.dumps(rows[-1]), flush=True)
    with torch.inference_mode(), torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU,
                        torch.profiler.ProfilerActivity.CUDA]) as prof:
        scoring.token_logprobs(model, ids)
        torch.cuda.synchronize()
    text = prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=70)
    (out_dir / f"profile-{shape}.txt").write_text(text)
    print(text[:6000], flush=True)
    del model
    torch.cuda.empty_cache()
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="+", default=["410m", "1.4b"])
    p.add_argument("--context", type=int, default=2048)
    p.add_argument("--windows", type=int, default=16, help="windows per batch (16: 32768 "
                                                             "tokens, the evaluator's GPU default)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--skip-compile", action="store_true")
    p.add_argument("--out", type=Path, default=Path("."))
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit(f"bench.profile_gpu needs CUDA; torch {torch.__version__} has none")
    args.out.mkdir(parents=True, exist_ok=True)
    ceiling = matmul_ceiling(8192, 10, device="cuda", dtype=torch.bfloat16)
    print(f"bf16 8192^3 ceiling: {ceiling:,.0f} GFLOP/s on {torch.cuda.get_device_name()}, "
          f"torch {torch.__version__}", flush=True)
    rows = []
    for shape in args.shapes:
        rows += profile_shape(shape, args, ceiling, args.out)
    cols = ["shape", "what", "ms", "tok/s", "MFU", "MFU+attn", "first_call_s", "max_err",
            "mean_err", "error"]
    text = (f"bf16 8192^3 ceiling {ceiling:,.0f} GFLOP/s, context {args.context}, "
            f"{args.windows} windows\n\n" + table(rows, cols))
    (args.out / f"profile_gpu-{'_'.join(args.shapes)}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
