"""The evaluator interface, its registry, and strict option parsing.

An evaluator is built once per batch from its options, then `run` on each
loaded checkpoint; it returns one frame per table it declares, holding the
table's own columns (the sweep prepends the checkpoint keys and validates).

To add an evaluator: write `evals/<name>.py` with a subclass of `Evaluator`
(a frozen-dataclass `Options`, `name`, `tables`), declare its tables in
`evals/schema.py`, and add one line to `EVALUATORS` below.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib
import logging
import types
import typing
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import polars as pl

# registry key -> "module:Class" (imported lazily so unknown names fail fast
# without importing every evaluator's dependencies).
EVALUATORS: dict[str, str] = {
    "token-loss": "evals.token_loss:TokenLoss",
    "sequences": "evals.sequences:Sequences",
    "circuits": "evals.circuits.evaluator:Circuits",
    "bigbench-mc": "evals.bigbench_mc:BigBenchMC",
    "recall-bigram": "evals.recall_bigram:RecallBigram",
}


class ConfigError(ValueError):
    """Bad configuration; `problems` lists every problem found, one line each."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class Evaluator(ABC):
    """Turns a loaded checkpoint into tidy frames (one per declared table).

    Provenance (what a stored part records, evals.store): the evaluator's name,
    `code_version` (bump it when a change alters the scores), its options except
    `runtime_options` (speed and memory only, such as batch sizes), with the
    `path_options` replaced by their inputs' content (`input_id`), never the path.
    """

    name: ClassVar[str]
    tables: ClassVar[tuple[str, ...]]
    Options: ClassVar[type]
    code_version: ClassVar[int] = 1
    path_options: ClassVar[tuple[str, ...]] = ()
    runtime_options: ClassVar[tuple[str, ...]] = ()
    empty_tables: ClassVar[tuple[str, ...]] = ()  # tables whose part may hold no row

    def __init__(self, options: Any, base_dir: Path | None = None):
        self.options = options
        self.base_dir = Path(base_dir or ".")

    @classmethod
    def input_problems(cls, options: Any, base_dir: Path) -> list[str]:
        """Problems with the local inputs `options` name (a missing file or folder).

        Checked by `load_batch`, so a typo in a data path stops the batch before any
        checkpoint is downloaded; none by default.
        """
        return []

    def prepare(self) -> None:
        """Read and check every input now (once per run), before any checkpoint is loaded.

        Raises ValueError or OSError naming the file and the problem; the data read
        is kept for `run`. Nothing by default.
        """

    def input_errors(self) -> list[str]:
        """`prepare`'s problem as config problems (one line each), or []."""
        try:
            self.prepare()
        except (ValueError, OSError) as err:
            return [f"[evaluators.{self.name}]: {line}" for line in str(err).splitlines()]
        return []

    def input_id(self, option: str, value):
        """What identifies the input an option names: a local file's or folder's content
        hash, or the name of a hub dataset (lists: each item)."""
        from evals.inputs import content_id

        if value is None:
            return None
        if isinstance(value, (list, tuple)):
            return [self.input_id(option, v) for v in value]
        path = Path(self.resolve_path(value))
        return content_id(path) if path.exists() else {"name": value}

    def provenance(self) -> dict:
        """What a part of this evaluator depends on (class docstring), JSON-ready."""
        import json

        options = {f.name: getattr(self.options, f.name) for f in dataclasses.fields(self.options)
                   if f.name not in self.runtime_options}
        for name in self.path_options:
            options[name] = self.input_id(name, options.get(name))
        body = {"evaluator": self.name, "code_version": self.code_version, "options": options}
        return json.loads(json.dumps(body, sort_keys=True, default=str))

    @abstractmethod
    def run(self, lm) -> dict[str, pl.DataFrame]:
        """Evaluate `lm` (a `dynamics.loading.LoadedModel`); frames hold own columns only."""

    def log_once(self, tokenizer, level: int, msg: str, *args) -> None:
        """Log `msg % args` once per tokenizer in this batch.

        What a tokenizer decides (a task with no usable pairs, prompts cut to fit) is
        the same at every checkpoint that shares it: a 51-checkpoint suite printed the
        same warnings 51 times (issue #18). A different message (another count, another
        context length) or another tokenizer logs again.
        """
        text = msg % args if args else msg
        key = (tokenizer_fingerprint(tokenizer) if tokenizer is not None else "", level, text)
        seen = self.__dict__.setdefault("_logged_once", set())
        if key not in seen:
            seen.add(key)
            logging.getLogger(type(self).__module__).log(level, "%s", text)

    def resolve_path(self, value: str) -> str:
        """A path option relative to the batch file's folder, never the working directory
        (a name without a data-file suffix that is not there is a hub dataset name)."""
        p = Path(value).expanduser()
        if p.is_absolute():
            return str(p)
        candidate = self.base_dir / p
        return str(candidate) if candidate.exists() or p.suffix in LOCAL_DATA_SUFFIXES else value


LOCAL_DATA_SUFFIXES = (".txt", ".json", ".jsonl", ".parquet", ".csv")


