"""Checkpoint streaming: a token-loss sweep over N local checkpoints, prefetch on vs off.

    .venv/bin/python -m bench.bench_streaming --quick   # ~1 min on 2 idle cores
    .venv/bin/python -m bench.bench_streaming           # full run

Builds a local suite of N random-init Pythia-shaped checkpoints (safetensors,
the licence-text BPE tokenizer), then measures per checkpoint the load time
(`load_checkpoint`) and the compute time (`TokenLoss.run`), and the wall time
of `evals.sweep.run_batch` with `prefetch = false` and `prefetch = true`. The
ideal with prefetch is about load_0 + sum_i max(load_i+1, compute_i), i.e.
close to N * max(load, compute); without it the sweep costs N * (load + compute).
Tokenization is done once before timing (the evaluator caches it) so both
sweeps time the same work.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench._common import build_model, licence_texts, licence_tokenizer, table, write_jsonl
from dynamics.loading import LoadOptions, load_checkpoint
from dynamics.manifest import write_manifest
from dynamics.suites import get_suite
from dynamics.tiny import count_params, save_checkpoint
from evals.config import BatchConfig
from evals.sweep import run_batch
from evals.token_loss import TokenLoss, TokenLossOptions


def make_suite(root: Path, shape: str, n: int, tokenizer) -> Path:
    """N checkpoints of one model (different seeds stand in for training steps)."""
    ckpts = []
    for i in range(n):
        model = build_model(shape, seed=i)
        save_checkpoint(model, tokenizer, root / "m" / f"step{i}")
        ckpts.append({"step": i, "path": f"m/step{i}"})
    write_manifest(root / "suite.toml", "bench", [{"name": f"neox-{shape}",
                   "params": count_params(model), "checkpoints": ckpts}], family="bench",
                   tokens_per_step=1000)
    return root


def ideal(load: float, comp: float, n: int) -> float:
    """Pipelined sweep: the first load, then N steps of the slower of load and compute."""
    return n * max(load, comp) + min(load, comp)


def time_parts(suite: Path, ev: TokenLoss) -> tuple[list[float], list[float]]:
    """Per-checkpoint load and compute seconds, measured one after the other."""
    loads, computes = [], []
    for ref in get_suite(str(suite)).select(None, "all"):
        t0 = time.perf_counter()
        lm = load_checkpoint(ref, LoadOptions())
        t1 = time.perf_counter()
        ev.run(lm)
        t2 = time.perf_counter()
        loads.append(t1 - t0)
        computes.append(t2 - t1)
    return loads, computes


def time_sweep(suite: Path, out: Path, ev: TokenLoss, prefetch: bool) -> float:
    cfg = BatchConfig(suite=str(suite), output=str(out), prefetch=prefetch,
                      evaluators={"token-loss": {"dataset": ev.options.dataset}})
    t0 = time.perf_counter()
    res = run_batch(cfg, progress=False, evaluators=[ev])
    took = time.perf_counter() - t0
    if res.failed or len(res.written) == 0:
        raise RuntimeError(f"sweep failed: {res.summary()} {res.failed[:2]}")
    return took


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--shape", default="14m", choices=["14m", "70m"])
    p.add_argument("--checkpoints", type=int, default=None, help="default 8 (quick 4)")
    p.add_argument("--tokens", type=int, default=None, help="tokens per checkpoint (8192; 2048)")
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    args.checkpoints = args.checkpoints or (4 if args.quick else 8)
    args.tokens = args.tokens or (2048 if args.quick else 8192)
    return args


def main(argv=None) -> None:
    args = parse(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    tokenizer = licence_tokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        suite = make_suite(tmp / "suite", args.shape, args.checkpoints, tokenizer)
        val = write_jsonl(licence_texts(), tmp / "val.jsonl")
        ev = TokenLoss(TokenLossOptions(dataset=str(val), max_tokens=args.tokens,
                                        context=args.context))
        ev.stream(tokenizer)  # tokenize once, outside every timing
        loads, computes = time_parts(suite, ev)
        off = time_sweep(suite, tmp / "out-off", ev, prefetch=False)
        on = time_sweep(suite, tmp / "out-on", ev, prefetch=True)
    n = args.checkpoints
    load, comp = statistics.median(loads), statistics.median(computes)
    rows = [
        {"what": "load (median per checkpoint)", "seconds": load},
        {"what": "compute (median per checkpoint)", "seconds": comp},
        {"what": f"N x (load + compute), N={n}", "seconds": n * (load + comp)},
        {"what": "N x max(load, compute) + min (ideal pipeline)",
         "seconds": ideal(load, comp, n)},
        {"what": "sweep, prefetch = false", "seconds": off},
        {"what": "sweep, prefetch = true", "seconds": on},
    ]
    print(json.dumps({"loads": loads, "computes": computes, "off": off, "on": on}))
    for r in rows:
        r["seconds"] = f"{r['seconds']:.1f}"
    print(f"\n## Streaming: {n} x {args.shape}-shaped checkpoints, {args.tokens} tokens each, "
          f"context {args.context}, {args.threads} threads\n")
    print(table(rows, ["what", "seconds"]))
    print(f"\nprefetch speed-up {off / on:.2f}x; prefetch / ideal {on / ideal(load, comp, n):.2f}; "
          f"prefetch / (load + compute) {on / (n * (load + comp)):.2f}")


if __name__ == "__main__":
    main()
