"""Throughput for `dynamics plan`: a default per device class, or measured on this device.

Effective throughput is FLOPs counted as 2 x params per token divided by the wall
time of scoring those tokens (`evals.scoring.token_logprobs`, what token-loss
runs), so it already holds attention, the head and the framework's overhead. The
defaults (`DEVICE_CLASSES`) state where their figure comes from; `calibrate_model`
measures it instead: a random-weight model built from the checkpoint's
config.json (no weights are read), on this device and dtype, at the batch shape
token-loss runs (its options' context and batch size; by default windows of
min(context, 2048) tokens, 4,096 tokens per batch on a CPU, 32,768 on a GPU),
median of three timed batches after one warm-up.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from dynamics.checkpoints import CheckpointRef

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Throughput:
    """Effective FLOP/s (2 x params per token) and where the figure comes from."""

    flops_per_s: float
    source: str


DEVICE_CLASSES = {
    "cpu": Throughput(0.17e12, "cpu: 170 GFLOP/s, Pythia-70m-shaped token-loss in float32 on "
                      "2 cores at ~83 % of a 206 GFLOP/s matmul ceiling (BENCHMARKS.md); other "
                      "CPUs differ widely: use --calibrate"),
    "h200": Throughput(380e12, "h200: 380 TFLOP/s, half the 750-777 TFLOP/s bf16 matmul "
                       "ceiling measured on an H200 (token-loss ran at 41 % of it for a "
                       "410m shape, 60 % for 1.4b; BENCHMARKS.md, 'GPU: where the token-loss "
                       "time goes')"),
    "h100": Throughput(380e12, "h100: 380 TFLOP/s, the H200's measured figure: an H100 SXM "
                       "has the same compute (989 TFLOP/s bf16 dense on NVIDIA's datasheets; "
                       "the H200 adds memory); not measured on an H100"),
    "a100": Throughput(120e12, "a100: 120 TFLOP/s, its 312 TFLOP/s bf16 datasheet figure "
                       "scaled as the H200 measured (77 % of datasheet, then half of that); "
                       "not measured on an A100"),
}
CALIBRATE_MAX_SECONDS = 30.0  # a model whose one batch would take longer keeps the default


def device_class(device: str, name: str | None = None) -> str:
    """The class of DEVICE_CLASSES a batch's `device` runs as (`name` overrides)."""
    if name is not None:
        if name not in DEVICE_CLASSES:
            raise ValueError(f"device class {name!r} not allowed; choose one of "
                             f"{', '.join(DEVICE_CLASSES)} (or give --tflops)")
        return name
    kind = torch.device(device).type
    if kind == "cpu":
        return "cpu"
    if kind == "cuda" and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(torch.device(device)).lower()
        for known in ("h200", "h100", "a100"):
            if known in gpu:
                return known
    if kind == "cuda":
        log.info("device %s: no GPU here to ask; projecting for an h100", device)
        return "h100"
    raise ValueError(f"device {device!r}: no default throughput; give --device-class "
                     f"({', '.join(DEVICE_CLASSES)}), --tflops or --calibrate")


def model_config(ref: CheckpointRef):
    """The checkpoint's config (local folder, or the hub cache; online: one small file),
    or None when it is not readable without a download the machine cannot make."""
    from transformers import AutoConfig

    if ref.is_local:
        return AutoConfig.from_pretrained(ref.source)
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(ref.source, "config.json", revision=ref.revision)
    except Exception:  # noqa: BLE001  (offline and not cached, or no hub)
        return None
    return AutoConfig.from_pretrained(Path(path).parent)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batch_shape(config, device: str, options=None) -> tuple[int, int]:
    """(windows, context) of one token-loss batch: `options` (TokenLossOptions; default
    ones when None) decide it as the evaluator does."""
    from evals.token_loss import TokenLossOptions

    options = options or TokenLossOptions(dataset="")
    limit = getattr(config, "max_position_embeddings", None) or 2048
    context = min(options.context or min(limit, 2048), limit)
    return options.windows_per_batch(context, device), context


def measure(config, device: str, dtype: str, options=None, repeats: int = 3) -> float:
    """Effective FLOP/s of token scoring for a random-weight model of `config` (module doc)."""
    from transformers import AutoModelForCausalLM

    from dynamics.loading import DTYPES
    from evals.scoring import token_logprobs

    dev = torch.device(device)
    with dev:
        model = AutoModelForCausalLM.from_config(config, dtype=DTYPES[dtype]).eval()
    params = sum(p.numel() for p in model.parameters())
    rows, context = batch_shape(config, device, options)
    ids = torch.randint(0, config.vocab_size, (rows, context), device=dev,
                        generator=torch.Generator(dev).manual_seed(0))
    times = []
    with torch.inference_mode():
        for i in range(repeats + 1):
            _sync(dev)
            t0 = time.perf_counter()
            token_logprobs(model, ids)
            _sync(dev)
            if i:  # the first is a warm-up
                times.append(time.perf_counter() - t0)
    return 2 * params * ids.numel() / statistics.median(times)


def calibrate_model(ref: CheckpointRef, device: str, dtype: str, default: Throughput,
                    options=None) -> Throughput:
    """The measured throughput for `ref`'s model on this device, or `default` (saying why);
    `options`: the batch's TokenLossOptions, whose batch shape is measured."""
    config = model_config(ref)
    if config is None:
        return Throughput(default.flops_per_s, f"{default.source} (no config.json readable "
                                               f"for {ref.model} without the hub)")
    rows, context = batch_shape(config, device, options)
    guess = 2 * ref.params * rows * context / default.flops_per_s
    if guess > CALIBRATE_MAX_SECONDS:
        return Throughput(default.flops_per_s, f"{default.source} ({ref.model} is too large to "
                                               f"calibrate quickly here: ~{guess:.0f} s a batch)")
    rate = measure(config, device, dtype, options)
    return Throughput(rate, f"calibrated: {rate / 1e12:.3g} TFLOP/s measured for {ref.model} "
                            f"on {device} in {dtype} (random weights, token-loss's batch shape)")
