"""Checkpoint streaming: a token-loss sweep over N local checkpoints, prefetch on vs off.

    .venv/bin/python -m bench.bench_streaming --quick   # ~1 min on 2 idle cores
    .venv/bin/python -m bench.bench_streaming           # full run

Builds a local suite of N random-init Pythia-shaped checkpoints (safetensors,
the licence-text BPE tokenizer), then measures per checkpoint the load time
(`load_checkpoint`) and the compute time (`TokenLoss.run`), and the wall time
of `evals.execute.run_batch` with `prefetch = false` and `prefetch = true`. The
ideal with prefetch is about load_0 + sum_i max(load_i+1, compute_i), i.e.
close to N * max(load, compute); without it the sweep costs N * (load + compute).
Loads go through a simulated download (`--download-mb-s`, a sleep of
size / bandwidth, default 50 MB/s, like a hub fetch) because a local suite
loads from the page cache in ~0.1 s; `--download-mb-s 0` times local loads
only. Tokenization is done once before timing (the evaluator caches it) so both
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
from dynamics.streaming import folder_bytes
from dynamics.suites import get_suite
from dynamics.tiny import count_params, save_checkpoint
from evals.config import BatchConfig
from evals.execute import run_batch
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


def slow_loader(mb_per_s: float):
    """`load_checkpoint` behind a simulated download of the folder at `mb_per_s` (0: none).

    The wait is a sleep (like network I/O, it uses no CPU), then the real load.
    """
    def load(ref, options):
        if mb_per_s > 0:
            time.sleep(folder_bytes(Path(ref.source)) / 1e6 / mb_per_s)
        return load_checkpoint(ref, options)
    return load


def time_parts(suite: Path, ev: TokenLoss, loader) -> tuple[list[float], list[float]]:
    """Per-checkpoint load and compute seconds, measured one after the other."""
    loads, computes = [], []
    for ref in get_suite(str(suite)).select(None, "all"):
        t0 = time.perf_counter()
        lm = loader(ref, LoadOptions())
        t1 = time.perf_counter()
        ev.run(lm)
        t2 = time.perf_counter()
        loads.append(t1 - t0)
        computes.append(t2 - t1)
    return loads, computes


def time_sweep(suite: Path, out: Path, ev: TokenLoss, prefetch: bool, loader) -> float:
    cfg = BatchConfig(suite=str(suite), output=str(out), prefetch=prefetch,
                      evaluators={"token-loss": {"dataset": ev.options.dataset}})
    t0 = time.perf_counter()
    res = run_batch(cfg, progress=False, evaluators=[ev], loader=loader)
    took = time.perf_counter() - t0
    if res.failed or len(res.written) == 0:
        raise RuntimeError(f"sweep failed: {res.summary()} {res.failed[:2]}")
    return took


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--shape", default="14m", choices=["14m", "70m"])
    p.add_argument("--checkpoints", type=int, default=None, help="default 8 (quick 4)")
    p.add_argument("--tokens", type=int, default=None, help="tokens per checkpoint (16384; 8192)")
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--download-mb-s", type=float, default=50.0,
                   help="simulated download bandwidth before each load (0: local disk only)")
    p.add_argument("--repeats", type=int, default=3, help="sweeps per setting, best kept")
    args = p.parse_args(argv)
    args.checkpoints = args.checkpoints or (4 if args.quick else 8)
    args.tokens = args.tokens or (8192 if args.quick else 16384)
    return args


class TimedTokenLoss(TokenLoss):
    """TokenLoss that records the seconds of each `run` (compute inside a sweep)."""

    def __init__(self, options, base_dir=None):
        super().__init__(options, base_dir)
        self.run_seconds: list[float] = []

    def run(self, lm):
        t0 = time.perf_counter()
        out = super().run(lm)
        self.run_seconds.append(time.perf_counter() - t0)
        return out


def sweep_row(what: str, sweeps: list[tuple[float, float]]) -> dict:
    """Best (lowest exposed non-compute time) of repeated sweeps: wall, compute, exposed."""
    wall, comp = min(sweeps, key=lambda s: s[0] - s[1])
    return {"what": what, "wall s": wall, "compute s": comp, "exposed s": wall - comp}


def measure(args, tmp: Path) -> tuple[list[float], list[float], list, list]:
    tokenizer = licence_tokenizer()
    suite = make_suite(tmp / "suite", args.shape, args.checkpoints, tokenizer)
    val = write_jsonl(licence_texts(), tmp / "val.jsonl")
    ev = TimedTokenLoss(TokenLossOptions(dataset=str(val), max_tokens=args.tokens,
                                         context=args.context))
    ev.stream(tokenizer)  # tokenize once, outside every timing
    loader = slow_loader(args.download_mb_s)
    loads, computes = time_parts(suite, ev, loader)
    sweeps = {False: [], True: []}
    for i in range(args.repeats):  # alternate settings: the box is shared and noisy
        for prefetch in (False, True):
            ev.run_seconds = []
            wall = time_sweep(suite, tmp / f"out-{prefetch}-{i}", ev, prefetch, loader)
            sweeps[prefetch].append((wall, sum(ev.run_seconds)))
    return loads, computes, sweeps[False], sweeps[True]


def main(argv=None) -> None:
    args = parse(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        loads, computes, offs, ons = measure(args, Path(tmp))
    print(json.dumps({"loads": loads, "computes": computes, "off (wall, compute)": offs,
                      "on (wall, compute)": ons}))
    n = args.checkpoints
    load, comp = statistics.median(loads), statistics.median(computes)
    rows = [
        {"what": "one load, one compute (medians, run apart)", "wall s": load + comp,
         "compute s": comp, "exposed s": load},
        {"what": f"N x (load + compute), N={n}", "wall s": n * (load + comp),
         "compute s": n * comp, "exposed s": n * load},
        {"what": "ideal pipeline: N x max(load, compute) + min", "wall s": ideal(load, comp, n),
         "compute s": n * comp, "exposed s": ideal(load, comp, n) - n * comp},
        sweep_row(f"sweep, prefetch = false (best of {args.repeats})", offs),
        sweep_row(f"sweep, prefetch = true (best of {args.repeats})", ons),
    ]
    for r in rows:
        for k in ("wall s", "compute s", "exposed s"):
            r[k] = f"{r[k]:.1f}"
    print(f"\n## Streaming: {n} x {args.shape}-shaped checkpoints, {args.tokens} tokens each, "
          f"context {args.context}, {args.threads} threads, simulated download "
          f"{args.download_mb_s:g} MB/s\n")
    print(table(rows, ["what", "wall s", "compute s", "exposed s"]))
    off, on = float(rows[3]["exposed s"]), float(rows[4]["exposed s"])
    print(f"\nexposed (wall - compute) time: prefetch off {off:.1f} s vs N x load "
          f"{n * load:.1f} s; prefetch on {on:.1f} s vs one load {load:.1f} s "
          "(exposed time is robust to compute noise from other jobs)")


if __name__ == "__main__":
    main()
