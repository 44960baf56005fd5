"""BIG-bench MC: shared-prompt fast path vs one sequence per choice, same run, same model.

    .venv/bin/python bench/bench_bigbench.py [--quick] [--tasks a,b] [--max-examples N]

Model: a Pythia-14m-shaped GPTNeoX (6 layers, d 128, 4 heads, d_ff 512, vocab
50304; random init), with a byte-level BPE tokenizer trained here on the tasks'
own text. Both paths score the same formatted 2-shot examples; scores must
agree to 1e-3 nats. Prints examples/s and the ratio.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from dynamics.tiny import count_params, tiny_gpt_neox, train_bpe_tokenizer
from evals.bigbench_mc import shared_prompt_scores, tokenize_examples
from evals.bigbench_tasks import format_task, read_task
from evals.scoring import Request, score_requests

BB = Path(__file__).resolve().parents[2] / "shared" / "data" / "bigbench"
DEFAULT_TASKS = ("anachronisms,causal_judgment,date_understanding,logical_args,"
                 "simple_ethical_questions,strange_stories,hhh_alignment,winowhy")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tasks", default=DEFAULT_TASKS)
    ap.add_argument("--max-examples", type=int, default=None)
    ap.add_argument("--k", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(2)
    n_max = args.max_examples or (8 if args.quick else 40)
    examples = []
    for name in args.tasks.split(","):
        for task in read_task(BB / name)[0]:
            examples += format_task(task, args.k, 42, n_max)
    texts = [e.prompt for e in examples] + [c for e in examples for c in e.choices]
    tok = train_bpe_tokenizer(texts, vocab_size=4096)
    model = tiny_gpt_neox(vocab_size=50304, hidden_size=128, num_layers=6, num_heads=4,
                          intermediate_size=512, max_positions=2048)
    assert count_params(model) == 14_067_712, count_params(model)
    items = tokenize_examples(examples, tok)
    n_choices = sum(len(t.choices) for t in items)
    reqs = [Request((i, j), tuple(t.prompt), tuple(c))
            for i, t in enumerate(items) for j, c in enumerate(t.choices)]
    prompt_tokens = sum(len(t.prompt) for t in items)
    print(f"{len(items)} examples, {n_choices} choices, {prompt_tokens} prompt tokens, "
          f"{len(args.tasks.split(','))} tasks, k={args.k}, model 14,067,712 params")
    # warm-up both paths
    shared_prompt_scores(model, items[:4], max_length=2048)
    score_requests(model, reqs[:8], max_length=2048)
    t0 = time.perf_counter()
    fast, _ = shared_prompt_scores(model, items, max_length=2048)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    base = score_requests(model, reqs, max_length=2048)
    t_base = time.perf_counter() - t0
    diff = max(abs(float(fast[r.example_id[0]][r.example_id[1]].double().sum()) - b.total)
               for r, b in zip(reqs, base))
    assert diff < 1e-3, f"paths disagree by {diff}"
    print(f"{'path':28s} {'seconds':>8s} {'examples/s':>11s}")
    print(f"{'one sequence per choice':28s} {t_base:8.2f} {len(items) / t_base:11.1f}")
    print(f"{'shared prompt (KV cache)':28s} {t_fast:8.2f} {len(items) / t_fast:11.1f}")
    print(f"ratio: {t_base / t_fast:.2f}x   max |score difference|: {diff:.2e} nats")


if __name__ == "__main__":
    main()
