"""Circuits on Llama-style models (issue 20): Llama (RMSNorm, SwiGLU, rotary, grouped-query
attention) and OLMo (weightless LayerNorm, clip_qkv) pass the equality and patching tests of
GPT-NeoX, OPT and GPT-2 (tests/test_circuits.py)."""

from __future__ import annotations

import pytest
import torch

from dynamics.tiny import tiny_llama, tiny_olmo, word_tokenizer
from evals.circuits.attribution import corrupted_activations, edge_scores, evaluate_circuit
from evals.circuits.graph import Graph
from evals.circuits.model_surgery import UnsupportedModelError, adapter_for, graph_forward, graph_of
from evals.circuits.tasks import induction

D, FF = 32, 64


def _llama_params(vocab, layers, heads, kv_heads, hd, bias=False):
    attn = D * heads * hd * 2 + D * kv_heads * hd * 2 + (
        (2 * heads + 2 * kv_heads) * hd if bias else 0)  # q, o + k, v (+ biases; o's is D)
    attn += D - heads * hd if bias else 0  # o_proj's bias has D entries, not heads * hd
    return 2 * vocab * D + layers * (attn + 3 * D * FF + 2 * D) + D


def _llama(vocab=64, layers=2, heads=2, kv_heads=1, seed=3, **extra):
    hd = extra.get("head_dim", D // heads)
    return tiny_llama(vocab_size=vocab, hidden_size=D, num_layers=layers, num_heads=heads,
                      num_kv_heads=kv_heads, intermediate_size=FF, seed=seed,
                      expected_params=_llama_params(vocab, layers, heads, kv_heads, hd,
                                                    extra.get("attention_bias", False)), **extra)


def _olmo(vocab=64, layers=2, heads=2, seed=3, clip_qkv=0.05):
    return tiny_olmo(vocab_size=vocab, hidden_size=D, num_layers=layers, num_heads=heads,
                     intermediate_size=FF, clip_qkv=clip_qkv, seed=seed,
                     expected_params=2 * vocab * D + layers * (4 * D * D + 3 * D * FF))


BUILDERS = {
    "llama-gqa": lambda **k: _llama(heads=4, kv_heads=2, **k),
    "llama-mqa-bias-hd16": lambda **k: _llama(heads=4, kv_heads=1, head_dim=16,
                                              attention_bias=True, **k),
    "llama-mha": lambda **k: _llama(heads=4, kv_heads=4, **k),
    "olmo-clip": lambda **k: _olmo(heads=4, **k),
}


@pytest.mark.parametrize("arch", list(BUILDERS))
def test_graph_forward_equals_hf_forward(arch):
    model = BUILDERS[arch](vocab=96, seed=1)
    ids = torch.randint(3, 96, (3, 11), generator=torch.Generator().manual_seed(0))
    adapter = adapter_for(model)
    with torch.no_grad():
        ref = model(ids).logits
        run = graph_forward(adapter, ids)
    torch.testing.assert_close(run.logits, ref, atol=1e-6, rtol=1e-4)
    g = graph_of(adapter)
    assert not g.parallel and (g.n_layers, g.n_heads) == (2, 4)  # H = query heads
    assert run.z.shape == (3, 11, g.n_forward, D)
    assert [tuple(p.shape) for p in run.patterns] == [(3, 4, 11, 11)] * 2


def test_clip_qkv_is_applied():
    """OLMo's clip_qkv is active on this tiny model (else the OLMo case would not test it)."""
    ids = torch.randint(3, 96, (2, 9), generator=torch.Generator().manual_seed(0))
    clipped = _olmo(vocab=96, heads=4, seed=1)
    free = _olmo(vocab=96, heads=4, seed=1, clip_qkv=None)
    with torch.no_grad():
        assert not torch.allclose(clipped(ids).logits, free(ids).logits, atol=1e-5)


@pytest.mark.parametrize(("layers", "heads"), [(2, 4), (16, 32), (3, 5)])
def test_llama_edge_counts_follow_the_sequential_formula(layers, heads):
    """Sequential graph with H query heads: layer l has 1 + l(H+1) sources before it feeding
    3H head inputs, and 1 + l(H+1) + H feeding its MLP; all 1 + L(H+1) feed logits."""
    formula = sum(3 * heads * (1 + ly * (heads + 1)) + 1 + ly * (heads + 1) + heads
                  for ly in range(layers)) + 1 + layers * (heads + 1)
    g = Graph(layers, heads, parallel=False)
    assert g.expected_edges() == formula
    if layers < 10:
        assert g.n_edges == formula
    assert Graph(16, 32, parallel=False).expected_edges() == 386_713  # Llama-3.2-1B (16 x 32)
    tiny = graph_of(adapter_for(_llama(heads=4, kv_heads=2)))
    assert tiny.n_edges == 110  # l0: 12 + 5, l1: 12*6 + 10, logits 11


def test_olmo2_is_refused_with_the_reason():
    from transformers import Olmo2Config, Olmo2ForCausalLM

    model = Olmo2ForCausalLM(Olmo2Config(vocab_size=64, hidden_size=D, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=FF))
    with pytest.raises(UnsupportedModelError, match="post-norm.*supported: gpt_neox, opt, gpt2, "
                                                    "llama, olmo"):
        adapter_for(model)


def _tiny(arch, seed=3):
    model = {"llama": _llama, "olmo": lambda seed: _olmo(seed=seed, clip_qkv=0.3)}[arch](seed=seed)
    return adapter_for(model), induction((3, 64), 12, seed=seed, seq_len=6)


def _patching_effects(adapter, task, z_corr) -> torch.Tensor:
    """clean metric - metric with edge u -> v alone carrying z_corr, for every edge."""
    g = graph_of(adapter)
    clean = evaluate_circuit(adapter, task, None, run="clean").mean()
    exact = torch.zeros(g.n_forward, g.n_backward)
    for u, v in g.edge_mask.nonzero().tolist():
        circuit = g.edge_mask.clone()
        circuit[u, v] = False
        exact[u, v] = clean - evaluate_circuit(adapter, task, circuit, z_corr=z_corr).mean()
    return exact


@pytest.mark.parametrize("arch", ["llama", "olmo"])
def test_eap_is_the_derivative_of_edge_patching(arch):
    """Plain EAP (m = 1) is the first-order term of edge patching: with z_corr moved to
    z_clean + eps (z_corr - z_clean), the patching effect / eps tends to the EAP score."""
    from evals.circuits.attribution import batches

    adapter, task = _tiny(arch)
    g = graph_of(adapter)
    eps = 1e-2
    with torch.no_grad():
        z = [graph_forward(adapter, b["clean"]).z for b in batches(task, 16, 64, "cpu")]
    z = [c + eps * (k - c) for c, k in zip(z, corrupted_activations(adapter, task, 16),
                                            strict=True)]
    a = edge_scores(adapter, task, ig_steps=1, batch_size=6)[g.edge_mask]
    b = _patching_effects(adapter, task, z)[g.edge_mask] / eps
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.999
    assert (a - b).abs().max() < 0.05 * b.abs().max()


@pytest.mark.parametrize("arch", ["llama", "olmo"])
def test_eap_ig_matches_brute_force_edge_patching(arch):
    """Full corruption. Plain EAP correlates only 0.79-0.94 with it on these tiny models (the
    norms of a small residual are far from linear), EAP-IG with m = 5 at >= 0.99."""
    adapter, task = _tiny(arch)
    g = graph_of(adapter)
    a = edge_scores(adapter, task, ig_steps=5, batch_size=6)[g.edge_mask]
    b = _patching_effects(adapter, task, corrupted_activations(adapter, task, 16))[g.edge_mask]
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.98
    top_a = set(a.abs().topk(5).indices.tolist())
    top_b = set(b.abs().topk(5).indices.tolist())
    assert b.abs().argmax().item() in top_a and len(top_a & top_b) >= 4


@pytest.mark.parametrize("arch", ["llama", "olmo"])
def test_full_circuit_is_model_and_empty_circuit_is_corrupted(arch):
    adapter, task = _tiny(arch)
    g = graph_of(adapter)
    clean = evaluate_circuit(adapter, task, None, run="clean")
    corrupted = evaluate_circuit(adapter, task, None, run="corrupted")
    assert not torch.allclose(clean, corrupted)
    torch.testing.assert_close(evaluate_circuit(adapter, task, g.edge_mask), clean,
                               atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(evaluate_circuit(adapter, task, torch.zeros_like(g.edge_mask)),
                               corrupted, atol=1e-5, rtol=1e-4)


def test_eap_ig_input_edges_are_the_riemann_sum_on_llama():
    """As for NeoX/OPT (issue 17): the input node's edges sum to the right Riemann sum of
    (e_corr - e_clean) . dL/de along corrupted -> clean, by autograd through HF's forward."""
    from tests.test_circuits import _hand_input_riemann_sum

    adapter, task = _tiny("llama")
    got = float(edge_scores(adapter, task, ig_steps=2, batch_size=5)[0].sum())
    assert got == pytest.approx(_hand_input_riemann_sum(adapter, task, [0.5, 1.0]), rel=1e-4,
                                abs=1e-6)


def test_gqa_key_edges_are_per_query_head():
    """EAP-IG ungroups GQA: patching input -> a0.h0<k> changes head 0's pattern only, although
    heads 0 and 1 share one kv head; patching a0.h1<k> changes head 1 only."""
    adapter = adapter_for(_llama(heads=4, kv_heads=2, seed=4))
    g = graph_of(adapter)
    gen = torch.Generator().manual_seed(0)
    clean, corr = torch.randint(3, 64, (2, 2, 8), generator=gen)
    with torch.no_grad():
        base = graph_forward(adapter, clean)
        z_corr = graph_forward(adapter, corr).z
        for head in (0, 1):
            out_mask = torch.zeros(g.n_forward, g.n_backward, dtype=torch.bool)
            out_mask[0, g.head_dst(0, head, 1)] = True
            pat = graph_forward(adapter, clean, patch=(z_corr, out_mask)).patterns[0]
            changed = [(pat[:, h] - base.patterns[0][:, h]).abs().max() > 1e-4 for h in range(4)]
            assert changed == [h == head for h in range(4)], head


def test_components_run_on_llama():
    """Attention-pattern, copy and successor scores; successor equals a loop over HF's raw
    weights with head h reading v_proj rows of its kv group h // 2."""
    from evals.circuits.components import attention_scores, copy_scores
    from evals.circuits.successor import DAYS, successor_scores

    words = ([str(i) for i in range(1, 6)] + list(DAYS)
             + "Then, and went to the gave a to . Mary John Anna Tom store ring".split())
    tok = word_tokenizer(words)
    model = _llama(vocab=len(tok), heads=4, kv_heads=2, seed=5)
    adapter = adapter_for(model)
    att = attention_scores(adapter, (3, len(tok)), n_seqs=2, seq_len=8, bos_id=0)
    assert {k: tuple(t.shape) for k, t in att.items()} == {
        "induction": (2, 4), "previous-token": (2, 4), "duplicate-token": (2, 4)}
    with torch.no_grad():  # RMSNorm weights that change the top-5 if they were applied
        for blk in model.model.layers:
            blk.input_layernorm.weight.uniform_(-2, 2)
    copy = copy_scores(adapter, tok, n_prompts=6)
    assert copy.shape == (2, 4) and ((copy >= 0) & (copy <= 1)).all()
    real = adapter.attn
    adapter.attn = lambda layer, x, pre_ln=True: real(layer, x, pre_ln=True)
    assert not torch.equal(copy, copy_scores(adapter, tok, n_prompts=6))  # the readout skips N1
    adapter.attn = real
    scores, pairs = successor_scores(adapter, tok, min_pairs=5)
    assert pairs.n_kept == 11
    torch.testing.assert_close(scores, _successor_by_hand(model, pairs.groups))
    assert len(set(scores.flatten().tolist())) > 1


def _successor_by_hand(model, groups) -> torch.Tensor:
    hd, rep = D // 4, 2
    layers = model.model.layers
    out = torch.zeros(2, 4)
    n = 0
    with torch.no_grad():
        for inputs, targets in groups.values():
            for x, y in zip(inputs, targets, strict=True):
                n += 1
                e = layers[0].mlp(model.model.embed_tokens.weight[x])
                for ly in range(2):
                    sa = layers[ly].self_attn
                    for h in range(4):
                        kv = h // rep
                        o = sa.o_proj.weight[:, h * hd:(h + 1) * hd] @ (
                            sa.v_proj.weight[kv * hd:(kv + 1) * hd] @ e)
                        logit = {t: float(model.lm_head.weight[t] @ o) for t in set(targets)}
                        out[ly, h] += logit[y] >= max(logit.values())
    return out / n


@pytest.mark.parametrize("arch", ["llama", "olmo"])
def test_circuits_evaluator_through_the_sweep_on_a_llama_suite(tmp_path, arch):
    """A local suite of tiny Llamas / OLMos (saved, reloaded by AutoModelForCausalLM): edges,
    summary and component rows as for GPT-NeoX (tests/test_circuits.py)."""
    import polars as pl

    from evals.config import load_batch
    from evals.execute import run_batch
    from evals.store import Store
    from tests.helpers import make_tiny_suite

    suite = make_tiny_suite(tmp_path / "suite", arch, steps=(0, 10))
    cfg = load_batch({"suite": str(suite), "output": str(tmp_path / "out"), "evaluators": {
        "circuits": {"tasks": ["induction"], "n_examples": 8, "ig_steps": 2, "batch_size": 8,
                     "search_start": 20, "search_step": 20, "component_seq_len": 16,
                     "faithfulness": "normalized", "perform_level": 0}}})
    assert not run_batch(cfg, progress=False).failed
    store = Store(tmp_path / "out")
    edges, summary = store.read("circuit-edges"), store.read("circuit-summary")
    assert edges.group_by("step").len()["len"].to_list() == [110] * 2  # Graph(2, 4, sequential)
    assert "input->a1.h3<k>" in set(edges["edge"]) and (summary["faithfulness"] >= 0.8).all()
    comps = store.read("components")
    assert set(comps["kind"]) >= {"induction", "previous-token", "duplicate-token"}
    assert comps.filter(pl.col("kind") == "induction").height == 2 * 2 * 4


def test_prepend_bos_uses_eos_where_the_tokenizer_has_no_bos():
    """OLMo's tokenizer has no BOS: `prepend_bos` prepends its EOS (the project's start-token
    rule, as in evals.sequences), not nothing; a tokenizer with a BOS gets the BOS."""
    from evals.circuits.tasks import make_task

    words = "Then, and went to the gave a to . Mary John Anna Tom store ring".split()
    tok = word_tokenizer(words)
    with_bos = make_task("ioi", tok, 4, seed=1, bos=True)
    assert {c[0] for c in with_bos.clean} == {tok.bos_token_id}
    tok.add_special_tokens({"eos_token": "</s>"})
    tok.bos_token = None
    assert tok.bos_token_id is None and tok.eos_token_id == len(tok) - 1 != 0
    no_bos = make_task("ioi", tok, 4, seed=1, bos=True)
    assert {c[0] for c in no_bos.clean} == {tok.eos_token_id}
    assert [c[1:] for c in no_bos.clean] == [c[1:] for c in with_bos.clean]
