"""Per-head component scores (Tigges et al. `get_induction_scores`, copy scores).

Attention-pattern scores on `n_seqs` sequences of `seq_len` random token ids
repeated twice (no BOS): the mean, over the second copy's query positions, of
the attention each head puts on one offset diagonal:

- `induction`: key = query - (seq_len - 1) (the token after the earlier copy),
- `previous-token`: key = query - 1,
- `duplicate-token`: key = query - seq_len (the earlier copy of the same token).

Example, seq_len = 4, tokens [a b c d a b c d] (positions 0..7): the query at
position 5 (b) has induction key 2 (c), previous-token key 4 (a), duplicate key 1 (b).

Random ids (`random_id_range`): Tigges et al. draw 100 ids from [100, 20000)
(skipping the lowest ids, special and byte tokens in Pythia's BPE); here the
same range clipped to the vocabulary, [100, min(20000, vocab)), when that holds
at least 100 ids (vocab >= 200). A tiny vocabulary (vocab < 200, e.g. the toy
suite's word-level tokenizer, where low ids are ordinary words) uses
[n_special, vocab) instead. The sequence length defaults to Tigges' 100
(capped so that BOS + two copies fit the model's positions); we average over
`n_seqs` = 8 sequences.

`copy` (name movers, Wang et al.; as Tigges et al.'s code): the residual stream
after block 0 at the IO / S1 / S2 name positions of IOI prompts goes straight
into each head's OV circuit, W_O^h (W_V^h x + b_V^h), *without* the layer's
input LayerNorm and without b_O (computed as the head's output on a one-token
sequence, where it can only attend to itself, with `pre_ln=False`), then the
unembedding (no final LN); score = fraction of (prompt, position) where the
name is in the top 5 logits. Needs single-token names, so it is skipped (no
rows) for tokenizers without them. The residual after block 0 is HF's
`hidden_states[1]`, which for a one-layer model is after the final LN.

`negative-copy` (negative name movers, Wang et al.; the spec's "same with
negated output"): the same OV readout with the head's output negated, i.e. the
fraction of name positions whose name is among the head's 5 *lowest* logits.
It is only the OV-circuit proxy of copy suppression: a head scoring high here
would lower the logit of the token it attends to, but nothing checks that it
attends to earlier copies of the predicted token (the QK side). Full copy
suppression (McDougall et al.'s CSPA: OV/QK projected onto copy-suppression
directions, 1 - KL(CSPA || model) / KL(mean-ablation || model) on OpenWebText)
is not implemented.

`successor` (Gould et al.): the accuracy of each head's effective OV circuit
W_U W_O W_V MLP0(W_E) at mapping an ordinal-list item to its successor; see
`evals.circuits.successor` (pairs filtered to single tokens, no rows below
10 kept pairs).

`trigger-induction` (Bietti et al.'s layer-2 probe, for trigger/induction task
prompts): the attention mass from the prompt's last token to every earlier
position whose *previous* token equals the last token (where an induction head
looks), averaged over prompts that have one. Example: [EOS z5 z0 z17 z9 z0]:
the last token z0 occurred at position 2, so the score is the attention from
position 5 to position 3 (z17). Use it where heads are specific to the
training task's tokens: the toy suite's heads solve the trigger task but do
not attend along the induction diagonal of random-token sequences.

Not implemented: copy suppression proper (CSPA, see `negative-copy`),
S2-inhibition path patching.
"""

from __future__ import annotations

import random

import torch

from evals.circuits.model_surgery import graph_forward
from evals.circuits.tasks import ioi

KINDS = ("induction", "previous-token", "duplicate-token", "copy", "negative-copy", "successor",
         "trigger-induction")
TIGGES_ID_RANGE = (100, 20_000)
TIGGES_SEQ_LEN = 100


def random_id_range(vocab: int, n_special: int = 0) -> tuple[int, int]:
    """[lo, hi) of the random ids of the attention-pattern scores (see the module docstring).

    Examples: vocab 50304 -> (100, 20000); 512 -> (100, 512); 150 with 3 specials -> (3, 150).
    """
    lo, hi = TIGGES_ID_RANGE[0], min(TIGGES_ID_RANGE[1], vocab)
    if hi - lo >= TIGGES_SEQ_LEN:
        return lo, hi
    if vocab - n_special < 2:
        raise ValueError(f"vocabulary of {vocab} ids ({n_special} special) is too small for "
                         "random-token attention scores")
    return n_special, vocab


