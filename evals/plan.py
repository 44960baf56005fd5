"""What a batch will cost, before it runs (`dynamics plan BATCH`); no checkpoint is loaded.

Per model and in total: checkpoints, evaluator units to run (units a previous run
stored are not counted), bytes to download, peak disk under `disk_budget_gb`, and
compute seconds per evaluator.

Bytes. A hub suite, online: each revision's file sizes from the hub's file listing
(`HfApi.list_repo_tree`, one call per revision), counting what a load fetches
(config and tokenizer files, and the weights `dynamics.weights.choose_weights`
picks: safetensors, else the pickle shards). Offline (HF_HUB_OFFLINE=1 or
`offline=True`): params x bytes per parameter of the dtype the family's hub files
store (`dynamics.suites.STORED_DTYPES`; weights only), or unknown for a family
not listed there. A local suite downloads nothing; its folders' sizes are shown.

Peak disk (`peak_disk`): checkpoints stream in order; the one being evaluated
stays while the next downloads, then the oldest finished ones are deleted until
the rest fit `disk_budget_gb` (dynamics.streaming). Example: budget 30 GB,
checkpoints of 24 GB each: 24 kept (in use) + 24 downloading = 48 GB peak.

Compute: 2 x params FLOPs per token (a forward pass; the input embedding is a
lookup but is counted) x tokens per checkpoint (`evaluator_tokens`: token-loss's
`max_tokens`; sequences and bigbench-mc from their data's characters / 4 (~4
characters per token for English BPE) when the files are readable, else unknown),
divided by a throughput: the device class's default (`DEVICE_CLASSES`, each with
its source), a given TFLOP/s, or `calibrate`: a timed forward of a random-weight
model built from the model's config.json, on this device, in the batch's dtype,
at token-loss's batch shape (`evals.calibrate`).
"""

from __future__ import annotations

import fnmatch
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from dynamics.checkpoints import CheckpointRef
from dynamics.suites import STORED_DTYPES, Suite, get_suite
from dynamics.weights import NON_WEIGHT_PATTERNS, choose_weights
from evals.base import evaluator_class, parse_options
from evals.calibrate import DEVICE_CLASSES, Throughput, calibrate_model, device_class
from evals.config import BatchConfig, generate_configs

CHARS_PER_TOKEN = 4.0
BYTES_PER_PARAM = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class ModelPlan:
    """One model's share of a batch (seconds and tokens: None where unknown)."""

    model: str
    params: int
    checkpoints: int
    units: dict[str, int]
    bytes: int | None
    bytes_source: str
    seconds: dict[str, float | None]
    throughput: Throughput


@dataclass
class BatchPlan:
    """A batch's projected cost; `text()` is what `dynamics plan` prints."""

    batch: str
    device_class: str
    dtype: str
    models: list[ModelPlan]
    tokens: dict[str, tuple[int | None, str]]
    peak_disk: int | None
    budget_bytes: int | None
    stored_units: int = 0
    extra: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int | None:
        sizes = [m.bytes for m in self.models]
        return None if None in sizes else sum(sizes)

    def total_seconds(self, name: str | None = None) -> float | None:
        """Compute seconds of one evaluator (all when None); None if any part is unknown."""
        values = [s for m in self.models for n, s in m.seconds.items() if name in (None, n)]
        return None if None in values else sum(values)

    @property
    def complete(self) -> bool:
        """Every figure known and every input present."""
        return (not self.problems and self.total_bytes is not None
                and self.total_seconds() is not None)

    def text(self) -> str:
        """A table (one row per model, a total row), then where each figure comes from."""
        return plan_text(self)


def ref_bytes(ref: CheckpointRef, offline: bool) -> tuple[int | None, str]:
    """Bytes a load of `ref` fetches, and where the figure comes from."""
    if ref.is_local:
        folder = Path(ref.source)
        size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) \
            if folder.is_dir() else None
        return size, "local files (nothing to download)"
    if not offline:
        try:
            return _hub_revision_bytes(ref.source, ref.revision), "hub file sizes"
        except Exception as err:  # noqa: BLE001  (hub errors come in many types)
            fallback, source = _stored_bytes(ref)
            return fallback, f"{source}; the hub listing failed: {type(err).__name__}"
    return _stored_bytes(ref)


