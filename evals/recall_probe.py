"""Bietti et al.'s recall-vs-bigram probe for any tokenizer, built from validation text.

Birth of a Transformer (Bietti et al. 2023) trains on sequences where
z_{t+1} = o_k if z_t is trigger q_k, else z_{t+1} ~ pi_b(. | z_t): a token after
a non-trigger follows the *global bigram* statistics, and a token after a
trigger's 2nd+ occurrence is its *in-context* output o_k, specific to the
sequence (so it can only be recalled from earlier in the sequence: an
induction head). The order of learning compares when a model gets each kind
right. For a pretrained suite there is no bigram generator, so this module
derives both from text the models were evaluated on:

1. Global bigrams: over `stat_tokens` tokens of the validation text (no
   special tokens, no pair across a document boundary), each token `a` seen at
   least `min_count` times whose most frequent successor `b` takes at least
   `min_share` of its successors (and b != a) gives a bigram pair (a, b).
2. Frequent tokens: the `n_pool` most frequent non-special tokens, from which
   triggers and outputs are drawn.
3. Each of `n_sequences` sequences (seeded, `numpy.random.default_rng([seed, i])`)
   draws `n_triggers` triggers and as many outputs from the frequent tokens
   (all distinct; an output is never its trigger's global successor, so recall
   and bigram disagree), and `seq_len // 2 - n_triggers * occurrences`
   distinct bigram pairs that use none of those tokens; the blocks
   (a, b) and `occurrences` copies of each (q_k, o_k) are shuffled and
   concatenated: `seq_len` tokens (one fewer when seq_len is odd).

Labels (one per token, the `recall-bigram` evaluator's position kinds):
"start" (token 0), "other" (a block's first token: not predictable),
"bigram" (b after a), "first" (o_k after q_k's first occurrence) and
"recall" (o_k after q_k's 2nd+ occurrence).

Worked example, bigram pairs (5, 9), (7, 2), trigger 4 with output 8, two
occurrences, blocks shuffled to (4, 8) (5, 9) (4, 8) (7, 2): tokens
4 8 5 9 4 8 7 2, kinds start first other bigram other recall other bigram.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np


class ProbeError(ValueError):
    """The text does not hold enough structure for the probe's settings (says which)."""


@dataclass(frozen=True)
class ProbeSettings:
    """How the probe is built (see the module docstring)."""

    stat_tokens: int = 200_000
    min_count: int = 10
    min_share: float = 0.5
    n_pool: int = 500
    n_sequences: int = 64
    seq_len: int = 128
    n_triggers: int = 3
    occurrences: int = 4
    seed: int = 0

    def problems(self) -> list[str]:
        out = [f"{name} must be >= 1, got {getattr(self, name)}"
               for name in ("stat_tokens", "min_count", "n_pool", "n_sequences", "n_triggers")
               if getattr(self, name) < 1]
        if not 0 < self.min_share <= 1:
            out.append(f"min_share must be in (0, 1], got {self.min_share}")
        if self.occurrences < 2:
            out.append(f"occurrences must be >= 2 (recall needs a trigger seen before), got "
                       f"{self.occurrences}")
        if self.n_bigram_blocks < 1:
            out.append(f"seq_len = {self.seq_len} leaves no room for bigram pairs beside "
                       f"{self.n_triggers} triggers x {self.occurrences} occurrences; need "
                       f"seq_len > {2 * self.n_triggers * self.occurrences}")
        return out

    @property
    def n_bigram_blocks(self) -> int:
        return self.seq_len // 2 - self.n_triggers * self.occurrences


def bigram_pairs(ids: np.ndarray, specials: set[int], min_count: int,
                 min_share: float) -> tuple[dict[int, int], list[int]]:
    """({a: its dominant successor b}, non-special tokens by frequency) of a token stream."""
    tokens = [int(t) for t in ids]
    unigram = Counter(t for t in tokens if t not in specials)
    succ: dict[int, Counter] = {}
    for a, b in zip(tokens[:-1], tokens[1:]):
        if a not in specials and b not in specials:
            succ.setdefault(a, Counter())[b] += 1
    pairs = {}
    for a, nexts in succ.items():
        total = sum(nexts.values())
        b, n = min(nexts.items(), key=lambda kv: (-kv[1], kv[0]))
        if unigram[a] >= min_count and n >= min_share * total and b != a:
            pairs[a] = b
    by_count = sorted(unigram, key=lambda t: (-unigram[t], t))
    return pairs, by_count


def _draw(rng, pool: list[int], n: int, avoid: set[int], what: str) -> list[int]:
    free = [t for t in pool if t not in avoid]
    if len(free) < n:
        raise ProbeError(f"only {len(free)} tokens free for {n} {what}; lower n_triggers or "
                         "raise n_pool/stat_tokens")
    return [free[i] for i in rng.choice(len(free), n, replace=False)]


def _sequence(rng, pairs: dict[int, int], pool: list[int], s: ProbeSettings
              ) -> tuple[list[int], list[str]]:
    triggers = _draw(rng, pool, s.n_triggers, set(), "triggers")
    outputs = []
    for q in triggers:  # an output differs from its trigger's global successor
        avoid = set(triggers) | set(outputs) | ({pairs[q]} if q in pairs else set())
        outputs += _draw(rng, pool, 1, avoid, "outputs")
    used = set(triggers) | set(outputs)
    free = sorted(a for a, b in pairs.items() if a not in used and b not in used)
    if len(free) < s.n_bigram_blocks:
        raise ProbeError(f"{len(free)} usable bigram pairs for {s.n_bigram_blocks} per "
                         "sequence; lower seq_len, min_count or min_share, or read more text "
                         "(stat_tokens)")
    chosen = [free[i] for i in rng.choice(len(free), s.n_bigram_blocks, replace=False)]
    blocks = [(a, pairs[a], -1) for a in chosen]
    blocks += [(q, o, k) for k, (q, o) in enumerate(zip(triggers, outputs))] * s.occurrences
    ids, kinds, seen = [], [], set()
    for i in rng.permutation(len(blocks)):
        first, second, k = blocks[i]
        kinds += ["other" if ids else "start",
                  "bigram" if k < 0 else ("recall" if k in seen else "first")]
        ids += [first, second]
        if k >= 0:
            seen.add(k)
    return ids, kinds


def build_probe(ids: np.ndarray, specials: set[int], settings: ProbeSettings
                ) -> tuple[list[list[int]], list[list[str]]]:
    """(token ids, kinds) of every probe sequence from a token stream of validation text."""
    pairs, by_count = bigram_pairs(ids, specials, settings.min_count, settings.min_share)
    pool = by_count[: settings.n_pool]
    rows, kinds = [], []
    for i in range(settings.n_sequences):
        row, kind = _sequence(np.random.default_rng([settings.seed, i]), pairs, pool, settings)
        rows.append(row)
        kinds.append(kind)
    return rows, kinds