@torch.no_grad()
def attention_scores(adapter, vocab: tuple[int, int], *, n_seqs: int = 8,
                     seq_len: int = TIGGES_SEQ_LEN,
                     seed: int = 0, bos_id: int | None = None) -> dict[str, torch.Tensor]:
    """{kind: (layer, head) float tensor} for induction, previous-token, duplicate-token.

    With `bos_id` every sequence starts with that token (positions shift by one;
    offsets are unchanged): models trained on rows that start with BOS/EOS use it
    as an attention sink and attend oddly without it.
    """
    lo, hi = vocab
    rng = random.Random(seed)
    ids = [[rng.randrange(lo, hi) for _ in range(seq_len)] for _ in range(n_seqs)]
    device = next(adapter.model.parameters()).device
    first = [] if bos_id is None else [bos_id]
    x = torch.tensor([first + s + s for s in ids], device=device)
    patterns = torch.stack(graph_forward(adapter, x).patterns)  # (layer, b, head, q, k)
    queries = torch.arange(seq_len, 2 * seq_len, device=device) + len(first)
    out = {}
    for kind, offset in (("induction", seq_len - 1), ("previous-token", 1),
                         ("duplicate-token", seq_len)):
        diag = patterns[:, :, :, queries, queries - offset]  # (layer, b, head, q)
        out[kind] = diag.float().mean(dim=(1, 3)).cpu()
    return out


@torch.no_grad()
def copy_scores(adapter, tokenizer, *, n_prompts: int = 20, top_k: int = 5, seed: int = 0,
                negative: bool = False) -> torch.Tensor | None:
    """(layer, head) fraction of name positions whose name is in the head's OV top-k, or None.

    With `negative` the head's output is negated first (top-k of -logits: the
    `negative-copy` score of negative name movers).
    """
    task = ioi(tokenizer, n_prompts, seed)
    if task.n_kept == 0:
        return None
    device = next(adapter.model.parameters()).device
    rows, names = [], []
    for prompt, (io,), (s,) in zip(task.clean, task.correct, task.incorrect, strict=True):
        ids = torch.tensor([prompt], device=device)
        hidden = adapter.model(ids, output_hidden_states=True).hidden_states[1][0]  # (pos, d)
        for pos, tok in enumerate(prompt):
            if tok in (io, s):
                rows.append(hidden[pos])
                names.append(tok)
    x = torch.stack(rows)[:, None, None, None, :]  # (n, pos=1, 1, 1, d)
    H = adapter.n_heads
    x = x.expand(-1, 1, 3, H, -1)
    head = adapter.model.get_output_embeddings()
    target = torch.tensor(names, device=device)
    out = torch.zeros(adapter.n_layers, H)
    for layer in range(adapter.n_layers):
        z = adapter.attn(layer, x, pre_ln=False)[0][:, 0]  # (n, H, d): OV on the raw residual
        top = head(-z if negative else z).topk(top_k, dim=-1).indices  # (n, H, k)
        out[layer] = (top == target[:, None, None]).any(-1).float().mean(0).cpu()
    return out


@torch.no_grad()
def task_induction_scores(adapter, task) -> torch.Tensor | None:
    """(layer, head) mean attention from the last token to positions after its earlier copies."""
    device = next(adapter.model.parameters()).device
    total = torch.zeros(adapter.n_layers, adapter.n_heads)
    count = 0
    for prompt in task.clean:
        t = len(prompt) - 1
        targets = [j for j in range(1, t) if prompt[j - 1] == prompt[t]]
        if not targets:
            continue
        patterns = graph_forward(adapter, torch.tensor([prompt], device=device)).patterns
        att = torch.stack([p[0, :, t, targets].sum(-1) for p in patterns])  # (layer, head)
        total += att.float().cpu()
        count += 1
    return total / count if count else None
