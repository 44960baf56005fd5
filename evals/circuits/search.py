"""Circuit search: greedy growth from the logits, pruning, minimal faithful size.

Greedy (Tigges et al.; Hanna et al. `apply_greedy`): start from `logits`; a
max-heap frontier (by |score|) holds the edges whose child is in the circuit;
pop the best edge, add it, and if its parent is new push the parent's incoming
edges. The greedy circuit of n edges is the first n edges of one greedy order,
so the order is computed once. `prune_` then drops nodes that have no incoming
or no outgoing edge (to a fixed point): a head whose inputs are all corrupted
computes its corrupted activation anyway, so pruning it changes nothing.

Minimal circuit (`minimal_circuit`, Tigges' `get_faithfulness_metrics_adaptive`):
try n = start, start + step, ... until faithfulness >= threshold, then binary
search in (n - step, n]. Example: start 25, step 25, threshold 0.8; n = 25 gives
0.5, n = 50 gives 0.9 -> binary search over 26..50, e.g. 37 (0.7), 43 (0.85),
40 (0.82), 38 (0.75), 39 (0.81) -> 39 edges. Faithfulness need not be monotone
in n; like the original, the binary search assumes it is.

Faithfulness: "ratio" (Tigges, default) = mean m(C) / mean m(model); "normalized"
(Hanna) = (m(C) - m(corrupted)) / (m(model) - m(corrupted)).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import torch

from evals.circuits.attribution import corrupted_activations, evaluate_circuit
from evals.circuits.graph import Graph
from evals.circuits.model_surgery import graph_of


def greedy_order(scores: torch.Tensor, g: Graph) -> list[tuple[int, int]]:
    """Every edge in greedy order (largest |score| on the frontier first)."""
    valid = g.edge_mask
    absval = scores.abs().tolist()
    heap: list[tuple[float, int, int]] = []

    def push_into(dsts):
        for v in dsts:
            for u in torch.nonzero(valid[:, v]).flatten().tolist():
                heapq.heappush(heap, (-absval[u][v], u, v))

    push_into([g.logits_dst])
    in_nodes, order = {0}, []
    while heap:
        _, u, v = heapq.heappop(heap)
        order.append((u, v))
        if u not in in_nodes:
            in_nodes.add(u)
            push_into(g.src_node_dsts(u))
    return order


def prune_(mask: torch.Tensor, g: Graph) -> torch.Tensor:
    """Drop edges of nodes lacking incoming or outgoing in-circuit edges, to a fixed point."""
    nodes = [(u, g.src_node_dsts(u)) for u in range(1, g.n_forward)]
    changed = True
    while changed:
        changed = False
        for u, dsts in nodes:
            has_in, has_out = bool(mask[:, dsts].any()), bool(mask[u].any())
            if has_out and not has_in:
                mask[u] = False
                changed = True
            elif has_in and not has_out:
                mask[:, dsts] = False
                changed = True
    return mask


def circuit_from_order(order: list[tuple[int, int]], n: int, g: Graph) -> torch.Tensor:
    """The pruned greedy circuit of the first n edges: (n_forward, n_backward) bool."""
    mask = torch.zeros(g.n_forward, g.n_backward, dtype=torch.bool)
    if n > 0:
        idx = torch.tensor(order[:n])
        mask[idx[:, 0], idx[:, 1]] = True
    return prune_(mask, g)


@dataclass
class CircuitResult:
    """The minimal faithful circuit of one task at one checkpoint."""

    in_circuit: torch.Tensor
    n_edges: int
    faithfulness: float
    metric_clean: float
    metric_corrupted: float
    n_evaluations: int


def faithfulness_of(m_circuit: float, m_clean: float, m_corr: float, kind: str) -> float:
    if kind == "ratio":
        return m_circuit / m_clean if m_clean != 0 else float("nan")
    if kind == "normalized":
        den = m_clean - m_corr
        return (m_circuit - m_corr) / den if den != 0 else float("nan")
    raise ValueError(f"unknown faithfulness {kind!r}; allowed: ratio, normalized")


def minimal_circuit(adapter, task, scores: torch.Tensor, *, threshold: float = 0.8,
                    start: int = 25, step: int = 25, batch_size: int = 16,
                    faithfulness: str = "ratio") -> CircuitResult:
    """Smallest greedy circuit reaching `threshold` faithfulness (stepped, then binary search)."""
    g = graph_of(adapter)
    order = greedy_order(scores, g)
    z_corr = corrupted_activations(adapter, task, batch_size)
    m_clean = float(evaluate_circuit(adapter, task, None, batch_size=batch_size, run="clean").mean())
    m_corr = float(evaluate_circuit(adapter, task, None, batch_size=batch_size,
                                    run="corrupted").mean())
    cache: dict[int, float] = {}

    def faith(n: int) -> float:
        if n not in cache:
            mask = circuit_from_order(order, n, g)
            m = evaluate_circuit(adapter, task, mask, batch_size=batch_size, z_corr=z_corr)
            cache[n] = faithfulness_of(float(m.mean()), m_clean, m_corr, faithfulness)
        return cache[n]

    total = len(order)
    hi = min(start, total)
    while faith(hi) < threshold and hi < total:
        hi = min(hi + step, total)
    lo = max(0, hi - step)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if faith(mid) >= threshold:
            hi = mid
        else:
            lo = mid
    mask = circuit_from_order(order, hi, g)
    return CircuitResult(mask, int(mask.sum()), faith(hi), m_clean, m_corr, len(cache))
