"""Evaluation data of the toy suite, written to `<suite>/data/` for the evaluators.

Files (all text is lowercase space-separated words of the suite's word-level
tokenizer, one token per word; none of it contains `<|endoftext|>`; in
training every document follows an `<|endoftext|>`, so prepend the tokenizer's
EOS/BOS to a prompt to be in distribution):

- `validation.jsonl`: `{"text": ...}` held-out documents of the training
  distribution (same generator, another random stream: dynamics.toy.corpus),
  for `token-loss`, which joins them with EOS and cuts the stream into
  windows exactly as training rows are packed.
- `sequences.jsonl`: `{"pair_id", "set", "text"}` with sets "factual",
  "hallucinated" (same held-out template, a wrong value of the same relation)
  and "ungrammatical" (the factual words shuffled, final "." kept); pair_id
  ("alice-city") is shared by the three versions of one fact. The held-out
  template of each fact never renders that fact in training, so no sequence
  occurs verbatim in the training stream. For the `sequences` evaluator.
- `bigbench/toy_world_qa/task.json`, `bigbench/toy_ioi/task.json`: BIG-bench
  JSON tasks (metric multiple_choice_grade; `examples` with "input" and
  "target_scores"; `example_input_prefix` "" and `example_output_prefix` " ",
  so score log p(" " + target | input)). toy_world_qa: 3-shot "q : ... a :
  <answer> ." pairs then a question; choices = all values of the relation.
  toy_ioi: an IOI sentence up to the answer; choices = the two names.
- `trigger.jsonl`: induction-circuit pairs, one row each::

      {"clean": "z5 z0 z17 ... z0", "corrupted": "z5 z0 z9 ... z0",
       "correct": "z17", "incorrect": "z9", "trigger": "z0", "n_tokens": 48}

  `clean` ends with a trigger token that occurred earlier in it; the next
  token should be that trigger's output in this sequence (`correct`). In
  `corrupted` every earlier output of that trigger (each token right after an
  earlier occurrence of it) is replaced by `incorrect`, so the in-context
  answer flips; clean and corrupted have the same number of tokens
  (`n_tokens`, without EOS) and differ only at those positions. Metric:
  logit(correct) - logit(incorrect) at the last position.
- `recall_bigram.jsonl`: fresh trigger sequences with a label per token, for
  the `recall-bigram` evaluator (Bietti et al.'s order of learning)::

      {"text": "z5 z0 z17 z3 z0 z17", "kinds": ["start", "bigram", "first",
       "bigram", "bigram", "recall"]}

  `kinds[i]` says how token i of `text` can be predicted from what precedes
  it: "recall" when the previous token is a trigger at its 2nd or later
  occurrence (the token must be recalled from context: that trigger's output
  in this sequence), "bigram" when the previous token is not a trigger (the
  token follows the global bigram chain), "first" after a trigger's first
  occurrence (its output is not yet known), "start" for the first token.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dynamics.toy import world
from dynamics.toy.corpus import Corpus

BIGBENCH_TASKS = ("toy_world_qa", "toy_ioi")


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def validation_rows(corpus: Corpus, n_docs: int) -> list[dict]:
    """Held-out documents of the training distribution (stream 1)."""
    return [{"text": " ".join(words)} for _, words in corpus.documents(1, n_docs)]


def sequence_rows(corpus: Corpus) -> list[dict]:
    """factual / hallucinated / ungrammatical versions of every fact (see module docstring)."""
    rng = np.random.default_rng([corpus.seed, 3])
    training = {f.render(t) for f in corpus.facts for t in f.training_templates()}
    rows = []
    for fact in corpus.facts:
        pair = f"{fact.entity}-{fact.relation}"
        wrong = [v for v in world.VALUES[fact.relation] if v != fact.value]
        factual = fact.render(fact.held_out)
        false = fact.render(fact.held_out, wrong[rng.integers(len(wrong))])
        noisy = world.shuffled(rng, factual, training | {factual, false})
        rows += [{"pair_id": pair, "set": s, "text": t}
                 for s, t in (("factual", factual), ("hallucinated", false),
                              ("ungrammatical", noisy))]
    return rows


def _task(name: str, description: str, keywords: list[str], examples: list[dict]) -> dict:
    return {
        "name": name,
        "description": description,
        "keywords": keywords,
        "metrics": ["multiple_choice_grade"],
        "preferred_score": "multiple_choice_grade",
        "example_input_prefix": "",
        "example_output_prefix": " ",
        "append_choices_to_input": False,
        "examples": examples,
    }


def world_qa_task(corpus: Corpus, n_shots: int = 3) -> dict:
    """Few-shot question answering about the world's facts, one example per fact."""
    rng = np.random.default_rng([corpus.seed, 4])
    facts = corpus.facts
    examples = []
    for i, fact in enumerate(facts):
        others = [j for j in rng.permutation(len(facts)) if j != i][:n_shots]
        shots = " ".join(" ".join(world.qa_pair(facts[j])) + " ." for j in others)
        question, answer = world.qa_pair(fact)
        scores = {v: int(v == answer) for v in world.VALUES[fact.relation]}
        examples.append({"input": f"{shots} {question}", "target_scores": scores})
    return _task("toy_world_qa", "Few-shot questions about the toy world's entities.",
                 ["multiple choice", "memorization", "zero-shot"], examples)


