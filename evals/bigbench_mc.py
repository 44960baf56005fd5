"""BIG-bench multiple-choice evaluator: every choice scored from one pass over its prompt.

Each choice's score is the sum of its tokens' log-probabilities given the
prompt, with prompt and choice tokenized separately and concatenated (as
BIG-bench's Hugging Face model does). Accuracy (raw and length-normalized) is
derived in `stats.bigbench` from the stored per-choice rows.

Fast path (`shared_prompt_scores`): an example's prompt and all its choices are
packed into one sequence, `P c0 c1 c2`, with a 4D attention mask under which
each choice token sees the prompt and the earlier tokens of its own choice
only, and with position ids that restart at len(P) for every choice. One
forward pass then scores every choice, and the prompt's tokens are computed
once instead of once per choice. Rows are batched by length. The result
equals scoring `prompt + choice` alone (tested to 1e-4).

Worked example: P = [p0 p1 p2], choices a = [a0 a1], b = [b0]:
tokens  p0 p1 p2 a0 a1 b0, positions 0 1 2 3 4 3; b0 attends to p0 p1 p2 b0
(not a0 a1). log p(a0 | P) and log p(b0 | P) both come from p2's output,
log p(a1 | P a0) from a0's. If P plus all choices does not fit the window,
the remaining choices go to another row with the same prompt.

Attention implementations that take no custom mask (e.g. flash_attention_2)
fall back to one `prompt + choice` sequence per choice.

Prompts longer than the window are cut from the left so prompt + the longest
choice fits; the number of truncated examples is logged, and every row records
how many prompt tokens its example lost (`truncated_tokens`, 0 when it fit).
Example: window 12, prompt 15 tokens, longest choice 3 tokens: the first 6
prompt tokens are cut (truncated_tokens = 6) and 9 stay.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import torch

from evals.base import ConfigError, Evaluator, local_candidates, tokenizer_fingerprint
from evals.bigbench_tasks import MCExample, format_task, read_task, select_tasks
from evals.scoring import (ContextTooLongError, Request, check_head, length_batches,
                           score_requests, target_logprobs)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BigBenchOptions:
    """Options of the bigbench-mc evaluator.

    Attributes:
        folder: a BIG-bench folder laid out as <task>/task.json (e.g. a clone's
            bigbench/benchmark_tasks).
        tasks: task names, or a named selection: "all" (every multiple-choice task),
            "xia74", "breakthrough", "linear".
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
        problems = []
        if self.k < 0:
            problems.append(f"k must be >= 0, got {self.k}")
        if self.max_examples is not None and self.max_examples < 1:
            problems.append(f"max_examples must be >= 1 or unset, got {self.max_examples}")
        if self.batch_tokens < 1:
            problems.append(f"batch_tokens must be >= 1, got {self.batch_tokens}")
        if self.max_length is not None and self.max_length < 2:
            problems.append(f"max_length must be >= 2 tokens or unset, got {self.max_length}")
        if isinstance(self.tasks, list) and not self.tasks:
            problems.append('tasks = [] selects no task; name tasks or use "all"')
        if problems:
            raise ConfigError(problems)


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


@dataclass(frozen=True)
class PackedRow:
    """One packed sequence: an example's prompt followed by some of its choices."""

    item: int  # index of the example
    prompt: list[int]
    choices: list[int]  # choice indices, in order


def pack_rows(items: list[Tokenized], prompts: list[list[int]], max_length: int) -> list[PackedRow]:
    """Prompt + as many consecutive choices as fit `max_length`; the rest start a new row.

    Example: prompt of 5 tokens, choices of 3, 2 and 4 tokens, max_length 11:
    rows [P c0 c1] (10 tokens) and [P c2] (9 tokens). `fit_prompt` already made
    sure the prompt plus its longest choice fits.
    """
    rows = []
    for i, (t, p) in enumerate(zip(items, prompts)):
        current, used = [], len(p)
        for j, c in enumerate(t.choices):
            if current and used + len(c) > max_length:
                rows.append(PackedRow(i, p, current))
                current, used = [], len(p)
            current.append(j)
            used += len(c)
        rows.append(PackedRow(i, p, current))
    return rows