def missing_local_file(where: str, key: str, value: str | None, base_dir: Path) -> list[str]:
    """[problem] when `value` names a local data file (by its suffix) that does not exist.

    Names without such a suffix are hub dataset names and pass. A relative path is
    relative to `base_dir` (the batch file's folder) only, as `Evaluator.resolve_path`.
    """
    if value is None or Path(value).suffix not in LOCAL_DATA_SUFFIXES:
        return []
    tried = local_candidates(value, base_dir)
    if any(p.is_file() for p in tried):
        return []
    return [f"{where}: {key} = {value!r}: no such file (looked for "
            f"{' and '.join(map(str, tried))}); give an existing local "
            f"{'/'.join(LOCAL_DATA_SUFFIXES)} file or a hub dataset name"]


def local_candidates(value: str, base_dir: Path) -> list[Path]:
    """Where a path option points: itself if absolute, else under `base_dir` (the batch
    file's folder; never the working directory, which changes with where one runs)."""
    path = Path(value).expanduser()
    return [path if path.is_absolute() else Path(base_dir) / path]


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of the tokenizer's full definition: equal hash, equal token ids."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def evaluator_class(name: str) -> type[Evaluator]:
    if name not in EVALUATORS:
        hint = difflib.get_close_matches(name, EVALUATORS, n=2)
        extra = f" Did you mean {', '.join(hint)}?" if hint else ""
        raise ConfigError(f"unknown evaluator {name!r}; allowed: {', '.join(EVALUATORS)}.{extra}")
    module, cls = EVALUATORS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        args = typing.get_args(hint)
        return isinstance(value, (list, tuple)) and (
            not args or all(_type_ok(v, args[0]) for v in value)
        )
    if origin is dict:
        return isinstance(value, dict)
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def key_problems(cls: type, values: dict, where: str) -> dict[str, str]:
    """Unknown, missing and mistyped keys of a dataclass option table, one problem per key.

    Each key is checked on its own, so one bad key never hides another; the keys
    not in the result hold values of the right type. Fields named in the class's
    `INTERNAL` (set by the tool, not by users) are unknown keys and never listed.
    """
    hints = typing.get_type_hints(cls)
    internal = set(getattr(cls, "INTERNAL", ()))
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in internal}
    problems = {}
    for key in values:
        if key not in fields:
            hint = difflib.get_close_matches(key, fields, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            problems[key] = f"{where}: unknown key {key!r}{extra}; allowed: {', '.join(fields)}"
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if name not in values:
            if required:
                problems[name] = (f"{where}: missing required key {name!r} "
                                  f"({_type_name(hints[name])})")
            continue
        if not _type_ok(values[name], hints[name]):
            problems[name] = (f"{where}: {name} = {values[name]!r} has the wrong type; "
                              f"expected {_type_name(hints[name])}")
    return problems


def parse_options(cls: type, values: dict, where: str) -> tuple[Any, list[str]]:
    """Build frozen-dataclass options strictly: unknown keys and wrong types are problems.

    Returns (options or None, problems). Every problem names the key, the bad
    value, and what is allowed. A `__post_init__` that raises ConfigError reports
    all its value problems, one line each.
    """
    bad = key_problems(cls, values, where)
    if bad:  # still check the values of the well-typed keys: one wrong type hides nothing
        return None, [*bad.values(), *(f"{where}: {p}" for p in value_problems(
            cls, {k: v for k, v in values.items() if k not in bad}))]
    try:
        return cls(**values), []
    except ConfigError as err:
        return None, [f"{where}: {p}" for p in err.problems]
    except (ValueError, TypeError) as err:
        return None, [f"{where}: {err}"]


def value_problems(cls: type, values: dict) -> list[str]:
    """The `__post_init__` problems of well-typed `values` (defaults for the rest);
    [] when a required key is missing (its check needs a value)."""
    required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    check = getattr(cls, "__post_init__", None)
    if check is None or any(name not in values for name in required):
        return []
    try:
        check(unchecked_options(cls, values))
    except ConfigError as err:
        return err.problems
    except (ValueError, TypeError) as err:
        return [str(err)]
    return []


def unchecked_options(cls: type, values: dict) -> Any:
    """`cls` built from well-typed `values` without its `__post_init__` value checks.

    Lets `load_batch` still check the files an option table names when another
    of its values is out of range (a negative max_tokens must not hide a missing
    dataset file). Only for problem finding: never run an evaluator with it.
    """
    obj = object.__new__(cls)
    for f in dataclasses.fields(cls):
        if f.name in values:
            value = values[f.name]
        else:
            value = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        object.__setattr__(obj, f.name, value)
    return obj


def build_evaluator(name: str, values: dict, base_dir: Path | None = None) -> Evaluator:
    """Instantiate a registered evaluator from its option table; raises ConfigError
    (also for inputs its constructor reads and finds unusable)."""
    cls = evaluator_class(name)
    options, problems = parse_options(cls.Options, values, f"[evaluators.{name}]")
    if problems:
        raise ConfigError(problems)
    try:
        return cls(options, base_dir)
    except (ValueError, OSError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError([f"[evaluators.{name}]: {line}" for line in str(err).splitlines()]
                          ) from err
