"""EAP and EAP-IG edge scores, task metrics and edge-level patching evaluation.

Score of edge u -> v (Hanna et al. 2024, EAP-IG with interpolated inputs)::

    score(u -> v) = (1/N) (1/m) sum_examples sum_{k=1..m} sum_pos sum_dim
                    (z_u(corrupted) - z_u(clean)) * dL/dx_v (e_k),
    e_k = e_corr + (k/m) (e_clean - e_corr),   L = -metric

so a positive score is the first-order *drop* of the metric when edge u -> v
carries the corrupted activation. The path runs from the corrupted input to the
clean one (e_0 = e_corr, e_m = e_clean): the direction of Hanna et al. 2024's
paper and of EAP-IG's current code; some intermediate revisions of EAP-IG's
`attribute_mem.py` interpolated from clean towards corrupted instead. k runs over
1..m (a right Riemann sum, as in the older `attribute_mem.py` that Tigges et
al. used; EAP-IG's HEAD uses k = 0..m-1), so m = 1 is plain EAP (gradient at
the clean input). Summed over the input node's edges, the scores are the
Riemann sum of integrated gradients of the embedding, which tends to
mean(metric_clean - metric_corrupted) as m grows (completeness; both tested in
tests/test_circuits.py). Scores accumulate in float32 whatever the model dtype.

Steps: Tigges et al. use m = 30 (the default here). The demo (`dynamics demo`)
uses m = 10: on the toy suite's trigger task, at the checkpoints where it is
performed, m = 10 edge scores correlate with m = 30 at Pearson >= 0.968 and
the minimal circuits differ by at most 3 edges (58 vs 56, 33 vs 36); with
m = 3 (the demo's earlier value) Pearson was >= 0.946 but a minimal circuit
could differ by 40% (80 vs 56 edges), so m = 3 was raised
(`bench/bench_ig_steps.py`; numbers in BENCHMARKS.md).

Worked example of the batch layout: pairs of lengths 5 and 3 are right-padded
to width 5; the metric reads position 4 of the first row and position 2 of the
second (the last real token). Causal attention means real positions never see
the padding, so no attention mask is used.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from evals.circuits.model_surgery import graph_forward, graph_of
from evals.circuits.tasks import TaskPairs


def batches(task: TaskPairs, batch_size: int, vocab_size: int, device) -> Iterator[dict]:
    """Right-padded tensors of `batch_size` pairs: clean, corrupted, last index, answer masks."""
    for start in range(0, len(task.clean), batch_size):
        sl = slice(start, start + batch_size)
        clean, corr = task.clean[sl], task.corrupted[sl]
        width = max(len(c) for c in clean)
        n = len(clean)
        ids = torch.zeros(2, n, width, dtype=torch.long)
        good = torch.zeros(n, vocab_size)
        bad = torch.zeros(n, vocab_size)
        for i, (a, b) in enumerate(zip(clean, corr, strict=True)):
            assert len(a) == len(b), "clean and corrupted prompts must have equal length"
            ids[0, i, : len(a)] = torch.tensor(a)
            ids[1, i, : len(b)] = torch.tensor(b)
            good[i, list(task.correct[start + i])] = 1.0
            bad[i, list(task.incorrect[start + i])] = 1.0
        last = torch.tensor([len(c) - 1 for c in clean])
        yield {"clean": ids[0].to(device), "corrupted": ids[1].to(device), "last": last.to(device),
               "good": good.to(device), "bad": bad.to(device)}


def task_metric(logits, batch: dict, kind: str) -> torch.Tensor:
    """Per-example metric at the last real token: (batch,) float32.

    `logit_diff`: mean logit of the correct answers - mean logit of the incorrect ones.
    `prob_diff`: total probability of the correct answers - of the incorrect ones.
    """
    rows = logits[torch.arange(logits.shape[0], device=logits.device), batch["last"]].float()
    good, bad = batch["good"], batch["bad"]
    if kind == "logit_diff":
        return (rows * good).sum(-1) / good.sum(-1) - (rows * bad).sum(-1) / bad.sum(-1)
    if kind == "prob_diff":
        probs = rows.softmax(-1)
        return (probs * good).sum(-1) - (probs * bad).sum(-1)
    raise ValueError(f"unknown metric {kind!r}; allowed: logit_diff, prob_diff")


def _accumulate(scores, g, delta, grads) -> None:
    """scores[u, v] += sum_{b, p, d} delta_u * grad_v for every destination block."""
    for layer in range(g.n_layers):
        first = g.head_dst(layer, 0, 0)
        n = g.n_sources_before(layer)
        scores[:n, first: first + 3 * g.n_heads] += torch.einsum(
            "bpfd,bpkd->fk", delta[:, :, :n], grads[2 * layer].float())
        n = g.n_sources_before(layer, mlp=True)
        scores[:n, g.mlp_dst(layer)] += torch.einsum(
            "bpfd,bpd->f", delta[:, :, :n], grads[2 * layer + 1].float())
    scores[:, g.logits_dst] += torch.einsum("bpfd,bpd->f", delta, grads[-1].float())


def edge_scores(adapter, task: TaskPairs, *, ig_steps: int = 30, batch_size: int = 16,
                vocab_size: int | None = None) -> torch.Tensor:
    """EAP-IG edge scores (n_forward, n_backward) float32 on the CPU; zero off the edge mask.

    Cost per batch: 2 no-grad forwards + `ig_steps` forward/backward passes.
    """
    if ig_steps < 1:
        raise ValueError(f"ig_steps must be >= 1 (1 = plain EAP), got {ig_steps}")
    g = graph_of(adapter)
    device = next(adapter.model.parameters()).device
    vocab = vocab_size or adapter.model.get_output_embeddings().weight.shape[0]
    scores = torch.zeros(g.n_forward, g.n_backward, dtype=torch.float32, device=device)
    with torch.enable_grad():
        for batch in batches(task, batch_size, vocab, device):
            with torch.no_grad():
                z_clean = graph_forward(adapter, batch["clean"]).z
                z_corr = graph_forward(adapter, batch["corrupted"]).z
                e_clean, e_corr = adapter.embed(batch["clean"]), adapter.embed(batch["corrupted"])
            delta = (z_corr - z_clean).float()
            grads = None
            for k in range(1, ig_steps + 1):
                emb = (e_corr + (k / ig_steps) * (e_clean - e_corr)).detach().requires_grad_(True)
                run = graph_forward(adapter, batch["clean"], input_embeds=emb)
                loss = -task_metric(run.logits, batch, task.metric).sum()
                step = torch.autograd.grad(loss, run.inputs)
                grads = step if grads is None else [a + b for a, b in zip(grads, step, strict=True)]
            _accumulate(scores, g, delta, [gr / ig_steps for gr in grads])
    scores /= max(1, len(task.clean))
    return (scores * g.edge_mask.to(device)).cpu()


@torch.no_grad()
def corrupted_activations(adapter, task: TaskPairs, batch_size: int) -> list[torch.Tensor]:
    """z of every source node on the corrupted prompts, one tensor per batch."""
    vocab = adapter.model.get_output_embeddings().weight.shape[0]
    device = next(adapter.model.parameters()).device
    return [graph_forward(adapter, b["corrupted"]).z
            for b in batches(task, batch_size, vocab, device)]


@torch.no_grad()
def evaluate_circuit(adapter, task: TaskPairs, in_circuit: torch.Tensor | None, *,
                     batch_size: int = 16, z_corr: list[torch.Tensor] | None = None,
                     run: str = "circuit") -> torch.Tensor:
    """Per-example metric (N,) of the circuit, the full model or the corrupted model.

    Args:
        in_circuit: (n_forward, n_backward) bool; edges outside it carry corrupted
            activations (edge-level interchange patching). Ignored unless run = "circuit".
        z_corr: cached `corrupted_activations` (same batch_size).
        run: "circuit", "clean" (no intervention) or "corrupted" (corrupted prompts).
    """
    g = graph_of(adapter)
    device = next(adapter.model.parameters()).device
    vocab = adapter.model.get_output_embeddings().weight.shape[0]
    if run == "circuit":
        out_mask = (g.edge_mask & ~in_circuit.bool()).to(device)
        z_corr = z_corr if z_corr is not None else corrupted_activations(adapter, task, batch_size)
    out = []
    for i, batch in enumerate(batches(task, batch_size, vocab, device)):
        if run == "clean":
            logits = graph_forward(adapter, batch["clean"]).logits
        elif run == "corrupted":
            logits = graph_forward(adapter, batch["corrupted"]).logits
        else:
            logits = graph_forward(adapter, batch["clean"], patch=(z_corr[i], out_mask)).logits
        out.append(task_metric(logits, batch, task.metric))
    return torch.cat(out).cpu()
