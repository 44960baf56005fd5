"""Contrastive generation: decode from a mixture of two checkpoints (Xia et al. 2023, sec. 2).

At every step the next-token distribution is

    p = clip(a * p_small + b * p_large, 0) / sum(clip(...))

over the shared vocabulary (the paper's grid: a, b in {-1, 0, 1}; (1, -1) gives
text the small model likes and the large one does not: grammatical, with
hallucinations). Decoding is greedy (`top_p=None`) or nucleus sampling; each
model keeps its own key/value cache (or recomputes the prefix every step with
`use_cache=False`, which gives the same distributions). Generated continuations
are written as a labeled set in the `sequences` format (pair_id = prompt,
prefix = prompt text, text = continuation), so the `sequences` evaluator scores
them over every checkpoint of a batch. The rows also carry the exact token ids
(`prefix_ids`, `text_ids`) and the tokenizer's fingerprint (`tokenizer`): the
evaluator scores those ids, not a re-tokenization of the decoded text, which
with a BPE tokenizer need not give the generated tokens back (decode
[" th", "e"] -> " the" -> re-encode [" the"]).

Worked example (one step, vocab of 3): p_small = [0.5, 0.3, 0.2], p_large =
[0.2, 0.5, 0.3], a = 1, b = -1: a p_s + b p_l = [0.3, -0.2, -0.1] -> clipped
[0.3, 0, 0] -> p = [1, 0, 0]: token 0 is chosen.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from evals.base import tokenizer_fingerprint


GENERATED_SCHEMA = {"pair_id": pl.String, "set": pl.String, "prefix": pl.String,
                    "text": pl.String, "prefix_ids": pl.List(pl.Int64),
                    "text_ids": pl.List(pl.Int64), "tokenizer": pl.String}


class MixtureError(ValueError):
    """Bad mixture options or a mixture with no positive mass."""


@dataclass(frozen=True)
class MixtureOptions:
    """How to decode from the mixture.

    Attributes:
        a: weight of the small model's distribution.
        b: weight of the large model's distribution.
        max_new_tokens: tokens generated per prompt (the paper: 50 or 100).
        top_p: nucleus sampling mass; None = greedy (the paper uses both, top_p 0.9).
        seed: sampling seed; prompt i uses a generator seeded with (seed, i).
        use_cache: keep each model's key/value cache (same result, faster).
    """

    a: float = 1.0
    b: float = -1.0
    max_new_tokens: int = 50
    top_p: float | None = None
    seed: int = 0
    use_cache: bool = True

    def __post_init__(self) -> None:
        if self.a <= 0 and self.b <= 0:
            raise MixtureError(f"a = {self.a}, b = {self.b}: at least one weight must be > 0 "
                               "or the clipped mixture has no mass")
        if self.max_new_tokens < 1:
            raise MixtureError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise MixtureError(f"top_p must be in (0, 1] or None (greedy), got {self.top_p}")

    @property
    def set_name(self) -> str:
        return f"mix a={self.a:g} b={self.b:g}"


def mixture_probs(logits_small: torch.Tensor, logits_large: torch.Tensor, a: float,
                  b: float) -> torch.Tensor:
    """The clipped, renormalized mixture of two models' next-token distributions.

    Args:
        logits_small, logits_large: (..., vocab) logits over the same vocabulary.
    Returns:
        (..., vocab) float64 probabilities. Raises MixtureError where no mass is left.
    """
    mix = a * torch.softmax(logits_small.double(), -1) + b * torch.softmax(logits_large.double(),
                                                                             -1)
    mix = mix.clamp_min(0.0)
    total = mix.sum(-1, keepdim=True)
    if (total <= 0).any():
        raise MixtureError(f"the mixture {a:g} p_small + {b:g} p_large has no positive mass")
    return mix / total


def choose_token(probs: torch.Tensor, top_p: float | None, gen: torch.Generator) -> int:
    """Greedy argmax (lowest id on ties), or a nucleus sample from (vocab,) probabilities.

    The nucleus is the smallest set of most probable tokens whose mass reaches
    top_p (the token that crosses top_p is included).
    """
    if top_p is None:
        return int(torch.argmax(probs))
    sorted_p, order = torch.sort(probs, descending=True, stable=True)
    keep = (sorted_p.cumsum(0) - sorted_p) < top_p  # mass before this token is below top_p
    kept = sorted_p * keep
    pick = torch.multinomial(kept / kept.sum(), 1, generator=gen)
    return int(order[pick])


class _Stepper:
    """Next-token logits of one model for growing sequences, with or without a KV cache."""

    def __init__(self, model, vocab: int, use_cache: bool):
        self.model, self.vocab, self.use_cache = model, vocab, use_cache
        self.past = None

    def logits(self, rows: list[list[int]], n_new: int) -> torch.Tensor:
        """(batch, vocab) logits after each row (rows of equal length)."""
        device = next(self.model.parameters()).device
        if not self.use_cache:
            x = torch.tensor(rows, device=device)  # (batch, pos)
            return self.model(input_ids=x, use_cache=False).logits[:, -1, : self.vocab]
        x = torch.tensor([r[-n_new:] for r in rows], device=device)
        out = self.model(input_ids=x, past_key_values=self.past, use_cache=True)
        self.past = out.past_key_values
        return out.logits[:, -1, : self.vocab]


def _generator(seed: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, index])
                                             .generate_state(1)[0]))


def generate_rows(small, large, prompts: list[list[int]], options: MixtureOptions, vocab: int,
                  indices: list[int] | None = None, trace: list | None = None
                  ) -> list[list[int]]:
    """Generate after prompts of equal length in one batch (no padding needed).

    Prompt j samples with a generator seeded by (options.seed, indices[j])
    (indices default to 0, 1, ...), so a prompt gets the same tokens alone or
    in a batch (up to float rounding of batched matmuls at near-ties).
    `trace`, when a list, receives the (batch, vocab) mixture of every step.
    """
    if len({len(p) for p in prompts}) != 1:
        raise MixtureError("generate_rows needs prompts of one length; group them first")
    indices = list(range(len(prompts))) if indices is None else indices
    gens = [_generator(options.seed, i) for i in indices]
    steppers = [_Stepper(m, vocab, options.use_cache) for m in (small, large)]
    rows, n_new = [list(p) for p in prompts], len(prompts[0])
    with torch.inference_mode():
        for _ in range(options.max_new_tokens):
            ls, ll = (s.logits(rows, n_new) for s in steppers)
            probs = mixture_probs(ls, ll, options.a, options.b).cpu()  # (batch, vocab)
            if trace is not None:
                trace.append(probs)
            for row, p, gen in zip(rows, probs, gens, strict=True):
                row.append(choose_token(p, options.top_p, gen))
            n_new = 1
    return [row[len(prompts[0]):] for row in rows]


def generate(small, large, prompt_ids: list[int], options: MixtureOptions, vocab: int,
             index: int = 0, trace: list | None = None) -> list[int]:
    """Token ids generated after `prompt_ids` from the mixture of two models (batch of one).

    `vocab` cuts padded embedding rows off the logits; `trace`, when a list,
    receives the (vocab,) mixture distribution of every step.
    """
    steps: list | None = [] if trace is not None else None
    out = generate_rows(small, large, [prompt_ids], options, vocab, [index], steps)[0]
    if trace is not None:
        trace.extend(p[0] for p in steps)
    return out


def shared_vocab(small_lm, large_lm) -> int:
    """The vocabulary both models score: the tokenizer's (padded embedding rows excluded)."""
    if tokenizer_fingerprint(small_lm.tokenizer) != tokenizer_fingerprint(large_lm.tokenizer):
        raise MixtureError(f"{small_lm.ref.label} and {large_lm.ref.label} use different "
                           "tokenizers; a mixture needs one vocabulary")
    return len(small_lm.tokenizer)