def _packed_inputs(items, rows: list[PackedRow], device, attn: str, dtype):
    """input ids, position ids and a (row, 1, pos, pos) mask for one batch of packed rows.

    Segment 0 is the prompt, segment j + 1 choice j, -1 padding. A query attends
    causally to the prompt and to earlier tokens of its own segment; choice
    positions continue from the prompt's length, so each choice sees exactly
    `prompt + choice`.
    """
    width = max(len(r.prompt) + sum(len(items[r.item].choices[j]) for j in r.choices)
                for r in rows)
    n = len(rows)
    ids = torch.zeros((n, width), dtype=torch.long)
    pos = torch.zeros((n, width), dtype=torch.long)
    seg = torch.full((n, width), -1, dtype=torch.long)
    for b, r in enumerate(rows):
        lp = len(r.prompt)
        ids[b, :lp] = torch.tensor(r.prompt)
        pos[b, :lp] = torch.arange(lp)
        seg[b, :lp] = 0
        at = lp
        for s, j in enumerate(r.choices, start=1):
            c = items[r.item].choices[j]
            ids[b, at: at + len(c)] = torch.tensor(c)
            pos[b, at: at + len(c)] = torch.arange(lp, lp + len(c))
            seg[b, at: at + len(c)] = s
            at += len(c)
    idx = torch.arange(width)
    causal = idx[None, :] <= idx[:, None]  # (q, k)
    same = (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] > 0)
    allowed = causal & ((seg[:, None, :] == 0) | same)
    allowed |= torch.eye(width, dtype=torch.bool)  # padding queries attend to themselves
    mask = allowed[:, None].to(device)
    if attn == "eager":  # eager attention adds the mask to the scores
        mask = torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill_(
            ~mask, torch.finfo(dtype).min)
    return ids.to(device), pos.to(device), mask


SPLIT_PROMPT = 768  # prompts this long run alone, in two passes (see `_packed_hidden`)


def _packed_hidden(model, items, rows: list[PackedRow], device, attn: str) -> torch.Tensor:
    """Final hidden states (row, pos, d_model) of a batch of packed rows.

    A batch of one row whose prompt has >= SPLIT_PROMPT tokens runs in two passes:
    the prompt alone with the key/value cache and no mask (so attention takes the
    causal fast path, about half the cost of a masked pass at 2k tokens), then its
    choices against that cache with the choice rows of the packed mask.
    """
    dtype = next(model.parameters()).dtype
    ids, pos, mask = _packed_inputs(items, rows, device, attn, dtype)
    p = len(rows[0].prompt)
    if len(rows) > 1 or p < SPLIT_PROMPT:
        return model.base_model(input_ids=ids, attention_mask=mask, position_ids=pos,
                                use_cache=False).last_hidden_state
    first = model.base_model(input_ids=ids[:, :p], use_cache=True)
    rest = model.base_model(input_ids=ids[:, p:], attention_mask=mask[:, :, p:],
                            position_ids=pos[:, p:], past_key_values=first.past_key_values,
                            use_cache=True)
    return torch.cat([first.last_hidden_state, rest.last_hidden_state], dim=1)


def _score_packed(model, items, rows: list[PackedRow], device, attn: str) -> list[tuple]:
    """[(item, choice, per-token log-probs)] for one batch of packed rows."""
    hid = _packed_hidden(model, items, rows, device, attn)
    sel_b, sel_p, targets, spans = [], [], [], []
    for b, r in enumerate(rows):
        at = len(r.prompt)
        for j in r.choices:
            c = items[r.item].choices[j]
            sel_b += [b] * len(c)
            sel_p += [len(r.prompt) - 1] + list(range(at, at + len(c) - 1))
            targets += c
            spans.append((r.item, j, len(c)))
            at += len(c)
    lp = target_logprobs(model, hid[torch.tensor(sel_b, device=device),
                                    torch.tensor(sel_p, device=device)],
                         torch.tensor(targets, device=device)).cpu()
    out, off = [], 0
    for i, j, n in spans:
        out.append((i, j, lp[off: off + n]))
        off += n
    return out

PACKED_ATTENTION = ("sdpa", "eager")  # implementations that take a custom 4D mask


def _separate_scores(model, items, prompts, max_length, batch_tokens) -> list[list[torch.Tensor]]:
    """Baseline: one `prompt + choice` sequence per choice (other attention implementations)."""
    reqs = [Request((i, j), tuple(p), tuple(c))
            for i, (t, p) in enumerate(zip(items, prompts)) for j, c in enumerate(t.choices)]
    result: list[list[torch.Tensor]] = [[] for _ in items]
    for s in score_requests(model, reqs, max_length=max_length, batch_tokens=batch_tokens):
        result[s.request.example_id[0]].append(torch.from_numpy(s.logprobs))
    return result


