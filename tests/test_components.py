"""Component scores (issue #6): successor heads, negative copy, the local circuit-size search."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from dynamics.tiny import tiny_gpt2, tiny_gpt_neox, tiny_opt, word_tokenizer
from evals.circuits.components import copy_scores
from evals.circuits.model_surgery import adapter_for
from evals.circuits.search import search_size
from evals.circuits.successor import DAYS, ordinal_lists, successor_pairs, successor_scores

D, FF = 32, 64
# 1..5, the days without Thursday, and A B: 4 number pairs, 5 day pairs, 1 letter pair
ORDINAL_WORDS = [str(i) for i in range(1, 6)] + [d for d in DAYS if d != "Thursday"] + ["A", "B"]
NAME_WORDS = "Then, and went to the gave a to . Mary John Anna Tom store ring garden bone".split()


def _neox(vocab: int, heads: int = 2, seed: int = 0):
    per_layer = 4 * D + (3 * D * D + 3 * D) + (D * D + D) + (D * FF + FF + FF * D + D)
    return tiny_gpt_neox(vocab_size=vocab, hidden_size=D, num_layers=2, num_heads=heads,
                         intermediate_size=FF, seed=seed,
                         expected_params=2 * vocab * D + 2 * per_layer + 2 * D)


def _opt(vocab: int, heads: int = 2, seed: int = 0):
    per_layer = 4 * D + 4 * (D * D + D) + (D * FF + FF + FF * D + D)
    return tiny_opt(vocab_size=vocab, hidden_size=D, num_layers=2, num_heads=heads, ffn_dim=FF,
                    seed=seed, expected_params=vocab * D + (128 + 2) * D + 2 * per_layer + 2 * D)


def test_ordinal_lists_have_tigges_variants():
    lists = ordinal_lists()
    assert lists["days"] == (True, DAYS)
    assert lists["inverted_capital_space_days"][1][0] == " monday"
    assert lists["inverted_capital_ordinals"][1][:2] == ("First", "Second")
    assert "inverted_capital_numbers" not in lists  # digits have no case: same list as numbers
    assert "inverted_capital_letters" not in lists and "inverted_capital_numerals" not in lists
    assert lists["space_numbers"][1][-1] == " 200" and len(lists["numbers"][1]) == 200
    assert lists["numerals"][1][17] == "XVIII" and lists["months_short"][1][-1] == "Dec"
    assert len(lists) == 30


def test_successor_pairs_keep_single_token_pairs_only():
    tok = word_tokenizer(ORDINAL_WORDS)
    pairs = successor_pairs(tok)
    assert pairs.counts["numbers"] == (4, 199)
    assert pairs.counts["days"] == (5, 7)  # Wed->Thu, Thu->Fri lost; Sun->Mon kept (cyclic)
    assert pairs.counts["letters"] == (1, 25) and pairs.counts["inverted_capital_days"] == (0, 7)
    assert pairs.counts["space_days"] == (5, 7)  # counted, but the same ids as "days": not scored
    assert list(pairs.groups) == ["numbers", "days"]  # letters: one successor only, dropped
    ids = tok.convert_tokens_to_ids
    assert pairs.groups["days"] == (ids(["Monday", "Tuesday", "Friday", "Saturday", "Sunday"]),
                                    ids(["Tuesday", "Wednesday", "Saturday", "Sunday", "Monday"]))
    assert pairs.n_kept == 9 and pairs.summary().startswith("9/")


def _head_ov(model, arch: str):
    """(W_E, MLP0 without LN, ov(layer, head) -> (W_V^h (hd, d), W_O^h (d, hd))) indexed by hand."""
    hd = D // model.config.num_attention_heads
    cut = lambda h, base=0: slice(base + h * hd, base + (h + 1) * hd)  # noqa: E731
    if arch == "neox":  # fused qkv rows: per head [q, k, v] blocks of hd
        base = model.gpt_neox
        att = lambda ly: base.layers[ly].attention  # noqa: E731
        return base.embed_in.weight, base.layers[0].mlp, lambda ly, h: (
            att(ly).query_key_value.weight[slice((3 * h + 2) * hd, (3 * h + 3) * hd)],
            att(ly).dense.weight[:, cut(h)])
    if arch == "opt":
        dec = model.model.decoder
        blk0 = dec.layers[0]
        sa = lambda ly: dec.layers[ly].self_attn  # noqa: E731
        return dec.embed_tokens.weight, lambda x: blk0.fc2(torch.relu(blk0.fc1(x))), \
            lambda ly, h: (sa(ly).v_proj.weight[cut(h)], sa(ly).out_proj.weight[:, cut(h)])
    tr = model.transformer  # Conv1D: x @ W, c_attn columns [q | k | v], c_proj rows per head
    at = lambda ly: tr.h[ly].attn  # noqa: E731
    return tr.wte.weight, tr.h[0].mlp, lambda ly, h: (
        at(ly).c_attn.weight[:, cut(h, 2 * D)].T, at(ly).c_proj.weight[cut(h)].T)


def _brute_force(model, arch: str, groups) -> torch.Tensor:
    """Per head, per pair: W_U[y] . W_O^h W_V^h MLP0(W_E[x]) from the raw HF weights, in loops."""
    w_e, mlp0, ov = _head_ov(model, arch)
    w_u = model.get_output_embeddings().weight
    n_layers, H = model.config.num_hidden_layers, model.config.num_attention_heads
    out = torch.zeros(n_layers, H)
    n = 0
    with torch.no_grad():
        for inputs, targets in groups.values():
            for x, y in zip(inputs, targets, strict=True):
                n += 1
                e = mlp0(w_e[x])
                for layer in range(n_layers):
                    for h in range(H):
                        w_v, w_o = ov(layer, h)
                        o = w_o @ (w_v @ e)
                        logit = {t: float(w_u[t] @ o) for t in set(targets)}
                        out[layer, h] += logit[y] >= max(logit.values())
    return out / n


def _gpt2(vocab: int, heads: int = 2, seed: int = 0):
    per_layer = 4 * D + (3 * D * D + 3 * D) + (D * D + D) + (8 * D * D + 5 * D)
    return tiny_gpt2(vocab_size=vocab, hidden_size=D, num_layers=2, num_heads=heads, seed=seed,
                     expected_params=vocab * D + 128 * D + 2 * per_layer + 2 * D)


@pytest.mark.parametrize("arch", ["neox", "opt", "gpt2"])
def test_successor_scores_equal_brute_force(arch):
    tok = word_tokenizer(ORDINAL_WORDS)
    model = {"neox": _neox, "opt": _opt, "gpt2": _gpt2}[arch](len(tok), heads=4, seed=1)
    scores, pairs = successor_scores(adapter_for(model), tok, min_pairs=5)
    assert scores.shape == (2, 4) and pairs.n_kept == 9
    expected = _brute_force(model, arch, pairs.groups)
    torch.testing.assert_close(scores, expected)
    assert len(set(scores.flatten().tolist())) > 1  # not a constant: the check has teeth


def test_hand_set_successor_head_scores_one():
    """Layer 1 head 0's OV maps MLP0(W_E[x]) to the one-hot unembedding of x's successor."""
    from evals.circuits.successor import _mlp0

    tok = word_tokenizer(ORDINAL_WORDS)
    model = _neox(len(tok), heads=2, seed=2)
    adapter = adapter_for(model)
    pairs = successor_pairs(tok)
    ids = sorted({t for x, y in pairs.groups.values() for t in (*x, *y)})
    succ = {x: y for xs, ys in pairs.groups.values() for x, y in zip(xs, ys, strict=True)}
    hd = D // 2
    with torch.no_grad():
        emb = _mlp0(adapter, model.gpt_neox.embed_in.weight[ids])  # (m, d), m = 11 <= hd
        w_u = model.get_output_embeddings().weight[ids]
        u_inv = torch.linalg.pinv(w_u)  # (d, m): W_U[ids] u_inv = I
        w_v = torch.zeros(hd, D)
        w_v[:len(ids)] = torch.linalg.pinv(emb).T  # W_V emb[i] = basis vector i
        w_o = torch.zeros(D, hd)
        for i, t in enumerate(ids):
            if t in succ:
                w_o[:, i] = u_inv[:, ids.index(succ[t])]
        attn = model.gpt_neox.layers[1].attention
        attn.query_key_value.weight.view(2, 3, hd, D)[0, 2] = w_v
        attn.dense.weight.view(D, 2, hd)[:, 0] = w_o
    scores, _ = successor_scores(adapter, tok, min_pairs=5)
    assert scores[1, 0] == 1.0
    others = torch.cat([scores[0], scores[1, 1:]])
    assert (others < 1.0).all()


def test_successor_skipped_below_min_pairs():
    tok = word_tokenizer(ORDINAL_WORDS)
    adapter = adapter_for(_neox(len(tok)))
    scores, pairs = successor_scores(adapter, tok)  # default min_pairs 10 > 9 kept
    assert scores is None and pairs.n_kept == 9
    toy = word_tokenizer([f"z{i}" for i in range(20)])
    scores, pairs = successor_scores(adapter_for(_neox(len(toy))), toy, min_pairs=1)
    assert scores is None and pairs.n_kept == 0 and not pairs.groups


def _identity_copy_model(tok):
    """Block 0 zeroed (so the residual after it is W_E[name]), W_U = W_E; layer 1 head 0 has OV
    = +P and head 1 OV = -P, P the projection onto the first hd dims."""
    model = _neox(len(tok), heads=2, seed=3)
    hd = D // 2
    proj = torch.eye(D)[:hd]  # (hd, d)
    with torch.no_grad():
        for p in model.gpt_neox.layers[0].parameters():
            p.zero_()
        model.get_output_embeddings().weight.copy_(model.gpt_neox.embed_in.weight)
        attn = model.gpt_neox.layers[1].attention
        ln = model.gpt_neox.layers[1].input_layernorm
        ln.weight.fill_(1.0)
        ln.bias.zero_()
        attn.query_key_value.bias.zero_()
        w = attn.query_key_value.weight.view(2, 3, hd, D)
        w[0, 2], w[1, 2] = proj, proj
        attn.dense.weight.view(D, 2, hd)[:, 0] = proj.T
        attn.dense.weight.view(D, 2, hd)[:, 1] = -proj.T
    return adapter_for(model)


def test_negative_copy_is_copy_of_negated_output():
    tok = word_tokenizer(NAME_WORDS)
    adapter = _identity_copy_model(tok)
    copy = copy_scores(adapter, tok, n_prompts=6)
    neg = copy_scores(adapter, tok, n_prompts=6, negative=True)
    assert copy[1].tolist() == [1.0, 0.0]  # identity OV copies, negative identity does not
    assert neg[1].tolist() == [0.0, 1.0]  # ... and the negative identity suppresses
    with torch.no_grad():  # negating every W_O swaps the two scores exactly
        for layer in adapter.model.gpt_neox.layers:
            layer.attention.dense.weight.neg_()
    torch.testing.assert_close(copy_scores(adapter, tok, n_prompts=6, negative=True), copy)
    torch.testing.assert_close(copy_scores(adapter, tok, n_prompts=6), neg)


def test_evaluator_writes_successor_and_negative_copy_or_logs_a_skip(caplog):
    from evals.circuits.evaluator import Circuits, CircuitsOptions

    opts = CircuitsOptions(components=("copy", "negative-copy", "successor"))
    tok = word_tokenizer(NAME_WORDS + [str(i) for i in range(1, 13)] + list(DAYS))
    lm = SimpleNamespace(model=_neox(len(tok), heads=4), tokenizer=tok)
    comps = Circuits(opts)._components(adapter_for(lm.model), lm, len(tok))
    assert sorted(comps["kind"].unique()) == ["copy", "negative-copy", "successor"]
    assert comps.height == 3 * 2 * 4 and comps["score"].is_between(0, 1).all()
    toy = word_tokenizer([f"z{i}" for i in range(20)])
    lm = SimpleNamespace(model=_neox(len(toy)), tokenizer=toy)
    with caplog.at_level(logging.INFO, logger="evals.circuits.evaluator"):
        comps = Circuits(opts)._components(adapter_for(lm.model), lm, len(toy))
    assert comps.height == 0
    assert "successor scores skipped" in caplog.text
    assert "negative-copy scores skipped" in caplog.text
    with pytest.raises(ValueError, match="successr"):
        CircuitsOptions(components=("successr",))
    with pytest.raises(ValueError, match="search_local_radius"):
        CircuitsOptions(search_local_radius=-1)


def _faith(values: dict[int, float], default: float, calls: list[int]):
    def faith(n: int) -> float:
        calls.append(n)
        return values.get(n, default if n < 40 else 0.85)
    return faith


def test_local_search_finds_smaller_size_when_faithfulness_is_not_monotone():
    """f(25) = 0.5, f(26..39) = 0.75 except f(33) = 0.85, f(>= 40) = 0.85; threshold 0.8.

    Plain binary search over (25, 50]: 37 (0.75) 43 40 38 39 -> 40. With radius 5:
    f(37) = 0.75 is within 0.08 of 0.8, so 32..42 are scanned and 33 is found.
    """
    calls: list[int] = []
    faith = _faith({25: 0.5, 33: 0.85}, 0.75, calls)
    assert search_size(faith, 500, threshold=0.8, start=25, step=25, local_radius=0) == 40
    assert 33 not in calls
    assert search_size(faith, 500, threshold=0.8, start=25, step=25, local_radius=5) == 33
    # far from the threshold (0.5 < 0.8 - 0.08) the midpoint triggers no local scan
    calls.clear()
    far = _faith({25: 0.5, 33: 0.85}, 0.5, calls)
    assert search_size(far, 500, threshold=0.8, start=25, step=25, local_radius=5) == 40
    assert 33 not in calls
    with pytest.raises(ValueError, match="local_radius"):
        search_size(faith, 500, local_radius=-1)


def test_local_search_keeps_monotone_answers_and_stays_in_the_interval():
    calls: list[int] = []
    mono = lambda n: calls.append(n) or (0.9 if n >= 39 else 0.79)  # noqa: E731
    assert search_size(mono, 500, start=25, step=25, local_radius=5) == 39
    assert min(calls) >= 25 and max(calls) <= 50
    assert search_size(lambda n: 0.1, 60, start=25, step=25) == 60  # never faithful: all edges
    assert search_size(lambda n: 1.0, 60, start=25, step=25) == 1


def _hand_copy_scores_neox(model, tok, n_prompts=6, top_k=5):
    """Tigges' copy score from the weights: W_U W_O^h (W_V^h r + b_V^h) at each name position,
    r = the residual after block 0 (no LayerNorm on the way), no b_O, no final LN."""
    from evals.circuits.tasks import ioi

    cfg = model.config
    H, d = cfg.num_attention_heads, cfg.hidden_size
    hd = d // H
    task = ioi(tok, n_prompts, 0)
    hits = torch.zeros(cfg.num_hidden_layers, H)
    count = 0
    for prompt, (io,), (s,) in zip(task.clean, task.correct, task.incorrect, strict=True):
        with torch.no_grad():
            resid = model(torch.tensor([prompt]), output_hidden_states=True).hidden_states[1][0]
        for pos, t in enumerate(prompt):
            if t not in (io, s):
                continue
            count += 1
            for layer, blk in enumerate(model.gpt_neox.layers):
                qkv = blk.attention.query_key_value
                w_v, b_v = qkv.weight.view(H, 3, hd, d)[:, 2], qkv.bias.view(H, 3, hd)[:, 2]
                w_o = blk.attention.dense.weight.view(d, H, hd)
                for h in range(H):
                    out = w_o[:, h] @ (w_v[h] @ resid[pos] + b_v[h])
                    logits = model.get_output_embeddings().weight @ out
                    hits[layer, h] += float(t in logits.topk(top_k).indices.tolist())
    return hits / count


def test_copy_scores_equal_the_ov_circuit_without_layernorm():
    """Issue 17: the copy score feeds the residual after block 0 to the OV circuit directly
    (Tigges et al.'s code), not through the layer's input LayerNorm."""
    tok = word_tokenizer(NAME_WORDS)
    model = _neox(len(tok), heads=4, seed=5)
    with torch.no_grad():  # a LayerNorm that changes the ranking if it were applied
        for blk in model.gpt_neox.layers:
            blk.input_layernorm.weight.uniform_(-2, 2)
            blk.input_layernorm.bias.normal_(0, 1)
    adapter = adapter_for(model)
    expected = _hand_copy_scores_neox(model, tok)
    got = copy_scores(adapter, tok, n_prompts=6)
    torch.testing.assert_close(got, expected)
    assert 0 < float(expected.sum()) and len(set(expected.flatten().tolist())) > 1


@pytest.mark.parametrize("build", [_opt, lambda v, heads, seed: tiny_gpt2(
    vocab_size=v, hidden_size=D, num_layers=2, num_heads=heads, seed=seed)])
def test_copy_scores_skip_the_input_layernorm_on_every_architecture(build):
    """OPT, GPT-2: equal to the pre-LN readout with the LayerNorm module swapped for identity
    during the OV readout only (the residual after block 0 keeps its LayerNorms)."""
    from evals.circuits import components

    tok = word_tokenizer(NAME_WORDS)
    model = build(len(tok), heads=4, seed=6)
    adapter = adapter_for(model)
    got = copy_scores(adapter, tok, n_prompts=6)
    opt = hasattr(model, "model")
    blocks = model.model.decoder.layers if opt else model.transformer.h
    name = "self_attn_layer_norm" if opt else "ln_1"
    real = adapter.attn

    def attn_without_ln(layer, x, pre_ln=True):
        saved = getattr(blocks[layer], name)
        setattr(blocks[layer], name, torch.nn.Identity())
        try:
            return real(layer, x, pre_ln=True)
        finally:
            setattr(blocks[layer], name, saved)

    adapter.attn = attn_without_ln
    torch.testing.assert_close(got, components.copy_scores(adapter, tok, n_prompts=6))
    adapter.attn = lambda layer, x, pre_ln=True: real(layer, x, pre_ln=True)
    assert not torch.equal(got, components.copy_scores(adapter, tok, n_prompts=6))


@pytest.mark.parametrize(("vocab", "special", "expected"), [
    (50_304, 2, (100, 20_000)), (512, 3, (100, 512)), (200, 3, (100, 200)), (150, 3, (3, 150))])
def test_random_id_range_is_tigges_clipped_to_the_vocabulary(vocab, special, expected):
    from evals.circuits.components import random_id_range

    assert random_id_range(vocab, special) == expected
    with pytest.raises(ValueError, match="too small"):
        random_id_range(3, 2)
