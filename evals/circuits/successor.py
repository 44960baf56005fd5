"""Successor-head scores (Gould et al. 2023), as Tigges et al. compute them over training.

Follows circuits-over-time `get_new_successor_head_scores_over_time.py`:

Ordinal lists (`ordinal_lists`): numbers 1-200 as digits, number words one..twenty,
ordinals first..tenth, days and months and their 3-letter abbreviations
(cyclic: Sunday -> Monday, Dec -> Jan), letters A-Z and Roman numerals I-XX,
each also with a leading space, and (except letters and numerals) with the
first letter's case inverted, with and without the space. A variant that
equals another list (digits have no case) is not repeated. Tigges' list has
"XVII" twice where XVIII belongs; XVIII is used here.

Pairs (`successor_pairs`): (item, next item) of one list, kept only when both
are single tokens of the tokenizer (`tasks.single_token`: one id, not the
unknown token). A list whose kept pairs have fewer than 2 distinct successors
is dropped (its top-1 among 1 target would succeed trivially; Tigges keeps
such lists), and so is a list whose token-id pairs repeat an earlier list's
(e.g. " Monday" and "Monday" under a whitespace word tokenizer).
`SuccessorPairs.counts` reports kept/candidate pairs per list.

Score (`successor_scores`): per head the effective OV logits
    logits[x, y] = W_U[y] . W_O^h W_V^h MLP0(W_E[x])
with no layer norm anywhere (no pre-LN of block 0's MLP, none before V, no
final LN) and no biases of V/O, exactly as Tigges' TransformerLens code with
fold_ln=False (`blocks[0].mlp(W_E)`, `attn.OV`, `W_U`). MLP0 reads the token
embedding alone and its output replaces the embedding (no W_E + MLP0 residual):
for GPT-NeoX's parallel block 0 this is MLP0 on W_E, as its real input is
LN(W_E) without attention; for OPT's (and GPT-2's, Llama's, OLMo's) sequential block 0 the
attention output and learned positions the real MLP0 also reads are left out.
For grouped-query attention W_V^h is the weight of head h's key/value group.
A pair succeeds when its successor's logit is the largest among the list's
kept successors (ties count as success); the head's score is the accuracy over
all kept pairs of all lists. With fewer than `min_pairs` kept pairs (e.g. the
toy word tokenizer) the score is not computed (None; the evaluator writes no
rows for it).
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field

import torch

from evals.circuits.tasks import single_token

NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
                "eighteen", "nineteen", "twenty")
ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth",
            "ninth", "tenth")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
ROMAN = ("I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII", "XIII", "XIV",
         "XV", "XVI", "XVII", "XVIII", "XIX", "XX")
# name: (cyclic, items)
BASE_LISTS: dict[str, tuple[bool, tuple[str, ...]]] = {
    "numbers": (False, tuple(str(i) for i in range(1, 201))),
    "number_words": (False, NUMBER_WORDS),
    "ordinals": (False, ORDINALS),
    "days": (True, DAYS),
    "days_short": (True, tuple(d[:3] for d in DAYS)),
    "months": (True, MONTHS),
    "months_short": (True, tuple(m[:3] for m in MONTHS)),
    "letters": (False, tuple(string.ascii_uppercase)),
    "numerals": (False, ROMAN),
}


def _invert_case(word: str) -> str:
    return (word[0].swapcase() + word[1:]) if word else word


def ordinal_lists() -> dict[str, tuple[bool, tuple[str, ...]]]:
    """Every list and its case/space variants: {name: (cyclic, items)}, see the module doc."""
    out: dict[str, tuple[bool, tuple[str, ...]]] = {}
    seen: set[tuple[str, ...]] = set()
    for name, (cyclic, items) in BASE_LISTS.items():
        cases = [("", items)]
        if name not in ("letters", "numerals"):
            cases.append(("inverted_capital_", tuple(_invert_case(w) for w in items)))
        for prefix, words in cases:
            for space in ("", "space_"):
                variant = tuple(" " + w for w in words) if space else words
                if variant not in seen:
                    seen.add(variant)
                    out[f"{prefix}{space}{name}"] = (cyclic, variant)
    return out


@dataclass
class SuccessorPairs:
    """Single-token (item, successor) pairs per ordinal list, as token ids.

    Attributes:
        groups: {list name: (input ids, successor ids)} for the lists scored.
        counts: {list name: (kept pairs, candidate pairs)} for every list, scored or not.
    """

    groups: dict[str, tuple[list[int], list[int]]] = field(default_factory=dict)
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def n_kept(self) -> int:
        return sum(len(x) for x, _ in self.groups.values())

    @property
    def n_candidates(self) -> int:
        return sum(c for _, c in self.counts.values())

    def summary(self) -> str:
        """E.g. "412/1330 pairs kept (numbers 199/199, days 7/7, ...)", scored lists only."""
        per = ", ".join(f"{k} {self.counts[k][0]}/{self.counts[k][1]}" for k in self.groups)
        return f"{self.n_kept}/{self.n_candidates} pairs kept ({per})"


def successor_pairs(tokenizer, lists=None) -> SuccessorPairs:
    """The kept pairs of `lists` (default `ordinal_lists()`) for this tokenizer."""
    out, seen = SuccessorPairs(), set()
    for name, (cyclic, items) in (lists or ordinal_lists()).items():
        seq = list(items) + ([items[0]] if cyclic else [])
        ids = [single_token(tokenizer, w) for w in seq]
        pairs = [(a, b) for a, b in zip(ids[:-1], ids[1:], strict=True)
                 if a is not None and b is not None]
        out.counts[name] = (len(pairs), len(seq) - 1)
        if len({b for _, b in pairs}) < 2 or tuple(pairs) in seen:
            continue
        seen.add(tuple(pairs))
        out.groups[name] = ([a for a, _ in pairs], [b for _, b in pairs])
    return out


def _ov_weights(adapter, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(W_V (head, hd, d_model), W_O (d_model, head, hd)) of one layer, without biases."""
    if hasattr(adapter, "ov_weights"):  # Llama-style (grouped-query) adapters
        return adapter.ov_weights(layer)
    H, hd, d = adapter.n_heads, adapter.hd, adapter.d_model
    kind = adapter.model.config.model_type
    if kind == "gpt_neox":
        blk = adapter.base.layers[layer].attention
        return blk.query_key_value.weight.view(H, 3, hd, d)[:, 2], blk.dense.weight.view(d, H, hd)
    if kind == "opt":
        sa = adapter.dec.layers[layer].self_attn
        return sa.v_proj.weight.view(H, hd, d), sa.out_proj.weight.view(d, H, hd)
    if kind == "gpt2":
        attn = adapter.tr.h[layer].attn
        w_v = attn.c_attn.weight.view(d, 3, H, hd)[:, 2].permute(1, 2, 0)
        return w_v, attn.c_proj.weight.view(H, hd, d).permute(2, 0, 1)
    raise ValueError(f"model_type {kind!r} has no OV weights here; allowed: gpt_neox, opt, "
                     "gpt2, llama, olmo")