def _stored_bytes(ref: CheckpointRef) -> tuple[int | None, str]:
    dtype = STORED_DTYPES.get(ref.family)
    if dtype is None:
        return None, f"unknown offline (no stored dtype known for family {ref.family!r})"
    return (ref.params * BYTES_PER_PARAM[dtype],
            f"params x {BYTES_PER_PARAM[dtype]} B ({ref.family} stores {dtype}; weights only)")


def _hub_revision_bytes(repo: str, revision: str | None) -> int:
    from huggingface_hub import HfApi

    files = {f.path: f.size for f in HfApi().list_repo_tree(repo, revision=revision)
             if getattr(f, "size", None) is not None}
    chosen = choose_weights(files)
    if chosen is None:
        raise FileNotFoundError(f"{repo}@{revision} lists no weight files")
    wanted = set(chosen.names) | {n for n in files
                                  if any(fnmatch.fnmatch(n, p) for p in NON_WEIGHT_PATTERNS)}
    return sum(files[n] for n in wanted)


def peak_disk(sizes: list[int], budget_bytes: int | None) -> int:
    """Peak bytes on disk while checkpoints of `sizes` stream in order (module docstring).

    Each download lands beside what the budget kept; after it, the oldest finished
    checkpoints (all but the newest, which is in use) are deleted until the rest fit.
    """
    kept: list[int] = []
    peak = 0
    for size in sizes:
        peak = max(peak, sum(kept) + size)
        kept.append(size)
        while budget_bytes is not None and len(kept) > 1 and sum(kept) > budget_bytes:
            kept.pop(0)
    return peak


def _chars(strings) -> int:
    return sum(len(s or "") for s in strings)


def _sequences_tokens(options, cfg: BatchConfig) -> tuple[int | None, str]:
    from evals.sequences import load_sequence_sets

    sources = [options.dataset, *(options.extra_datasets or [])]
    chars = 0
    for source in sources:
        path = Path(cfg.resolve(source))
        if not path.is_file():
            return None, f"unknown ({source} is not a readable local file)"
        frame = load_sequence_sets(str(path), sets=options.sets if source == options.dataset
                                   else None, min_pairs=1)
        chars += _chars(frame["prefix"]) + _chars(frame["text"])
    return round(chars / CHARS_PER_TOKEN), "characters / 4"


def _bigbench_tokens(options, cfg: BatchConfig) -> tuple[int | None, str]:
    from evals.bigbench_tasks import format_task, read_task, select_tasks

    folder = Path(cfg.resolve(options.folder))
    if not folder.is_dir():
        return None, f"unknown (folder {options.folder} not found)"
    chars = 0
    for name in select_tasks(folder, options.tasks):
        for task in read_task(folder / name)[0]:
            for ex in format_task(task, options.k, options.seed, options.max_examples):
                chars += len(ex.prompt) + _chars(ex.choices)  # the prompt once per example
    return round(chars / CHARS_PER_TOKEN), "prompt + choice characters / 4"


def evaluator_tokens(name: str, values: dict, cfg: BatchConfig) -> tuple[int | None, str]:
    """Tokens one checkpoint's unit of evaluator `name` scores, and how that was counted."""
    options, problems = parse_options(evaluator_class(name).Options, values, name)
    if options is None:
        return None, f"unknown ({problems[0]})"
    if name == "token-loss":
        return options.max_tokens, "its max_tokens; fewer if the text is shorter"
    try:
        if name == "sequences":
            return _sequences_tokens(options, cfg)
        if name == "bigbench-mc":
            return _bigbench_tokens(options, cfg)
        if name == "recall-bigram" and options.text is not None:
            return (options.n_sequences * options.seq_len,
                    "its probe: n_sequences x seq_len, built from the text")
    except (OSError, ValueError) as err:
        return None, f"unknown ({type(err).__name__}: {str(err).splitlines()[0]})"
    return None, "unknown (no token count rule for this evaluator)"


