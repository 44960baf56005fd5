"""Output head + loss: blocked log-sum-exp (ours) vs chunked logits + cross-entropy, same run.

    .venv/bin/python -m bench.bench_head [--shapes 14m 70m] [--batch 8] [--seq 512]

On a random-init Pythia-shaped GPTNeoX (vocab 50304) and random token ids,
times (best of `--repeats`, interleaved) the transformer body
(`final_hidden`), our head (`evals.scoring.target_logprobs`: vocabulary blocks
of BLOCK_ELEMENTS logits, online max/sum) and the baseline head the previous
version used (2048-row chunks of full-vocab logits, `F.cross_entropy`), and
checks they agree to 1e-4. Prints the matmul ceiling of the same run, each
part's share, and the head's GFLOP/s (2 x rows x d_model x vocab / time).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from bench._common import build_model, matmul_ceiling, matmul_params, table
from evals.scoring import final_hidden, target_logprobs


def baseline_head(model, hidden: torch.Tensor, targets: torch.Tensor, rows: int = 2048):
    """Full-vocab logits per 2048-row chunk, then cross-entropy (the v1 scoring path)."""
    head = model.get_output_embeddings()
    out = torch.empty(hidden.shape[0])
    for s in range(0, hidden.shape[0], rows):
        out[s: s + rows] = -F.cross_entropy(head(hidden[s: s + rows]), targets[s: s + rows],
                                            reduction="none")
    return out


def best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_shape(shape: str, args, ceiling: float) -> dict:
    model = build_model(shape)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq), generator=g)
    with torch.inference_mode():
        hidden = final_hidden(model, ids)[:, :-1].reshape(-1, model.config.hidden_size)
        targets = ids[:, 1:].reshape(-1)
        ours, base = target_logprobs(model, hidden, targets), baseline_head(model, hidden, targets)
        diff = float((ours - base).abs().max())
        assert diff < 1e-4, f"heads disagree by {diff}"
        t = {"body": [], "ours": [], "baseline": []}
        for _ in range(2):  # interleaved rounds
            t["body"].append(best_of(lambda: final_hidden(model, ids), args.repeats))
            t["ours"].append(best_of(lambda: target_logprobs(model, hidden, targets), args.repeats))
            t["baseline"].append(best_of(lambda: baseline_head(model, hidden, targets),
                                         args.repeats))
    body, ours_s, base_s = (min(t[k]) for k in ("body", "ours", "baseline"))
    head_flop = 2 * hidden.shape[0] * model.config.hidden_size * model.config.vocab_size
    tokens = hidden.shape[0]
    return {"shape": shape, "tokens": tokens, "body s": f"{body:.3f}",
            "head ours s": f"{ours_s:.3f}", "head baseline s": f"{base_s:.3f}",
            "head speedup": f"{base_s / ours_s:.2f}x",
            "head GFLOP/s (% ceiling)": f"{head_flop / ours_s / 1e9:.0f} "
                                        f"({100 * head_flop / ours_s / 1e9 / ceiling:.0f} %)",
            "tok/s body+head": f"{tokens / (body + ours_s):,.0f}",
            "MFU body+head": f"{100 * 2 * matmul_params(model) * tokens / (body + ours_s) / 1e9 / ceiling:.0f} %",
            "max |diff|": f"{diff:.1e}"}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="+", default=["14m", "70m"], choices=["14m", "70m"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    ceiling = matmul_ceiling()
    rows = [bench_shape(s, args, ceiling) for s in args.shapes]
    after = matmul_ceiling()
    print(f"\n## Head: batch {args.batch} x seq {args.seq}, {args.threads} threads, "
          f"matmul ceiling {ceiling:.0f} GFLOP/s (after: {after:.0f})\n")
    print(table(rows, list(rows[0])))


if __name__ == "__main__":
    main()
