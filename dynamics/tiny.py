"""Tiny models, tokenizers and local suites built from explicit configs.

Tests, benchmarks and the toy suite use these: no hub, seeded, and every
factory checks the parameter count it produced (HF configs accept misspelled
keys silently, so a typo would otherwise give a different model).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>", "<|unk|>"]


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 512):
    """A byte-level BPE tokenizer trained on `texts`, as a `PreTrainedTokenizerFast`.

    `<|endoftext|>` is bos/eos, `<|pad|>` pads; no BOS is added when encoding
    (like Pythia's tokenizer).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return _wrap(tok, PreTrainedTokenizerFast)


def word_tokenizer(words: Sequence[str]):
    """A whitespace word-level tokenizer over a fixed vocabulary (specials first)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIAL_TOKENS)}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return _wrap(tok, PreTrainedTokenizerFast)


def _wrap(tok, cls):
    return cls(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|unk|>",
        pad_token="<|pad|>",
    )


def count_params(model: torch.nn.Module) -> int:
    """Total parameters, counting tied weights once."""
    return sum(p.numel() for p in model.parameters())


def _check_size(model: torch.nn.Module, expected: int | None) -> torch.nn.Module:
    n = count_params(model)
    if expected is not None and n != expected:
        raise AssertionError(f"built a model with {n} params, expected {expected}: check config keys")
    return model


def tiny_gpt_neox(
    vocab_size: int = 128,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 64,
    max_positions: int = 128,
    seed: int = 0,
    expected_params: int | None = None,
    **extra,
):
    """A seeded GPTNeoX (Pythia architecture: parallel residual, rotary on 25% of dims)."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    cfg = GPTNeoXConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_positions,
        rotary_pct=0.25,
        use_parallel_residual=True,
        bos_token_id=0,
        eos_token_id=0,
        **extra,
    )
    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(cfg).eval()
    assert model.config.num_hidden_layers == num_layers and model.config.hidden_size == hidden_size
    return _check_size(model, expected_params)


def tiny_opt(
    vocab_size: int = 128,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    ffn_dim: int = 64,
    max_positions: int = 128,
    seed: int = 0,
    expected_params: int | None = None,
    **extra,
):
    """A seeded OPT (sequential residual, pre-LN, learned positions, tied head)."""
    from transformers import OPTConfig, OPTForCausalLM

    cfg = OPTConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        ffn_dim=ffn_dim,
        max_position_embeddings=max_positions,
        word_embed_proj_dim=hidden_size,
        do_layer_norm_before=True,
        dropout=0.0,
        attention_dropout=0.0,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=1,
        **extra,
    )
    torch.manual_seed(seed)
    model = OPTForCausalLM(cfg).eval()
    assert model.config.ffn_dim == ffn_dim and model.config.num_hidden_layers == num_layers
    return _check_size(model, expected_params)


def tiny_gpt2(
    vocab_size: int = 128,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    max_positions: int = 128,
    seed: int = 0,
    expected_params: int | None = None,
    **extra,
):
    """A seeded GPT-2 (sequential residual, learned positions, tied head)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        vocab_size=vocab_size,
        n_embd=hidden_size,
        n_layer=num_layers,
        n_head=num_heads,
        n_positions=max_positions,
        bos_token_id=0,
        eos_token_id=0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        **extra,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(cfg).eval()
    assert model.config.n_layer == num_layers and model.config.n_embd == hidden_size
    return _check_size(model, expected_params)


def tiny_llama(
    vocab_size: int = 128,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 64,
    max_positions: int = 128,
    seed: int = 0,
    expected_params: int | None = None,
    **extra,
):
    """A seeded Llama (RMSNorm, SwiGLU MLP, rotary, grouped-query attention, untied head).

    `num_kv_heads` < `num_heads` gives grouped-query attention (Llama 2 70B, Llama 3);
    the default, 2 kv heads for 4 query heads, exercises it.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
        **({"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 1} | extra),
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    attn = model.model.layers[0].self_attn
    assert model.config.num_key_value_heads == num_kv_heads and attn.num_key_value_groups == (
        num_heads // num_kv_heads)
    assert model.config.intermediate_size == intermediate_size
    return _check_size(model, expected_params)


def tiny_olmo(
    vocab_size: int = 128,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 64,
    max_positions: int = 128,
    clip_qkv: float | None = None,
    seed: int = 0,
    expected_params: int | None = None,
    **extra,
):
    """A seeded OLMo (v1, the `-hf` repos: weightless LayerNorm, SwiGLU, rotary, `clip_qkv`)."""
    from transformers import OlmoConfig, OlmoForCausalLM

    cfg = OlmoConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_positions,
        clip_qkv=clip_qkv,
        tie_word_embeddings=False,
        **({"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 1} | extra),
    )
    torch.manual_seed(seed)
    model = OlmoForCausalLM(cfg).eval()
    assert model.config.clip_qkv == clip_qkv and model.config.intermediate_size == intermediate_size
    return _check_size(model, expected_params)


def save_checkpoint(model, tokenizer, folder: str | Path) -> Path:
    """Save model (safetensors) + tokenizer as an HF-format folder."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Writing model shards" bar per checkpoint
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def save_pickle_checkpoint(model, tokenizer, folder: str | Path, shards: int = 1,
                           extra: dict | None = None) -> Path:
    """Save model + tokenizer as a pickle checkpoint, the way Pythia's revisions are laid out.

    One `pytorch_model.bin` (shards = 1), or `pytorch_model-0000N-of-0000M.bin` files with a
    `pytorch_model.bin.index.json` whose `weight_map` names each tensor's shard. `extra`
    adds entries to the state dict (Pythia's files also hold the attention buffers
    `attention.bias`, `attention.masked_bias` and `attention.rotary_emb.inv_freq`).
    """
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    state.update(extra or {})
    if shards == 1:
        torch.save(state, folder / "pytorch_model.bin")
        return folder
    keys = list(state)
    per = -(-len(keys) // shards)
    weight_map = {}
    for i in range(shards):
        name = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
        part = {k: state[k] for k in keys[i * per:(i + 1) * per]}
        torch.save(part, folder / name)
        weight_map.update(dict.fromkeys(part, name))
    total = sum(v.numel() * v.element_size() for v in state.values())
    (folder / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return folder
