"""How fast one toy model forms an induction head (issue 26): train one size of one family on a
corpus variant and print, every `--every` steps, held-out ppl (packed validation rows), the
report's induction score (largest head, repeated random tokens filling the context, BOS first;
`evals.circuits.components.attention_scores` as the circuits evaluator calls it), the same at
a 12-token repeat distance (`ind12`), the previous-token score and trigger recall
(`dynamics.toy.probe`) against its in-context frequency baseline; CPU seconds so far.

    python bench/toy_induction.py --arch neox --steps 3000 --every 250 \\
        --mix trigger:0.07,repeat:0.85,facts:0.04,qa:0.02,ioi:0.02 --repeat 4,16

`--sweep FILE` runs every line of FILE (each line: the options above) in parallel worker
processes, one torch thread each, and writes one JSON line per probe to `--out` (the sweep
used to choose the toy suite's recipe; BENCHMARKS.md "Induction formation").

Same training loop as `dynamics.toy.train.train_model` (AdamW, warmup then cosine to lr / 10).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time

import torch


def _pair(text: str) -> tuple[int, int]:
    lo, hi = (int(x) for x in text.split(","))
    return lo, hi


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="neox", choices=["neox", "opt"])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--d", type=int, default=48)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--bs", type=int, default=32)
    p.add_argument("--mix", default="trigger:0.07,repeat:0.85,facts:0.04,qa:0.02,ioi:0.02")
    p.add_argument("--repeat", default="4,16", help="repeat_len min,max")
    p.add_argument("--gap", default="0,0", help="repeat_gap min,max")
    p.add_argument("--pos-init", default="normal", choices=["normal", "sinusoid"],
                   help="OPT's learned position embeddings: HF's normal init or sinusoids")
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--stop-at", type=float, default=None,
                   help="stop once the induction score reaches this (sweeps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="")
    return p


def run(a: argparse.Namespace, emit=print) -> list[dict]:
    """Train one model as `a` says; emit and return one dict per probe."""
    from dynamics.toy.corpus import Corpus, CorpusSpec
    from dynamics.toy.probe import trigger_accuracy
    from dynamics.toy.train import (ModelSpec, ToyScale, _lr_at, build_model, toy_tokenizer,
                                    training_tensor, word_ids)
    from evals.circuits import components as comp
    from evals.circuits.model_surgery import adapter_for

    torch.set_num_threads(1)
    mix = {k: float(v) for k, v in (x.split(":") for x in a.mix.split(","))}
    spec = CorpusSpec(mix=mix, repeat_len=_pair(a.repeat), repeat_gap=_pair(a.gap))
    size = ModelSpec("x", a.layers, a.d, a.heads)
    scale = ToyScale(models=(size,), steps=a.steps, batch_size=a.bs, lr=a.lr, warmup=a.warmup,
                     corpus=spec)
    corpus, tok = Corpus(spec, a.seed), toy_tokenizer(spec)
    t0 = time.process_time()
    rows = training_tensor(corpus, tok, scale.n_rows()).long()
    val = word_ids(corpus.packed_rows(1, 128), tok).long()
    model = build_model(a.arch, size, len(tok), spec.row_len, a.seed)
    if a.pos_init == "sinusoid" and a.arch == "opt":
        emb = model.model.decoder.embed_positions.weight
        n, d = emb.shape
        pos = torch.arange(n, dtype=torch.float32)[:, None]
        freq = torch.exp(-math.log(10000.0) * torch.arange(0, d, 2, dtype=torch.float32) / d)
        with torch.no_grad():
            # per-component RMS = HF's init std (0.02): sin/cos have RMS 1/sqrt(2)
            emb.zero_()
            emb[:, 0::2] = torch.sin(pos * freq) * 0.02 * math.sqrt(2)
            emb[:, 1::2] = torch.cos(pos * freq) * 0.02 * math.sqrt(2)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.99), weight_decay=0.01)
    ids = comp.random_id_range(len(tok), len(tok.all_special_ids))
    out: list[dict] = []
    train_cpu = 0.0

    def probe(step: int) -> dict:
        model.eval()
        with torch.no_grad():
            ppl = math.exp(model(input_ids=val, labels=val).loss.item())
            adapter = adapter_for(model)
            att = comp.attention_scores(adapter, ids, seq_len=(spec.row_len - 1) // 2,
                                        bos_id=tok.eos_token_id)
            a12 = comp.attention_scores(adapter, ids, seq_len=12, bos_id=tok.eos_token_id)
        tr = trigger_accuracy(model, tok, corpus, n_seqs=32)
        model.train()
        row = {"tag": a.tag, "arch": a.arch, "layers": a.layers, "d": a.d, "heads": a.heads,
               "bs": a.bs, "lr": a.lr, "step": step, "tokens": step * a.bs * spec.row_len,
               "ppl": round(ppl, 3), "ind": round(float(att["induction"].max()), 4),
               "ind12": round(float(a12["induction"].max()), 4),
               "prev": round(float(att["previous-token"].max()), 4),
               "trig": round(tr["accuracy"], 3), "trig_base": round(tr["baseline"], 3),
               "train_cpu": round(train_cpu, 1), "cpu": round(time.process_time() - t0, 1)}
        emit(row)
        out.append(row)
        return row

    model.train()
    for step in range(a.steps + 1):
        if step % a.every == 0 or step == a.steps:
            row = probe(step)
            if a.stop_at is not None and row["ind"] >= a.stop_at:
                break
        if step == a.steps:
            break
        t1 = time.process_time()
        batch = rows[step * a.bs:(step + 1) * a.bs]
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, scale)
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        train_cpu += time.process_time() - t1
    return out


def _job(line: str, out: str) -> None:
    """One sweep line; appends each probe to `out` as it comes (a killed sweep keeps them)."""
    a = parser().parse_args(shlex.split(line))
    a.tag = a.tag or line

    def emit(row: dict) -> None:
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")

    try:
        run(a, emit=emit)
    except Exception as e:  # a sweep reports a failed line and goes on
        emit({"tag": a.tag, "error": repr(e)})


def sweep(path: str, out: str, workers: int) -> None:
    """Run every line of `path` in `workers` processes; append JSON lines to `out`."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    lines = [ln.strip() for ln in open(path) if ln.strip() and not ln.startswith("#")]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        futs = {pool.submit(_job, ln, out): ln for ln in lines}
        for fut in as_completed(futs):
            fut.result()
            print("done:", futs[fut], file=sys.stderr, flush=True)


def main() -> None:
    p = parser()
    p.add_argument("--sweep", default=None)
    p.add_argument("--out", default="sweep.jsonl")
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()
    if a.sweep:
        sweep(a.sweep, a.out, a.workers)
        return

    def show(r: dict) -> None:
        print(f"{r['arch']} L{r['layers']} d{r['d']} step {r['step']:5d} ppl {r['ppl']:7.2f} "
              f"ind {r['ind']:.3f} ind12 {r['ind12']:.3f} prev {r['prev']:.3f} "
              f"trig {r['trig']:.2f}/{r['trig_base']:.2f} cpu {r['cpu']:.0f}s "
              f"(train {r['train_cpu']:.0f}s)", flush=True)

    run(a, emit=show)


if __name__ == "__main__":
    main()