def generate_set(small_lm, large_lm, prompts: list[str], options: MixtureOptions,
                 prompt_tokens: int = 16, label: str | None = None,
                 batch_size: int = 32) -> pl.DataFrame:
    """A labeled set in the `sequences` format: pair_id, set, prefix, text, and the exact
    token ids prefix_ids (the prompt) and text_ids (generated), with the tokenizer fingerprint.

    Each prompt is cut to its first `prompt_tokens` tokens (prompts shorter than
    that are used whole); pair_id is the prompt's index, so sets generated with
    other (a, b) from the same prompts pair up. The set name records a, b and
    both checkpoints: "mix a=1 b=-1 | small: toy/toy-s@step100 | large: ...", plus
    " | gen: <label>" when a label is given (a batch's generate table and options hash).
    Prompts of equal token length are decoded together, `batch_size` at a time.
    """
    vocab = shared_vocab(small_lm, large_lm)
    tok = small_lm.tokenizer
    name = f"{options.set_name} | small: {small_lm.ref.label} | large: {large_lm.ref.label}"
    if label:
        name += f" | gen: {label}"
    ids = [t[:prompt_tokens] for t in tok(prompts, add_special_tokens=False)["input_ids"]]
    for i, (text, row) in enumerate(zip(prompts, ids, strict=True)):
        if not row:
            raise MixtureError(f"prompt {i} ({text[:40]!r}) has no tokens")
    new: dict[int, list[int]] = {}
    for length in sorted({len(r) for r in ids}):  # one batch per prompt length
        idx = [i for i, r in enumerate(ids) if len(r) == length]
        for start in range(0, len(idx), batch_size):
            chunk = idx[start:start + batch_size]
            outs = generate_rows(small_lm.model, large_lm.model, [ids[i] for i in chunk],
                                 options, vocab, indices=chunk)
            new.update(zip(chunk, outs, strict=True))
    fingerprint = tokenizer_fingerprint(tok)
    rows = [{"pair_id": str(i), "set": name, "prefix": tok.decode(ids[i]),
             "text": tok.decode(new[i], skip_special_tokens=True), "prefix_ids": ids[i],
             "text_ids": new[i], "tokenizer": fingerprint} for i in range(len(ids))]
    return pl.DataFrame(rows, schema=GENERATED_SCHEMA)


