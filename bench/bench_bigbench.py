"""BIG-bench MC: shared-prompt fast path vs one sequence per choice, same run, same model.

    .venv/bin/python -m bench.bench_bigbench [--quick] [--tasks a,b] [--max-examples N]
        [--threads 2] [--skip-lm-eval]

Model: a Pythia-14m-shaped GPTNeoX (6 layers, d 128, 4 heads, d_ff 512, vocab
50304; random init), with a byte-level BPE tokenizer trained here on the tasks'
own text. Both paths score the same formatted 2-shot examples; scores must
agree to 1e-3 nats. Prints examples/s and the ratio.

Third path (when lm-eval is installed): lm-evaluation-harness 0.4.x
`HFLM(pretrained=<the same model object>)._loglikelihood_tokens` on the same
token ids (the tokens its `loglikelihood` would pass on after encoding each
(context, continuation) pair), so both tools score identical requests; the
raw and length-normalized accuracies must be equal.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bench._common import build_model, sync
from dynamics.tiny import count_params, train_bpe_tokenizer
from evals.bigbench_mc import shared_prompt_scores, tokenize_examples
from evals.bigbench_tasks import format_task, read_task
from evals.scoring import Request, score_requests

BB = Path(__file__).resolve().parents[2] / "shared" / "data" / "bigbench"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

DEFAULT_TASKS = ("anachronisms,causal_judgment,date_understanding,logical_args,"
                 "simple_ethical_questions,strange_stories,hhh_alignment,winowhy")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tasks", default=DEFAULT_TASKS)
    ap.add_argument("--max-examples", type=int, default=None)
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lm-eval-batch", type=int, default=8, help="lm-eval HFLM batch_size")
    ap.add_argument("--skip-lm-eval", action="store_true")
    ap.add_argument("--bigbench-dir", type=Path, default=BB, help="BIG-bench task folders")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shape", default="14m", choices=["14m", "70m", "410m"],
                    help="Pythia shape of the random-init model (bench._common.SHAPES)")
    ap.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n_max = args.max_examples or (8 if args.quick else 40)
    examples = []
    for name in args.tasks.split(","):
        for task in read_task(args.bigbench_dir / name)[0]:
            examples += format_task(task, args.k, 42, n_max)
    texts = [e.prompt for e in examples] + [c for e in examples for c in e.choices]
    tok = train_bpe_tokenizer(texts, vocab_size=4096)
    model = build_model(args.shape)  # checks the shape's parameter count
    model = model.to(device=args.device, dtype=DTYPES[args.dtype])
    items = tokenize_examples(examples, tok)
    n_choices = sum(len(t.choices) for t in items)
    reqs = [Request((i, j), tuple(t.prompt), tuple(c))
            for i, t in enumerate(items) for j, c in enumerate(t.choices)]
    prompt_tokens = sum(len(t.prompt) for t in items)
    print(f"{len(items)} examples, {n_choices} choices, {prompt_tokens} prompt tokens, "
          f"{len(args.tasks.split(','))} tasks, k={args.k}, model {count_params(model):,} "
          f"params ({args.shape}), "
          f"{args.dtype} on {args.device}")
    # warm-up both paths
    shared_prompt_scores(model, items[:4], max_length=2048)
    score_requests(model, reqs[:8], max_length=2048)
    sync(args.device)
    t0 = time.perf_counter()
    fast, _ = shared_prompt_scores(model, items, max_length=2048)
    sync(args.device)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    base = score_requests(model, reqs, max_length=2048)
    sync(args.device)
    t_base = time.perf_counter() - t0
    diff = max(abs(float(fast[r.example_id[0]][r.example_id[1]].double().sum()) - b.total)
               for r, b in zip(reqs, base))
    # fp32: the same math. bf16: the packed path batches prompts and choices differently,
    # so the body's bf16 rounding differs (as between ours and a plain loop in bench_token_loss).
    assert diff < (1e-3 if args.dtype == "float32" else 0.5), f"paths disagree by {diff}"
    print(f"{'path':28s} {'seconds':>8s} {'examples/s':>11s}")
    print(f"{'one sequence per choice':28s} {t_base:8.2f} {len(items) / t_base:11.1f}")
    print(f"{'packed prompt + choices':28s} {t_fast:8.2f} {len(items) / t_fast:11.1f}")
    print(f"ratio: {t_base / t_fast:.2f}x   max |score difference|: {diff:.2e} nats")
    if not args.skip_lm_eval:
        compare_lm_eval(model, tok, items, fast, t_fast, args.lm_eval_batch)


def accuracies(items, totals) -> tuple[float, float]:
    """(raw, length-normalized) accuracy: argmax of the choice total (per token)."""
    raw = norm = 0
    for t, scores in zip(items, totals):
        best = max(t.example.target_scores)
        pick = max(range(len(scores)), key=lambda j: scores[j])
        pick_n = max(range(len(scores)), key=lambda j: scores[j] / len(t.choices[j]))
        raw += t.example.target_scores[pick] == best
        norm += t.example.target_scores[pick_n] == best
    return raw / len(items), norm / len(items)


def lm_eval_totals(model, tok, items, batch_size: int) -> tuple[list[list[float]], float]:
    """Choice totals from lm-eval's HFLM on the same model and token ids, and seconds."""
    from lm_eval.models.huggingface import HFLM

    param = next(model.parameters())
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size, device=str(param.device),
              max_length=2048, dtype=str(param.dtype).removeprefix("torch."))
    reqs = [(("", ""), list(t.prompt), list(c)) for t in items for c in t.choices]
    lm._loglikelihood_tokens(reqs[:8], disable_tqdm=True)  # warm-up
    t0 = time.perf_counter()
    res = lm._loglikelihood_tokens(reqs, disable_tqdm=True)
    seconds = time.perf_counter() - t0
    totals, k = [], 0
    for t in items:
        totals.append([res[k + j][0] for j in range(len(t.choices))])
        k += len(t.choices)
    return totals, seconds


def compare_lm_eval(model, tok, items, fast, t_fast: float, batch_size: int) -> None:
    """lm-eval's HFLM on the same model and the same (context, continuation) token ids."""
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        print("lm-eval not installed: pip install -c constraints.txt "
              "-c bench/constraints-bench.txt 'lm-eval[hf]==0.4.13'")
        return
    theirs, t_lm = lm_eval_totals(model, tok, items, batch_size)
    ours = [[float(x.double().sum()) for x in lps] for lps in fast]
    diff = max(abs(a - b) for x, y in zip(ours, theirs) for a, b in zip(x, y))
    acc_ours, acc_lm = accuracies(items, ours), accuracies(items, theirs)
    print(f"{'lm-eval 0.4 HFLM (batch ' + str(batch_size) + ')':28s} {t_lm:8.2f} "
          f"{len(items) / t_lm:11.1f}")
    print(f"ours vs lm-eval: {t_lm / t_fast:.2f}x   max |score difference| {diff:.2e} nats   "
          f"accuracy raw/normalized ours {acc_ours[0]:.4f}/{acc_ours[1]:.4f}, "
          f"lm-eval {acc_lm[0]:.4f}/{acc_lm[1]:.4f}")
    assert diff < 1e-3 and acc_ours == acc_lm, "lm-eval disagrees"


if __name__ == "__main__":
    main()
