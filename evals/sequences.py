"""Sequence likelihoods of labeled sets (factual / hallucinated / ungrammatical / ...).

Xia et al. (2023) track the likelihood of fixed sequence sets over training:
factual statements against minimally edited false ("hallucinated") versions,
and noised/ungrammatical text. This evaluator scores every sequence of such a
labeled source at each checkpoint and writes the `sequences` table: one row per
(set, pair_id) with the total log-probability (`logprob_nats`) and the number
of scored tokens (`n_tokens`); per-token log-prob = logprob_nats / n_tokens.

Source format (jsonl, json, csv or parquet file, or a `datasets` name), one row
per sequence::

    {"pair_id": "fr", "set": "factual", "prefix": "The capital of France is", "text": " Paris."}
    {"pair_id": "fr", "set": "hallucinated", "prefix": "The capital of France is", "text": " Rome."}

- `pair_id` links the versions of one statement; every set must hold the same
  pair ids (one row per set and pair) and at least `min_pairs` of them.
- `prefix` (optional column, may be empty): shared context, not scored. Only
  `text` is scored. Prefix and text are tokenized separately (as BIG-bench
  does), so put the separating space at the start of `text`.
- Without a prefix, the first token of `text` is conditioned on the
  tokenizer's BOS token (EOS when there is no BOS, as for Pythia/GPT-2, whose
  documents are separated by EOS). Every token of `text` is scored.

Worked example, prefix "A B" -> [5, 6], text " C D" -> [7, 8]: the request is
context [5, 6], continuation [7, 8]; the model sees [5, 6, 7, 8] and
logprob_nats = log p(7 | 5 6) + log p(8 | 5 6 7), n_tokens = 2. Without the
prefix the model sees [bos, 7, 8]: log p(7 | bos) + log p(8 | bos 7).

A sequence (prefix + text, or BOS + text) longer than the model's context is an
error, never silently truncated: sets must be scored under the same context.

Optional columns `prefix_ids`, `text_ids` (lists of token ids) and `tokenizer`
(`evals.base.tokenizer_fingerprint`): the exact tokens of a generated sequence
(evals.mixture writes them). A model whose tokenizer has that fingerprint is
scored on exactly those ids, never on a re-tokenization of the decoded text
(with BPE, decode -> encode need not give the generated tokens back); a model
with another tokenizer gets `prefix` and `text` tokenized as above.

`adapter` reads a published dataset in its own schema and converts it into
this one: "counterfact" (evals.counterfact: CounterFact, e.g. the hub dataset
`azhx/counterfact`, into factual / hallucinated / ungrammatical sets). An
adapter is a function (raw frame, source name, max_pairs) -> rows of this
schema, registered in ADAPTERS.

`extra_datasets` adds more local sources (e.g. the sets a batch's
`[generate.<name>]` tables write, evals.generated): each is checked on its
own (pair ids agree within a source), set names must differ across sources,
and all rows go into the same `sequences` part.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from evals.base import ConfigError, Evaluator, missing_local_file, tokenizer_fingerprint
from evals.scoring import Request, score_requests

LOCAL_READERS = {".jsonl": "ndjson", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
REQUIRED = ("pair_id", "set", "text")
ID_COLUMNS = {"prefix_ids": pl.List(pl.Int64), "text_ids": pl.List(pl.Int64),
              "tokenizer": pl.String}
# adapter name -> "module:function" (imported when used): published datasets -> this schema
ADAPTERS = {"counterfact": "evals.counterfact:to_sequences"}


class SequenceSetError(ValueError):
    """A labeled sequence source is malformed (names the file, row and value)."""


@dataclass(frozen=True)
class SequencesOptions:
    """Options of the sequences evaluator.

    Attributes:
        dataset: local .jsonl/.json/.csv/.parquet file, or a `datasets` name.
        dataset_config: `datasets` config name (hub/`datasets` sources only).
        split: `datasets` split (default "train" for local-style sources).
        revision: `datasets` revision (branch, tag or commit) of a hub source.
        adapter: convert the source from a published dataset's own schema (ADAPTERS,
            e.g. "counterfact"); default: the source is in this evaluator's schema.
        max_pairs: with an adapter, convert only the first this many records.
        sets: score only these sets (default: every set in the source).
        min_pairs: each set needs at least this many pairs (a CI over pairs needs 2).
        batch_tokens: padded tokens per forward pass.
        chunk_rows: rows per output-head chunk (bounds logits memory).
        extra_datasets: more local sources, each scored whole (`sets` filters `dataset` only).
    """

    dataset: str
    dataset_config: str | None = None
    split: str | None = None
    revision: str | None = None
    adapter: str | None = None
    max_pairs: int | None = None
    sets: list[str] | None = None
    min_pairs: int = 2
    batch_tokens: int = 16384
    chunk_rows: int = 2048
    extra_datasets: list[str] | None = None

    def __post_init__(self) -> None:
        problems = [f"{name} must be >= 1, got {getattr(self, name)}"
                    for name in ("min_pairs", "batch_tokens", "chunk_rows", "max_pairs")
                    if getattr(self, name) is not None and getattr(self, name) < 1]
        if self.sets is not None and not self.sets:
            problems.append("sets = [] selects no set; omit it for every set of the source")
        if self.adapter is not None and self.adapter not in ADAPTERS:
            problems.append(unknown_adapter(self.adapter))
        if self.max_pairs is not None and self.adapter is None:
            problems.append("max_pairs applies to an adapter's records; set adapter "
                            f"(one of {', '.join(ADAPTERS)}) or drop max_pairs")
        if problems:
            raise ConfigError(problems)


def unknown_adapter(name: str) -> str:
    return f"adapter = {name!r} is not known; allowed: {', '.join(ADAPTERS)}"


def _read_source(dataset: str, config: str | None, split: str | None,
                 revision: str | None = None) -> pl.DataFrame:
    path = Path(dataset).expanduser()
    if path.suffix in LOCAL_READERS:
        if not path.is_file():
            raise FileNotFoundError(f"sequence file {dataset} does not exist")
        kind = LOCAL_READERS[path.suffix]
        if kind == "csv":
            return pl.read_csv(path, infer_schema=False)  # every column a string
        if kind == "parquet":
            return pl.read_parquet(path)
        try:
            return pl.read_ndjson(path) if kind == "ndjson" else pl.read_json(path)
        except pl.exceptions.ComputeError as err:
            raise SequenceSetError(f"{dataset}: not valid {kind}: {err}") from err
    import datasets

    ds = datasets.load_dataset(dataset, config, split=split or "train", revision=revision)
    return pl.from_arrow(ds.data.table)  # type: ignore[return-value]


def adapt(raw: pl.DataFrame, adapter: str, where: str, max_pairs: int | None) -> pl.DataFrame:
    """A source in a published dataset's schema -> rows of this evaluator's schema."""
    import importlib

    if adapter not in ADAPTERS:
        raise SequenceSetError(f"{where}: {unknown_adapter(adapter)}")
    module, func = ADAPTERS[adapter].split(":")
    return getattr(importlib.import_module(module), func)(raw, where, max_pairs)


def load_sequence_sets(dataset: str, *, config: str | None = None, split: str | None = None,
                       sets: list[str] | None = None, min_pairs: int = 2,
                       revision: str | None = None, adapter: str | None = None,
                       max_pairs: int | None = None) -> pl.DataFrame:
    """Read and check a labeled source: row, pair_id, set, prefix, text, prefix_ids, text_ids,
    tokenizer (the last three null when the source has no token ids).

    `row` is the 1-based data row (line of a jsonl file; row after the header of
    a csv). Raises SequenceSetError naming the file, the row and the bad value.
    """
    raw = _read_source(dataset, config, split, revision)
    if adapter is not None:
        raw = adapt(raw, adapter, dataset, max_pairs)
    missing = [c for c in REQUIRED if c not in raw.columns]
    if missing:
        raise SequenceSetError(
            f"{dataset}: missing columns {missing}; need {list(REQUIRED)} (+ optional 'prefix'), "
            f"found {raw.columns}")
    has_prefix = "prefix" in raw.columns
    prefix = pl.col("prefix").cast(pl.String) if has_prefix else pl.lit(None, pl.String)
    ids = [pl.col(c).cast(t) if c in raw.columns else pl.lit(None, t).alias(c)
           for c, t in ID_COLUMNS.items()]
    frame = raw.with_row_index("row", offset=1).select(
        pl.col("row").cast(pl.Int64), pl.col("pair_id").cast(pl.String),
        pl.col("set").cast(pl.String), prefix.fill_null("").alias("prefix"),
        pl.col("text").cast(pl.String), *ids)
    if sets is not None:
        unknown = sorted(set(sets) - set(frame["set"].drop_nulls()))
        if unknown:
            raise SequenceSetError(f"{dataset}: sets {unknown} not found; the source has sets "
                                   f"{sorted(frame['set'].drop_nulls().unique())}")
        frame = frame.filter(pl.col("set").is_in(sets))
    check_sets(frame, dataset, min_pairs)
    return frame


def check_sets(frame: pl.DataFrame, where: str, min_pairs: int = 2) -> None:
    """Empty/null values, duplicates, too few pairs, and pair ids that differ across sets."""
    for col in REQUIRED:
        bad = frame.filter(pl.col(col).is_null() | (pl.col(col).str.strip_chars() == ""))
        if bad.height:
            r = bad.row(0, named=True)
            raise SequenceSetError(f"{where}: row {r['row']} (set {r['set']!r}, pair_id "
                                   f"{r['pair_id']!r}) has an empty {col!r} "
                                   f"({bad.height} such rows)")
    dup = frame.filter(pl.struct("set", "pair_id").is_duplicated())
    if dup.height:
        r = dup.row(0, named=True)
        rows = dup.filter((pl.col("set") == r["set"]) & (pl.col("pair_id") == r["pair_id"]))
        raise SequenceSetError(f"{where}: pair_id {r['pair_id']!r} appears more than once in "
                               f"set {r['set']!r} (rows {rows['row'].to_list()})")
    names = sorted(frame["set"].unique())
    if not names:
        raise SequenceSetError(f"{where}: no sequences")
    ids = {s: set(frame.filter(pl.col("set") == s)["pair_id"]) for s in names}
    for s in names:
        if len(ids[s]) < min_pairs:
            raise SequenceSetError(f"{where}: set {s!r} has {len(ids[s])} pair(s) "
                                   f"({sorted(ids[s])}); need at least {min_pairs}")
    ref = names[0]
    for s in names[1:]:
        only_ref, only_s = sorted(ids[ref] - ids[s]), sorted(ids[s] - ids[ref])
        if only_ref or only_s:
            raise SequenceSetError(
                f"{where}: pair ids differ between sets {ref!r} and {s!r}: only in {ref!r}: "
                f"{only_ref[:10]}, only in {s!r}: {only_s[:10]}")


def start_token_id(tokenizer) -> int:
    """The token that conditions the first token of an unprefixed text (BOS, else EOS)."""
    for name in ("bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    raise SequenceSetError("tokenizer has neither a BOS nor an EOS token to condition "
                           "unprefixed texts on; add a 'prefix' column")


def _token_ids(rows: list[dict], tokenizer) -> list[tuple[list[int], list[int]]]:
    """(prefix ids, text ids) per row: the stored ids when they are this tokenizer's, else
    `prefix` and `text` tokenized separately."""
    fingerprint = tokenizer_fingerprint(tokenizer)
    own = [r.get("text_ids") is not None and r.get("tokenizer") == fingerprint for r in rows]
    need = [r for r, o in zip(rows, own, strict=True) if not o]
    enc = (lambda key: iter(tokenizer([r[key] for r in need], add_special_tokens=False)
                            ["input_ids"]) if need else iter(()))
    texts, prefixes = enc("text"), enc("prefix")
    return [(list(r["prefix_ids"] or []), list(r["text_ids"])) if o
            else (next(prefixes), next(texts)) for r, o in zip(rows, own, strict=True)]


def build_requests(frame: pl.DataFrame, tokenizer, context_length: int,
                   where: str) -> list[Request]:
    """One Request per row (prefix -> context, text -> continuation, or the stored token ids
    of the row when they are this tokenizer's), length-checked."""
    rows = frame.to_dicts()
    out = []
    for r, (ctx, cont) in zip(rows, _token_ids(rows, tokenizer), strict=True):
        label = f"{where}: row {r['row']} (set {r['set']!r}, pair_id {r['pair_id']!r})"
        if not cont:
            raise SequenceSetError(f"{label}: text {r['text']!r} tokenizes to no tokens")
        total = max(len(ctx), 1) + len(cont)  # an empty prefix is replaced by BOS/EOS
        if total > context_length:
            raise SequenceSetError(f"{label}: {total} tokens (prefix {len(ctx)}, text "
                                   f"{len(cont)}) exceed the model's context of "
                                   f"{context_length} tokens")
        out.append(Request((r["set"], r["pair_id"]), tuple(ctx), tuple(cont)))
    return out


class Sequences(Evaluator):
    """Total and per-token log-probability of every sequence of labeled sets."""

    name = "sequences"
    tables = ("sequences",)
    Options = SequencesOptions
    path_options = ("dataset", "extra_datasets")
    runtime_options = ("batch_tokens", "chunk_rows")

    @classmethod
    def input_problems(cls, options: SequencesOptions, base_dir: Path) -> list[str]:
        where = f"[evaluators.{cls.name}]"
        problems = missing_local_file(where, "dataset", options.dataset, base_dir)
        for extra in options.extra_datasets or []:
            problems += missing_local_file(where, "extra_datasets", extra, base_dir)
        return problems

    def __init__(self, options: SequencesOptions, base_dir=None):
        super().__init__(options, base_dir)
        self._frame: pl.DataFrame | None = None
        self._requests: dict[tuple[str, int], list[Request]] = {}

    @property
    def source(self) -> str:
        return self.resolve_path(self.options.dataset)

    def frame(self) -> pl.DataFrame:
        """The checked sources (read once): `dataset`, then each of `extra_datasets`."""
        if self._frame is None:
            o = self.options
            frames = [load_sequence_sets(self.source, config=o.dataset_config, split=o.split,
                                         sets=o.sets, min_pairs=o.min_pairs,
                                         revision=o.revision, adapter=o.adapter,
                                         max_pairs=o.max_pairs)
                      .with_columns(pl.lit(self.source).alias("source"))]
            for extra in o.extra_datasets or []:
                path = self.resolve_path(extra)
                frames.append(load_sequence_sets(path, min_pairs=o.min_pairs)
                              .with_columns(pl.lit(path).alias("source")))
            seen: dict[str, str] = {}
            for f in frames:
                for name in f["set"].unique():
                    if name in seen:
                        raise SequenceSetError(f"set {name!r} is in both {seen[name]} and "
                                               f"{f['source'][0]}; set names must differ")
                    seen[name] = f["source"][0]
            self._frame = pl.concat(frames)
        return self._frame

    def prepare(self) -> None:
        """Read and check every source now (once per run), before any checkpoint loads."""
        from evals.inputs import check_records_file

        for value in [self.options.dataset, *(self.options.extra_datasets or [])]:
            path = Path(self.resolve_path(value))
            if path.is_file():
                check_records_file(path, REQUIRED if self.options.adapter is None else ())
        self.frame()

    def input_id(self, option: str, value):
        """A hub source is identified by its rows (read once per run)."""
        if option == "dataset" and not Path(self.source).exists():
            from evals.inputs import text_id

            return {"name": value, **text_id(self.frame().filter(
                pl.col("source") == self.source).rows())}
        return super().input_id(option, value)

    def requests(self, tokenizer, context_length: int) -> list[Request]:
        """Requests for a tokenizer, tokenized once per tokenizer fingerprint."""
        key = (tokenizer_fingerprint(tokenizer), context_length)
        if key not in self._requests:
            frame = self.frame()
            self._requests[key] = [
                req for (source,), part in frame.group_by("source", maintain_order=True)
                for req in build_requests(part, tokenizer, context_length, source)]
        return self._requests[key]

    def run(self, lm) -> dict[str, pl.DataFrame]:
        reqs = self.requests(lm.tokenizer, lm.context_length)
        start = start_token_id(lm.tokenizer)
        pad = lm.tokenizer.pad_token_id
        scores = score_requests(lm.model, reqs, max_length=lm.context_length, prefix_id=start,
                                pad_id=start if pad is None else int(pad),
                                batch_tokens=self.options.batch_tokens,
                                chunk_rows=self.options.chunk_rows)
        frame = pl.DataFrame(
            {
                "set": [s.request.example_id[0] for s in scores],
                "pair_id": [s.request.example_id[1] for s in scores],
                "logprob_nats": [s.total for s in scores],
                "n_tokens": [len(s.logprobs) for s in scores],
            },
            schema={"set": pl.String, "pair_id": pl.String, "logprob_nats": pl.Float64,
                    "n_tokens": pl.Int64},
        )
        return {"sequences": frame}