def _pending_units(cfg: BatchConfig, refs: list[CheckpointRef]) -> tuple[dict, int]:
    """{(model, evaluator): units to run}, and units the store already holds."""
    from collections import Counter

    if not cfg.output_dir.is_dir():
        return Counter((r.model, n) for r in refs for n in cfg.evaluators), 0
    from evals.store import Store
    from evals.sweep import build_evaluators, plan

    todo, result = plan(Store(cfg.output_dir), refs, build_evaluators(cfg), retry_failed=False)
    return Counter((ref.model, ev.name) for ref, evs in todo for ev in evs), result.skipped


def input_problems(cfg: BatchConfig) -> list[str]:
    """The batch's missing data files (load_batch's checks, listed here instead of raised)."""
    out = []
    for name, values in cfg.evaluators.items():
        cls = evaluator_class(name)
        options, _ = parse_options(cls.Options, values, name)
        if options is not None:
            out.extend(cls.input_problems(options, Path(cfg.base_dir)))
    return out


def _throughputs(cfg, suite: Suite, models, cls_name, tflops, calibrate) -> dict[str, Throughput]:
    if tflops is not None:
        return dict.fromkeys(models, Throughput(tflops * 1e12, f"given: {tflops:g} TFLOP/s"))
    default = DEVICE_CLASSES[cls_name]
    if not calibrate:
        return dict.fromkeys(models, default)
    options = None
    if "token-loss" in cfg.evaluators:
        options, _ = parse_options(evaluator_class("token-loss").Options,
                                   cfg.evaluators["token-loss"], "token-loss")
    return {m: calibrate_model(suite.checkpoints(m)[0], cfg.device, cfg.dtype, default, options)
            for m in models}


def _generate_lines(cfg: BatchConfig, suite: Suite, rate: Throughput) -> list[str]:
    out = []
    for name, gen in generate_configs(cfg).items():
        rows = gen.n_prompts * len(gen.pairs) * (gen.prompt_tokens + gen.max_new_tokens)
        flops = 2 * (suite.params_of(gen.small) + suite.params_of(gen.large)) * rows
        out.append(f"[generate.{name}]: {gen.n_prompts} prompts x {len(gen.pairs)} mixtures x "
                   f"{gen.prompt_tokens + gen.max_new_tokens} tokens through {gen.small} and "
                   f"{gen.large}, once: ~{flops / rate.flops_per_s:.0f} s of forward passes "
                   "(decoding runs one token at a time, so expect more)")
    return out


def _model_plan(model: str, sized: list, units: dict, tokens: dict,
                rate: Throughput) -> ModelPlan:
    """One model's plan from its (ref, (bytes, source)) pairs and the batch's counts."""
    sizes = [b for _, (b, _) in sized]
    params = sized[0][0].params
    seconds = {n: None if count is None else units[(model, n)] * 2 * params * count
               / rate.flops_per_s for n, (count, _) in tokens.items()}
    return ModelPlan(model, params, len(sized), {n: units[(model, n)] for n in tokens},
                     None if None in sizes else sum(sizes), sized[0][1][1], seconds, rate)


