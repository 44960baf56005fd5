"""Scoring tokens: the one model verb every evaluator uses.

Evaluators turn examples into `Request(example_id, context_ids,
continuation_ids)`; `score_requests` batches them by length and returns the
log-probability of every continuation token. The output head and the softmax
run only on the rows that are scored, in chunks of `chunk_rows`, so a batch
never materialises full float32 logits over a 50k vocabulary.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

CHUNK_ELEMENTS = 2048 * 50304  # logits per head chunk (~412 MB float32)


@dataclass(frozen=True)
class Request:
    """Score `continuation_ids` given `context_ids` (token ids, no specials added)."""

    example_id: object
    context_ids: tuple[int, ...]
    continuation_ids: tuple[int, ...]


@dataclass(frozen=True)
class TokenScores:
    """Log-probabilities (nats) of each continuation token of a request."""

    request: Request
    logprobs: np.ndarray  # (n_continuation,) float32
    truncated: int = 0  # context tokens dropped from the left to fit the window

    @property
    def total(self) -> float:
        return float(self.logprobs.astype(np.float64).sum())


class ContextTooLongError(ValueError):
    """A continuation alone does not fit the model's context window."""


def final_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
    """Hidden states after the final layer norm: (batch, pos, d_model)."""
    out = model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return out.last_hidden_state


def check_head(model) -> None:
    """Once per model: logits must equal lm_head(final hidden) (no soft-capping etc.)."""
    if getattr(model, "_dynamics_head_checked", False):
        return
    ids = torch.arange(1, 9, device=next(model.parameters()).device).unsqueeze(0) % max(
        2, model.config.vocab_size
    )
    with torch.inference_mode():
        full = model(input_ids=ids).logits.float()
        ours = model.get_output_embeddings()(final_hidden(model, ids)).float()
    if not torch.isfinite(full).all():  # issue 9: NaN weights are a fault, not an architecture
        raise FloatingPointError(f"{type(model).__name__}: non-finite logits (NaN/inf weights?)")
    tol = 1e-3 * max(1.0, full.abs().max().item())
    if not torch.allclose(full, ours, atol=tol, rtol=1e-3):
        raise NotImplementedError(
            f"{type(model).__name__}: logits are not lm_head(last_hidden_state); "
            "chunked scoring does not support this architecture"
        )
    model._dynamics_head_checked = True


