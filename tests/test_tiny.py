import pytest

from dynamics.tiny import count_params, tiny_gpt2, tiny_gpt_neox, tiny_opt


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


def test_expected_params_guard_catches_wrong_config():
    with pytest.raises(AssertionError, match="expected"):
        tiny_gpt_neox(expected_params=123)
