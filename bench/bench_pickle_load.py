"""Loading a checkpoint from pickle shards (restricted unpickler) vs from safetensors.

    .venv/bin/python -m bench.bench_pickle_load --shape 70m --repeats 3

Saves one random-init Pythia-shaped model twice, in float16 as Pythia's hub files
are: as `model.safetensors`, and as three `pytorch_model-0000N-of-00003.bin`
shards with their index (the layout of Pythia's `step{N}` revisions). Times
`load_checkpoint` on each (median of `--repeats`, files in the page cache) and
reports the ratio, which decides whether a safetensors copy of each pickle
checkpoint is worth caching (it would cost the checkpoint's size again on disk,
outside `disk_budget_gb`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench._common import SHAPES, build_model, licence_tokenizer, table
from dynamics.checkpoints import CheckpointRef
from dynamics.loading import LoadOptions, load_checkpoint
from dynamics.tiny import count_params, save_pickle_checkpoint


def _time_load(folder: Path, params: int, repeats: int) -> tuple[float, torch.Tensor]:
    ref = CheckpointRef("bench", "m", params, 0, 0, source=str(folder), is_local=True)
    times, first = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        loaded = load_checkpoint(ref, LoadOptions(dtype="float32"))
        times.append(time.perf_counter() - t0)
        if first is None:
            first = next(loaded.model.parameters()).detach().clone()
        del loaded
    return statistics.median(times), first


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="70m", choices=list(SHAPES))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None, help="also write the result as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    tok = licence_tokenizer()
    model = build_model(args.shape).half()
    params = count_params(model)
    with tempfile.TemporaryDirectory() as tmp:
        safe = Path(tmp) / "safetensors"
        model.save_pretrained(safe, safe_serialization=True)
        tok.save_pretrained(safe)
        pickled = save_pickle_checkpoint(model, tok, Path(tmp) / "pickle", shards=3)
        sizes = {name: sum(f.stat().st_size for f in folder.iterdir())
                 for name, folder in (("safetensors", safe), ("pickle", pickled))}
        t_safe, w_safe = _time_load(safe, params, args.repeats)
        t_pickle, w_pickle = _time_load(pickled, params, args.repeats)
    assert torch.equal(w_safe, w_pickle), "the two formats loaded different weights"
    rows = [{"format": "model.safetensors", "MB": f"{sizes['safetensors'] / 1e6:.0f}",
             "load s": f"{t_safe:.2f}", "vs safetensors": "1.00"},
            {"format": "3 .bin shards (weights_only)", "MB": f"{sizes['pickle'] / 1e6:.0f}",
             "load s": f"{t_pickle:.2f}", "vs safetensors": f"{t_pickle / t_safe:.2f}"}]
    print(f"{args.shape} ({params:,} params, float16 files, loaded as float32; median of "
          f"{args.repeats})")
    print(table(rows, ["format", "MB", "load s", "vs safetensors"]))
    result = {"shape": args.shape, "params": params, "safetensors_s": t_safe,
              "pickle_s": t_pickle, "ratio": t_pickle / t_safe, "bytes": sizes}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
