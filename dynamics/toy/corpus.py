"""The seeded synthetic training corpus of the toy suite.

Every training row is `row_len` word tokens: `<|endoftext|>` then one document
of `row_len - 1` words, of one of four kinds (mixed by `CorpusSpec.mix`):

- "trigger": Birth-of-a-Transformer sequences (Bietti et al. 2023) over the
  Markov tokens z0..z{V-1}: a fixed random bigram chain, except that each of
  the K trigger tokens is followed, within one sequence, always by the same
  output token (drawn uniformly per sequence). Predicting the token after the
  2nd+ occurrence of a trigger needs an induction head.
- "facts": world sentences ("alice lives in paris .") in training templates.
- "qa": question/answer pairs ("q : where does alice live ? a : paris .").
- "ioi": IOI-like sentences ("then alice and bob went to the park . bob gave a
  ball to alice .").

Documents are cut at `row_len - 1` words (possibly mid-sentence). Worked
example, row_len = 8: ["<|endoftext|>", "alice", "lives", "in", "paris", ".",
"bob", "has"]; the model's target at position t is the word at t + 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dynamics.toy import world


@dataclass(frozen=True)
class CorpusSpec:
    """What the corpus looks like.

    Attributes:
        n_markov: Markov tokens z0..z{n-1}.
        n_triggers: trigger tokens (the first `n_triggers` Markov tokens).
        trigger_rate: probability mass moved onto the triggers in every bigram row.
        concentration: Dirichlet concentration of the bigram rows (small = peaky).
        row_len: tokens per training row, including the leading `<|endoftext|>`.
        n_entities: entities of the world (each has one value per relation).
        mix: document kind -> probability.
    """

    n_markov: int = 32
    n_triggers: int = 5
    trigger_rate: float = 0.3
    concentration: float = 0.3
    row_len: int = 64
    n_entities: int = 24
    mix: dict = field(default_factory=lambda: {"trigger": 0.7, "facts": 0.14, "qa": 0.08,
                                               "ioi": 0.08})

    def __post_init__(self) -> None:
        if not 1 <= self.n_triggers < self.n_markov // 2:
            raise ValueError(f"n_triggers must be in 1..{self.n_markov // 2 - 1}, "
                             f"got {self.n_triggers}")
        unknown = sorted(set(self.mix) - set(KINDS))
        if unknown or abs(sum(self.mix.values()) - 1) > 1e-9:
            raise ValueError(f"mix {self.mix} must sum to 1 over kinds {list(KINDS)}")


KINDS = ("trigger", "facts", "qa", "ioi")
EOS = "<|endoftext|>"


def markov_words(spec: CorpusSpec) -> list[str]:
    """The Markov token words z0..z{n-1} (the first n_triggers are the triggers)."""
    return [f"z{i}" for i in range(spec.n_markov)]


def vocabulary(spec: CorpusSpec) -> list[str]:
    """Every word of the corpus, in token-id order (after the tokenizer's specials)."""
    return markov_words(spec) + world.world_words()


class Corpus:
    """A seeded corpus: the bigram chain and the world are fixed by `seed`."""

    def __init__(self, spec: CorpusSpec, seed: int):
        self.spec, self.seed = spec, seed
        rng = np.random.default_rng([seed, 0])
        n, k = spec.n_markov, spec.n_triggers
        bigram = rng.dirichlet([spec.concentration] * n, size=n)
        boost = np.zeros(n)
        boost[:k] = 1.0 / k
        self.bigram = (1 - spec.trigger_rate) * bigram + spec.trigger_rate * boost
        self._cum = np.cumsum(self.bigram, axis=1)
        self.words = markov_words(spec)
        self.facts = world.make_world(seed, spec.n_entities)

    def trigger_tokens(self, rng: np.random.Generator, length: int) -> tuple[list[int], list[int]]:
        """One trigger sequence: (Markov token indices, occurrence count per position).

        count[t] = how many times z[t] occurred so far if it is a trigger (1 = first
        occurrence), else 0. The token after a position with count >= 2 is
        predictable in context: it is that trigger's output in this sequence.
        """
        k = self.spec.n_triggers
        outputs = rng.integers(k, self.spec.n_markov, size=k)
        seq = [int(rng.integers(self.spec.n_markov))]
        while len(seq) < length:
            z = seq[-1]
            nxt = outputs[z] if z < k else np.searchsorted(self._cum[z], rng.random() * self._cum[z, -1])
            seq.append(min(int(nxt), self.spec.n_markov - 1))
        seen: dict[int, int] = {}
        counts = []
        for z in seq:
            if z < k:
                seen[z] = seen.get(z, 0) + 1
            counts.append(seen.get(z, 0) if z < k else 0)
        return seq, counts

    def document(self, rng: np.random.Generator, kind: str, n_words: int) -> list[str]:
        """A document of exactly `n_words` words of one kind."""
        if kind == "trigger":
            return [self.words[z] for z in self.trigger_tokens(rng, n_words)[0]]
        make = {"facts": lambda: world.fact_sentence(rng, self.facts),
                "qa": lambda: world.qa_sentence(rng, self.facts),
                "ioi": lambda: world.ioi_sentence(rng)}[kind]
        words: list[str] = []
        while len(words) < n_words:
            words += make().split()
        return words[:n_words]

    def documents(self, stream: int, n: int) -> list[tuple[str, list[str]]]:
        """The first `n` (kind, words) documents of stream `stream` (0 = training, 1 = validation).

        Prefix-stable: `documents(s, m)` is the first m items of `documents(s, n)` for m <= n.
        """
        rng = np.random.default_rng([self.seed, 100 + stream])
        kinds = list(self.spec.mix)
        cum = np.cumsum(list(self.spec.mix.values()))
        docs = []
        for _ in range(n):
            kind = kinds[min(int(np.searchsorted(cum, rng.random() * cum[-1])), len(kinds) - 1)]
            docs.append((kind, self.document(rng, kind, self.spec.row_len - 1)))
        return docs

    def training_rows(self, n: int) -> list[list[str]]:
        """The first `n` training rows (EOS + document words); the trainer reads these."""
        return [[EOS] + words for _, words in self.documents(0, n)]
