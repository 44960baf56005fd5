"""Text documents by name: a local file, or a hub dataset streamed through `datasets`.

One reader for every evaluator that needs running text (token-loss's validation
set, the generation prompts of `[generate.*]`, the recall-bigram probe):

- a local .txt / .json / .jsonl / .parquet / .csv file is read whole with
  `datasets.load_dataset(<format>, data_files=<file>)` (split "train");
- anything else is a hub dataset name, read with
  `datasets.load_dataset(name, config, split=..., data_files=..., revision=...,
  streaming=True)`: only the documents actually read are downloaded, so a
  1.4 GB validation file costs what the first `max_tokens` tokens cost. The
  default split is "validation".

Documents are read in order; empty (whitespace-only) documents are skipped;
`max_docs` counts rows read, empty ones included. `Documents` keeps what it
has read, so a second tokenizer re-reads from memory and only pulls more from
the hub if it needs more documents to reach its token budget.

Example: `TextSource("EleutherAI/pile_val_test", split="validation",
data_files={"validation": "val.jsonl"})` streams the Pile's validation split.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LOCAL_FORMATS = {".txt": "text", ".json": "json", ".jsonl": "json", ".parquet": "parquet",
                 ".csv": "csv"}


@dataclass(frozen=True)
class TextSource:
    """Where documents come from (see the module docstring).

    Attributes:
        dataset: local file or hub dataset name.
        config: hub dataset config name.
        split: split; default "train" for local files, "validation" for the hub.
        column: column holding the text.
        data_files: hub only: the files of the split(s), as `datasets` takes them.
        revision: hub only: branch, tag or commit to read (default: main).
        streaming: hub only: stream (download only what is read) instead of
            downloading and converting the whole split first.
        max_docs: read at most this many rows.
    """

    dataset: str
    config: str | None = None
    split: str | None = None
    column: str = "text"
    data_files: str | list[str] | dict[str, str] | None = None
    revision: str | None = None
    streaming: bool = True
    max_docs: int | None = None

    @property
    def is_local(self) -> bool:
        path = Path(self.dataset).expanduser()
        return path.suffix in LOCAL_FORMATS or path.exists()

    def check_file(self) -> None:
        """A local file read and checked whole (evals.inputs: empty, malformed, not UTF-8, no
        `column`; a .txt file has no columns); nothing for a hub dataset."""
        from evals.inputs import check_records_file

        path = Path(self.dataset).expanduser()
        if path.is_file():
            check_records_file(path, () if path.suffix == ".txt" else (self.column,))

    def _rows(self):
        import datasets

        path = Path(self.dataset).expanduser()
        if self.is_local:
            if not path.exists():
                raise FileNotFoundError(f"validation file {self.dataset} does not exist")
            kind = LOCAL_FORMATS.get(path.suffix)
            if kind is None:
                raise ValueError(f"{self.dataset}: unsupported file type; use one of "
                                 f"{list(LOCAL_FORMATS)}")
            return datasets.load_dataset(kind, data_files=str(path), split=self.split or "train")
        return datasets.load_dataset(self.dataset, self.config, split=self.split or "validation",
                                     data_files=self.data_files, revision=self.revision,
                                     streaming=self.streaming)

    def documents(self) -> Iterator[str]:
        """Non-empty texts in order (at most `max_docs` rows read)."""
        rows = self._rows()
        names = rows.column_names
        if names is not None and self.column not in names:
            raise ValueError(f"{self.dataset}: no column {self.column!r}; columns are {names}")
        found = False
        for i, row in enumerate(rows):
            if self.max_docs is not None and i >= self.max_docs:
                break
            if self.column not in row:
                raise ValueError(f"{self.dataset}: no column {self.column!r}; columns are "
                                 f"{list(row)}")
            text = row[self.column]
            if text and text.strip():
                found = True
                yield text
        if not found:
            raise ValueError(f"{self.dataset}: no non-empty documents in column {self.column!r}")


# the option names evaluators use for a text source (token-loss's) -> TextSource fields
TEXT_KEYS = {"dataset": "dataset", "dataset_config": "config", "split": "split",
             "text_column": "column", "data_files": "data_files", "revision": "revision",
             "streaming": "streaming", "max_docs": "max_docs"}


def text_source(values: dict, where: str) -> TextSource:
    """A TextSource from an option table with token-loss's key names (TEXT_KEYS).

    Example: {"dataset": "EleutherAI/pile_val_test", "split": "validation"}.
    Raises ValueError naming unknown keys and a missing dataset.
    """
    unknown = sorted(set(values) - set(TEXT_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; allowed: {', '.join(TEXT_KEYS)}")
    if not isinstance(values.get("dataset"), str):
        raise ValueError(f"{where}: needs dataset = \"<local file or hub dataset name>\"")
    return TextSource(**{TEXT_KEYS[k]: v for k, v in values.items()})


class Documents:
    """The documents of a source, read lazily once and kept (iterate as often as needed)."""

    def __init__(self, source: TextSource):
        self.source = source
        self._read: list[str] = []
        self._rest: Iterator[str] | None = None
        self._done = False

    def __iter__(self) -> Iterator[str]:
        i = 0
        while True:
            if i < len(self._read):
                yield self._read[i]
                i += 1
                continue
            if self._done:
                return
            if self._rest is None:
                self._rest = self.source.documents()
            try:
                self._read.append(next(self._rest))
            except StopIteration:
                self._done = True

    @property
    def n_read(self) -> int:
        """Documents read from the source so far."""
        return len(self._read)

    def head(self, n: int) -> list[str]:
        """The first `n` documents (fewer if the source has fewer)."""
        out = []
        for text in self:
            if len(out) == n:
                break
            out.append(text)
        return out

