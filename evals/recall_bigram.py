"""Loss and accuracy by position kind: in-context recall vs global bigrams (Bietti et al. 2023).

Birth of a Transformer: on trigger sequences, a model first learns the global
bigram statistics (tokens that follow a non-trigger token), and only later the
induction mechanism that recalls, after a trigger's second and later
occurrences, the token that followed it earlier in the same sequence. This
evaluator measures both at every checkpoint so that the order can be read off
the emergence points.

Two sources, one of them per batch:

- `dataset`: a labelled file (local jsonl/json/parquet), one row per sequence:
  `text` (words of the model's tokenizer, one token each) and `kinds` (one
  label per token of `text`, e.g. "recall", "bigram", "first", "start";
  dynamics.toy.export writes the toy suite's `recall_bigram.jsonl`);
- `text`: any validation text (a table with token-loss's keys, e.g.
  `{dataset = "EleutherAI/pile_val_test", split = "validation"}`), from which
  the probe is built for each tokenizer (evals.recall_probe: global bigrams =
  the dominant successor of frequent tokens in that text; in-context recall =
  triggers that recur with a sequence-specific output). This is how a real
  suite (Pythia, OLMo) gets the probe.

Every token is predicted from BOS (EOS when the tokenizer has no BOS) + the
tokens before it; its label says which kind of position it is.

Output table `recall-bigram`, one row per checkpoint x position_kind:
`loss_nats` (SUM of the token losses over the kind's tokens; mean =
loss_nats / n_tokens), `n_correct` (tokens whose argmax prediction is the
token), `n_tokens`.

Worked example: text "z5 z0 z17", kinds [start, bigram, first], BOS b: the
model sees [b, z5, z0, z17]; z5 is predicted at position 0 ("start"), z0 at 1
("bigram"), z17 at 2 ("first"); each kind gets one token.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from evals.base import ConfigError, Evaluator, missing_local_file, tokenizer_fingerprint
from evals.recall_probe import ProbeSettings, build_probe
from evals.texts import Documents, text_source

READERS = {".jsonl": pl.read_ndjson, ".json": pl.read_json, ".parquet": pl.read_parquet}


class LabelledTokensError(ValueError):
    """A labelled token source is malformed (names the file, row and value)."""


@dataclass(frozen=True)
class RecallBigramOptions:
    """Options of the recall-bigram evaluator (give `dataset` or `text`).

    Attributes:
        dataset: local .jsonl/.json/.parquet file with `text` and `kinds` columns.
        text: validation text to build the probe from, as a table with token-loss's
            keys (dataset, dataset_config, split, text_column, data_files, revision,
            streaming, max_docs).
        stat_tokens, min_count, min_share, n_pool, n_sequences, seq_len, n_triggers,
            occurrences, seed: how the probe is built from `text` (evals.recall_probe).
        batch_rows: sequences per forward pass.
    """

    dataset: str | None = None
    text: dict | None = None
    # the probe's settings, defaults from evals.recall_probe.ProbeSettings (one place)
    stat_tokens: int = ProbeSettings.stat_tokens
    min_count: int = ProbeSettings.min_count
    min_share: float = ProbeSettings.min_share
    n_pool: int = ProbeSettings.n_pool
    n_sequences: int = ProbeSettings.n_sequences
    seq_len: int = ProbeSettings.seq_len
    n_triggers: int = ProbeSettings.n_triggers
    occurrences: int = ProbeSettings.occurrences
    seed: int = ProbeSettings.seed
    batch_rows: int = 64

    def __post_init__(self) -> None:
        problems = []
        if (self.dataset is None) == (self.text is None):
            problems.append("give one of dataset (a labelled file) or text (validation text "
                            "to build the probe from), not both or neither")
        if self.dataset is not None and Path(self.dataset).suffix not in READERS:
            problems.append(f"dataset {self.dataset!r} must be a local "
                            f"{'/'.join(READERS)} file")
        if self.text is not None:
            try:
                text_source(self.text, "text")
            except ValueError as err:
                problems.append(str(err))
            problems += self.probe_settings().problems()
        if self.batch_rows < 1:
            problems.append(f"batch_rows must be >= 1, got {self.batch_rows}")
        if problems:
            raise ConfigError(problems)

    def probe_settings(self) -> ProbeSettings:
        return ProbeSettings(**{f.name: getattr(self, f.name)
                                for f in dataclasses.fields(ProbeSettings)})


def load_labelled(path: str) -> pl.DataFrame:
    """Read and check a source: columns text (String), kinds (List[String])."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"labelled token file {path} does not exist")
    frame = READERS[Path(path).suffix](path)
    missing = [c for c in ("text", "kinds") if c not in frame.columns]
    if missing:
        raise LabelledTokensError(f"{path}: missing columns {missing}; need 'text' and 'kinds' "
                                  f"(one label per word of text), found {frame.columns}")
    if frame.height == 0:
        raise LabelledTokensError(f"{path}: no rows")
    return frame.select(pl.col("text").cast(pl.String), pl.col("kinds").cast(pl.List(pl.String)))