def pick_prompts(texts: list[str], n_prompts: int, seed: int = 0) -> list[str]:
    """`n_prompts` distinct documents drawn with a seeded generator (all if fewer)."""
    texts = [t for t in texts if t and t.strip()]
    if n_prompts >= len(texts):
        return texts
    idx = np.random.default_rng(seed).choice(len(texts), size=n_prompts, replace=False)
    return [texts[i] for i in idx]


def write_sets(frames: list[pl.DataFrame], path: str | Path) -> Path:
    """Write generated sets as one jsonl for the `sequences` evaluator.

    Pairs whose continuation decodes to blank text in any set are dropped from
    every set (the evaluator refuses empty texts and unpaired ids).
    """
    frame = pl.concat(frames)
    blank = frame.filter(pl.col("text").str.strip_chars() == "")["pair_id"].unique()
    frame = frame.filter(~pl.col("pair_id").is_in(blank.implode()))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in frame.iter_rows(named=True)))
    return path


# The paper's grid: (a, b) in {-1, 0, 1}^2 with some positive mass.
PAPER_GRID = ((1.0, -1.0), (-1.0, 1.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0))


def generate_from_refs(small, large, dataset, out: str | Path, *, grid=PAPER_GRID,
                       n_prompts: int = 100, prompt_tokens: int = 16, max_new_tokens: int = 50,
                       top_p: float | None = None, seed: int = 0, load_options=None,
                       label: str | None = None, disk_budget_gb: float | None = None,
                       loader=None, pool_tokens: int | None = None) -> Path:
    """Generate one labeled set per (a, b) of `grid` between two checkpoints (`CheckpointRef`s).

    Both checkpoints load through `dynamics.streaming.stream_checkpoints`, as the
    sweep's do: a hub download is registered in the cache and counts against
    `disk_budget_gb` (evicted least-recently-used beyond it; issue 28), and a
    load error is raised, not recorded.

    Args:
        small, large: the two checkpoints.
        dataset: validation text source for prompts: a name (local file or hub dataset)
            or an `evals.texts.TextSource`.
        pool_tokens: draw prompts from the documents in the first this many tokens (the
            small model's tokenizer; the documents token-loss scores with that budget)
            instead of from every document: a streamed hub source is then read only
            that far.
        out: the jsonl written (the `sequences` evaluator's `dataset`).
        n_prompts: prompts drawn with `seed`; each cut to `prompt_tokens` tokens.
        label: appended to every set name (see generate_set).
        loader: checkpoint loader (default dynamics.loading.load_checkpoint; tests pass fakes).
    Returns:
        `out`, holding len(grid) sets with the same pair ids.
    """
    from dynamics.loading import load_checkpoint
    from dynamics.streaming import stream_checkpoints
    from evals.texts import Documents, TextSource
    from evals.token_loss import build_stream

    lms = []
    for item in stream_checkpoints([small, large], load_options, prefetch=False,
                                   disk_budget_gb=disk_budget_gb,
                                   loader=loader or load_checkpoint):
        if item.error is not None:
            raise item.error
        lms.append(item.loaded)
    docs = Documents(dataset if isinstance(dataset, TextSource) else TextSource(dataset))
    if pool_tokens is not None:
        n_docs = int(build_stream(docs, lms[0].tokenizer, pool_tokens).doc_id[-1]) + 1
        docs = docs.head(n_docs)
    prompts = pick_prompts(list(docs), n_prompts, seed)
    frames = [generate_set(lms[0], lms[1], prompts,
                           MixtureOptions(a=a, b=b, max_new_tokens=max_new_tokens, top_p=top_p,
                                          seed=seed), prompt_tokens, label)
              for a, b in grid]
    return write_sets(frames, out)


def generate_from_suite(suite: str, small: str, large: str, dataset: str, out: str | Path, *,
                        step_small: int | None = None, step_large: int | None = None,
                        **options) -> Path:
    """`generate_from_refs` for two models of a suite (name or folder; steps None = final)."""
    from dynamics.suites import get_suite

    s = get_suite(suite)
    refs = [s.select([m], "final" if step is None else [step])[0]
            for m, step in ((small, step_small), (large, step_large))]
    return generate_from_refs(*refs, dataset, out, **options)
