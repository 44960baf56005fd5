"""The EAP-IG computational graph of a decoder-only transformer.

Nodes (EAP-IG naming): `input` (token embeddings), one node per attention head
`a{l}.h{h}` (its output through its slice of W_O, without the output bias),
one per MLP `m{l}`, and `logits` (the residual stream before the final layer
norm). Each head has three *inputs* (its q, k and v copies of the pre-LN
residual), each MLP and `logits` one.

Source ("forward") index: `input` = 0, head (l, h) = 1 + l(H+1) + h, MLP l =
1 + l(H+1) + H. Destination ("backward") index: head (l, h) input q/k/v =
l(3H+1) + {0,1,2}H + h, MLP l = l(3H+1) + 3H, `logits` = L(3H+1).

Edges: every source to every destination input that reads it. With a parallel
block (GPT-NeoX: h_{l+1} = h_l + attn(LN1 h_l) + mlp(LN2 h_l)) `m{l}` reads only
layers < l; with a sequential block (OPT, GPT-2, Llama, OLMo) `m{l}` also reads
the heads of layer l. H counts query heads (grouped-query attention is ungrouped,
see `evals.circuits.llama`). Example (parallel, L=6, H=8, pythia-70m's shape): layer l has 1+9l
sources before it, each feeding 24 head inputs + 1 MLP input: sum over
l of 25(1+9l) = 3,525, plus 55 sources into `logits` = 3,580 edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

QKV = ("q", "k", "v")


@dataclass(frozen=True)
class Graph:
    """Index arithmetic and the edge mask of a model's graph.

    Attributes:
        n_layers: number of transformer blocks L.
        n_heads: attention heads per block H.
        parallel: GPT-NeoX-style parallel attention + MLP (MLP l does not read layer l's heads).
    """

    n_layers: int
    n_heads: int
    parallel: bool

    @property
    def n_forward(self) -> int:
        return 1 + self.n_layers * (self.n_heads + 1)

    @property
    def n_backward(self) -> int:
        return self.n_layers * (3 * self.n_heads + 1) + 1

    def head_src(self, layer: int, head: int) -> int:
        return 1 + layer * (self.n_heads + 1) + head

    def mlp_src(self, layer: int) -> int:
        return 1 + layer * (self.n_heads + 1) + self.n_heads

    def head_dst(self, layer: int, head: int, which: int) -> int:
        """Destination index of head (layer, head)'s q (0), k (1) or v (2) input."""
        return layer * (3 * self.n_heads + 1) + which * self.n_heads + head

    def mlp_dst(self, layer: int) -> int:
        return layer * (3 * self.n_heads + 1) + 3 * self.n_heads

    @property
    def logits_dst(self) -> int:
        return self.n_layers * (3 * self.n_heads + 1)

    def n_sources_before(self, layer: int, mlp: bool = False) -> int:
        """Sources a destination of `layer` may read (they are a prefix of the forward index)."""
        n = 1 + layer * (self.n_heads + 1)
        return n + self.n_heads if (mlp and not self.parallel) else n

    @cached_property
    def edge_mask(self) -> torch.Tensor:
        """(n_forward, n_backward) bool: True where u -> v is a real edge."""
        mask = torch.zeros(self.n_forward, self.n_backward, dtype=torch.bool)
        H = self.n_heads
        for layer in range(self.n_layers):
            first = self.head_dst(layer, 0, 0)
            mask[: self.n_sources_before(layer), first: first + 3 * H] = True
            mask[: self.n_sources_before(layer, mlp=True), self.mlp_dst(layer)] = True
        mask[:, self.logits_dst] = True
        return mask

    @property
    def n_edges(self) -> int:
        return int(self.edge_mask.sum())

    def expected_edges(self) -> int:
        """The closed-form edge count (checked against `edge_mask` in the tests)."""
        L, H = self.n_layers, self.n_heads
        total = self.n_forward  # into logits
        for layer in range(L):
            before = 1 + layer * (H + 1)
            total += 3 * H * before + before + (0 if self.parallel else H)
        return total

    @cached_property
    def src_names(self) -> list[str]:
        names = ["input"]
        for layer in range(self.n_layers):
            names += [f"a{layer}.h{h}" for h in range(self.n_heads)] + [f"m{layer}"]
        return names

    @cached_property
    def dst_names(self) -> list[str]:
        names = []
        for layer in range(self.n_layers):
            for which in QKV:
                names += [f"a{layer}.h{h}<{which}>" for h in range(self.n_heads)]
            names.append(f"m{layer}")
        return names + ["logits"]

    def edge_name(self, src: int, dst: int) -> str:
        """EAP-IG style: `a0.h3->m1`, `input->a1.h2<q>`, `m1->logits`."""
        return f"{self.src_names[src]}->{self.dst_names[dst]}"

    def dst_node_src(self, dst: int) -> int | None:
        """The source index of the node owning destination `dst` (None for logits)."""
        if dst == self.logits_dst:
            return None
        layer, rest = divmod(dst, 3 * self.n_heads + 1)
        if rest == 3 * self.n_heads:
            return self.mlp_src(layer)
        return self.head_src(layer, rest % self.n_heads)

    def src_node_dsts(self, src: int) -> list[int]:
        """Destination indices (inputs) of the node of source `src` (empty for input)."""
        if src == 0:
            return []
        layer, rest = divmod(src - 1, self.n_heads + 1)
        if rest == self.n_heads:
            return [self.mlp_dst(layer)]
        return [self.head_dst(layer, rest, w) for w in range(3)]
