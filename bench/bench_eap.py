"""EAP-IG edge-scoring cost vs model shape: seconds per example and peak memory.

    .venv/bin/python -m bench.bench_eap --quick   # tiny shapes only, ~1 min on 2 idle cores
    .venv/bin/python -m bench.bench_eap           # + pythia-14m and pythia-70m shapes

Each shape runs in its own child process (so peak RSS is per shape): a
random-init GPTNeoX (parallel graph) is built from an explicit config, and
`edge_scores` runs on the synthetic `induction` task (prompts of 12 random
tokens + a 2-11 token repeat, so 14-23 tokens) with `--n` examples in batches
of `--batch` after one untimed warm-up batch, for m = 1 (plain EAP) and m = `--steps` (EAP-IG). Also timed: one
faithfulness evaluation of a circuit (one patched forward over the examples).
Cost model: per batch 2 no-grad forwards + m forward/backward passes, plus
the (n_forward x n_backward) score accumulation.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from bench._common import maxrss_mb, run_child, sync, table

SHAPES = {
    "2L-d64-4H": dict(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=256,
                      vocab_size=512),
    "4L-d128-8H": dict(hidden_size=128, num_layers=4, num_heads=8, intermediate_size=512,
                       vocab_size=2048),
    "pythia-14m": dict(hidden_size=128, num_layers=6, num_heads=4, intermediate_size=512,
                       vocab_size=50304),
    "pythia-70m": dict(hidden_size=512, num_layers=6, num_heads=8, intermediate_size=2048,
                       vocab_size=50304),
    # GPU only (--shapes): 24 layers x 16 heads
    "pythia-410m": dict(hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096,
                        vocab_size=50304),
}
CPU_SHAPES = list(SHAPES)[:4]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def one_shape(shape: str, n: int, batch: int, steps: int, threads: int, device: str = "cpu",
              dtype: str = "float32") -> dict:
    from dynamics.tiny import tiny_gpt_neox
    from evals.circuits.attribution import edge_scores, evaluate_circuit
    from evals.circuits.model_surgery import adapter_for, graph_of
    from evals.circuits.tasks import induction

    torch.set_num_threads(threads)
    model = tiny_gpt_neox(max_positions=64, **SHAPES[shape]).eval().to(device, DTYPES[dtype])
    on_gpu = torch.device(device).type == "cuda"
    adapter = adapter_for(model)
    g = graph_of(adapter)
    task = induction((3, SHAPES[shape]["vocab_size"]), n, seed=0, seq_len=12)
    edge_scores(adapter, induction((3, SHAPES[shape]["vocab_size"]), batch, seed=1, seq_len=12),
                ig_steps=1, batch_size=batch)  # warm-up (first-call allocations), not timed
    before = maxrss_mb()
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    out = {"shape": shape, "edges": g.n_edges, "n": n, "device": device, "dtype": dtype}
    for m in (1, steps):
        sync(device)
        t = time.perf_counter()
        scores = edge_scores(adapter, task, ig_steps=m, batch_size=batch)
        sync(device)
        out[f"s_per_example_m{m}"] = (time.perf_counter() - t) / n
    circuit = scores.abs() >= scores.abs().flatten().kthvalue(max(1, scores.numel() - 100)).values
    sync(device)
    t = time.perf_counter()
    evaluate_circuit(adapter, task, circuit & g.edge_mask, batch_size=batch)
    sync(device)
    out["s_per_example_faithfulness"] = (time.perf_counter() - t) / n
    if on_gpu:
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    out["peak_rss_mb"] = maxrss_mb()
    out["rss_growth_mb"] = maxrss_mb() - before
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny shapes only")
    ap.add_argument("--n", type=int, default=16, help="examples")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5, help="EAP-IG steps m (besides m=1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shapes", nargs="+", choices=sorted(SHAPES),
                    help="default: the two tiny shapes (--quick) or every CPU shape")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(one_shape(args.child, args.n, args.batch, args.steps, args.threads,
                                   args.device, args.dtype)))
        return
    shapes = args.shapes or (CPU_SHAPES[:2] if args.quick else CPU_SHAPES)
    rows = []
    for shape in shapes:
        r = run_child("bench.bench_eap", ["--child", shape, "--n", str(args.n), "--batch",
                                          str(args.batch), "--steps", str(args.steps),
                                          "--threads", str(args.threads),
                                          "--device", args.device, "--dtype", args.dtype])
        rows.append({k: (f"{v:.4f}" if isinstance(v, float) and v < 10 else
                         f"{v:.0f}" if isinstance(v, float) else v) for k, v in r.items()})
        print(json.dumps(r), flush=True)
    cols = ["shape", "edges", "n", "s_per_example_m1", f"s_per_example_m{args.steps}",
            "s_per_example_faithfulness", "peak_rss_mb", "rss_growth_mb"]
    if torch.device(args.device).type == "cuda":
        cols += ["device", "dtype", "peak_gpu_mib"]
    print(table(rows, cols))


if __name__ == "__main__":
    main()