def encode(frame: pl.DataFrame, tokenizer, start_id: int, context_length: int,
           where: str) -> tuple[list[list[int]], list[list[str]]]:
    """(start + token ids, labels) per row; each label belongs to the token after its position."""
    ids = tokenizer(frame["text"].to_list(), add_special_tokens=False)["input_ids"]
    out_ids, out_kinds = [], []
    for i, (row, kinds) in enumerate(zip(ids, frame["kinds"].to_list(), strict=True)):
        if kinds is None or len(kinds) != len(row) or not row:
            raise LabelledTokensError(
                f"{where}: row {i + 1} has {len(row)} tokens and "
                f"{0 if kinds is None else len(kinds)} kinds; need one kind per token")
        if len(row) + 1 > context_length:
            raise LabelledTokensError(f"{where}: row {i + 1} has {len(row) + 1} tokens with the "
                                      f"start token; the model's context is {context_length}")
        out_ids.append([start_id, *row])
        out_kinds.append(kinds)
    return out_ids, out_kinds


@torch.no_grad()
def position_scores(model, ids: list[list[int]], pad_id: int, batch_rows: int,
                    device) -> tuple[np.ndarray, np.ndarray]:
    """(loss nats, argmax == token) of every predicted token, rows concatenated in order."""
    losses, hits = [], []
    for b in range(0, len(ids), batch_rows):
        rows = ids[b:b + batch_rows]
        width = max(map(len, rows))
        batch = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(batch)
        for r, row in enumerate(rows):
            batch[r, :len(row)], mask[r, :len(row)] = torch.tensor(row), 1
        logits = model(input_ids=batch.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], -1).cpu()  # (batch, pos, vocab)
        target = batch[:, 1:]
        loss = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (batch, pos)
        hit = logp.argmax(-1) == target
        for r, row in enumerate(rows):
            losses.append(loss[r, :len(row) - 1].numpy())
            hits.append(hit[r, :len(row) - 1].numpy())
    return np.concatenate(losses), np.concatenate(hits)


def aggregate(kinds: list[list[str]], loss: np.ndarray, hit: np.ndarray) -> pl.DataFrame:
    """One row per position kind: loss_nats (sum), n_correct, n_tokens."""
    frame = pl.DataFrame({"position_kind": [k for row in kinds for k in row],
                          "loss": loss.astype(np.float64), "hit": hit.astype(np.int64)})
    if not np.isfinite(frame["loss"].to_numpy()).all():
        raise FloatingPointError("non-finite token loss in recall-bigram; refusing to write it")
    return (frame.group_by("position_kind")
            .agg(pl.col("loss").sum().alias("loss_nats"), pl.col("hit").sum().alias("n_correct"),
                 pl.len().cast(pl.Int64).alias("n_tokens"))
            .sort("position_kind"))


