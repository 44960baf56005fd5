"""In-context trigger recall of a toy model (the Birth-of-a-Transformer probe).

Accuracy of the argmax next-token prediction at the 2nd and later occurrences
of a trigger in fresh trigger sequences (the target is that trigger's output,
already seen after its first occurrence), against the in-context frequency
baseline: predicting the most frequent non-trigger token of the context so far.
A 1-layer model can reach roughly that baseline; beating it clearly needs an
induction head.

Worked example (triggers z0, z1): sequence z0 z7 z3 z0 z7 z5 ...; at position 3
(z0, second occurrence) the target is z7; the baseline predicts the most
frequent non-trigger token among z0 z7 z3 z0 (z7 or z3; ties go to the lowest id).
"""

from __future__ import annotations

import numpy as np
import torch

from dynamics.toy.corpus import EOS, Corpus


def trigger_batch(corpus: Corpus, n_seqs: int, length: int, seed: int = 7):
    """(words [n, length + 1] with a leading EOS, counts [n, length]) of fresh sequences."""
    rng = np.random.default_rng([corpus.seed, 50 + seed])
    words, counts = [], []
    for _ in range(n_seqs):
        seq, cnt = corpus.trigger_tokens(rng, length)
        words.append([EOS] + [corpus.words[z] for z in seq])
        counts.append(cnt)
    return words, np.array(counts)


def _frequency_baseline(ids: np.ndarray, k_ids: set[int], t: int) -> int:
    values, freq = np.unique([i for i in ids[:t + 1] if i not in k_ids], return_counts=True)
    return int(values[np.argmax(freq)]) if len(values) else -1


@torch.no_grad()
def trigger_accuracy(model, tokenizer, corpus: Corpus, n_seqs: int = 64,
                     length: int | None = None) -> dict:
    """{"accuracy", "baseline", "n"} at trigger occurrences >= 2 (see module docstring)."""
    length = length or corpus.spec.row_len - 1
    words, counts = trigger_batch(corpus, n_seqs, length)
    vocab = tokenizer.get_vocab()
    ids = torch.tensor([[vocab[w] for w in row] for row in words])
    model.eval()
    pred = model(input_ids=ids).logits.argmax(-1).numpy()
    ids_np = ids.numpy()
    k_ids = {vocab[w] for w in corpus.words[:corpus.spec.n_triggers]}
    hits = base = n = 0
    for r, c in zip(*np.nonzero(counts[:, :-1] >= 2)):
        pos = c + 1  # position in ids (after the leading EOS)
        target = ids_np[r, pos + 1]
        hits += int(pred[r, pos] == target)
        base += int(_frequency_baseline(ids_np[r, 1:], k_ids, c) == target)
        n += 1
    return {"accuracy": hits / max(n, 1), "baseline": base / max(n, 1), "n": n}
