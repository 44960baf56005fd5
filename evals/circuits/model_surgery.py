"""Per-architecture paths and the graph forward: a transformer run node by node.

`graph_forward` re-runs a Hugging Face GPT-NeoX, OPT, GPT-2, Llama or OLMo
model (Llama-style paths in `evals.circuits.llama`) from its own modules
(embeddings, layer norms, projection weights, MLP modules, rotary
embedding), exposing what EAP-IG needs and HF's fused forward hides: every
head's output through its slice of W_O (no output bias), and a separate
pre-LN copy of the residual for each head's q, k and v input, each MLP input
and the logits input. With no intervention it equals the HF forward (tested).

Interventions are edge-level: with `patch=(z_corrupted, out_mask)` each
destination v reads `x_v = resid + sum_u out_mask[u, v] (z_u_corr - z_u)`, so
the edges with out_mask = 1 carry the corrupted activations of their source
and all other edges the activations of this very run.

Every adapter's `attn(layer, x, pre_ln=True)` returns the per-head outputs
(b, p, H, d), the output bias and the pattern; `pre_ln=False` skips the
layer's input LayerNorm (the copy score reads the OV circuit on the raw
residual, as Tigges et al.'s code does).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from evals.circuits.graph import Graph
from evals.circuits.heads import (
    UnsupportedModelError,
    _Adapter,
    _attend,
    _per_head_out,
    _project,
)
from evals.circuits.llama import LlamaAdapter

__all__ = ["ADAPTERS", "GraphRun", "UnsupportedModelError", "adapter_for", "graph_forward",
           "graph_of"]


class NeoXAdapter(_Adapter):
    """GPT-NeoX (Pythia): fused, per-head-interleaved query_key_value ([H, 3, hd, d]), rotary."""

    def __init__(self, model):
        super().__init__(model)
        cfg = model.config
        self.base = model.gpt_neox
        self.n_layers, self.n_heads = cfg.num_hidden_layers, cfg.num_attention_heads
        self.d_model = cfg.hidden_size
        self.hd = self.d_model // self.n_heads
        self.parallel = bool(cfg.use_parallel_residual)

    def embed(self, ids):
        return self.base.embed_in(ids)

    def attn(self, layer, x, pre_ln: bool = True):
        blk = self.base.layers[layer]
        H, hd, d = self.n_heads, self.hd, self.d_model
        xl = blk.input_layernorm(x) if pre_ln else x  # (b, p, 3, H, d)
        w = blk.attention.query_key_value.weight.view(H, 3, hd, d)
        b = blk.attention.query_key_value.bias
        b = b.view(H, 3, hd) if b is not None else None
        q, k, v = (_project(xl[:, :, i], w[:, i], None if b is None else b[:, i]) for i in range(3))
        pos = torch.arange(x.shape[1], device=x.device).unsqueeze(0).expand(x.shape[0], -1)
        cos, sin = self.base.rotary_emb(q, position_ids=pos)
        from transformers.models.gpt_neox.modeling_gpt_neox import apply_rotary_pos_emb

        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        ctx, pattern = _attend(q, k, v, hd**-0.5)
        dense = blk.attention.dense
        return _per_head_out(ctx, dense.weight.view(d, H, hd)), dense.bias, pattern

    def mlp(self, layer, x):
        blk = self.base.layers[layer]
        return blk.mlp(blk.post_attention_layernorm(x))

    def unembed(self, x):
        return self.model.get_output_embeddings()(self.base.final_layer_norm(x))


class OPTAdapter(_Adapter):
    """OPT (pre-LN sizes): separate q/k/v/out projections with biases, learned positions."""

    parallel = False

    def __init__(self, model):
        super().__init__(model)
        cfg = model.config
        self.dec = model.model.decoder
        if not cfg.do_layer_norm_before or self.dec.project_in is not None:
            raise UnsupportedModelError(
                "OPT with post-LN or project_in/out (opt-350m) is not decomposable into the graph")
        self.n_layers, self.n_heads = cfg.num_hidden_layers, cfg.num_attention_heads
        self.d_model = cfg.hidden_size
        self.hd = self.d_model // self.n_heads

    def embed(self, ids):
        return self.dec.embed_tokens(ids)

    def const(self, ids):
        pos = torch.arange(ids.shape[1], device=ids.device) + self.dec.embed_positions.offset
        return self.dec.embed_positions.weight[pos].unsqueeze(0)

    def attn(self, layer, x, pre_ln: bool = True):
        blk = self.dec.layers[layer]
        sa, H, hd, d = blk.self_attn, self.n_heads, self.hd, self.d_model
        xl = blk.self_attn_layer_norm(x) if pre_ln else x
        projs = (sa.q_proj, sa.k_proj, sa.v_proj)
        q, k, v = (_project(xl[:, :, i], p.weight.view(H, hd, d),
                            None if p.bias is None else p.bias.view(H, hd))
                   for i, p in enumerate(projs))
        ctx, pattern = _attend(q, k, v, hd**-0.5)
        return _per_head_out(ctx, sa.out_proj.weight.view(d, H, hd)), sa.out_proj.bias, pattern

    def mlp(self, layer, x):
        blk = self.dec.layers[layer]
        return blk.fc2(blk.activation_fn(blk.fc1(blk.final_layer_norm(x))))

    def unembed(self, x):
        return self.model.lm_head(self.dec.final_layer_norm(x))


class GPT2Adapter(_Adapter):
    """GPT-2: Conv1D c_attn ([d, 3d], x @ W) and c_proj, learned positions."""

    parallel = False

    def __init__(self, model):
        super().__init__(model)
        cfg = model.config
        self.tr = model.transformer
        self.n_layers, self.n_heads, self.d_model = cfg.n_layer, cfg.n_head, cfg.n_embd
        self.hd = self.d_model // self.n_heads

    def embed(self, ids):
        return self.tr.wte(ids)

    def const(self, ids):
        return self.tr.wpe(torch.arange(ids.shape[1], device=ids.device)).unsqueeze(0)

    def attn(self, layer, x, pre_ln: bool = True):
        blk = self.tr.h[layer]
        H, hd, d = self.n_heads, self.hd, self.d_model
        xl = blk.ln_1(x) if pre_ln else x
        w = blk.attn.c_attn.weight.view(d, 3, H, hd).permute(1, 2, 3, 0)  # (3, H, hd, d)
        b = blk.attn.c_attn.bias.view(3, H, hd)
        q, k, v = (_project(xl[:, :, i], w[i], b[i]) for i in range(3))
        ctx, pattern = _attend(q, k, v, hd**-0.5)
        w_o = blk.attn.c_proj.weight.view(H, hd, d).permute(2, 0, 1)  # (d, H, hd)
        return _per_head_out(ctx, w_o), blk.attn.c_proj.bias, pattern

    def mlp(self, layer, x):
        blk = self.tr.h[layer]
        return blk.mlp(blk.ln_2(x))

    def unembed(self, x):
        return self.model.lm_head(self.tr.ln_f(x))


ADAPTERS = {"gpt_neox": NeoXAdapter, "opt": OPTAdapter, "gpt2": GPT2Adapter,
            "llama": LlamaAdapter, "olmo": LlamaAdapter}
NOT_DECOMPOSABLE = {
    "olmo2": "OLMo-2 normalises the sum of the heads after attention (post-norm) and q/k over "
             "all heads jointly, so a head's output is not a term of the residual stream",
}


def adapter_for(model) -> _Adapter:
    """The architecture path of a HF causal LM; raises UnsupportedModelError naming the allowed types."""
    kind = getattr(model.config, "model_type", None)
    if kind not in ADAPTERS:
        why = f" ({NOT_DECOMPOSABLE[kind]})" if kind in NOT_DECOMPOSABLE else ""
        raise UnsupportedModelError(
            f"model_type {kind!r} has no circuit graph{why}; supported: {', '.join(ADAPTERS)}")
    return ADAPTERS[kind](model)


def graph_of(adapter) -> Graph:
    return Graph(adapter.n_layers, adapter.n_heads, adapter.parallel)


@dataclass
class GraphRun:
    """What one graph forward exposes.

    Attributes:
        logits: (batch, pos, vocab).
        z: (batch, pos, n_forward, d_model) every source node's output.
        inputs: destination input tensors in order, per layer (b, p, 3H, d) for the
            heads then (b, p, d) for the MLP, then (b, p, d) for logits (for autograd.grad).
        patterns: per layer (batch, head, pos, pos) attention probabilities.
    """

    logits: torch.Tensor
    z: torch.Tensor
    inputs: list[torch.Tensor]
    patterns: list[torch.Tensor]


def _patched(base, zs, patch, dsts: slice | int, n_src: int):
    """base + sum_u out_mask[u, dst] (z_corr_u - z_u) over the first n_src sources."""
    if patch is None:
        return base
    z_corr, out_mask = patch
    diff = z_corr[:, :, :n_src] - torch.cat(zs, dim=2)[:, :, :n_src]  # (b, p, n_src, d)
    w = out_mask[:n_src, dsts].to(diff.dtype)
    if w.dim() == 1:
        return base + torch.einsum("bpfd,f->bpd", diff, w)
    return base + torch.einsum("bpfd,fk->bpkd", diff, w)


def graph_forward(adapter, input_ids, *, input_embeds=None, patch=None) -> GraphRun:
    """Run the model node by node (see the module docstring for `patch`).

    Args:
        input_ids: (batch, pos) token ids (right-padded; causal attention means
            real positions never see the padding, so no attention mask is needed).
        input_embeds: replaces the `input` node's output (EAP-IG interpolation).
        patch: (z_corrupted (b, p, n_forward, d), out_mask (n_forward, n_backward)).
    """
    g = graph_of(adapter)
    H = g.n_heads
    emb = adapter.embed(input_ids) if input_embeds is None else input_embeds
    resid = emb + adapter.const(input_ids)
    zs, inputs, patterns = [emb.unsqueeze(2)], [], []
    for layer in range(g.n_layers):
        first = g.head_dst(layer, 0, 0)
        x_heads = resid.unsqueeze(2).expand(-1, -1, 3 * H, -1)
        x_heads = _patched(x_heads, zs, patch, slice(first, first + 3 * H), g.n_sources_before(layer))
        inputs.append(x_heads)
        b, p = x_heads.shape[:2]
        heads, bias_o, pattern = adapter.attn(layer, x_heads.view(b, p, 3, H, -1))
        patterns.append(pattern)
        attn_out = heads.sum(2) + (bias_o if bias_o is not None else 0.0)
        zs.append(heads)
        mlp_base = resid if g.parallel else resid + attn_out
        x_mlp = _patched(mlp_base.clone(), zs, patch, g.mlp_dst(layer),
                         g.n_sources_before(layer, mlp=True))
        inputs.append(x_mlp)
        out = adapter.mlp(layer, x_mlp)
        zs.append(out.unsqueeze(2))
        resid = resid + attn_out + out
    x_logits = _patched(resid.clone(), zs, patch, g.logits_dst, g.n_forward)
    inputs.append(x_logits)
    return GraphRun(adapter.unembed(x_logits), torch.cat(zs, dim=2), inputs, patterns)
