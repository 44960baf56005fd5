import pytest

from dynamics.tiny import count_params, tiny_gpt2, tiny_gpt_neox, tiny_llama, tiny_olmo, tiny_opt


def neox_formula(v, d, n_layers, ffn):
    per_layer = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * ffn + ffn) + (ffn * d + d)
    return v * d + n_layers * per_layer + 2 * d + v * d  # untied embed_out


def opt_formula(v, d, n_layers, ffn, positions):
    per_layer = 4 * (d * d + d) + (d * ffn + ffn) + (ffn * d + d) + 2 * 2 * d
    return v * d + (positions + 2) * d + n_layers * per_layer + 2 * d  # tied head


def test_tiny_sizes_match_their_configs():
    assert count_params(tiny_gpt_neox()) == neox_formula(128, 32, 2, 64) == 25_344
    assert count_params(tiny_opt()) == opt_formula(128, 32, 2, 64, 128)
    assert count_params(tiny_gpt2()) > 0


def llama_formula(v, d, n_layers, heads, kv_heads, ffn, norm_weights=True):
    hd = d // heads
    attn = 2 * d * heads * hd + 2 * d * kv_heads * hd  # q, o; k, v of the kv heads
    norms = 2 * d if norm_weights else 0
    return 2 * v * d + n_layers * (attn + 3 * d * ffn + norms) + (d if norm_weights else 0)


def test_tiny_llama_and_olmo_sizes_match_their_configs():
    """Issue 20: grouped-query attention (4 query, 2 kv heads) shrinks k/v; SwiGLU has 3
    matrices; OLMo's LayerNorms have no weights; both heads untied."""
    llama = tiny_llama()
    assert count_params(llama) == llama_formula(128, 32, 2, 4, 2, 64) == 26_784
    assert llama.model.layers[0].self_attn.k_proj.weight.shape == (16, 32)
    assert count_params(tiny_olmo()) == llama_formula(128, 32, 2, 4, 4, 64, False) == 28_672
    assert count_params(tiny_llama(num_kv_heads=4)) == llama_formula(128, 32, 2, 4, 4, 64)
    with pytest.raises(AssertionError, match="expected"):
        tiny_llama(expected_params=26_785)


def test_expected_params_guard_catches_wrong_config():
    with pytest.raises(AssertionError, match="expected"):
        tiny_gpt_neox(expected_params=123)
