"""The `circuits` evaluator: EAP-IG circuits per task and head component scores.

Per checkpoint and task: build the clean/corrupted pairs (cached per
tokenizer), score every edge with EAP-IG (`ig_steps`), find the minimal
greedy circuit reaching `threshold` faithfulness, and write

- `circuit-edges`: task, edge ("a0.h3->m1", "input->a1.h2<q>"), score, in_circuit,
- `circuit-summary`: task, metric_clean, metric_corrupted, circuit_edges, faithfulness,
  reason (null when the model performs the task; see below),
- `components`: layer, head, kind, score (see `evals.circuits.components`).

A task with no usable example for this tokenizer (e.g. no single-token names)
is skipped and logged, never written as NaN (so is a task whose full-model
metric is exactly 0, where faithfulness is undefined). With the default
"ratio" faithfulness a checkpoint whose clean metric is negative or near 0
(an untrained model) would give unstable ratios, so before any attribution the
full model's per-example metrics are checked (`perform_level`; criterion in
`evals.circuits.search.not_performed_reason`: mean clean metric > 0 and a
bootstrap lower bound of mean(clean - corrupted) > 0). A task the model does not
perform gets a summary row with null circuit_edges and faithfulness and the
`reason`, and no edge rows (Tigges et al. analyse circuits only where the task
is performed).
Task `trigger` reads the toy suite's `trigger.jsonl` (`trigger_path`,
default `<suite>/data/trigger.jsonl` found from the checkpoint folder); task
`induction` generates repeated random token ids. Component kinds that a
tokenizer cannot support (copy scores without single-token names, successor
scores with too few single-token ordinal pairs) are skipped with a log line.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import polars as pl

from evals.base import ConfigError, Evaluator, tokenizer_fingerprint
from evals.circuits import components as comp
from evals.circuits.attribution import edge_scores, evaluate_circuit
from evals.circuits.model_surgery import adapter_for, graph_of
from evals.circuits.search import minimal_circuit, not_performed_reason
from evals.circuits.successor import successor_scores
from evals.circuits.tasks import TASKS, TaskPairs, make_task, start_token

log = logging.getLogger(__name__)
ALL_TASKS = (*TASKS, "trigger")
ATTENTION_KINDS = ("induction", "previous-token", "duplicate-token")


@dataclass(frozen=True)
class CircuitsOptions:
    """Options of the `circuits` evaluator.

    Attributes:
        tasks: any of ioi, greater-than, gender-pronoun, sva, induction, trigger.
        n_examples: clean/corrupted pairs per task (before tokenizer filtering).
        ig_steps: EAP-IG interpolation steps m (1 = plain EAP; Tigges used 30).
        threshold: faithfulness the minimal circuit must reach.
        faithfulness: "ratio" (Tigges: m(C)/m(model)) or "normalized" (Hanna).
        search_start: first circuit size tried (edges).
        search_step: step of the stepped search before the binary search.
        search_local_radius: half-width of the local linear search around binary-search
            midpoints within 10% of the threshold (Tigges: 5; 0 = plain binary search).
        batch_size: pairs per forward/backward batch.
        components: head scores to compute (induction, previous-token, duplicate-token, copy,
            negative-copy (OV-only copy-suppression proxy, not CSPA), successor (skipped,
            with a log line, below 10 single-token ordinal pairs), trigger-induction: on the
            trigger task's prompts, else on the induction task's); see
            `evals.circuits.components`.
        component_seq_len: length of the random sequence repeated twice for attention scores
            (default: Tigges' 100, capped at (max_position_embeddings - 1) // 2 so BOS + 2
            copies fit); ids from `components.random_id_range` (Tigges' [100, 20000)).
        edges: "all" writes every edge's score, "circuit" only the in-circuit edges.
        prepend_bos: prepend the tokenizer's BOS (its EOS where it has no BOS, e.g. OLMo)
            to the natural-language task prompts and to the random sequences of the
            attention component scores.
        trigger_path: the toy suite's trigger.jsonl (default: found from the checkpoint).
        seed: seed of the generated datasets (and of the performance bootstrap).
        perform_level: confidence of the "does the model perform the task" bootstrap
            check (see the module docstring); 0 turns the check off.
    """

    tasks: tuple[str, ...] = ("ioi", "greater-than", "gender-pronoun", "sva", "induction")
    n_examples: int = 32
    ig_steps: int = 30
    threshold: float = 0.8
    faithfulness: Literal["ratio", "normalized"] = "ratio"
    search_start: int = 25
    search_step: int = 25
    search_local_radius: int = 5
    batch_size: int = 8
    components: tuple[str, ...] = ("induction", "previous-token", "duplicate-token", "copy",
                                   "negative-copy", "successor")
    component_seq_len: int | None = None
    edges: Literal["all", "circuit"] = "all"
    prepend_bos: bool = False
    trigger_path: str | None = None
    seed: int = 0
    perform_level: float = 0.95

    def __post_init__(self) -> None:
        problems = []
        bad = [t for t in self.tasks if t not in ALL_TASKS]
        if bad:
            problems.append(f"unknown circuit tasks {bad}; allowed: {', '.join(ALL_TASKS)}")
        bad = [k for k in self.components if k not in comp.KINDS]
        if bad:
            problems.append(f"unknown component kinds {bad}; allowed: {', '.join(comp.KINDS)}")
        small = [f"{n} = {getattr(self, n)}" for n in ("ig_steps", "n_examples", "batch_size")
                 if getattr(self, n) < 1]
        if small:
            problems.append(f"{', '.join(small)}: ig_steps, n_examples and batch_size must be "
                            ">= 1")
        if self.search_start < 1 or self.search_step < 1 or self.search_local_radius < 0:
            problems.append(f"need search_start >= 1, search_step >= 1, search_local_radius "
                            f">= 0; got {self.search_start}, {self.search_step}, "
                            f"{self.search_local_radius}")
        if not 0 < self.threshold <= 1:
            problems.append(f"threshold {self.threshold} must be in (0, 1]")
        if not 0 <= self.perform_level < 1:
            problems.append(f"perform_level {self.perform_level} must be in [0, 1) (0 = off)")
        if not self.tasks and not self.components:
            problems.append("tasks = [] and components = []: nothing to score")
        if problems:
            raise ConfigError(problems)


def load_trigger_task(path: Path, tokenizer, n: int) -> TaskPairs:
    """TaskPairs from the toy suite's trigger.jsonl (EOS prepended, as in training rows)."""
    task = TaskPairs("trigger", "logit_diff")
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    for line in path.read_text().splitlines()[:n]:
        row = json.loads(line)
        good, bad = enc(row["correct"]), enc(row["incorrect"])
        task.add(eos + enc(row["clean"]), eos + enc(row["corrupted"]), good[:1], bad[:1])
    return task


class Circuits(Evaluator):
    """EAP-IG circuits and head component scores."""

    name: ClassVar[str] = "circuits"
    tables: ClassVar[tuple[str, ...]] = ("circuit-edges", "circuit-summary", "components")
    Options: ClassVar[type] = CircuitsOptions
    path_options: ClassVar[tuple[str, ...]] = ("trigger_path",)
    runtime_options: ClassVar[tuple[str, ...]] = ("batch_size",)
    empty_tables: ClassVar[tuple[str, ...]] = ("circuit-edges", "circuit-summary", "components")

    def prepare(self) -> None:
        """Check the trigger file now when one is named (the default is found per checkpoint)."""
        from evals.inputs import check_records_file

        if self.options.trigger_path and "trigger" in self.options.tasks:
            path = Path(self.resolve_path(self.options.trigger_path))
            if not path.is_file():
                raise FileNotFoundError(f"trigger_path = {self.options.trigger_path!r}: no such "
                                        f"file {path}")
            check_records_file(path, ("clean", "corrupted", "correct", "incorrect"))

    def __init__(self, options: CircuitsOptions, base_dir: Path | None = None):
        super().__init__(options, base_dir)
        self._tasks: dict[tuple[str, str], TaskPairs] = {}

    def _task(self, name: str, lm, vocab: int) -> TaskPairs:
        key = (name, tokenizer_fingerprint(lm.tokenizer) if lm.tokenizer is not None else "")
        if key not in self._tasks:
            o = self.options
            if name == "trigger":
                local = Path(lm.local_dir).resolve() if lm.local_dir else None
                path = (Path(self.resolve_path(o.trigger_path)) if o.trigger_path else
                        local.parents[1] / "data" / "trigger.jsonl" if local and
                        len(local.parents) > 1 else Path("<suite>/data/trigger.jsonl"))
                if not path.is_file():
                    raise FileNotFoundError(f"trigger task file {path} not found; set trigger_path")
                task = load_trigger_task(path, lm.tokenizer, o.n_examples)
            else:
                task = make_task(name, lm.tokenizer, o.n_examples, o.seed, vocab, o.prepend_bos)
            log.info("circuits task %s: %d/%d pairs kept %s", name, task.n_kept,
                     task.n_candidates, task.notes)
            self._tasks[key] = task
        return self._tasks[key]

    def run(self, lm) -> dict[str, pl.DataFrame]:
        o = self.options
        adapter = adapter_for(lm.model)
        g = graph_of(adapter)
        vocab = lm.model.config.vocab_size
        if lm.tokenizer is not None:
            vocab = min(vocab, len(lm.tokenizer))
        edges, summary = [], []
        names = [g.edge_name(u, v) for u, v in g.edge_mask.nonzero().tolist()]
        for name in o.tasks:
            task = self._task(name, lm, vocab)
            if task.n_kept == 0:
                self.log_once(lm.tokenizer, logging.WARNING, "circuits: task %s has no usable "
                              "pairs for this tokenizer (%s); skipped", name, task.notes)
                continue
            frame, row = self._circuit(adapter, task, names)
            if frame is not None:
                edges.append(frame.filter(pl.col("in_circuit")) if o.edges == "circuit" else frame)
            if row is not None:
                summary.append(row)
        return {"circuit-edges": _concat(edges, "circuit-edges"),
                "circuit-summary": pl.DataFrame(summary, schema=_own("circuit-summary")),
                "components": self._components(adapter, lm, vocab)}

    def _circuit(self, adapter, task: TaskPairs, names: list[str]):
        """(edge frame or None, summary row or None) of one task at this checkpoint."""
        o, g, name = self.options, graph_of(adapter), task.name
        if o.perform_level > 0:
            clean, corr = (evaluate_circuit(adapter, task, None, batch_size=o.batch_size, run=r)
                           for r in ("clean", "corrupted"))
            reason = not_performed_reason(clean, corr, level=o.perform_level, seed=o.seed)
            if reason is not None:
                log.info("circuits: task %s not performed (%s); no circuit", name, reason)
                return None, {"task": name, "metric_clean": float(clean.mean()),
                              "metric_corrupted": float(corr.mean()), "circuit_edges": None,
                              "faithfulness": None, "reason": reason}
        scores = edge_scores(adapter, task, ig_steps=o.ig_steps, batch_size=o.batch_size)
        res = minimal_circuit(adapter, task, scores, threshold=o.threshold,
                              start=o.search_start, step=o.search_step,
                              batch_size=o.batch_size, faithfulness=o.faithfulness,
                              local_radius=o.search_local_radius)
        if not math.isfinite(res.faithfulness):
            log.warning("circuits: task %s has a zero full-model metric (%s); faithfulness "
                        "is undefined, skipped", name, res.metric_clean)
            return None, None
        frame = pl.DataFrame({"task": name, "edge": names, "score": scores[g.edge_mask].numpy(),
                              "in_circuit": res.in_circuit[g.edge_mask].numpy()})
        return frame, {"task": name, "metric_clean": res.metric_clean,
                       "metric_corrupted": res.metric_corrupted, "circuit_edges": res.n_edges,
                       "faithfulness": res.faithfulness, "reason": None}

    def _components(self, adapter, lm, vocab: int) -> pl.DataFrame:
        o = self.options
        scores = {}
        attn_kinds = [k for k in o.components if k in ATTENTION_KINDS]
        if attn_kinds:
            low = len(getattr(lm.tokenizer, "all_special_ids", []) or [])
            bos = start_token(lm.tokenizer) if o.prepend_bos else None
            n_pos = getattr(lm.model.config, "max_position_embeddings", None) or 201
            seq_len = o.component_seq_len or max(2, min(comp.TIGGES_SEQ_LEN, (n_pos - 1) // 2))
            att = comp.attention_scores(adapter, comp.random_id_range(vocab, low),
                                        seq_len=seq_len, seed=o.seed, bos_id=bos)
            scores.update({k: att[k] for k in attn_kinds})
        if lm.tokenizer is not None:
            scores.update(self._ov_components(adapter, lm.tokenizer))
        if "trigger-induction" in o.components:
            task = self._trigger_or_induction(lm, vocab)
            trig = comp.task_induction_scores(adapter, task) if task is not None else None
            if trig is not None:
                scores["trigger-induction"] = trig
        rows = [{"layer": layer, "head": head, "kind": kind, "score": float(t[layer, head])}
                for kind, t in scores.items()
                for layer in range(t.shape[0]) for head in range(t.shape[1])]
        return pl.DataFrame(rows, schema=_own("components"))

    def _ov_components(self, adapter, tokenizer) -> dict:
        """copy, negative-copy and successor scores that this tokenizer allows."""
        o, out = self.options, {}
        for kind, negative in (("copy", False), ("negative-copy", True)):
            if kind in o.components:
                t = comp.copy_scores(adapter, tokenizer, seed=o.seed, negative=negative)
                if t is None:
                    self.log_once(tokenizer, logging.INFO,
                                  "circuits: %s scores skipped: no single-token IOI names", kind)
                else:
                    out[kind] = t
        if "successor" in o.components:
            t, pairs = successor_scores(adapter, tokenizer)
            if t is None:
                self.log_once(tokenizer, logging.INFO, "circuits: successor scores skipped: "
                              "too few single-token pairs, %s", pairs.summary())
            else:
                self.log_once(tokenizer, logging.INFO, "circuits: successor scores on %s",
                              pairs.summary())
                out["successor"] = t
        return out

    def _trigger_or_induction(self, lm, vocab: int) -> TaskPairs | None:
        """The trigger task when its file exists, else the generated induction task."""
        try:
            return self._task("trigger", lm, vocab)
        except FileNotFoundError:
            return self._task("induction", lm, vocab)


def _own(table: str) -> pl.Schema:
    from evals.schema import TABLES

    return TABLES[table]


def _concat(frames: list[pl.DataFrame], table: str) -> pl.DataFrame:
    schema = _own(table)
    if not frames:
        return pl.DataFrame(schema=schema)
    return pl.concat([f.cast(dict(schema)) for f in frames])
