"""Per-token validation loss (nats), the x-axis of everything (validation ppl).

Text comes from `datasets` (evals.texts): a hub dataset name, streamed, so only
the documents scored are downloaded, or a local .txt / .json / .jsonl /
.parquet / .csv file. Documents are read in order and tokenized until the
stream holds `max_tokens` tokens, once per tokenizer (cached by tokenizer
fingerprint, so a sweep over checkpoints that share a tokenizer tokenizes
once), joined with EOS into one stream, and cut into windows of the context
length. Each window overlaps the previous one by one
token so that every token after the first is scored exactly once.

Worked example, context = 4, stream = [a b c d e f g h] (8 tokens):
windows start at 0, 3, 6 -> [a b c d], [d e f g], [g h]. Window 1 scores b, c, d
(given a; a b; a b c); window 2 scores e, f, g (given d; d e; d e f); window 3
scores h given g. Every token but `a` is scored once, with at most
`context - 1` tokens of left context, all from its own window.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from evals.base import ConfigError, Evaluator, missing_local_file, tokenizer_fingerprint
from evals.scoring import token_logprobs
from evals.texts import TEXT_KEYS, Documents, TextSource, text_source

__all__ = ["TokenLoss", "TokenLossOptions", "TokenStream", "build_stream",
           "window_starts"]


HUB_ID_CHARS_PER_TOKEN = 8  # a hub source's identity hashes this many characters per max_tokens


@dataclass(frozen=True)
class TokenLossOptions:
    """Options of the token-loss evaluator.

    Attributes:
        dataset: local file (.txt/.json/.jsonl/.parquet/.csv) or a hub dataset name.
        dataset_config: hub dataset config name.
        split: dataset split; default "train" for local files, "validation" for the hub.
        text_column: column holding the text.
        data_files: hub only: the split's files, as `datasets.load_dataset` takes them
            (e.g. {validation = "val.jsonl"}).
        revision: hub only: the dataset's branch, tag or commit (default: main).
        streaming: hub only: stream the dataset (default), downloading only the
            documents read, instead of downloading the whole split first.
        max_docs: use at most this many documents (in order).
        max_tokens: stop adding documents once the stream has this many tokens.
        context: window length; default the model's context, capped at 2048.
        batch_size: windows per forward pass; default max(1, batch_tokens // context).
        batch_tokens: tokens per forward pass when batch_size is not given; default
            4096 on the CPU (measured best for Pythia-14m/70m shapes at context 512
            and 2048: BENCHMARKS.md) and 32768 on a GPU.
        chunk_rows: rows per output-head chunk (bounds logits memory).
    """

    dataset: str
    dataset_config: str | None = None
    split: str | None = None
    text_column: str = "text"
    data_files: str | list[str] | dict[str, str] | None = None
    revision: str | None = None
    streaming: bool = True
    max_docs: int | None = None
    max_tokens: int = 100_000
    context: int | None = None
    batch_size: int | None = None
    batch_tokens: int | None = None
    chunk_rows: int = 2048

    def __post_init__(self) -> None:
        problems = [f"{name} must be >= 1, got {getattr(self, name)}"
                    for name in ("max_tokens", "batch_size", "batch_tokens", "chunk_rows")
                    if getattr(self, name) is not None and getattr(self, name) < 1]
        if self.max_tokens == 1:  # the first token has no context: nothing would be scored
            problems.append("max_tokens = 1 scores no token (the first token of the stream "
                            "has no context); use max_tokens >= 2")
        if self.max_docs is not None and self.max_docs < 1:
            problems.append(f"max_docs must be >= 1 or unset, got {self.max_docs}")
        if self.context is not None and self.context < 2:
            problems.append(f"context must be >= 2 tokens, got {self.context}")
        if problems:
            raise ConfigError(problems)

    def source(self, dataset: str | None = None) -> TextSource:
        """The text source these options name (`dataset`: the resolved path, if local)."""
        values = {key: getattr(self, key) for key in TEXT_KEYS}
        return text_source({**values, "dataset": dataset or self.dataset},
                           "[evaluators.token-loss]")

    def windows_per_batch(self, context: int, device) -> int:
        """batch_size, or as many windows as fit batch_tokens (see the class doc)."""
        if self.batch_size is not None:
            return self.batch_size
        budget = self.batch_tokens or (32768 if torch.device(device).type == "cuda" else 4096)
        return max(1, budget // context)


@dataclass(frozen=True)
class TokenStream:
    """A tokenized validation set: token ids with the doc and index of each token."""

    token_ids: np.ndarray  # (n,) int64
    doc_id: np.ndarray  # (n,) int64
    token_index: np.ndarray  # (n,) int64, position within its document (EOS = len(doc))


def _batches(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    batch = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def build_stream(texts: Iterable[str], tokenizer, max_tokens: int,
                 docs_per_call: int = 64) -> TokenStream:
    """Tokenize documents (no specials), join with EOS, stop after `max_tokens` tokens.

    Documents are pulled from `texts` (a list, or a lazily read `Documents`)
    `docs_per_call` at a time, so a streamed source is read only as far as needed.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("tokenizer has no eos_token_id to separate documents")
    ids, docs, index = [], [], []
    d = 0
    for batch in _batches(texts, docs_per_call):
        for toks in tokenizer(batch, add_special_tokens=False)["input_ids"]:
            toks = list(toks) + [eos]
            ids.extend(toks)
            docs.extend([d] * len(toks))
            index.extend(range(len(toks)))
            d += 1
            if len(ids) >= max_tokens:
                break
        if len(ids) >= max_tokens:
            break
    n = min(len(ids), max_tokens)
    return TokenStream(np.asarray(ids[:n], np.int64), np.asarray(docs[:n], np.int64),
                       np.asarray(index[:n], np.int64))


def window_starts(n_tokens: int, context: int) -> list[int]:
    """Start offsets of windows of `context` tokens overlapping by one (see module doc)."""
    return list(range(0, max(n_tokens - 1, 0), context - 1))


class TokenLoss(Evaluator):
    """Per-token loss on a validation set."""

    name = "token-loss"
    tables = ("token-loss",)
    Options = TokenLossOptions
    path_options = ("dataset",)
    runtime_options = ("batch_size", "batch_tokens", "chunk_rows")

    @classmethod
    def input_problems(cls, options: TokenLossOptions, base_dir: Path) -> list[str]:
        return missing_local_file(f"[evaluators.{cls.name}]", "dataset", options.dataset, base_dir)

    def __init__(self, options: TokenLossOptions, base_dir=None):
        super().__init__(options, base_dir)
        self._texts: Documents | None = None
        self._streams: dict[str, TokenStream] = {}

    def prepare(self) -> None:
        """Read the documents now: a bad file is one config error, not one per checkpoint.
        A hub source is read as far as the run will read it (`_hub_head`)."""
        if Path(self.resolve_path(self.options.dataset)).is_file():
            self.texts().source.check_file()
            list(self.texts())
        else:
            self._hub_head()

    def _hub_head(self) -> list[str]:
        """The first documents of a hub source, up to HUB_ID_CHARS_PER_TOKEN x max_tokens
        characters (a streamed source is read no further than a run reads it: English BPE
        averages ~4 characters per token) or max_docs."""
        budget, out, chars = HUB_ID_CHARS_PER_TOKEN * self.options.max_tokens, [], 0
        for text in self.texts():
            if chars >= budget:
                break
            out.append(text)
            chars += len(text)
        return out

    def input_id(self, option: str, value):
        """A hub dataset is identified by the documents a run reads from it (read once per
        run), besides its name."""
        if option == "dataset" and not Path(self.resolve_path(value)).exists():
            from evals.inputs import text_id

            head = self._hub_head()
            return {"name": value, "documents": len(head), **text_id(head)}
        return super().input_id(option, value)

    def texts(self) -> Documents:
        """The source's documents, read lazily (as far as the token budget needs) and kept."""
        if self._texts is None:
            self._texts = Documents(self.options.source(self.resolve_path(self.options.dataset)))
        return self._texts

    def stream(self, tokenizer) -> TokenStream:
        key = tokenizer_fingerprint(tokenizer)
        if key not in self._streams:
            self._streams[key] = build_stream(self.texts(), tokenizer, self.options.max_tokens)
        return self._streams[key]

    def run(self, lm) -> dict[str, pl.DataFrame]:
        stream = self.stream(lm.tokenizer)
        if len(stream.token_ids) < 2:
            raise ValueError(f"{self.options.dataset}: {len(stream.token_ids)} token(s) for "
                             f"{lm.ref.label}: nothing to score")
        context = min(self.options.context or min(lm.context_length, 2048), lm.context_length)
        losses = np.empty(len(stream.token_ids), np.float32)
        losses[0] = np.nan  # the first token has no context
        starts = window_starts(len(stream.token_ids), context)
        ids = torch.from_numpy(stream.token_ids)
        device = lm.device
        bs = self.options.windows_per_batch(context, device)
        for b in range(0, len(starts), bs):
            group = starts[b: b + bs]
            full = [s for s in group if s + context <= len(ids)]
            tail = [s for s in group if s + context > len(ids)]
            if full:
                batch = torch.stack([ids[s: s + context] for s in full]).to(device)
                lp = token_logprobs(lm.model, batch, self.options.chunk_rows).cpu().numpy()
                for row, s in enumerate(full):
                    losses[s + 1: s + context] = -lp[row]
            for s in tail:  # the last, shorter window
                lp = token_logprobs(lm.model, ids[s:].unsqueeze(0).to(device),
                                    self.options.chunk_rows).cpu().numpy()
                losses[s + 1:] = -lp[0]
        if not np.isfinite(losses[1:]).all():
            bad = int((~np.isfinite(losses[1:])).sum())
            raise FloatingPointError(f"{bad} non-finite token losses for {lm.ref.label}")
        frame = pl.DataFrame(
            {
                "doc_id": stream.doc_id[1:],
                "token_index": stream.token_index[1:],
                "token_id": stream.token_ids[1:],
                "loss_nats": losses[1:],
            }
        )
        return {"token-loss": frame}
