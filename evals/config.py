"""The batch config: which checkpoints, which evaluators, where results go.

Loaded from TOML (`dynamics run batch.toml`), validated up front: every
problem (unknown key, wrong type, unknown evaluator or model, steps outside
the suite) is collected and reported together, one line each, before any
checkpoint is touched. Example::

    suite = "pythia"                 # built-in name, or a folder with suite.toml
    models = ["pythia-70m", "pythia-160m"]   # default: every model of the suite
    steps = "log-spaced 12"          # list, "all", "final", "every K", "A..B [every K]"
    output = "results/pythia"        # the store; relative to this file
    device = "cuda"
    dtype = "bfloat16"

    [evaluators.token-loss]
    dataset = "val.jsonl"
    max_tokens = 200000

    [generate.paper]                 # optional: Xia et al.'s mixture-generated sets
    small = "pythia-70m"             # p = a p_small + b p_large (negative mass clipped)
    large = "pythia-1.4b"
    grid = [[1, -1], [-1, 1], [1, 0], [0, 1], [1, 1]]   # or "paper" (the default)
    n_prompts = 100                  # drawn from `prompts` (default: token-loss's dataset)
    max_new_tokens = 50
    top_p = 0.9                      # omit for greedy decoding

Each `[generate.<name>]` table is written to `<output>/generated/<name>.jsonl`
before the sweep and scored by the `sequences` evaluator at every checkpoint
(see evals.generated).
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from evals.base import ConfigError, evaluator_class, key_problems, parse_options, unchecked_options


@dataclass(frozen=True)
class BatchConfig:
    """One evaluation batch.

    Attributes:
        suite: built-in suite name ("pythia", "pythia-deduped", "opt") or a local suite folder.
        output: results store folder.
        evaluators: registry name -> option table.
        models: model names (default: all models of the suite).
        steps: step selection applied to every model (see dynamics.checkpoints.select_steps).
        device: "cpu", "cuda", "cuda:N" or "mps".
        dtype: "float32", "bfloat16" or "float16".
        executor: "local" (default) or "ray".
        prefetch: load the next checkpoint in the background while evaluating.
        disk_budget_gb: delete downloaded hub checkpoints beyond this size (None: keep all).
        allow_pickle: allow loading pickle (.bin) weights. Unsafe; off by default.
        trust_remote_code: run model code shipped with checkpoints. Unsafe; off by default.
        seed: seed for anything random in evaluators.
        generate: set name -> `[generate.<name>]` table (GenerateConfig): labeled sets
            generated from the mixture of two checkpoints before the sweep.
        base_dir: folder relative paths are resolved against (the TOML's folder; set by
            load_batch, not a batch key).
        equivalence_margin: the margin, in the behaviors' units, within which two families
            "do not differ" (stats.equivalence; used where the suite has no seed runs).
    """

    suite: str
    output: str
    evaluators: dict = field(default_factory=dict)
    models: list[str] | None = None
    steps: list[int] | str = "all"
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    executor: Literal["local", "ray"] = "local"
    prefetch: bool = True
    disk_budget_gb: float | None = None
    allow_pickle: bool = False
    trust_remote_code: bool = False
    seed: int = 0
    generate: dict = field(default_factory=dict)
    base_dir: str = "."
    equivalence_margin: float | None = None

    INTERNAL = ("base_dir",)  # set by load_batch from the file's folder; not a user key

    def resolve(self, value: str) -> str:
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else Path(self.base_dir) / p)

    @property
    def output_dir(self) -> Path:
        return Path(self.resolve(self.output))

    @property
    def suite_path(self) -> str:
        """A built-in suite name ("a+b" for several) as given; anything else is a folder or
        suite.toml relative to the batch's folder (never the working directory)."""
        from dynamics.suites import BUILTIN_SUITES

        local = Path(self.resolve(self.suite))
        if local.exists():
            return str(local)
        builtin = all(p.strip() in BUILTIN_SUITES for p in self.suite.split("+"))
        return self.suite if builtin else str(local)


