"""The graph path of Llama-style models: Llama and OLMo (v1, the `-hf` repos).

Block (sequential residual, no biases unless the config asks for them)::

    h = h + o_proj(attn(rotary(q_proj(N1 h)), rotary(k_proj(N1 h)), v_proj(N1 h)))
    h = h + down_proj(act(gate_proj(N2 h)) * up_proj(N2 h))        # SwiGLU
    logits = lm_head(N_final h)

N is RMSNorm with a weight (Llama) or a LayerNorm without weight or bias
(OLMo); both are the model's own modules, applied to each destination's copy
of the residual. Rotary: the model's own `rotary_emb` (its `rope_parameters`,
including scaled rope types) and its module's `apply_rotary_pos_emb`, at
positions 0..p-1. OLMo's `clip_qkv` clamps q, k and v after the projection,
as HF does.

Grouped-query attention (num_key_value_heads < num_attention_heads): the graph
keeps one q, one k and one v input per *query* head, as EAP-IG does for GQA
models (it requires TransformerLens' `ungroup_grouped_query_attention`, which
gives every query head its own k/v input hooks): query head h reads its k and
v through the weights of its key/value group, kv head h // (H / H_kv) (HF's
`repeat_kv` order). So the edge counts are those of the sequential graph with
H = num_attention_heads, and patching an edge into a<l>.h<h><k> changes only
head h's keys, not those of the other heads of its group. With no intervention
all copies are equal and the forward equals HF's (tested).

Not decomposable here: OLMo-2 (`olmo2`) normalises the *sum* of the heads after
attention (post-norm) and q/k over all heads jointly, so a head's output is not
a term of the residual stream.
"""

from __future__ import annotations

import sys

import torch

from evals.circuits.heads import _Adapter, _attend, _per_head_out, _project


class LlamaAdapter(_Adapter):
    """Llama / OLMo: q/k/v/o projections, rotary, grouped-query attention, SwiGLU MLP."""

    parallel = False

    def __init__(self, model):
        super().__init__(model)
        cfg = model.config
        self.base = model.model
        self.n_layers, self.n_heads = cfg.num_hidden_layers, cfg.num_attention_heads
        self.n_kv_heads = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.d_model = cfg.hidden_size
        attn0 = self.base.layers[0].self_attn
        self.hd = attn0.head_dim  # may differ from d_model / H (Llama's `head_dim`)
        self.scale = attn0.scaling
        self.clip = getattr(cfg, "clip_qkv", None)
        self._rotary = sys.modules[type(attn0).__module__].apply_rotary_pos_emb

    def embed(self, ids):
        return self.base.embed_tokens(ids)

    def _per_query_head(self, proj, n_heads: int):
        """(weight (H, hd, d), bias (H, hd) or None): kv heads repeated to the query heads."""
        w = proj.weight.view(n_heads, self.hd, self.d_model)
        b = None if proj.bias is None else proj.bias.view(n_heads, self.hd)
        rep = self.n_heads // n_heads
        if rep > 1:
            w = w.repeat_interleave(rep, dim=0)
            b = None if b is None else b.repeat_interleave(rep, dim=0)
        return w, b

    def attn(self, layer, x, pre_ln: bool = True):
        blk = self.base.layers[layer]
        sa = blk.self_attn
        xl = blk.input_layernorm(x) if pre_ln else x  # (b, p, 3, H, d)
        sizes = (self.n_heads, self.n_kv_heads, self.n_kv_heads)
        q, k, v = (_project(xl[:, :, i], *self._per_query_head(p, n))
                   for i, (p, n) in enumerate(zip((sa.q_proj, sa.k_proj, sa.v_proj), sizes,
                                                  strict=True)))  # each (b, H, p, hd)
        if self.clip is not None:
            q, k, v = (t.clamp(-self.clip, self.clip) for t in (q, k, v))
        pos = torch.arange(x.shape[1], device=x.device).unsqueeze(0).expand(x.shape[0], -1)
        cos, sin = self.base.rotary_emb(q, position_ids=pos)
        q, k = self._rotary(q, k, cos, sin)
        ctx, pattern = _attend(q, k, v, self.scale)
        w_o = sa.o_proj.weight.view(self.d_model, self.n_heads, self.hd)
        return _per_head_out(ctx, w_o), sa.o_proj.bias, pattern

    def mlp(self, layer, x):
        blk = self.base.layers[layer]
        return blk.mlp(blk.post_attention_layernorm(x))

    def unembed(self, x):
        return self.model.get_output_embeddings()(self.base.norm(x))

    def ov_weights(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(W_V (H, hd, d) per query head, W_O (d, H, hd)) of one layer, without biases."""
        sa = self.base.layers[layer].self_attn
        w_v, _ = self._per_query_head(sa.v_proj, self.n_kv_heads)
        return w_v, sa.o_proj.weight.view(self.d_model, self.n_heads, self.hd)

    def mlp0(self, x: torch.Tensor) -> torch.Tensor:
        """Block 0's SwiGLU MLP on x without its pre-norm (successor scores)."""
        return self.base.layers[0].mlp(x)
