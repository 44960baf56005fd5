"""The toy corpus's packing (issue 26): documents at every offset, validation never trained on."""

from __future__ import annotations

import numpy as np
import pytest

from dynamics.toy.corpus import EOS, KINDS, Corpus, CorpusSpec
from dynamics.toy.export import validation_rows

SPEC = CorpusSpec()


def _starts(rows: list[list[str]]) -> np.ndarray:
    """Row offsets of document starts (the word after each EOS; a row ending in EOS starts
    the next row's document at offset 0 of that row)."""
    out = []
    flat = [w for row in rows for w in row]
    L = len(rows[0])
    for i, w in enumerate(flat[:-1]):
        if w == EOS:
            out.append((i + 1) % L)
    return np.array(out)


def test_document_starts_are_spread_over_the_row():
    """No fixed alignment: over 2,000 rows every offset holds document starts, none holds
    more than 3x its share (aligned rows, EOS always at 0, put them all at offset 1)."""
    rows = Corpus(SPEC, 0).training_rows(2000)
    assert {len(r) for r in rows} == {SPEC.row_len}
    counts = np.bincount(_starts(rows), minlength=SPEC.row_len)
    share = counts.sum() / SPEC.row_len
    assert counts.min() > share / 3 and counts.max() < 3 * share, counts
    # a document continues into the next row: rows do not start with EOS as a rule
    first_is_eos = np.mean([r[0] == EOS for r in rows])
    assert first_is_eos < 3 / SPEC.row_len, first_is_eos


def test_rows_are_consecutive_slices_of_one_document_stream():
    corpus = Corpus(SPEC, 0)
    rows = corpus.training_rows(50)
    docs = corpus.documents(0, 60)
    stream = [EOS] + [w for _, d in docs for w in d + [EOS]]
    assert [w for r in rows for w in r] == stream[:50 * SPEC.row_len]
    assert corpus.training_rows(20) == rows[:20]  # prefix-stable
    lo, hi = SPEC.doc_words
    lengths = [len(d) for _, d in docs]
    assert min(lengths) >= lo and max(lengths) <= hi and len(set(lengths)) > 10
    assert {k for k, _ in corpus.documents(0, 300)} == set(SPEC.mix) == set(KINDS)


def test_training_and_validation_rows_are_disjoint():
    """Validation is another random stream packed the same way: no validation row, and no
    validation document of 24+ words, occurs among the training rows."""
    corpus = Corpus(SPEC, 0)
    train = {tuple(r) for r in corpus.training_rows(20_000)}
    val = corpus.packed_rows(1, 300)
    assert not train & {tuple(r) for r in val}
    # the exported validation text is stream 1's documents, in order
    exported = [r["text"].split() for r in validation_rows(corpus, 100)]
    assert exported == [d for _, d in corpus.documents(1, 100)]
    train_text = " " + " ".join(" ".join(r) for r in list(train)[:3000]) + " "
    repeats = [d for k, d in corpus.documents(1, 100) if k in ("repeat", "trigger")]
    assert repeats and all(f" {' '.join(d)} " not in train_text for d in repeats)