def shared_prompt_scores(model, items: list[Tokenized], *, max_length: int, prefix_id: int = 0,
                         batch_tokens: int = 8192) -> tuple[list[list[torch.Tensor]], int]:
    """Per-token log-probs of every choice of every example, and the truncation count."""
    fitted = [fit_prompt(t, max_length, prefix_id) for t in items]
    prompts = [f[0] for f in fitted]
    n_truncated = sum(f[1] for f in fitted)
    attn = getattr(model.config, "_attn_implementation", None) or "eager"
    if attn not in PACKED_ATTENTION:
        log.info("bigbench-mc: %s attention takes no custom mask; scoring choices separately", attn)
        return _separate_scores(model, items, prompts, max_length, batch_tokens), n_truncated
    check_head(model)
    rows = pack_rows(items, prompts, max_length)
    widths = [len(r.prompt) + sum(len(items[r.item].choices[j]) for j in r.choices) for r in rows]
    result: list[list] = [[None] * len(t.choices) for t in items]
    device = next(model.parameters()).device
    short = [b for b, r in enumerate(rows) if len(r.prompt) < SPLIT_PROMPT]
    batches = [[short[k] for k in idx] for idx in length_batches([widths[b] for b in short],
                                                                  batch_tokens)]
    batches += [[b] for b, r in enumerate(rows) if len(r.prompt) >= SPLIT_PROMPT]
    with torch.inference_mode():
        for idx in batches:
            for i, j, lp in _score_packed(model, items, [rows[b] for b in idx], device, attn):
                result[i][j] = lp
    return result, n_truncated


class BigBenchMC(Evaluator):
    """BIG-bench multiple-choice log-likelihoods per choice."""

    name = "bigbench-mc"
    tables = ("bigbench-mc",)
    Options = BigBenchOptions
    path_options = ("folder",)
    runtime_options = ("batch_tokens",)

    @classmethod
    def input_problems(cls, options: BigBenchOptions, base_dir: Path) -> list[str]:
        where = f"[evaluators.{cls.name}]"
        tried = local_candidates(options.folder, base_dir)
        folder = next((p for p in tried if p.is_dir()), None)
        if folder is None:
            return [f"{where}: folder = {options.folder!r}: no such folder (looked for "
                    f"{' and '.join(map(str, tried))}); give a BIG-bench tasks folder laid "
                    "out as <task>/task.json, e.g. a clone's: git clone --depth 1 "
                    "https://github.com/google/BIG-bench, then folder = "
                    "\"BIG-bench/bigbench/benchmark_tasks\""]
        try:
            select_tasks(folder, options.tasks)
        except (ValueError, OSError) as err:
            return [f"{where}: tasks = {options.tasks!r}: {err}"]
        return []

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

    def input_id(self, option: str, value):
        """The folder is identified by the formatted examples read from it (the selected
        tasks only; the rest of the folder does not change the scores)."""
        from evals.inputs import text_id

        return text_id((e.task, e.example_id, e.prompt, tuple(e.choices),
                        tuple(e.target_scores)) for e in self.examples)

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
            self.log_once(tok, logging.WARNING, "bigbench-mc: %d of %d prompts truncated from "
                          "the left to fit %d tokens", self.truncated, len(items), max_length)
        rows = {k: [] for k in ("task", "example_id", "choice_index", "logprob_nats", "n_tokens",
                                "is_target", "target_score", "truncated_tokens")}
        for t, lps in zip(items, scores):
            best = max(t.example.target_scores)
            cut = len(t.prompt or [prefix]) - len(fit_prompt(t, max_length, prefix)[0])
            for c, lp in enumerate(lps):
                rows["task"].append(t.example.task)
                rows["example_id"].append(t.example.example_id)
                rows["choice_index"].append(c)
                rows["logprob_nats"].append(float(lp.double().sum()))
                rows["n_tokens"].append(len(lp))
                rows["is_target"].append(t.example.target_scores[c] == best)
                rows["target_score"].append(t.example.target_scores[c])
                rows["truncated_tokens"].append(cut)
        return {"bigbench-mc": pl.DataFrame(rows)}