GRID_PAPER = ((1.0, -1.0), (-1.0, 1.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0))  # = mixture.PAPER_GRID
SET_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class GenerateConfig:
    """One `[generate.<name>]` table: sets decoded from a mixture of two checkpoints.

    The mixture is p = clip(a p_small + b p_large, 0), renormalized (Xia et al.
    2023; evals.mixture), one set per (a, b) of `grid`, from the same prompts.

    Attributes:
        small: the small model (a model name of the batch's suite).
        large: the large model.
        step_small: the small model's checkpoint step (default: its final one).
        step_large: the large model's checkpoint step (default: its final one).
        grid: (a, b) pairs, e.g. [[1, -1], [-1, 1]], or "paper" (the paper's five).
        prompts: validation text source for prompts (default: [evaluators.token-loss] dataset).
        n_prompts: prompts drawn (seeded) from `prompts`.
        prompt_tokens: each prompt is cut to its first this many tokens.
        max_new_tokens: tokens generated per prompt (the paper: 50 or 100).
        top_p: nucleus sampling mass (the paper: 0.9); omit for greedy decoding.
        seed: prompt draw and sampling seed (default: the batch's seed).
    """

    small: str
    large: str
    step_small: int | None = None
    step_large: int | None = None
    grid: list[list[float]] | str = "paper"
    prompts: str | None = None
    n_prompts: int = 100
    prompt_tokens: int = 16
    max_new_tokens: int = 50
    top_p: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        problems = self._grid_problems()
        problems += [f"{name} must be >= 1, got {getattr(self, name)}"
                     for name in ("n_prompts", "prompt_tokens", "max_new_tokens")
                     if getattr(self, name) < 1]
        if self.top_p is not None and not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1] (omit it for greedy), got {self.top_p}")
        if problems:
            raise ConfigError(problems)

    def _grid_problems(self) -> list[str]:
        if isinstance(self.grid, str):
            return [] if self.grid == "paper" else [
                f"grid = {self.grid!r}: use \"paper\" or a list of [a, b] pairs"]
        for pair in self.pairs:
            if len(pair) != 2:
                return [f"grid entry {list(pair)!r} must be one [a, b] pair"]
            if pair[0] <= 0 and pair[1] <= 0:
                return [f"grid entry {list(pair)!r}: a or b must be > 0, or the "
                        "clipped mixture has no mass"]
        if not self.pairs:
            return ["grid is empty; give at least one [a, b] pair"]
        if len(set(self.pairs)) != len(self.pairs):
            return [f"grid repeats a pair: {[list(p) for p in self.pairs]}"]
        return []

    @property
    def pairs(self) -> tuple[tuple[float, ...], ...]:
        """The (a, b) grid as float tuples."""
        if isinstance(self.grid, str):
            return GRID_PAPER
        return tuple(tuple(float(x) for x in pair) for pair in self.grid)


def parse_generate(values: dict, where: str = "") -> tuple[dict, list[str]]:
    """`[generate.<name>]` tables -> {name: GenerateConfig}, and every problem found."""
    out, problems = {}, []
    for name, table in values.items():
        at = f"{where}: [generate.{name}]" if where else f"[generate.{name}]"
        if not SET_NAME.match(name):
            problems.append(f"{at}: {name!r} names a file; use only letters, digits, "
                            "'_', '-' and '.'")
        if not isinstance(table, dict):
            problems.append(f"{at} must be a table, got {table!r}")
            continue
        gen, found = parse_options(GenerateConfig, table, at)
        problems.extend(found)
        if gen is not None:
            out[name] = gen
    return out, problems


def generate_configs(cfg: BatchConfig) -> dict[str, GenerateConfig]:
    """The batch's parsed `[generate.*]` tables (load_batch has checked them)."""
    gens, problems = parse_generate(cfg.generate)
    if problems:
        raise ConfigError(problems)
    return gens


