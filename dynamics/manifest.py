"""Local suites: a `suite.toml` manifest over HF-format checkpoint folders.

This is how a user's own training run (or mirrored Pythia/OPT checkpoints, or
the toy suite) becomes a suite. Format::

    [suite]
    name = "my-run"            # required
    family = "my-run"          # default family of its models (default: name)
    description = "..."        # optional
    tokens_per_step = 524288   # optional default for models

    [[models]]
    name = "my-run-160m"       # required, unique
    params = 162322944         # required, total parameter count
    family = "my-run"          # optional override
    tokens_per_step = 524288   # optional; tokens_seen = step * tokens_per_step

    [[models.checkpoints]]
    step = 1000                # required
    path = "160m/step1000"     # required, relative to the suite folder
    tokens_seen = 524288000    # optional when tokens_per_step is known
    flops = 5.1e17             # optional; default 6 * params * tokens_seen

Paths must stay inside the suite folder (no absolute paths, no `..` escape).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from dynamics.checkpoints import CheckpointRef
from dynamics.suite_types import Suite, SuiteError
from dynamics.toml_writer import dumps

_SUITE_KEYS = {"name", "family", "description", "tokens_per_step"}
_MODEL_KEYS = {"name", "params", "family", "tokens_per_step", "checkpoints"}
_CKPT_KEYS = {"step", "path", "tokens_seen", "flops"}


def _check_keys(where: str, table: dict, allowed: set[str], required: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise SuiteError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    missing = sorted(required - set(table))
    if missing:
        raise SuiteError(f"{where}: missing required key(s) {missing}")


def _int_field(where: str, table: dict, key: str) -> int:
    value = table[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise SuiteError(f"{where}: {key} must be a non-negative integer, got {value!r}")
    return value


def resolve_inside(root: Path, rel: str, where: str) -> Path:
    """`root / rel`, refusing absolute paths and anything that escapes `root`."""
    if not isinstance(rel, str) or not rel:
        raise SuiteError(f"{where}: path must be a non-empty string, got {rel!r}")
    if Path(rel).is_absolute():
        raise SuiteError(f"{where}: path {rel!r} is absolute; paths are relative to {root}")
    full = (root / rel).resolve()
    if not full.is_relative_to(root.resolve()):
        raise SuiteError(f"{where}: path {rel!r} escapes the suite folder {root}")
    return full


def _load_checkpoint(root: Path, model: dict, family: str, tps, entry: dict, where: str):
    _check_keys(where, entry, _CKPT_KEYS, {"step", "path"})
    step = _int_field(where, entry, "step")
    if "tokens_seen" in entry:
        tokens = _int_field(where, entry, "tokens_seen")
    elif tps is not None:
        tokens = step * tps
    else:
        raise SuiteError(f"{where}: needs tokens_seen, or tokens_per_step on the model or suite")
    flops = entry.get("flops", -1.0)
    if not isinstance(flops, (int, float)) or isinstance(flops, bool):
        raise SuiteError(f"{where}: flops must be a number, got {flops!r}")
    return CheckpointRef(
        family=family,
        model=model["name"],
        params=model["params"],
        step=step,
        tokens_seen=tokens,
        flops=float(flops),
        source=str(resolve_inside(root, entry["path"], where)),
        is_local=True,
    )


def load_manifest(path: str | Path) -> Suite:
    """Read a `suite.toml` into a `Suite` (see the module docstring for the format)."""
    path = Path(path)
    root = path.parent
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise SuiteError(f"{path}: not valid TOML: {err}") from err
    _check_keys(str(path), data, {"suite", "models"}, {"suite", "models"})
    head = data["suite"]
    _check_keys(f"{path} [suite]", head, _SUITE_KEYS, {"name"})
    models: dict[str, list[CheckpointRef]] = {}
    for i, model in enumerate(data["models"]):
        where = f"{path} models[{i}]"
        _check_keys(where, model, _MODEL_KEYS, {"name", "params", "checkpoints"})
        _int_field(where, model, "params")
        if model["name"] in models:
            raise SuiteError(f"{where}: duplicate model name {model['name']!r}")
        family = model.get("family", head.get("family", head["name"]))
        tps = model.get("tokens_per_step", head.get("tokens_per_step"))
        refs = [
            _load_checkpoint(root, model, family, tps, entry, f"{where}.checkpoints[{j}]")
            for j, entry in enumerate(model["checkpoints"])
        ]
        steps = [r.step for r in refs]
        if len(set(steps)) != len(steps):
            raise SuiteError(f"{where}: duplicate steps in {sorted(steps)}")
        models[model["name"]] = sorted(refs, key=lambda r: r.step)
    return Suite(head["name"], head.get("description", f"local suite at {root}"), models)


def write_manifest(path: str | Path, name: str, models: list[dict], **suite_fields) -> Path:
    """Write a `suite.toml`. `models`: dicts with name, params, checkpoints=[{step, path, ...}]."""
    path = Path(path)
    path.write_text(dumps({"suite": {"name": name, **suite_fields}, "models": models}))
    return path