def test_repeat_documents_repeat_a_random_segment():
    corpus = Corpus(SPEC, 0)
    rng = np.random.default_rng(1)
    lo, hi = SPEC.repeat_len
    periods = set()
    for n in (24, 40, 96):
        for _ in range(20):
            words = corpus.repeat_words(rng, n)
            period = next(p for p in range(1, n) if words[p:] == words[:-p])
            assert len(words) == n and lo <= period <= min(hi, n // 2)
            assert EOS not in words
            periods.add(period)
    assert len(periods) > 5


@pytest.mark.parametrize("bad, match", [
    (dict(doc_words=(1, 10)), "doc_words"),
    (dict(doc_words=(30, 20)), "doc_words"),
    (dict(repeat_len=(20, 30)), "repeat_len"),
    (dict(repeat_gap=(3, 1)), "repeat_gap"),
    (dict(mix={"trigger": 0.5, "novel": 0.5}), "novel"),
])
def test_bad_corpus_specs_name_the_value_and_what_is_allowed(bad, match):
    with pytest.raises(ValueError, match=match):
        CorpusSpec(**bad)


def test_repeat_gaps_put_copies_at_varying_distances():
    """With repeat_gap the segment recurs after 0-8 random words: the distance between copies
    varies within a document (no fixed look-back offset predicts the next word)."""
    spec = CorpusSpec(repeat_len=(6, 6), repeat_gap=(0, 8))
    corpus = Corpus(spec, 0)
    rng = np.random.default_rng(2)
    distances = set()
    for _ in range(20):
        words = corpus.repeat_words(rng, 90)
        seg = words[:6]
        starts = [i for i in range(len(words) - 5) if words[i:i + 6] == seg]
        assert len(words) == 90 and len(starts) >= 3
        distances |= set(np.diff(starts).tolist())
    assert min(distances) == 6 and max(distances) > 10 and len(distances) >= 6


def test_the_ppl_rise_rule_flags_what_it_should():
    """The rule of the slow test on the trained suite (tests/test_toy.py)."""
    from tests.test_toy import val_ppl_rises

    assert val_ppl_rises([0, 10, 20, 30, 40], [100, 20, 10, 10.2, 9], 40) == []
    assert val_ppl_rises([0, 10, 20, 30, 40], [100, 20, 10, 11, 9], 40) == [(30, 1.1)]
    assert val_ppl_rises([0, 2, 20], [100, 150, 90], 40) == []  # the first 10 % may rise


def test_ppl_over_best_is_per_model_and_agrees_with_the_report_flags():
    """The ratio behind the rule above and the report's ppl-rise flags: per model, in step order,
    against the lowest earlier ppl (stats.perplexity)."""
    import polars as pl

    from stats.perplexity import flag_ppl_rises, ppl_over_best

    frame = pl.DataFrame({"family": ["f"] * 7, "model": ["a"] * 4 + ["b"] * 3,
                          "step": [0, 10, 20, 30, 0, 10, 20],
                          "val_ppl": [40.0, 20.0, 25.0, 18.0, 10.0, 30.0, 5.0]})
    out = ppl_over_best(frame.reverse())  # row order does not matter, steps do
    got = dict(zip(zip(out["model"], out["step"]), out["over_best"], strict=True))
    assert got == {("a", 0): None, ("a", 10): 0.5, ("a", 20): 1.25, ("a", 30): 0.9,
                   ("b", 0): None, ("b", 10): 3.0, ("b", 20): 0.5}
    flags = flag_ppl_rises(frame)["ppl_rises"].to_list()
    assert flags == [False, False, True, False, False, True, False]


def test_repeats_without_gaps_take_the_fast_path_with_the_same_words_and_draws():
    """repeat_gap (0, 0) skips the gap loop: the same words as the loop and the generator left
    in the same state (a size-0 or integers(0, 1) draw consumes nothing)."""
    corpus = Corpus(CorpusSpec(), 0)

    def loop(rng, n_words):  # the general path, gap always 0
        lo, hi = corpus.spec.repeat_len
        seg_len = int(rng.integers(lo, min(hi, n_words // 2) + 1))
        seg = [corpus.vocab[i] for i in rng.integers(len(corpus.vocab), size=seg_len)]
        words = list(seg)
        while len(words) < n_words:
            gap = int(rng.integers(0, 1)) if len(words) + seg_len < n_words else 0
            words += [corpus.vocab[i] for i in rng.integers(len(corpus.vocab), size=gap)] + seg
        return words[:n_words]

    for seed in range(50):
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        n = 24 + seed
        assert corpus.repeat_words(a, n) == loop(b, n)
        assert a.random() == b.random()