class RecallBigram(Evaluator):
    """Loss and accuracy at in-context-recall vs bigram positions (see module docstring)."""

    name = "recall-bigram"
    tables = ("recall-bigram",)
    Options = RecallBigramOptions
    path_options = ("dataset", "text")
    runtime_options = ("batch_rows",)

    @classmethod
    def input_problems(cls, options: RecallBigramOptions, base_dir: Path) -> list[str]:
        where = f"[evaluators.{cls.name}]"
        if options.text is not None:
            return missing_local_file(where, "text.dataset", options.text.get("dataset"),
                                      base_dir)
        if Path(options.dataset).suffix not in READERS:
            return []  # the suffix problem is reported by the options' own check
        return missing_local_file(where, "dataset", options.dataset, base_dir)

    def __init__(self, options: RecallBigramOptions, base_dir=None):
        super().__init__(options, base_dir)
        self._frame: pl.DataFrame | None = None
        self._docs: Documents | None = None
        self._encoded: dict[tuple, tuple] = {}

    def prepare(self) -> None:
        """Read and check the source now (once per run), before any checkpoint loads: the
        labelled file, or the first document of the probe's text."""
        from evals.inputs import check_records_file

        if self.options.text is not None:
            docs = self.documents()
            docs.source.check_file()
            if not docs.head(1):
                raise ValueError(f"{docs.source.dataset}: no documents to build the probe from")
            return
        path = self.resolve_path(self.options.dataset)
        if self._frame is None:
            check_records_file(path, ("text", "kinds"))
            self._frame = load_labelled(path)

    def documents(self) -> Documents:
        """The probe's text source, read lazily and kept."""
        if self._docs is None:
            where = self.resolve_path(self.options.text["dataset"])
            self._docs = Documents(text_source({**self.options.text, "dataset": where},
                                               f"[evaluators.{self.name}] text"))
        return self._docs

    def input_id(self, option: str, value):
        """`text`'s dataset by content (a local file) or name (a hub dataset), with its other
        keys; the labelled `dataset` as every path option."""
        if option == "text" and isinstance(value, dict):
            return {**value, "dataset": super().input_id("dataset", value.get("dataset"))}
        return super().input_id(option, value)

    def encoded(self, tokenizer, context_length: int) -> tuple[list[list[int]], list[list[str]]]:
        """(start + token ids, kinds) per sequence, made once per tokenizer fingerprint."""
        o = self.options
        where = self.resolve_path(o.dataset if o.text is None else o.text["dataset"])
        key = (tokenizer_fingerprint(tokenizer), context_length)
        if key not in self._encoded:
            start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None \
                else tokenizer.eos_token_id
            if start is None:
                raise LabelledTokensError(f"{where}: the tokenizer has no BOS or EOS token to "
                                          "start the sequences with")
            if o.text is None:
                if self._frame is None:
                    self._frame = load_labelled(where)
                self._encoded[key] = encode(self._frame, tokenizer, int(start), context_length,
                                            where)
            else:
                self._encoded[key] = self._probe(tokenizer, int(start), context_length, where)
        return self._encoded[key]

    def _probe(self, tokenizer, start: int, context_length: int, where: str):
        from evals.token_loss import build_stream

        settings = self.options.probe_settings()
        if settings.seq_len + 1 > context_length:
            raise LabelledTokensError(f"{where}: seq_len {settings.seq_len} + the start token "
                                      f"exceeds the model's context of {context_length}")
        ids = build_stream(self.documents(), tokenizer, settings.stat_tokens).token_ids
        rows, kinds = build_probe(ids, set(tokenizer.all_special_ids), settings)
        return [[start, *row] for row in rows], kinds

    def run(self, lm) -> dict[str, pl.DataFrame]:
        ids, kinds = self.encoded(lm.tokenizer, lm.context_length)
        pad = lm.tokenizer.pad_token_id
        loss, hit = position_scores(lm.model, ids, ids[0][0] if pad is None else int(pad),
                                    self.options.batch_rows, next(lm.model.parameters()).device)
        return {"recall-bigram": aggregate(kinds, loss, hit)}
