"""CounterFact (Meng et al. 2022, ROME) as labeled sequence sets: the `counterfact` adapter.

Source: the hub dataset `azhx/counterfact` (parquet; splits train 19,728 and
test 2,191 records of ROME's counterfact.json), one record per fact::

    {"case_id": 0, "pararel_idx": 2796,
     "requested_rewrite": {"prompt": "The mother tongue of {} is", "relation_id": "P103",
                           "subject": "Danielle Darrieux",
                           "target_new": {"id": "Q1860", "str": "English"},
                           "target_true": {"id": "Q150", "str": "French"}},
     "paraphrase_prompts": [...], "neighborhood_prompts": [...],
     "attribute_prompts": [...], "generation_prompts": [...]}

The adapter turns each record into three rows of the `sequences` schema
(evals.sequences), pair_id = "cf-<case_id>":

- factual: prefix = the prompt with `{}` filled by the subject ("The mother
  tongue of Danielle Darrieux is"), text = " " + target_true.str (" French");
- hallucinated: the same prefix, text = " " + target_new.str (" English"): the
  minimally edited false statement (ROME's counterfactual target);
- ungrammatical: no prefix; text = the words of the whole true sentence
  ("The mother tongue of Danielle Darrieux is French") in a deterministic
  shuffled order, seeded by case_id (`numpy.random.default_rng(case_id)`
  permutation; when it gives the words back in their order, the words are
  rotated by one instead). A one-word sentence cannot be reordered: such a
  record is an error.

Only the target is scored in the first two sets (log p(target | filled
prompt)), while the ungrammatical set scores every token of its shuffled
sentence from BOS: compare its per-token perplexity over training with the
other sets' trajectories (Xia et al.'s noisy-input finding), not pair by pair.

`max_pairs` keeps the first N records (in file order) before the conversion.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from evals.sequences import SequenceSetError

def shuffled_words(sentence: str, seed: int) -> str:
    """The words of `sentence` in a seeded order that differs from the original.

    Example: shuffled_words("a b c", 0) is a deterministic reordering such as "c a b";
    the same seed always gives the same words.
    """
    words = sentence.split()
    if len(words) < 2:
        raise ValueError(f"cannot reorder the one-word sentence {sentence!r}")
    order = np.random.default_rng(seed).permutation(len(words))
    out = [words[i] for i in order]
    if out == words:
        out = words[1:] + words[:1]
    return " ".join(out)


def _fields(raw: pl.DataFrame, where: str) -> pl.DataFrame:
    """case_id, prompt, subject, true, new: the CounterFact fields the adapter reads."""
    need = ("case_id", "requested_rewrite")
    missing = [c for c in need if c not in raw.columns]
    if missing:
        raise SequenceSetError(f"{where}: not a CounterFact source: missing columns {missing}; "
                               f"found {raw.columns} (adapter 'counterfact' needs case_id and "
                               "requested_rewrite.{prompt, subject, target_true.str, "
                               "target_new.str})")
    rw = pl.col("requested_rewrite")
    try:
        return raw.select(
            pl.col("case_id").cast(pl.Int64), rw.struct.field("prompt").alias("prompt"),
            rw.struct.field("subject").alias("subject"),
            rw.struct.field("target_true").struct.field("str").alias("true"),
            rw.struct.field("target_new").struct.field("str").alias("new"))
    except (pl.exceptions.PolarsError, pl.exceptions.StructFieldNotFoundError) as err:
        raise SequenceSetError(f"{where}: requested_rewrite lacks a CounterFact field: "
                               f"{err}") from err


def to_sequences(raw: pl.DataFrame, where: str, max_pairs: int | None = None) -> pl.DataFrame:
    """CounterFact records -> pair_id, set, prefix, text rows (see the module docstring)."""
    facts = _fields(raw if max_pairs is None else raw.head(max_pairs), where)
    rows = []
    for i, r in enumerate(facts.iter_rows(named=True), start=1):
        prompt, subject = r["prompt"], r["subject"]
        if not prompt or "{}" not in prompt or not subject:
            raise SequenceSetError(f"{where}: record {i} (case_id {r['case_id']}): prompt "
                                   f"{prompt!r} needs a '{{}}' for the subject {subject!r}")
        if not (r["true"] or "").strip() or not (r["new"] or "").strip():
            raise SequenceSetError(f"{where}: record {i} (case_id {r['case_id']}): empty "
                                   f"target (true {r['true']!r}, new {r['new']!r})")
        prefix = prompt.replace("{}", subject)
        pair = f"cf-{r['case_id']}"
        try:
            noisy = shuffled_words(f"{prefix} {r['true'].strip()}", r["case_id"])
        except ValueError as err:
            raise SequenceSetError(f"{where}: record {i} (case_id {r['case_id']}): {err}") from err
        rows += [{"pair_id": pair, "set": "factual", "prefix": prefix,
                  "text": " " + r["true"].strip()},
                 {"pair_id": pair, "set": "hallucinated", "prefix": prefix,
                  "text": " " + r["new"].strip()},
                 {"pair_id": pair, "set": "ungrammatical", "prefix": "", "text": noisy}]
    return pl.DataFrame(rows, schema={"pair_id": pl.String, "set": pl.String,
                                      "prefix": pl.String, "text": pl.String})