def plan_batch(cfg: BatchConfig, *, device: str | None = None, tflops: float | None = None,
               calibrate: bool = False, offline: bool | None = None,
               batch_name: str = "batch") -> BatchPlan:
    """The cost of `cfg` (module docstring); `device` names a class of DEVICE_CLASSES."""
    if tflops is not None and not (isinstance(tflops, (int, float)) and tflops > 0):
        raise ValueError(f"tflops = {tflops!r}: give a positive number of TFLOP/s")
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" if offline is None else offline
    suite = get_suite(cfg.suite_path)
    refs = suite.select(cfg.models, cfg.steps)
    models = list(dict.fromkeys(r.model for r in refs))
    cls_name = device_class(cfg.device, device)
    rates = _throughputs(cfg, suite, models, cls_name, tflops, calibrate)
    tokens = {n: evaluator_tokens(n, v, cfg) for n, v in cfg.evaluators.items()}
    units, stored = _pending_units(cfg, refs)
    with ThreadPoolExecutor(max_workers=8) as pool:
        sized = list(pool.map(lambda r: ref_bytes(r, offline), refs))
    plans = [_model_plan(model, [(r, s) for r, s in zip(refs, sized, strict=True)
                                 if r.model == model], units, tokens, rates[model])
             for model in models]
    budget = None if cfg.disk_budget_gb is None else int(cfg.disk_budget_gb * 2**30)
    downloads = [b for r, (b, _) in zip(refs, sized, strict=True) if not r.is_local]
    peak = None if None in downloads else peak_disk(downloads, budget)
    return BatchPlan(batch_name, cls_name, cfg.dtype, plans, tokens, peak, budget, stored,
                     _generate_lines(cfg, suite, rates[models[0]]) if models else [],
                     input_problems(cfg))


def human_bytes(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def human_seconds(s: float | None) -> str:
    if s is None:
        return "unknown"
    if not math.isfinite(s):
        return "inf"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s / size:.1f} {unit}"
    return f"{s:.1f} s" if s >= 0.1 else f"{s * 1000:.0f} ms"


def _at_least(parts: list[float | None]) -> str:
    """The sum of the known parts, as ">= x" when a part is unknown ("unknown" if all are)."""
    known = [p for p in parts if p is not None]
    if not known:
        return "unknown"
    return ("" if len(known) == len(parts) else ">= ") + human_seconds(sum(known))


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))


def plan_table(plan: BatchPlan) -> list[str]:
    """The table: model, params, checkpoints, units, download, seconds per evaluator, compute."""
    names = list(plan.tokens)
    head = ["model", "params", "ckpts", "units", "download", *names, "compute"]
    rows = [[m.model, f"{m.params / 1e6:,.1f}M", str(m.checkpoints), str(sum(m.units.values())),
             human_bytes(m.bytes), *(human_seconds(m.seconds[n]) for n in names),
             _at_least(list(m.seconds.values()))] for m in plan.models]
    rows.append(["total", "", str(sum(m.checkpoints for m in plan.models)),
                 str(sum(sum(m.units.values()) for m in plan.models)),
                 human_bytes(plan.total_bytes), *(human_seconds(plan.total_seconds(n))
                                                  for n in names),
                 _at_least([s for m in plan.models for s in m.seconds.values()])])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    rule = "  ".join("-" * w for w in widths)
    return [_row(head, widths), rule, *(_row(r, widths) for r in rows[:-1]), rule,
            _row(rows[-1], widths)]


def plan_text(plan: BatchPlan) -> str:
    lines = [f"plan: {plan.batch} (device class {plan.device_class}, {plan.dtype}; "
             "nothing loaded)", "", *plan_table(plan), ""]
    sources = sorted({m.bytes_source for m in plan.models})
    lines.append(f"download: {'; '.join(sources)}")
    budget = "no disk_budget_gb" if plan.budget_bytes is None else \
        f"disk_budget_gb = {plan.budget_bytes / 2**30:g} GiB = {human_bytes(plan.budget_bytes)}"
    lines.append(f"peak disk: {human_bytes(plan.peak_disk)} ({budget}; the checkpoint in use "
                 "stays while the next downloads)")
    for n, (tokens, how) in plan.tokens.items():
        count = "unknown" if tokens is None else f"{tokens:,}"
        lines.append(f"tokens per checkpoint, {n}: {count} ({how})" if tokens is not None
                     else f"tokens per checkpoint, {n}: {how}")
    for source in dict.fromkeys(m.throughput.source for m in plan.models):
        lines.append(f"throughput: {source}")
    lines.append("compute = units x 2 x params x tokens / throughput (forward passes only)")
    if plan.stored_units:
        lines.append(f"{plan.stored_units} unit(s) already stored in the output: not counted")
    lines.extend(plan.extra)
    lines.extend(f"missing input: {p}" for p in plan.problems)
    return "\n".join(lines)
