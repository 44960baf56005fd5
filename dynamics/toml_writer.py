"""The one TOML writer (Python 3.11 reads TOML with `tomllib` but cannot write it).

Used for `suite.toml` manifests (dynamics.manifest), the demo's batch file
(dynamics.cli) and the `batch.toml` a store keeps beside its results
(evals.config.batch_to_toml). `tomllib.loads(dumps(d)) == d` for every dict of
str keys whose values are bools, ints, finite or infinite floats, strings,
lists of those, and nested dicts (tables) or lists of dicts (arrays of tables).
None means "not set" (TOML has no null): such keys are left out. Example::

    >>> print(dumps({"suite": "pythia", "steps": [0, 512],
    ...              "evaluators": {"token-loss": {"dataset": "val.jsonl"}}}))
    suite = "pythia"
    steps = [0, 512]
    <BLANKLINE>
    [evaluators.token-loss]
    dataset = "val.jsonl"
    <BLANKLINE>
"""

from __future__ import annotations

import json
import math
import re

BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_key(key: str) -> str:
    """A key as written: bare when TOML allows it, else a quoted string ("paper.v1")."""
    if not isinstance(key, str):
        raise TypeError(f"TOML keys are strings, got {key!r}")
    return key if BARE_KEY.match(key) else toml_value(key)


def toml_value(value) -> str:
    """One value (scalar, list, or inline table) as TOML.

    Raises:
        TypeError: a value TOML cannot hold (None inside a list, an object), named.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        # a JSON string is a TOML basic string, except that TOML also escapes DEL
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = [f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items() if v is not None]
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) as TOML")


def _is_table_array(value) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(
        isinstance(v, dict) for v in value)


def _plain(table: dict) -> list[str]:
    return [f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items()
            if v is not None and not isinstance(v, dict) and not _is_table_array(v)]


def _body(table: dict, path: tuple[str, ...]) -> list[str]:
    """Lines of one table: its plain keys first (TOML needs them before sub-tables)."""
    lines = _plain(table)
    for key, value in table.items():
        sub = (*path, key)
        header = ".".join(toml_key(k) for k in sub)
        if isinstance(value, dict):  # no header for a table that holds only tables
            only_tables = value and all(isinstance(v, dict) or _is_table_array(v)
                                        for v in value.values())
            head = [] if only_tables else ["", f"[{header}]"]
            lines += [*head, *_body(value, sub)]
        elif _is_table_array(value):
            for entry in value:
                lines += ["", f"[[{header}]]", *_body(entry, sub)]
    return lines


def dumps(table: dict) -> str:
    """A whole TOML document from a dict (see the module docstring)."""
    lines = _body(table, ())
    while lines and lines[0] == "":
        lines.pop(0)
    return "\n".join(lines) + "\n"
