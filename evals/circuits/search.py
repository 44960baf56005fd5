"""Circuit search: greedy growth from the logits, pruning, minimal faithful size.

Greedy (Tigges et al.; Hanna et al. `apply_greedy`): start from `logits`; a
max-heap frontier (by |score|) holds the edges whose child is in the circuit;
pop the best edge, add it, and if its parent is new push the parent's incoming
edges. The greedy circuit of n edges is the first n edges of one greedy order,
so the order is computed once. `prune_` then drops nodes that have no incoming
or no outgoing edge (to a fixed point): a head whose inputs are all corrupted
computes its corrupted activation anyway, so pruning it changes nothing.

Minimal circuit (`minimal_circuit`, Tigges' `get_faithfulness_metrics_adaptive`
and `..._binary_search_with_local_search`): try n = start, start + step, ...
until faithfulness >= threshold, then binary search in (n - step, n]. Example:
start 25, step 25, threshold 0.8; n = 25 gives 0.5, n = 50 gives 0.9 -> binary
search over 26..50, e.g. 37 (0.7), 43 (0.85), 40 (0.82), 38 (0.75), 39 (0.81)
-> 39 edges.

Faithfulness need not be monotone in n, so (as Tigges) whenever a binary-search
midpoint's faithfulness is within `local_tol * threshold` of the threshold
(Tigges: 0.1), the sizes mid - r .. mid + r (`local_radius` r, Tigges 5; 0
turns it off) inside the searched interval are tried in increasing order; the
first one reaching the threshold that is smaller than the best size so far
becomes the new upper end. Example, threshold 0.8: f(37) = 0.75 (close), local
scan 32..42 finds f(33) = 0.85 -> 33 edges, where the plain binary search
would settle on the first size of the monotone stretch above 37.
Not implemented: Tigges' adaptive step (halving the step once faithfulness
exceeds 0.75 * threshold in the stepped phase); the step here is fixed.

Faithfulness: "ratio" (Tigges, default) = mean m(C) / mean m(model); "normalized"
(Hanna) = (m(C) - m(corrupted)) / (m(model) - m(corrupted)).

Does the model perform the task (`not_performed_reason`)? Tigges et al. analyse
circuits only where the model performs the task; a model that does not gives
both faithfulness denominators near 0 (e.g. 0-edge "circuits" with
faithfulness 8.5, a ratio of two near-zero numbers). Our criterion, on the
per-example metrics of the full model: (a) the mean clean metric is > 0 (the
correct answer wins: logit diff or prob diff > 0, the denominator of "ratio"),
and (b) the one-sided `level` (0.95) percentile-bootstrap lower bound (1000
resamples of the examples, seeded) of the mean of clean_i - corrupted_i is > 0
(the corruption clearly hurts: the denominator of "normalized"). Example: gaps
[0.9, 1.1, 1.0, 1.2] -> bound 0.95 > 0, performed; clean ~ N(0.01, 1) and
corrupted ~ N(0, 1) over 32 examples -> bound about 0.01 - 1.645 * sqrt(2 / 32)
= -0.40 < 0: not performed. No relative margin is imposed: a small but
consistent gap counts as performed (the bound, not the size, decides).
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


def not_performed_reason(clean: torch.Tensor, corrupted: torch.Tensor, *, level: float = 0.95,
                         n_boot: int = 1000, seed: int = 0) -> str | None:
    """None if the model performs the task, else why not (see the module docstring).

    Args:
        clean, corrupted: (N,) per-example metric of the full model on the clean
            and the corrupted prompts (same examples, same order).
        level: one-sided confidence of the bootstrap lower bound.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    gap = (clean.double() - corrupted.double()).cpu()
    m_clean = float(clean.double().mean())
    if not m_clean > 0:
        return f"mean clean metric {m_clean:.4g} <= 0: the model prefers the wrong answer"
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(gap), (n_boot, len(gap)), generator=gen)
    lower = float(torch.quantile(gap[idx].mean(1), 1 - level))
    if not lower > 0:
        return (f"clean - corrupted metric gap {float(gap.mean()):.4g}, its {level:.0%} "
                f"bootstrap lower bound {lower:.4g} <= 0: the corruption does not clearly hurt")
    return None


def search_size(faith, total: int, *, threshold: float = 0.8, start: int = 25,
                step: int = 25, local_radius: int = 5, local_tol: float = 0.1) -> int:
    """Smallest size n in 1..total the search finds with faith(n) >= threshold (else total).

    Args:
        faith: size -> faithfulness (cache it: the search may ask for a size twice).
        total: largest size (all edges).
        threshold, start, step: the stepped search (see the module docstring).
        local_radius: half-width of the local linear search around close midpoints (0: off).
        local_tol: a midpoint is close when |faith - threshold| <= local_tol * threshold.
    """
    if local_radius < 0 or start < 1 or step < 1:
        raise ValueError(f"need start >= 1, step >= 1, local_radius >= 0; got start={start}, "
                         f"step={step}, local_radius={local_radius}")
    hi = min(start, total)
    while faith(hi) < threshold and hi < total:
        hi = min(hi + step, total)
    first, lo = hi, max(0, hi - step)
    floor = lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        score = faith(mid)
        if score >= threshold:
            hi = mid
        else:
            lo = mid
        if local_radius and abs(score - threshold) <= local_tol * threshold:
            for n in range(max(floor + 1, mid - local_radius), min(first, mid + local_radius) + 1):
                if n != mid and n < hi and faith(n) >= threshold:
                    hi = n
                    break
    return hi


def minimal_circuit(adapter, task, scores: torch.Tensor, *, threshold: float = 0.8,
                    start: int = 25, step: int = 25, batch_size: int = 16,
                    faithfulness: str = "ratio", local_radius: int = 5) -> CircuitResult:
    """Smallest greedy circuit reaching `threshold` faithfulness (stepped, binary, local search)."""
    g = graph_of(adapter)
    order = greedy_order(scores, g)
    z_corr = corrupted_activations(adapter, task, batch_size)
    m_clean, m_corr = (float(evaluate_circuit(adapter, task, None, batch_size=batch_size,
                                              run=run).mean()) for run in ("clean", "corrupted"))
    cache: dict[int, float] = {}

    def faith(n: int) -> float:
        if n not in cache:
            mask = circuit_from_order(order, n, g)
            m = evaluate_circuit(adapter, task, mask, batch_size=batch_size, z_corr=z_corr)
            cache[n] = faithfulness_of(float(m.mean()), m_clean, m_corr, faithfulness)
        return cache[n]

    n = search_size(faith, len(order), threshold=threshold, start=start, step=step,
                    local_radius=local_radius)
    mask = circuit_from_order(order, n, g)
    return CircuitResult(mask, int(mask.sum()), faith(n), m_clean, m_corr, len(cache))