def _mlp0(adapter, x: torch.Tensor) -> torch.Tensor:
    """Block 0's MLP on x without its pre-LN (TransformerLens `blocks[0].mlp`)."""
    if hasattr(adapter, "mlp0"):  # Llama-style adapters: the SwiGLU MLP
        return adapter.mlp0(x)
    kind = adapter.model.config.model_type
    if kind == "gpt_neox":
        return adapter.base.layers[0].mlp(x)
    if kind == "opt":
        blk = adapter.dec.layers[0]
        return blk.fc2(blk.activation_fn(blk.fc1(x)))
    if kind == "gpt2":
        return adapter.tr.h[0].mlp(x)
    raise ValueError(f"model_type {kind!r} has no MLP0 here; allowed: gpt_neox, opt, gpt2, "
                     "llama, olmo")


@torch.no_grad()
def effective_ov_logits(adapter, ids: list[int]) -> torch.Tensor:
    """(layer, head, x, y) float32 logits of token ids[y] from input ids[x] (module docstring)."""
    device = next(adapter.model.parameters()).device
    tokens = torch.tensor(ids, device=device)
    emb = _mlp0(adapter, adapter.embed(tokens)).float()  # (x, d)
    w_u = adapter.model.get_output_embeddings().weight[tokens].float()  # (y, d)
    out = []
    for layer in range(adapter.n_layers):
        w_v, w_o = (w.float() for w in _ov_weights(adapter, layer))
        v = torch.einsum("xd,hed->hxe", emb, w_v)
        u = torch.einsum("yd,dhe->hye", w_u, w_o)  # unembedding pulled back through W_O
        out.append(torch.einsum("hxe,hye->hxy", v, u))
    return torch.stack(out).cpu()


def successor_scores(adapter, tokenizer, *, min_pairs: int = 10,
                     pairs: SuccessorPairs | None = None) -> tuple[torch.Tensor | None,
                                                                    SuccessorPairs]:
    """((layer, head) accuracy or None when fewer than `min_pairs` pairs, the pairs used)."""
    pairs = pairs if pairs is not None else successor_pairs(tokenizer)
    if pairs.n_kept < max(1, min_pairs):
        return None, pairs
    ids = sorted({t for x, y in pairs.groups.values() for t in (*x, *y)})
    col = {t: i for i, t in enumerate(ids)}
    logits = effective_ov_logits(adapter, ids)  # (layer, head, x, y)
    hits = torch.zeros(logits.shape[:2])
    for inputs, targets in pairs.groups.values():
        rows = torch.tensor([col[t] for t in inputs])
        cand = torch.tensor(sorted({col[t] for t in targets}))
        tgt = torch.tensor([col[t] for t in targets])
        sub = logits[:, :, rows]  # (layer, head, pair, y)
        best = sub[..., cand].amax(-1)
        own = sub.gather(-1, tgt.view(1, 1, -1, 1).expand(*sub.shape[:3], 1)).squeeze(-1)
        hits += (own >= best).float().sum(-1)
    return hits / pairs.n_kept, pairs