def _check_generate(generate: dict, evaluators: dict, suite) -> list[str]:
    """Each generate table parses, has a prompt source, and names checkpoints of `suite`."""
    from dynamics.suites import SuiteError

    gens, problems = parse_generate(generate)
    token_loss = evaluators.get("token-loss")
    has_val = isinstance(token_loss, dict) and "dataset" in token_loss
    for name, gen in gens.items():
        if gen.prompts is None and not has_val:
            problems.append(f"[generate.{name}]: no prompt source; set prompts = "
                            '"<validation file>" (or configure [evaluators.token-loss] dataset)')
    for name, table in generate.items() if suite is not None else ():
        for which in ("small", "large"):
            model, step = (table.get(which), table.get(f"step_{which}")
                           ) if isinstance(table, dict) else (None, None)
            if not isinstance(model, str) or not isinstance(step, int | None):
                continue  # a type problem, reported by parse_generate
            try:
                suite.select([model], "final" if step is None else [step])
            except SuiteError as err:
                problems.append(f"[generate.{name}]: {which}: {err}")
    return problems


def _load_suite(ok: dict, base_dir: str):
    """(the batch's Suite or None, problems); `ok` holds the well-typed top-level values."""
    from dynamics.suites import SuiteError, get_suite

    if "suite" not in ok:
        return None, []  # missing or mistyped: reported by key_problems
    try:
        return get_suite(BatchConfig(ok["suite"], "", base_dir=base_dir).suite_path), []
    except SuiteError as err:
        return None, [f"suite: {err}"]


def _check_selection(suite, ok: dict, bad: dict) -> list[str]:
    """Models exist in the suite; the steps selection parses and selects checkpoints.

    The steps string is checked even when the suite or a model is wrong, so a bad
    selection is reported in the same run.
    """
    from dynamics.checkpoints import select_steps
    from dynamics.suites import SuiteError

    if "steps" in bad:
        return []
    steps, models, problems = ok.get("steps", "all"), ok.get("models"), []
    if suite is not None and "models" not in bad:
        for name in models or []:
            try:
                suite.checkpoints(name)
            except SuiteError as err:
                problems.append(f"models: {err}")
        known = [m for m in models or suite.model_names() if m in suite.models]
        if known:
            try:
                if not suite.select(known, steps):
                    problems.append(f"steps = {steps!r} selects no checkpoint")
            except SuiteError as err:
                problems.append(f"steps: {err}")
            return problems
    if isinstance(steps, str):  # no model to check against: check the selection's form
        try:
            select_steps([0], steps)
        except ValueError as err:
            problems.append(f"steps: {err}")
    return problems


def _check_evaluators(evaluators: dict, base_dir: Path | None = None) -> list[str]:
    """Every evaluator table: known name, keys, types, values, and the files it names."""
    problems = []
    if not evaluators:
        problems.append("evaluators: none configured; add e.g. [evaluators.token-loss]")
    for name, values in evaluators.items():
        try:
            cls = evaluator_class(name)
        except ConfigError as err:
            problems.extend(err.problems)
            continue
        if not isinstance(values, dict):
            problems.append(f"[evaluators.{name}] must be a table, got {values!r}")
            continue
        where = f"[evaluators.{name}]"
        options, found = parse_options(cls.Options, values, where)
        problems.extend(found)
        if options is None and not key_problems(cls.Options, values, where):
            options = unchecked_options(cls.Options, values)  # a value check failed
        if options is not None and base_dir is not None:  # missing data files, before any load
            problems.extend(cls.input_problems(options, base_dir))
    return problems


def _check_output(ok: dict, base_dir: str, source: Path | None) -> list[str]:
    """The output folder: not a file, not the batch file's folder (nor one holding it),
    and creatable and writable. Nothing is created here."""
    import os

    if "output" not in ok:
        return []
    value = ok["output"]
    out = BatchConfig("", value, base_dir=base_dir).output_dir.resolve()
    at = f"output = {value!r}"
    if source is not None:
        batch = Path(source).resolve()
        if batch == out:
            return [f"{at} is the batch file itself; give a folder for the results, e.g. "
                    'output = "results"']
        if out in batch.parents:
            return [f"{at} ({out}) holds the batch file {source}: the run would write its own "
                    "batch.toml, lock and results over it; give a folder of its own, e.g. "
                    'output = "results"']
    if out.exists() and not out.is_dir():
        return [f"{at}: {out} is a file; give a folder for the results"]
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        return [f"{at}: cannot create {out}: {existing} is a file"]
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "write to" if existing == out else f"create {out} in"
        return [f"{at}: cannot {what} {existing} (no write permission); give a writable folder"]
    return []


