"""EAP-IG steps on the toy suite: how close are the demo's m = 3 scores to Tigges' m = 30?

    .venv/bin/python -m bench.bench_ig_steps SUITE_DIR            # every model, 3 checkpoints
    .venv/bin/python -m bench.bench_ig_steps SUITE_DIR --models toy-neox-demo-l --n 8

SUITE_DIR is a trained toy suite (`dynamics demo` writes one; the tests cache
the fast scale in `.cache/toy/`). For each model, at its first nonzero, middle
and last checkpoint, the demo's circuits task (`trigger`, `--n` examples, as
`dynamics.cli.demo_evaluator_options`) is scored with m = `--low` and m =
`--high` EAP-IG steps; printed per checkpoint: Pearson and Spearman correlation
of the edge scores, how many of the top-20 |score| edges agree, and the minimal
circuit's size and faithfulness (the evaluator's default search) under both,
the clean metric and whether the task counts as performed
(`evals.circuits.search.not_performed_reason`), and the seconds of edge scoring.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from evals.circuits.attribution import edge_scores, evaluate_circuit
from evals.circuits.evaluator import CircuitsOptions, load_trigger_task
from evals.circuits.model_surgery import adapter_for, graph_of
from evals.circuits.search import minimal_circuit, not_performed_reason


def _rank(x: torch.Tensor) -> torch.Tensor:
    return x.argsort().argsort().double()


def compare(folder: Path, task, low: int, high: int) -> dict:
    """Correlations, top-20 agreement and minimal circuits at m = low vs m = high."""
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    adapter = adapter_for(model)
    g = graph_of(adapter)
    opts = CircuitsOptions()
    out = {}
    scores = {}
    for m in (low, high):
        t0 = time.perf_counter()
        s = edge_scores(adapter, task, ig_steps=m, batch_size=opts.batch_size)
        out[f"seconds_m{m}"] = time.perf_counter() - t0
        scores[m] = s[g.edge_mask].double()
        res = minimal_circuit(adapter, task, s, threshold=opts.threshold, start=opts.search_start,
                              step=opts.search_step, batch_size=opts.batch_size,
                              faithfulness=opts.faithfulness,
                              local_radius=opts.search_local_radius)
        out[f"edges_m{m}"], out[f"faith_m{m}"] = res.n_edges, res.faithfulness
        out["metric_clean"] = res.metric_clean
    a, b = scores[low], scores[high]
    out["pearson"] = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    out["spearman"] = float(torch.corrcoef(torch.stack([_rank(a), _rank(b)]))[0, 1])
    k = min(20, len(a))
    top = {m: set(scores[m].abs().topk(k).indices.tolist()) for m in (low, high)}
    out["top20_common"] = len(top[low] & top[high])
    clean, corr = (evaluate_circuit(adapter, task, None, run=r) for r in ("clean", "corrupted"))
    out["performed"] = not_performed_reason(clean, corr) is None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite", type=Path)
    ap.add_argument("--models", nargs="*", help="default: every model folder")
    ap.add_argument("--n", type=int, default=8, help="trigger examples (the demo uses 8)")
    ap.add_argument("--low", type=int, default=3)
    ap.add_argument("--high", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tok = PreTrainedTokenizerFast.from_pretrained(args.suite / "tokenizer")
    task = load_trigger_task(args.suite / "data" / "trigger.jsonl", tok, args.n)
    models = args.models or sorted(p.name for p in args.suite.iterdir()
                                   if p.is_dir() and any(p.glob("step*")))
    print("model | step | pearson | spearman | top-20 common | edges m=low / m=high | "
          "faithfulness m=low / m=high | clean metric | performed | scoring s m=low / m=high")
    for name in models:
        steps = sorted(int(p.name[4:]) for p in (args.suite / name).glob("step*"))
        steps = [s for s in steps if s > 0]
        for step in sorted({steps[0], steps[len(steps) // 2], steps[-1]}):
            r = compare(args.suite / name / f"step{step}", task, args.low, args.high)
            print(f"{name} | {step} | {r['pearson']:.4f} | {r['spearman']:.4f} | "
                  f"{r['top20_common']} | {r[f'edges_m{args.low}']} / {r[f'edges_m{args.high}']}"
                  f" | {r[f'faith_m{args.low}']:.3f} / {r[f'faith_m{args.high}']:.3f} | "
                  f"{r['metric_clean']:.3f} | {r['performed']} | {r[f'seconds_m{args.low}']:.2f}"
                  f" / {r[f'seconds_m{args.high}']:.2f}", flush=True)


if __name__ == "__main__":
    main()
