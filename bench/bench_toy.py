"""Toy suite (issue 19): training step time per model, trigger recall per checkpoint.

    .venv/bin/python -m bench.bench_toy steps [--threads 1] [--scale demo]
    .venv/bin/python -m bench.bench_toy recall SUITE_DIR [--scale demo] [--from-step 128]

`steps`: ms per AdamW step (mean of 20 after 5 warm-up steps) of every model of
the scale, each architecture, on random rows of the training shape (batch x
row_len), with `--threads` torch threads. `recall`: next-token accuracy at
trigger occurrences >= 2 (dynamics.toy.probe, 32 fresh sequences) at every
checkpoint of a built suite, one line per model, with the in-context frequency
baseline.
"""

from __future__ import annotations

import argparse
import time

import torch

from dynamics.toy.train import SCALES, build_model, toy_tokenizer


def step_times(scale_name: str, threads: int) -> None:
    torch.set_num_threads(threads)
    scale = SCALES[scale_name]
    vocab = len(toy_tokenizer(scale.corpus))
    x = torch.randint(3, vocab, (scale.batch_size, scale.corpus.row_len))
    total = 0.0
    for arch in scale.archs:
        for spec in scale.models:
            model = build_model(arch, spec, vocab, scale.corpus.row_len, 0).train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            for i in range(25):
                if i == 5:
                    t0 = time.perf_counter()
                model(input_ids=x, labels=x).loss.backward()
                opt.step()
                opt.zero_grad()
            ms = (time.perf_counter() - t0) / 20 * 1000
            total += ms
            print(f"{arch:5s} {spec.size} L{spec.num_layers} d{spec.hidden_size}: "
                  f"{ms:6.1f} ms/step")
    print(f"all models: {total:.0f} ms per step; x {scale.steps} steps = "
          f"{total * scale.steps / 1000:.0f} s CPU with {threads} thread(s)")


def recall(suite_dir: str, scale_name: str, from_step: int) -> None:
    from transformers import AutoModelForCausalLM

    from dynamics.suites import get_suite
    from dynamics.toy.corpus import Corpus
    from dynamics.toy.probe import trigger_accuracy

    scale = SCALES[scale_name]
    corpus, tok = Corpus(scale.corpus, 0), toy_tokenizer(scale.corpus)
    for name, refs in get_suite(suite_dir).models.items():
        cells, base = [], None
        for ref in refs:
            if ref.step < from_step:
                continue
            res = trigger_accuracy(AutoModelForCausalLM.from_pretrained(ref.source), tok, corpus,
                                   n_seqs=32)
            cells.append(f"{ref.step}:{res['accuracy']:.2f}")
            base = res["baseline"]
        print(name, refs[0].params, f"baseline={base:.2f}", " ".join(cells), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("steps")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--scale", default="demo", choices=sorted(SCALES))
    r = sub.add_parser("recall")
    r.add_argument("suite")
    r.add_argument("--scale", default="demo", choices=sorted(SCALES))
    r.add_argument("--from-step", type=int, default=128)
    args = p.parse_args()
    if args.what == "steps":
        step_times(args.scale, args.threads)
    else:
        recall(args.suite, args.scale, args.from_step)


if __name__ == "__main__":
    main()