def _check_runtime(ok: dict, here: bool = True) -> list[str]:
    """The device string (and, for the local executor run `here`, that the device is
    here), the selection and budget values, and ray installed when the executor is ray."""
    from dynamics.loading import device_absent_problem, device_problem

    problems = []
    if ok.get("models") == []:
        problems.append("models = [] selects no model; list model names, or omit `models` "
                        "for every model of the suite")
    budget = ok.get("disk_budget_gb")
    if budget is not None and budget <= 0:
        problems.append(f"disk_budget_gb = {budget!r}: give a positive size in GB (or omit it "
                        "to keep every download)")
    margin = ok.get("equivalence_margin")
    if margin is not None and not (isinstance(margin, (int, float)) and margin > 0):
        problems.append(f"equivalence_margin = {margin!r}: give a positive number (the "
                        "behaviors' units)")
    if "device" in ok and (problem := device_problem(ok["device"])):
        problems.append(problem)
    elif here and ok.get("executor", "local") == "local" and (
            problem := device_absent_problem(ok.get("device", "cpu"))):
        problems.append(problem)  # under ray the workers may have the device
    if ok.get("executor") == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            problems.append('executor = "ray" needs ray: pip install "training-dynamics[dist]"')
    return problems


def load_batch(values: dict, base_dir: str | Path = ".", where: str = "batch",
               source: str | Path | None = None, *, check_inputs: bool = True) -> BatchConfig:
    """Validate a batch dict fully; raise ConfigError listing every problem.

    Every field is checked on its own (a wrong type in one key never hides the
    suite, steps, evaluator, data-file, output or device checks), so one run shows
    all. `source` is the batch file, when there is one (the output must not hold it).
    `check_inputs=False` is for a plan of a run elsewhere (`dynamics plan`): it skips
    the data-file checks (the plan lists them instead) and whether the device is here.
    """
    bad = key_problems(BatchConfig, values, where)
    ok = {k: v for k, v in values.items() if k not in bad}
    suite, problems = _load_suite(ok, str(base_dir))
    evaluators = ok.get("evaluators", {}) if "evaluators" not in bad else None
    generate = ok.get("generate", {})
    problems = [
        *bad.values(), *problems, *_check_selection(suite, ok, bad),
        *_check_runtime(ok, here=check_inputs),
        *_check_output(ok, str(base_dir), Path(source) if source is not None else None),
        *(_check_evaluators(evaluators, Path(base_dir) if check_inputs else None)
          if evaluators is not None else []),
        *_check_generate(generate, evaluators or {}, suite),
    ]
    if problems:
        raise ConfigError([p if p.startswith(where) else f"{where}: {p}" for p in problems])
    return BatchConfig(**values, base_dir=str(base_dir))


def load_batch_file(path: str | Path, overrides: list[str] | None = None, *,
                    check_inputs: bool = True) -> BatchConfig:
    """Read a batch TOML; `overrides` are `key=value` strings (values parsed as TOML)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"batch file {path} " + ("is a folder; give the batch TOML file in it"
                                                   if path.is_dir() else "does not exist"))
    data = path.read_bytes()
    try:
        values = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte offset {err.start} is "
                          f"0x{data[err.start]:02x}); save the batch file as UTF-8") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from err
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        try:
            values[key.strip()] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            values[key.strip()] = raw  # a bare string
    return load_batch(values, path.parent, str(path), source=path, check_inputs=check_inputs)


def batch_to_toml(cfg: BatchConfig) -> str:
    """The config as TOML (written beside the results); `load_batch` reads it back equal.

    Fields left at None are omitted (None is their default), and so is `base_dir`
    (the folder the file is read from, not a batch key).
    """
    from dynamics.toml_writer import dumps

    return dumps({f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
                  if f.name not in BatchConfig.INTERNAL})
