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
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from evals.base import ConfigError, evaluator_class, parse_options


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
        base_dir: folder relative paths are resolved against (the TOML's folder).
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
    base_dir: str = "."

    def resolve(self, value: str) -> str:
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else Path(self.base_dir) / p)

    @property
    def output_dir(self) -> Path:
        return Path(self.resolve(self.output))

    @property
    def suite_path(self) -> str:
        local = Path(self.resolve(self.suite))
        return str(local) if local.exists() else self.suite


def _check_suite(cfg: BatchConfig) -> list[str]:
    from dynamics.suites import SuiteError, get_suite

    try:
        suite = get_suite(cfg.suite_path)
    except SuiteError as err:
        return [f"suite: {err}"]
    problems = []
    for name in cfg.models or []:
        try:
            suite.checkpoints(name)
        except SuiteError as err:
            problems.append(f"models: {err}")
    if not problems:
        try:
            if not suite.select(cfg.models, cfg.steps):
                problems.append(f"steps = {cfg.steps!r} selects no checkpoint")
        except SuiteError as err:
            problems.append(f"steps: {err}")
    return problems


def _check_evaluators(evaluators: dict) -> list[str]:
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
        problems.extend(parse_options(cls.Options, values, f"[evaluators.{name}]")[1])
    return problems


def load_batch(values: dict, base_dir: str | Path = ".", where: str = "batch") -> BatchConfig:
    """Validate a batch dict fully; raise ConfigError listing every problem."""
    values = {**values, "base_dir": str(base_dir)}
    cfg, problems = parse_options(BatchConfig, values, where)
    if cfg is None:  # still check the evaluator tables: one message per problem, all at once
        evaluators = values.get("evaluators")
        if isinstance(evaluators, dict):
            problems = problems + [f"{where}: {p}" for p in _check_evaluators(evaluators)]
        raise ConfigError(problems)
    problems = _check_suite(cfg) + _check_evaluators(cfg.evaluators)
    if cfg.executor == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            problems.append('executor = "ray" needs ray: pip install "training-dynamics[dist]"')
    if problems:
        raise ConfigError([f"{where}: {p}" if not p.startswith(where) else p for p in problems])
    return cfg


def load_batch_file(path: str | Path, overrides: list[str] | None = None) -> BatchConfig:
    """Read a batch TOML; `overrides` are `key=value` strings (values parsed as TOML)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"batch file {path} does not exist")
    try:
        values = tomllib.loads(path.read_text())
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
    return load_batch(values, path.parent, str(path))


def batch_to_toml(cfg: BatchConfig) -> str:
    """The config as TOML (written beside the results)."""
    from dynamics.manifest import _toml  # noqa: PLC0415  (small shared helper)

    lines = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name in ("evaluators",) or value is None:
            continue
        if isinstance(value, list):
            lines.append(f"{f.name} = [{', '.join(_toml(v) for v in value)}]")
        else:
            lines.append(f"{f.name} = {_toml(value)}")
    for name, opts in cfg.evaluators.items():
        lines += ["", f'[evaluators."{name}"]']
        for k, v in opts.items():
            if isinstance(v, list):
                lines.append(f"{k} = [{', '.join(_toml(x) for x in v)}]")
            else:
                lines.append(f"{k} = {_toml(v)}")
    return "\n".join(lines) + "\n"
