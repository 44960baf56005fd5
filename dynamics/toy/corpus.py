"""The seeded synthetic training corpus of the toy suite.

Documents of `CorpusSpec.doc_words` words (uniform in that range), of one of
five kinds (mixed by `CorpusSpec.mix`):

- "trigger": Birth-of-a-Transformer sequences (Bietti et al. 2023) over the
  Markov tokens z0..z{V-1}: a fixed random bigram chain, except that each of
  the K trigger tokens is followed, within one sequence, always by the same
  output token (drawn uniformly per sequence). Predicting the token after the
  2nd+ occurrence of a trigger needs an induction head.
- "repeat": a segment of `repeat_len` random words (uniform over the whole
  vocabulary but `<|endoftext|>`) repeated until the document is full: spans
  that recur within a row, which make in-context copying pay off on any token
  (Olsson et al. 2022's repeated random tokens; Bietti et al.'s "data
  diversity helps"). Example, segment of 3: "paris z7 gave paris z7 gave paris".
- "facts": world sentences ("alice lives in paris .") in training templates.
- "qa": question/answer pairs ("q : where does alice live ? a : paris .").
- "ioi": IOI-like sentences ("then alice and bob went to the park . bob gave a
  ball to alice .").

Packing (as real pretraining, and as the `token-loss` evaluator reads
validation text): a stream `<|endoftext|> doc1 <|endoftext|> doc2 <|endoftext|> ...`
is cut into consecutive rows of `row_len` tokens, so documents start at every
offset of a row and continue into the next row; no row is aligned to a
document start. Worked example, row_len = 8, documents "alice lives in paris ."
and "z3 z0 z17 z3":
row 0 = [<|endoftext|> alice lives in paris . <|endoftext|> z3],
row 1 = [z0 z17 z3 <|endoftext|> ...]. The model's target at position t is the word at t + 1.
Training rows come from stream 0, validation documents from stream 1 (another
random stream, so the two never share a row).
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
        row_len: tokens per training row (rows are cut from the packed document stream).
        doc_words: (min, max) words per document, drawn uniformly (inclusive).
        repeat_len: (min, max) words of a "repeat" document's segment, drawn uniformly
            (inclusive; at most half the document); the segment is repeated until the
            document is full.
        repeat_gap: (min, max) random words between two copies of the segment, drawn uniformly
            (inclusive) for every gap: copies then recur at varying distances, so no fixed
            look-back offset predicts them (only matching content does).
        n_entities: entities of the world (each has one value per relation).
        mix: document kind -> probability.
    """

    n_markov: int = 32
    n_triggers: int = 5
    trigger_rate: float = 0.3
    concentration: float = 0.3
    row_len: int = 64
    doc_words: tuple[int, int] = (24, 96)
    repeat_len: tuple[int, int] = (4, 16)
    repeat_gap: tuple[int, int] = (0, 0)
    n_entities: int = 24
    # mostly repeats: what makes induction heads form within the toy budget (issue 26,
    # BENCHMARKS.md "Induction formation")
    mix: dict = field(default_factory=lambda: {"trigger": 0.07, "repeat": 0.85, "facts": 0.04,
                                               "qa": 0.02, "ioi": 0.02})

    def __post_init__(self) -> None:
        if not 1 <= self.n_triggers < self.n_markov // 2:
            raise ValueError(f"n_triggers must be in 1..{self.n_markov // 2 - 1}, "
                             f"got {self.n_triggers}")
        unknown = sorted(set(self.mix) - set(KINDS))
        if unknown or abs(sum(self.mix.values()) - 1) > 1e-9:
            raise ValueError(f"mix {self.mix} must sum to 1 over kinds {list(KINDS)}")
        lo, hi = self.doc_words
        if not 2 <= lo <= hi:
            raise ValueError(f"doc_words must be (min, max) with 2 <= min <= max, got {self.doc_words}")
        rlo, rhi = self.repeat_len
        if not 1 <= rlo <= min(rhi, lo // 2):
            raise ValueError(f"repeat_len must be (min, max) with 1 <= min <= max and min <= "
                             f"doc_words min / 2 = {lo // 2} (two copies fit), got {self.repeat_len}")
        if not 0 <= self.repeat_gap[0] <= self.repeat_gap[1]:
            raise ValueError(f"repeat_gap must be (min, max) with 0 <= min <= max, "
                             f"got {self.repeat_gap}")


KINDS = ("trigger", "repeat", "facts", "qa", "ioi")
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
        self.vocab = vocabulary(spec)
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
        draws = rng.random(length)
        while len(seq) < length:
            z = seq[-1]
            nxt = outputs[z] if z < k else np.searchsorted(self._cum[z], draws[len(seq)] * self._cum[z, -1])
            seq.append(min(int(nxt), self.spec.n_markov - 1))
        seen: dict[int, int] = {}
        counts = []
        for z in seq:
            if z < k:
                seen[z] = seen.get(z, 0) + 1
            counts.append(seen.get(z, 0) if z < k else 0)
        return seq, counts

    def repeat_words(self, rng: np.random.Generator, n_words: int) -> list[str]:
        """A random segment of `repeat_len` words repeated to `n_words` words (>= 2 copies),
        with `repeat_gap` random words after each copy."""
        lo, hi = self.spec.repeat_len
        seg_len = int(rng.integers(lo, min(hi, n_words // 2) + 1))
        seg = [self.vocab[i] for i in rng.integers(len(self.vocab), size=seg_len)]
        glo, ghi = self.spec.repeat_gap
        if ghi == 0:  # no gaps: the loop below would draw nothing (integers(0, 1) and size-0
            # draws leave the generator's state alone), so skip it; same words, ~3x faster
            return (seg * -(-n_words // seg_len))[:n_words]
        words = list(seg)
        while len(words) < n_words:
            gap = int(rng.integers(glo, ghi + 1)) if len(words) + seg_len < n_words else 0
            words += [self.vocab[i] for i in rng.integers(len(self.vocab), size=gap)] + seg
        return words[:n_words]

    def document(self, rng: np.random.Generator, kind: str, n_words: int) -> list[str]:
        """A document of exactly `n_words` words of one kind."""
        if kind == "trigger":
            return [self.words[z] for z in self.trigger_tokens(rng, n_words)[0]]
        if kind == "repeat":
            return self.repeat_words(rng, n_words)
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
        lo, hi = self.spec.doc_words
        docs = []
        for _ in range(n):
            kind = kinds[min(int(np.searchsorted(cum, rng.random() * cum[-1])), len(kinds) - 1)]
            docs.append((kind, self.document(rng, kind, int(rng.integers(lo, hi + 1)))))
        return docs

    def packed_rows(self, stream: int, n: int) -> list[list[str]]:
        """The first `n` rows of stream `stream` packed as the module docstring says.

        Prefix-stable like `documents`. Training reads stream 0.
        """
        need = n * self.spec.row_len
        mean_doc = sum(self.spec.doc_words) / 2 + 1
        n_docs = int(need / mean_doc * 1.1) + 2
        while True:
            words = [EOS]
            for _, doc in self.documents(stream, n_docs):
                words += doc + [EOS]
            if len(words) >= need:
                break
            n_docs *= 2
        L = self.spec.row_len
        return [words[i * L:(i + 1) * L] for i in range(n)]

    def training_rows(self, n: int) -> list[list[str]]:
        """The first `n` training rows (stream 0, packed); the trainer reads these."""
        return self.packed_rows(0, n)
