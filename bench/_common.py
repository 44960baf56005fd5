"""Shared pieces of the benchmarks: model shapes, real text, matmul ceiling, peak RSS.

Nothing here touches the network: models are random-init GPTNeoX built from
explicit configs (parameter counts checked), text is the English licence texts
Debian ships in /usr/share/common-licenses, and the tokenizer is a byte-level
BPE trained on that text.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from dynamics.loading import cpu_dtype_problem
from dynamics.tiny import tiny_gpt_neox, train_bpe_tokenizer

# DYNAMICS_BENCH_TEXT_DIR: a copy of that folder, where a machine has none (a GPU image).
LICENCE_DIR = Path(os.environ.get("DYNAMICS_BENCH_TEXT_DIR", "/usr/share/common-licenses"))
ROOT = Path(__file__).resolve().parents[1]
VOCAB = 50304

# Pythia shapes (untied head, rotary on 25% of head dims, parallel residual).
SHAPES = {
    "70m": dict(hidden_size=512, num_layers=6, num_heads=8, intermediate_size=2048,
                expected_params=70_426_624),
    "14m": dict(hidden_size=128, num_layers=6, num_heads=4, intermediate_size=512,
                expected_params=14_067_712),
    # the GPU benchmark's shape (issue #10): 302,311,424 non-embedding parameters
    "410m": dict(hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096,
                 expected_params=405_334_016),
}


def build_model(shape: str, vocab_size: int = VOCAB, max_positions: int = 2048, seed: int = 0):
    """A random-init Pythia-shaped GPTNeoX; checks the parameter count for the 50304 vocab."""
    kw = dict(SHAPES[shape])
    if vocab_size != VOCAB:
        kw["expected_params"] = None
    model = tiny_gpt_neox(vocab_size=vocab_size, max_positions=max_positions, seed=seed, **kw)
    return model.eval()


def matmul_params(model) -> int:
    """Parameters that take part in a matmul per token: all but the input embedding."""
    emb = model.get_input_embeddings().weight.numel()
    return sum(p.numel() for p in model.parameters()) - emb


def licence_texts() -> list[str]:
    """The distinct licence texts under /usr/share/common-licenses (real English prose)."""
    seen, texts = set(), []
    for path in sorted(LICENCE_DIR.iterdir()):
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        digest = hashlib.sha1(text.encode()).hexdigest()
        if digest not in seen and text.strip():
            seen.add(digest)
            texts.append(text)
    if not texts:
        raise FileNotFoundError(f"no licence texts under {LICENCE_DIR}")
    return texts


def write_jsonl(texts: list[str], path: Path) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def licence_tokenizer(vocab_size: int = VOCAB):
    """Byte-level BPE trained on the licence texts (reaches a smaller vocab: small corpus)."""
    return train_bpe_tokenizer(licence_texts(), vocab_size=vocab_size)


def sync(device) -> None:
    """Wait for queued GPU work (timing); nothing on the CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# Largest ceiling matmul for a dtype the CPU multiplies without native support (bf16/fp16
# emulated: 0.6-3 GFLOP/s; 2048^3 took minutes per product, issue #22).
SLOW_DTYPE_MAX_N = 512


def matmul_ceiling(n: int = 2048, repeats: int = 10, threads: int | None = None,
                   device: str = "cpu", dtype: torch.dtype = torch.float32) -> float:
    """Best-of-`repeats` n^3 matmul rate in GFLOP/s (CPU: on the current thread count).

    The practical limit the MFU figures are measured against: fp32 2048^3 on the CPU,
    bf16 8192^3 on a GPU (pass n=8192, device="cuda", dtype=torch.bfloat16).
    """
    if threads is not None:
        torch.set_num_threads(threads)
    if (torch.device(device).type == "cpu" and n > SLOW_DTYPE_MAX_N
            and (problem := cpu_dtype_problem(dtype))):
        raise ValueError(f"matmul ceiling {str(dtype).removeprefix('torch.')} {n}^3 on the CPU: "
                         f"{problem}; measure it at n <= {SLOW_DTYPE_MAX_N} "
                         f"(one {n}^3 product: {2 * n**3 / 1e9:.0f} GFLOP at 0.6-3 GFLOP/s)")
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    torch.matmul(a, b, out=out)  # warm-up
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.matmul(a, b, out=out)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def maxrss_mb() -> float:
    """Peak resident set size of this process so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(f"{key} not in /proc/self/status")


def reset_peak_rss() -> float:
    """Reset the kernel's peak-RSS mark (Linux clear_refs 5); returns the current RSS in MiB.

    Without this, the peak of building the model would hide the peak of scoring.
    """
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    """Peak RSS since the last `reset_peak_rss` (VmHWM), MiB."""
    return _status_mb("VmHWM")


def run_child(module: str, args: list[str]) -> dict:
    """Run `python -m module args` and parse the JSON on its last stdout line."""
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          check=False, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{module} {args} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict], columns: list[str]) -> str:
    """A GitHub markdown table of `rows` (values pre-formatted or str()-able)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)