def ioi_task(corpus: Corpus, n_examples: int = 100) -> dict:
    """Which name completes an IOI sentence (the indirect object, not the repeated subject)."""
    rng = np.random.default_rng([corpus.seed, 5])
    examples = []
    for _ in range(n_examples):
        prompt, io, s = world.ioi_prompt(rng)
        examples.append({"input": prompt, "target_scores": {io: 1, s: 0}})
    return _task("toy_ioi", "Indirect object identification in toy sentences.",
                 ["multiple choice", "reading comprehension", "context-free question answering"],
                 examples)


def trigger_rows(corpus: Corpus, n_pairs: int, n_tokens: int = 48) -> list[dict]:
    """Clean/corrupted induction pairs (see the module docstring)."""
    rng = np.random.default_rng([corpus.seed, 6])
    k, words = corpus.spec.n_triggers, corpus.words
    rows = []
    while len(rows) < n_pairs:
        seq, counts = corpus.trigger_tokens(rng, n_tokens)
        if counts[-1] < 2:
            continue
        q = seq[-1]
        answer = seq[seq.index(q) + 1]
        wrong = [z for z in range(k, corpus.spec.n_markov) if z != answer]
        other = wrong[rng.integers(len(wrong))]
        corrupted = [other if t > 0 and seq[t - 1] == q else z for t, z in enumerate(seq)]
        rows.append({"clean": " ".join(words[z] for z in seq),
                     "corrupted": " ".join(words[z] for z in corrupted),
                     "correct": words[answer], "incorrect": words[other],
                     "trigger": words[q], "n_tokens": n_tokens})
    return rows


def position_kinds(seq: list[int], counts: list[int], n_triggers: int) -> list[str]:
    """The label of every token of a trigger sequence (see the module docstring).

    Example (triggers z0, z1): z5 z0 z17 z3 z0 z17 -> start bigram first bigram bigram recall.
    """
    kinds = ["start"]
    for prev, count in zip(seq[:-1], counts[:-1]):
        kinds.append("bigram" if prev >= n_triggers else "recall" if count >= 2 else "first")
    return kinds


def recall_bigram_rows(corpus: Corpus, n_seqs: int) -> list[dict]:
    """Fresh trigger sequences of a training row's length, labelled per token."""
    rng = np.random.default_rng([corpus.seed, 7])
    rows = []
    for _ in range(n_seqs):
        seq, counts = corpus.trigger_tokens(rng, corpus.spec.row_len - 1)
        rows.append({"text": " ".join(corpus.words[z] for z in seq),
                     "kinds": position_kinds(seq, counts, corpus.spec.n_triggers)})
    return rows


def export_data(corpus: Corpus, folder: str | Path, n_val_docs: int = 200,
                n_trigger_pairs: int = 64, n_recall_seqs: int = 64) -> Path:
    """Write every evaluation file under `folder` (usually `<suite>/data`); returns it."""
    folder = Path(folder)
    _write_jsonl(folder / "validation.jsonl", validation_rows(corpus, n_val_docs))
    _write_jsonl(folder / "sequences.jsonl", sequence_rows(corpus))
    _write_jsonl(folder / "trigger.jsonl", trigger_rows(corpus, n_trigger_pairs))
    _write_jsonl(folder / "recall_bigram.jsonl", recall_bigram_rows(corpus, n_recall_seqs))
    for task in (world_qa_task(corpus), ioi_task(corpus)):
        path = folder / "bigbench" / task["name"] / "task.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(task, indent=1) + "\n")
    return folder