def target_logprobs(
    model, hidden: torch.Tensor, targets: torch.Tensor, chunk_rows: int = 2048
) -> torch.Tensor:
    """log p(target | row) for selected rows, computed in chunks of rows.

    Chunks hold at most `chunk_rows` rows and at most CHUNK_ELEMENTS logits
    (e.g. 2048 rows at vocab 50304, 512 rows at vocab 201216), so peak memory
    stays flat whatever the batch or vocab. `head_path` picks how each chunk is
    scored: a compiled logits -> float32 log-sum-exp on CUDA, vocabulary blocks
    (`_blocked_logprobs`) on the CPU, the chunk's logits + cross-entropy otherwise.

    Args:
        hidden: (rows, d_model) final hidden states of the positions to score.
        targets: (rows,) the next-token ids those positions predict.
    Returns:
        (rows,) float32 log-probabilities.
    """
    head = model.get_output_embeddings()
    out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    # Fewer rows per chunk for vocabularies above 50304, so memory stays flat in vocab too.
    vocab = head.weight.shape[0]
    rows = max(1, min(chunk_rows, CHUNK_ELEMENTS // vocab, hidden.shape[0]))
    path = head_path(head, hidden.device)
    for start in range(0, hidden.shape[0], rows):
        sl = slice(start, start + rows)
        if path == "blocked":
            out[sl] = _blocked_logprobs(head, hidden[sl], targets[sl])
        elif path == "fused":
            out[sl] = _fused_head()(hidden[sl], head.weight, head.bias, targets[sl])
        else:
            out[sl] = -F.cross_entropy(head(hidden[sl]).float(), targets[sl], reduction="none")
    return out


def head_path(head, device: torch.device) -> str:
    """How `target_logprobs` turns hidden states into log-probabilities on `device`.

    "fused": a Linear head on CUDA: the chunk's logits in the head's dtype, then one
    compiled float32 gather + log-sum-exp that reads them once (Pythia-410m shape, bf16,
    H200: the head 16.1 -> 7.1 ms per 32k tokens; BENCHMARKS.md "GPU").
    "blocked": a Linear head elsewhere in float32, and bf16/fp16 on the CPU (vocabulary
    blocks that stay in cache; measured on the CPU). "logits": any other head (custom
    modules; bf16/fp16 off CUDA and the CPU): the chunk's logits + float32 cross-entropy.
    """
    if not isinstance(head, torch.nn.Linear):
        return "logits"
    if device.type == "cuda":
        return "fused"
    if head.weight.dtype == torch.float32 or device.type == "cpu":
        return "blocked"
    return "logits"


def head_logprobs(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  targets: torch.Tensor) -> torch.Tensor:
    """log p(targets | h): logits in the head's dtype (as its forward rounds them), then
    float32 log-softmax at the targets. The function `_fused_head` compiles."""
    logits = F.linear(h, weight, bias).float()
    return logits.gather(1, targets[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1)


_FUSED: dict[str, object] = {}


def _fused_head():
    """`head_logprobs` compiled once per process (dynamic shapes: any chunk, vocab or width).

    torch.compile is lazy, so a backend that cannot compile here (no Triton, an old GPU)
    fails on the first call: that call and every later one then run `head_logprobs`
    eagerly (same values; logged once).
    """
    if "fn" not in _FUSED:
        compiled = torch.compile(head_logprobs, dynamic=True)

        def first_call(*args):
            try:
                result = compiled(*args)
                _FUSED["fn"] = compiled
            except Exception as e:  # noqa: BLE001 - any compile failure falls back
                logging.getLogger(__name__).warning(
                    "torch.compile of the output head failed (%s: %s); scoring with the "
                    "uncompiled head (same values, slower)", type(e).__name__, e)
                _FUSED["fn"] = head_logprobs
                result = head_logprobs(*args)
            return result

        _FUSED["fn"] = first_call
    return _FUSED["fn"]


BLOCK_ELEMENTS = 4 * 2**20  # logits per vocabulary block (16 MB float32: stays in cache)


def _blocked_logprobs(head: torch.nn.Linear, h: torch.Tensor, targets: torch.Tensor):
    """log p(targets | h) = logit[target] - logsumexp(logits), one vocabulary block at a time.

    The target's logit is a dot product with its own row of the head; the
    log-sum-exp comes from `_shifted_logsumexp`, with `_online_logsumexp` (exact
    for any logits) redoing the rare rows whose shifted sum overflowed. A bf16/fp16
    head's logits are rounded to its dtype, as its own forward would give them,
    and everything after that is float32.
    """
    picked = (h.float() * head.weight[targets].float()).sum(dim=1)  # .float(): no-op for fp32
    if head.bias is not None:
        picked += head.bias[targets].float()
    if head.weight.dtype != torch.float32:  # round as the head's own matmul output is
        picked = picked.to(head.weight.dtype).float()
    lse = _shifted_logsumexp(head, h)
    bad = ~torch.isfinite(lse)
    if bad.any():
        rows = bad.nonzero().squeeze(1)
        lse[rows] = _online_logsumexp(head, h[rows])
    return picked - lse


def _block_width(n_rows: int, vocab: int) -> int:
    return min(vocab, max(256, BLOCK_ELEMENTS // max(n_rows, 1)))


def _buffers(head: torch.nn.Linear, h: torch.Tensor
             ) -> tuple[int, torch.Tensor, torch.Tensor | None]:
    """(block width, float32 block buffer, head-dtype block buffer or None for float32)."""
    n, vocab = h.shape[0], head.weight.shape[0]
    width = _block_width(n, vocab)
    buf = torch.empty((n, width), dtype=torch.float32, device=h.device)
    low = None if head.weight.dtype == torch.float32 else torch.empty(
        (n, width), dtype=head.weight.dtype, device=h.device)
    return width, buf, low


def _block_logits(head, h, v: int, out: torch.Tensor, low, neg) -> torch.Tensor:
    """out = h W[v:v+k]^T (+ b) (+ neg), float32, for the k = out.shape[1] columns from v.

    A float32 head without bias adds `neg` (the negated row shift) inside the matmul
    (addmm); a bf16/fp16 head computes the block in its own dtype into `low` and adds
    `neg` while converting to float32.
    """
    k = out.shape[1]
    w = head.weight[v: v + k]
    b = None if head.bias is None else head.bias[v: v + k]
    if low is None:
        if b is None:
            return (torch.mm(h, w.T, out=out) if neg is None
                    else torch.addmm(neg, h, w.T, out=out))
        torch.addmm(b, h, w.T, out=out)
        return out if neg is None else out.add_(neg)
    lo = low[:, :k]
    if b is None:
        torch.mm(h, w.T, out=lo)
    else:
        torch.addmm(b, h, w.T, out=lo)
    return out.copy_(lo) if neg is None else torch.add(lo, neg, out=out)


def _shifted_logsumexp(head: torch.nn.Linear, h: torch.Tensor) -> torch.Tensor:
    """logsumexp of every row's logits, shifted by the row's max over the first block only.

    Every later block is computed already shifted (`_block_logits`), so each block
    costs one matmul, one in-place exp and one sum: no max or subtract pass. Exact
    as long as no later logit exceeds the shift by more than ~88 (float32 exp
    overflow); such rows come back as inf (never silently wrong) and the caller
    redoes them. Example, one row, blocks [1, 3] and [2]: shift = 3,
    s = e^-2 + e^0 + e^-1, logsumexp = 3 + log s.
    """
    vocab = head.weight.shape[0]
    width, buf, low = _buffers(head, h)
    shift = neg = total = None
    for v in range(0, vocab, width):
        logits = _block_logits(head, h, v, buf[:, : min(width, vocab - v)], low, neg)
        if neg is None:  # the first block: its row max shifts every block
            shift = logits.amax(dim=1)
            neg = (-shift)[:, None]
            logits.add_(neg)
        block = logits.exp_().sum(dim=1)
        total = block if total is None else total.add_(block)
    return shift + total.log_()


def _online_logsumexp(head: torch.nn.Linear, h: torch.Tensor) -> torch.Tensor:
    """logsumexp of every row's logits with a running max (exact for any logits).

    Example, one row, blocks [1, 3] and [2]: m = 3, s = e^-2 + 1; then m = 3,
    s += e^-1; logsumexp = m + log s.
    """
    n, vocab = h.shape[0], head.weight.shape[0]
    width, buf, low = _buffers(head, h)
    top = torch.full((n,), -torch.inf, device=h.device)
    total = torch.zeros(n, device=h.device)
    for v in range(0, vocab, width):
        logits = _block_logits(head, h, v, buf[:, : min(width, vocab - v)], low, None)
        new_top = torch.maximum(top, logits.amax(dim=1))
        total.mul_((top - new_top).exp_()).add_(logits.sub_(new_top[:, None]).exp_().sum(dim=1))
        top = new_top
    return top + total.log_()


def token_logprobs(model, input_ids: torch.Tensor, chunk_rows: int = 2048) -> torch.Tensor:
    """Per-token log p(x_t | x_<t) for full windows: (batch, pos - 1), float32.

    Equivalent to `-F.cross_entropy(model(ids).logits[:, :-1], ids[:, 1:])` but
    the head runs in chunks of `chunk_rows` rows.
    """
    check_head(model)
    with torch.inference_mode():
        hidden = final_hidden(model, input_ids)[:, :-1]  # (batch, pos-1, d)
        b, p, d = hidden.shape
        flat = target_logprobs(model, hidden.reshape(b * p, d), input_ids[:, 1:].reshape(-1),
                               chunk_rows)
    return flat.view(b, p)


def fit_request(req: Request, max_length: int, prefix_id: int) -> tuple[list[int], int, int]:
    """Token ids of context + continuation, left-truncated to `max_length`.

    An empty context gets `prefix_id` (usually EOS/BOS) so the first
    continuation token has something to condition on.

    Returns (ids, n_context_kept, n_truncated).
    Example: context [5, 6, 7], continuation [8, 9], max_length 4 -> ids
    [6, 7, 8, 9], 2 context tokens kept, 1 truncated.
    """
    ctx = list(req.context_ids) or [prefix_id]
    cont = list(req.continuation_ids)
    if not cont:
        raise ValueError(f"request {req.example_id!r} has an empty continuation")
    if len(cont) + 1 > max_length:
        raise ContextTooLongError(
            f"request {req.example_id!r}: continuation of {len(cont)} tokens does not fit "
            f"a context window of {max_length} tokens (needs at least one context token)"
        )
    keep = min(len(ctx), max_length - len(cont))
    return ctx[len(ctx) - keep:] + cont, keep, len(ctx) - keep


def length_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Indices grouped longest-first so each padded batch has <= batch_tokens tokens."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, current = [], []
    for i in order:
        width = lengths[current[0]] if current else lengths[i]
        if current and width * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def score_requests(
    model,
    requests: Sequence[Request],
    *,
    max_length: int,
    prefix_id: int = 0,
    pad_id: int = 0,
    batch_tokens: int = 16384,
    chunk_rows: int = 2048,
    progress=None,
) -> list[TokenScores]:
    """Log-probability of every continuation token of every request (nats).

    Requests are right-padded into batches of similar length; only the
    continuation rows go through the output head.
    """
    check_head(model)
    device = next(model.parameters()).device
    fitted = [fit_request(r, max_length, prefix_id) for r in requests]
    results: list[TokenScores | None] = [None] * len(requests)
    for idx in length_batches([len(f[0]) for f in fitted], batch_tokens):
        width = len(fitted[idx[0]][0])
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        rows_b, rows_p, targets = [], [], []
        for j, i in enumerate(idx):
            seq, n_ctx, _ = fitted[i]
            ids[j, : len(seq)] = torch.tensor(seq)
            mask[j, : len(seq)] = 1
            for p in range(n_ctx - 1, len(seq) - 1):  # position p predicts seq[p + 1]
                rows_b.append(j)
                rows_p.append(p)
                targets.append(seq[p + 1])
        with torch.inference_mode():
            hidden = final_hidden(model, ids.to(device), mask.to(device))
            sel = hidden[torch.tensor(rows_b, device=device), torch.tensor(rows_p, device=device)]
            lp = target_logprobs(model, sel, torch.tensor(targets, device=device), chunk_rows)
        lp = lp.cpu().numpy()
        offset = 0
        for i in idx:
            n = len(requests[i].continuation_ids)
            results[i] = TokenScores(requests[i], lp[offset: offset + n].copy(), fitted[i][2])
            offset += n
        if progress is not None:
            progress.update(len(idx))
    return results  # type: ignore[return-value]
