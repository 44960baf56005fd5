"""What every architecture path shares: the adapter base class and the per-head attention math.

The lowest module of the graph code: evals.circuits.model_surgery (GPT-NeoX,
OPT, GPT-2 and the adapter registry) and evals.circuits.llama (Llama, OLMo)
both build on these, and this module imports neither, so the two have no
import circle (the registry in model_surgery imports llama, not the reverse).
"""

from __future__ import annotations

import torch


class UnsupportedModelError(ValueError):
    """The model's architecture has no graph path here."""


def _attend(q, k, v, scale: float):
    """Causal softmax attention. q, k, v: (batch, head, pos, hd) -> ctx, pattern (b, h, p, p)."""
    scores = torch.einsum("bhqe,bhke->bhqk", q, k) * scale
    p = q.shape[2]
    causal = torch.ones(p, p, dtype=torch.bool, device=q.device).tril()
    scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
    pattern = scores.softmax(-1)
    return torch.einsum("bhqk,bhke->bhqe", pattern, v), pattern


def _project(x, weight, bias):
    """Per-head projection. x (b, p, H, d), weight (H, hd, d), bias (H, hd) -> (b, H, p, hd)."""
    out = torch.einsum("bphd,hed->bphe", x, weight)
    if bias is not None:
        out = out + bias
    return out.transpose(1, 2)


def _per_head_out(ctx, w_o):
    """ctx (b, H, p, hd), w_o (d, H, hd) -> per-head outputs (b, p, H, d)."""
    return torch.einsum("bhpe,dhe->bphd", ctx, w_o)


class _Adapter:
    parallel: bool

    def __init__(self, model):
        self.model = model

    def const(self, ids):  # noqa: ARG002 - position terms that are not graph nodes
        return 0.0
