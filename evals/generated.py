"""A batch's `[generate.<name>]` tables: mixture-generated sets, made once, scored everywhere.

Xia et al. (2023) decode sequences from p = a p_small + b p_large (evals.mixture)
and track each set's perplexity over every checkpoint of every model. The run
resolves each table once against the batch's suite (`generate_specs`: both
checkpoints, the prompt source and every option, as a `GenerateSpec`); before
the sweep, `prepare_generated(cfg, specs)` writes each table's sets to

    <output>/generated/<name>.jsonl     the sets (`sequences` format)
    <output>/generated/<name>.json      the options they were generated with

and returns the batch with those files added to the `sequences` evaluator
(`extra_datasets`, or `dataset` when the batch has no sequences source), so
one sweep scores them at every checkpoint.

Resume: a file whose recorded options equal the table's (with "final" steps
resolved to step numbers and the prompt file's content hash, not its path: a
moved folder resumes) is reused, not regenerated. Different options are an
error naming each changed option: the file is never silently reused, nor
silently replaced. Set names end in
"| gen: <name>#<hash of the options>", so sets generated with other options
never share a name with stale scores in the store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dynamics.checkpoints import CheckpointRef
from dynamics.loading import load_checkpoint
from dynamics.suite_types import Suite
from evals.base import ConfigError
from evals.config import BatchConfig, GenerateConfig, generate_configs
from evals.sweep import load_options

log = logging.getLogger(__name__)
FOLDER = "generated"


class GeneratedSetError(ConfigError):
    """A generated set on disk was made with other options than the batch asks for."""


@dataclass(frozen=True)
class GenerateSpec:
    """One `[generate.<name>]` table resolved once against the batch's suite.

    Attributes:
        name: the table's name (`[generate.<name>]`).
        path: where its sets go (`<output>/generated/<name>.jsonl`).
        small, large: the two checkpoints of the mixture ("final" steps resolved).
        options: what the sets depend on, recorded beside them (`<name>.json`): a local
            prompt file by its content hash only (`prompts` is None), a hub name as given.
        prompts_path: where the prompts are read from (a local path or a hub name).
    """

    name: str
    path: Path
    small: CheckpointRef
    large: CheckpointRef
    options: dict
    prompts_path: str = ""

    @property
    def label(self) -> str:
        return options_label(self.name, self.options)


def generated_path(cfg: BatchConfig, name: str) -> Path:
    """Where `[generate.<name>]` writes its sets."""
    return cfg.output_dir / FOLDER / f"{name}.jsonl"


def _prompt_source(cfg: BatchConfig, gen: GenerateConfig) -> str:
    """The prompt file (relative to the batch's folder only), or a `datasets` name."""
    from evals.base import LOCAL_DATA_SUFFIXES

    raw = gen.prompts if gen.prompts is not None else cfg.evaluators["token-loss"]["dataset"]
    local = Path(cfg.resolve(raw))
    return str(local.resolve()) if local.exists() or local.suffix in LOCAL_DATA_SUFFIXES else raw


POOL_TOKENS = 100_000  # = TokenLossOptions.max_tokens's default


def _hub_prompt_options(cfg: BatchConfig, gen: GenerateConfig, prompts: str) -> dict | None:
    """How a hub prompt source is read: token-loss's text options when the prompts are its
    dataset, and `pool_tokens` (its max_tokens): prompts are drawn from the documents
    token-loss scores, so a streamed source is read only that far. None for a local file
    (read whole, as before)."""
    if Path(prompts).exists():
        return None
    from evals.texts import TEXT_KEYS

    table = cfg.evaluators.get("token-loss", {}) if gen.prompts is None else {}
    out = {new: table[old] for old, new in TEXT_KEYS.items()
           if old not in ("dataset", "streaming") and table.get(old) is not None}
    out["pool_tokens"] = table.get("max_tokens", POOL_TOKENS)
    return out


def prompt_source(prompts: str, options: dict):
    """(the TextSource of a spec's prompts, pool_tokens or None): `prompts` is where they
    are read from (GenerateSpec.prompts_path), `options` the spec's recorded options."""
    from evals.texts import TextSource

    hub = options.get("prompts_source")
    if hub is None:
        return TextSource(prompts), None
    read = {k: v for k, v in hub.items() if k != "pool_tokens"}
    return TextSource(prompts, **read), hub["pool_tokens"]


def _file_hash(source: str) -> str | None:
    path = Path(source)
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None


def generate_specs(cfg: BatchConfig, suite: Suite) -> list[GenerateSpec]:
    """The batch's `[generate.*]` tables, each resolved against `suite` (its checkpoints,
    prompt source with the file's hash, decoding options and seed)."""
    specs = []
    for name, gen in generate_configs(cfg).items():
        small, large = (suite.select([m], "final" if s is None else [s])[0]
                        for m, s in ((gen.small, gen.step_small), (gen.large, gen.step_large)))
        prompts = _prompt_source(cfg, gen)
        digest = _file_hash(prompts)
        options = {"suite": suite.name, "small": gen.small, "step_small": small.step,
                   "large": gen.large, "step_large": large.step,
                   "grid": [list(p) for p in gen.pairs],
                   "prompts": None if digest else prompts, "prompts_sha256": digest,
                   "n_prompts": gen.n_prompts, "prompt_tokens": gen.prompt_tokens,
                   "max_new_tokens": gen.max_new_tokens, "top_p": gen.top_p,
                   "seed": cfg.seed if gen.seed is None else gen.seed}
        hub = _hub_prompt_options(cfg, gen, prompts)
        if hub is not None:  # absent for local files: their recorded options stay as they were
            options["prompts_source"] = hub
        specs.append(GenerateSpec(name, generated_path(cfg, name), small, large, options,
                                  prompts))
    return specs


def options_label(name: str, options: dict) -> str:
    """`<name>#<6 hex>`: the set-name suffix, different whenever an option differs."""
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:6]
    return f"{name}#{digest}"


