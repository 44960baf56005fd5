"""BIG-bench multiple-choice evaluator: every choice scored from one pass over its prompt.

Each choice's score is the sum of its tokens' log-probabilities given the
prompt, with prompt and choice tokenized separately and concatenated (as
BIG-bench's Hugging Face model does). Accuracy (raw and length-normalized) is
derived in `stats.bigbench` from the stored per-choice rows.

Fast path (`shared_prompt_scores`): the prompt of an example is run once with
the key/value cache on; the cache rows are then repeated for each of its
choices and all choices run together against it. A batch holds several
examples: prompts are right-padded, and each choice's positions continue from
its own prompt's true length (explicit `position_ids`; padded cache slots are
masked out), so the result equals scoring `prompt + choice` alone.

Worked example: prompts P1 (3 tokens) and P2 (5 tokens) are padded to 5; P1's
choices ["a b", "c"] run at positions 3, 4 and 3 with attention over P1's 3
real cache slots plus their own tokens. log p(a | P1) comes from the prompt
pass (last real position of P1), log p(b | P1 a) from the choice pass.

Prompts longer than the window are cut from the left so prompt + the longest
choice fits; the number of truncated examples is recorded and logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import torch

from evals.base import Evaluator, tokenizer_fingerprint
from evals.bigbench_tasks import MCExample, format_task, read_task, select_tasks
from evals.scoring import ContextTooLongError, length_batches, target_logprobs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BigBenchOptions:
    """Options of the bigbench-mc evaluator.

    Attributes:
        folder: a BIG-bench folder laid out as <task>/task.json (e.g. a clone's
            bigbench/benchmark_tasks, or ../shared/data/bigbench).
        tasks: task names, or a named selection: "all", "xia74", "breakthrough", "linear".
        k: shots per prompt (Xia et al.: 2).
        seed: BIG-bench's formatting/shot seed (42 in BIG-bench).
        max_examples: score at most this many queries per task (None: all).
        batch_tokens: padded prompt tokens per forward pass.
        max_length: window in tokens (default: the model's context, capped at 2048).
    """

    folder: str
    tasks: list[str] | str = "all"
    k: int = 2
    seed: int = 42
    max_examples: int | None = None
    batch_tokens: int = 8192
    max_length: int | None = None

    def __post_init__(self) -> None:
        if self.k < 0:
            raise ValueError(f"k must be >= 0, got {self.k}")
        if self.max_examples is not None and self.max_examples < 1:
            raise ValueError(f"max_examples must be >= 1 or unset, got {self.max_examples}")
        if self.batch_tokens < 1:
            raise ValueError(f"batch_tokens must be >= 1, got {self.batch_tokens}")


@dataclass(frozen=True)
class Tokenized:
    """An example's prompt and choices as token ids."""

    example: MCExample
    prompt: list[int]
    choices: list[list[int]]


def tokenize_examples(examples: list[MCExample], tokenizer) -> list[Tokenized]:
    prompts = tokenizer([e.prompt for e in examples], add_special_tokens=False)["input_ids"]
    flat = [c for e in examples for c in e.choices]
    choice_ids = tokenizer(flat, add_special_tokens=False)["input_ids"] if flat else []
    out, i = [], 0
    for e, p in zip(examples, prompts):
        cs = [list(c) for c in choice_ids[i: i + len(e.choices)]]
        i += len(e.choices)
        empty = [e.choices[j] for j, c in enumerate(cs) if not c]
        if empty:
            raise ValueError(f"task {e.task} example {e.example_id}: choices {empty} have no tokens")
        out.append(Tokenized(e, list(p), cs))
    return out


def fit_prompt(t: Tokenized, max_length: int, prefix_id: int) -> tuple[list[int], bool]:
    """Left-truncate the prompt so prompt + longest choice fits; empty prompt -> [prefix_id]."""
    longest = max(len(c) for c in t.choices)
    if longest + 1 > max_length:
        raise ContextTooLongError(
            f"task {t.example.task} example {t.example.example_id}: a choice of {longest} tokens "
            f"does not fit a window of {max_length} tokens"
        )
    prompt = t.prompt or [prefix_id]
    keep = min(len(prompt), max_length - longest)
    return prompt[len(prompt) - keep:], keep < len(prompt)


def _prompt_pass(model, prompts: list[list[int]], device):
    """Run right-padded prompts once; return last real hidden state, K/V per layer, mask, lengths."""
    width, n = len(prompts[0]), len(prompts)
    ids = torch.zeros((n, width), dtype=torch.long)
    pmask = torch.zeros((n, width), dtype=torch.long)
    lens = torch.tensor([len(p) for p in prompts])
    for r, p in enumerate(prompts):
        ids[r, : len(p)] = torch.tensor(p)
        pmask[r, : len(p)] = 1
    ids, pmask = ids.to(device), pmask.to(device)
    pos = torch.arange(width, device=device).expand(n, -1)
    out = model.base_model(input_ids=ids, attention_mask=pmask, position_ids=pos, use_cache=True)
    last = out.last_hidden_state[torch.arange(n, device=device), (lens - 1).to(device)]
    kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
    return last, kv, pmask, lens


def _choice_pass(model, choices, owner, kv, pmask, lens, device) -> torch.Tensor:
    """Log-probs of tokens 2.. of each choice, continuing its owner's cached prompt."""
    from transformers import DynamicCache

    cw, m = max(len(c) for c in choices), len(choices)
    cids = torch.zeros((m, cw), dtype=torch.long)
    cmask = torch.zeros((m, cw), dtype=torch.long)
    for j, c in enumerate(choices):
        cids[j, : len(c)] = torch.tensor(c)
        cmask[j, : len(c)] = 1
    own = torch.tensor(owner, device=device)
    cache = DynamicCache(ddp_cache_data=[(k[own], v[own]) for k, v in kv])
    pos = lens[owner].unsqueeze(1).to(device) + torch.arange(cw, device=device)
    mask = torch.cat([pmask[own], cmask.to(device)], dim=1)
    hid = model.base_model(input_ids=cids.to(device), attention_mask=mask, position_ids=pos,
                           past_key_values=cache, use_cache=True).last_hidden_state
    rows = [(j, p, c[p + 1]) for j, c in enumerate(choices) for p in range(len(c) - 1)]
    if not rows:
        return torch.empty(0, device=device)
    rj, rp, tg = (torch.tensor(x, device=device) for x in zip(*rows))
    return target_logprobs(model, hid[rj, rp], tg)


def _score_batch(model, items, prompts, idx, device, chunk_tokens) -> dict[int, list]:
    """Log-probs of every choice token of the examples `idx` (shared-prompt fast path)."""
    last, kv, pmask, lens = _prompt_pass(model, [prompts[i] for i in idx], device)
    owner = [r for r, i in enumerate(idx) for _ in items[i].choices]
    choices = [c for i in idx for c in items[i].choices]
    first = target_logprobs(model, last[torch.tensor(owner, device=device)],
                            torch.tensor([c[0] for c in choices], device=device)).cpu()
    per_choice: list[torch.Tensor] = [first[j: j + 1] for j in range(len(choices))]
    for chunk in length_batches([len(c) for c in choices], chunk_tokens):
        sub = [choices[j] for j in chunk]
        if max(len(c) for c in sub) == 1:
            continue  # single-token choices are fully scored by the prompt pass
        rest = _choice_pass(model, sub, [owner[j] for j in chunk], kv, pmask, lens, device).cpu()
        off = 0
        for j in chunk:
            n = len(choices[j]) - 1
            per_choice[j] = torch.cat([per_choice[j], rest[off: off + n]])
            off += n
    scores: dict[int, list] = {i: [] for i in idx}
    for j, lp in enumerate(per_choice):
        scores[idx[owner[j]]].append(lp)
    return scores


def shared_prompt_scores(model, items: list[Tokenized], *, max_length: int, prefix_id: int = 0,
                         batch_tokens: int = 8192) -> tuple[list[list[torch.Tensor]], int]:
    """Per-token log-probs of every choice of every example, and the truncation count."""
    fitted = [fit_prompt(t, max_length, prefix_id) for t in items]
    prompts = [f[0] for f in fitted]
    result: list[list[torch.Tensor]] = [[] for _ in items]
    device = next(model.parameters()).device
    with torch.inference_mode():
        for idx in length_batches([len(p) for p in prompts], batch_tokens):
            for i, lps in _score_batch(model, items, prompts, idx, device,
                                       max(batch_tokens // 4, 64)).items():
                result[i] = lps
    return result, sum(f[1] for f in fitted)


class BigBenchMC(Evaluator):
    """BIG-bench multiple-choice log-likelihoods per choice."""

    name = "bigbench-mc"
    tables = ("bigbench-mc",)
    Options = BigBenchOptions

    def __init__(self, options: BigBenchOptions, base_dir=None):
        super().__init__(options, base_dir)
        self.folder = Path(self.resolve_path(options.folder))
        names = select_tasks(self.folder, options.tasks)
        self.examples: list[MCExample] = []
        self.skipped: list[str] = []
        for name in names:
            tasks, skipped = read_task(self.folder / name)
            self.skipped += skipped
            for task in tasks:
                self.examples += format_task(task, options.k, options.seed, options.max_examples)
        if self.skipped:
            log.warning("bigbench-mc: skipped generative subtasks %s", ", ".join(self.skipped))
        self._tokenized: dict[str, list[Tokenized]] = {}
        self.truncated = 0

    def tokenized(self, tokenizer) -> list[Tokenized]:
        key = tokenizer_fingerprint(tokenizer)
        if key not in self._tokenized:
            self._tokenized[key] = tokenize_examples(self.examples, tokenizer)
        return self._tokenized[key]

    def run(self, lm) -> dict[str, pl.DataFrame]:
        items = self.tokenized(lm.tokenizer)
        tok = lm.tokenizer
        prefix = tok.bos_token_id if tok.bos_token_id is not None else (tok.eos_token_id or 0)
        max_length = min(self.options.max_length or 2048, lm.context_length)
        scores, self.truncated = shared_prompt_scores(
            lm.model, items, max_length=max_length, prefix_id=prefix,
            batch_tokens=self.options.batch_tokens)
        if self.truncated:
            log.warning("bigbench-mc: %d of %d prompts truncated from the left to fit %d tokens",
                        self.truncated, len(items), max_length)
        rows = {k: [] for k in ("task", "example_id", "choice_index", "logprob_nats", "n_tokens",
                                "is_target", "target_score")}
        for t, lps in zip(items, scores):
            best = max(t.example.target_scores)
            for c, lp in enumerate(lps):
                rows["task"].append(t.example.task)
                rows["example_id"].append(t.example.example_id)
                rows["choice_index"].append(c)
                rows["logprob_nats"].append(float(lp.double().sum()))
                rows["n_tokens"].append(len(lp))
                rows["is_target"].append(t.example.target_scores[c] == best)
                rows["target_score"].append(t.example.target_scores[c])
        return {"bigbench-mc": pl.DataFrame(rows)}