def _comparable(options: dict) -> dict:
    """Options as compared on resume: a local prompt file by its hash alone (records of
    earlier versions also hold its absolute path)."""
    return {**options, "prompts": None} if options.get("prompts_sha256") else options


def _differences(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def ensure_generated(spec: GenerateSpec, make: Callable[[GenerateSpec, Path], object]) -> Path:
    """The sets of one table: reused when recorded with the same options, else `make`-d.

    Raises:
        GeneratedSetError: the file exists with other recorded options.
    """
    path, name = spec.path, spec.name
    meta = path.with_suffix(".json")
    if meta.is_file() and path.is_file():  # the .json is written last: both = complete
        old = _comparable(json.loads(meta.read_text())["options"])
        if old == _comparable(spec.options):
            log.info("[generate.%s]: reusing %s (same options)", name, path)
            return path
        raise GeneratedSetError(
            [f"[generate.{name}]: {path} was generated with other options:"]
            + [f"  {d}" for d in _differences(old, spec.options)]
            + [f"  restore them, rename the table (e.g. [generate.{name}-2]), or delete {path} "
               "and its .json to regenerate (new set names; every checkpoint is re-scored)"])
    return _generate(spec, make)


def _generate(spec: GenerateSpec, make: Callable[[GenerateSpec, Path], object]) -> Path:
    from evals.sequences import load_sequence_sets

    path, name = spec.path, spec.name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    make(spec, tmp)
    os.replace(tmp, path)  # complete only once the .json record is written (below)
    try:
        sets = load_sequence_sets(str(path))
    except ValueError as err:
        path.unlink(missing_ok=True)
        raise GeneratedSetError(f"[generate.{name}]: the generated sets cannot be scored: {err} "
                                "(more prompts or max_new_tokens may help)") from err
    record = {"options": spec.options, "sets": sorted(sets["set"].unique()),
              "n_pairs": sets["pair_id"].n_unique()}
    path.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    log.info("[generate.%s]: wrote %d sets x %d pairs to %s", name, len(record["sets"]),
             record["n_pairs"], path)
    return path


def with_generated_sources(cfg: BatchConfig, paths: list[Path]) -> BatchConfig:
    """`cfg` whose `sequences` evaluator also scores `paths` (idempotent). The paths are
    made absolute: they are where the sets are now (under the output, which may be relative
    to the working directory), while the evaluator resolves relative paths against the
    batch's folder."""
    if not paths:
        return cfg
    seq = dict(cfg.evaluators.get("sequences", {}))
    rest = [str(Path(p).resolve()) for p in paths]
    if "dataset" not in seq:
        seq["dataset"], rest = rest[0], rest[1:]
    extra = list(seq.get("extra_datasets") or [])
    extra += [p for p in rest if p not in extra and p != seq["dataset"]]
    if extra:
        seq["extra_datasets"] = extra
    return dataclasses.replace(cfg, evaluators={**cfg.evaluators, "sequences": seq})


def prepare_generated(cfg: BatchConfig, specs: list[GenerateSpec], *,
                      generator: Callable | None = None, loader: Callable = load_checkpoint
                      ) -> BatchConfig:
    """Make (or reuse) the sets of every spec and add them to the `sequences` evaluator.

    Generation loads its two checkpoints with the batch's load options and disk
    budget (`evals.mixture.generate_from_refs`, or `generator` with its signature).
    Call it holding the store's lock (evals.execute does).
    """
    if generator is None:
        from evals.mixture import generate_from_refs as generator
    options = load_options(cfg)

    def make(spec: GenerateSpec, out: Path) -> None:
        o = spec.options
        source, pool_tokens = prompt_source(spec.prompts_path, o)
        generator(spec.small, spec.large, source, out, pool_tokens=pool_tokens,
                  grid=[tuple(p) for p in o["grid"]], n_prompts=o["n_prompts"],
                  prompt_tokens=o["prompt_tokens"], max_new_tokens=o["max_new_tokens"],
                  top_p=o["top_p"], seed=o["seed"], label=spec.label, load_options=options,
                  disk_budget_gb=cfg.disk_budget_gb, loader=loader)

    return with_generated_sources(cfg, [ensure_generated(spec, make) for spec in specs])
