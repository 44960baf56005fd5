"""An evaluator's local input files: read and checked once, identified by content.

`check_records_file(path, fields)` reads a data file before any checkpoint is
loaded and raises InputError naming the file and the first problem: empty,
not UTF-8 (with the byte offset), a malformed JSON line (with its line
number), a row or header without a required field. Then the evaluator's own
reader parses it (`datasets`, polars) knowing the bytes are sound, so a data
problem is one config error, never one unit failure per checkpoint.

`content_id(path)` is what a stored part records of an input: the sha256 of
its bytes (a folder: of its files' names and bytes), never its path, so a
moved folder resumes and an edited file does not pass for the old one. Each
file is hashed once per process while its size and mtime stay the same.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

TEXT_SUFFIXES = (".txt", ".json", ".jsonl", ".csv")


class InputError(ValueError):
    """A local input file is unusable (names the file and the line or byte)."""


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise InputError(f"{path}: not UTF-8 text: byte offset {err.start} (line {line}) is "
                         f"0x{data[err.start]:02x}; save the file as UTF-8") from err


def _check_jsonl(path: Path, text: str, fields: Sequence[str]) -> None:
    rows = 0
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}: line {n} is not valid JSON ({err.msg} at column "
                             f"{err.colno}): {line[:60]!r}") from err
        if not isinstance(row, dict):
            raise InputError(f"{path}: line {n} is a JSON {type(row).__name__}, not an object "
                             f"with fields {list(fields)}")
        if missing := [f for f in fields if f not in row]:
            raise InputError(f"{path}: line {n} has no field {missing[0]!r} (needs "
                             f"{list(fields)}; has {sorted(row)[:8]})")
        rows += 1
    if not rows:
        raise InputError(f"{path}: no JSON lines (only blank lines)")


def _check_parquet(path: Path, fields: Sequence[str]) -> None:
    import polars as pl

    try:
        columns = list(pl.read_parquet_schema(path))
    except Exception as err:  # noqa: BLE001  (polars raises several types)
        raise InputError(f"{path}: not a readable parquet file ({type(err).__name__})") from err
    if missing := [f for f in fields if f not in columns]:
        raise InputError(f"{path}: no column {missing[0]!r} (has {columns})")


def _check_json(path: Path, text: str, fields: Sequence[str]) -> None:
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        _check_jsonl(path, text, fields)  # `datasets` reads .json files of JSON lines too
        return
    for n, row in enumerate(whole if isinstance(whole, list) else [], 1):
        if not isinstance(row, dict) or (missing := [f for f in fields if f not in row]):
            raise InputError(f"{path}: record {n} has no field "
                             f"{(missing or list(fields))[0]!r} (needs {list(fields)})")


def _check_csv(path: Path, text: str, fields: Sequence[str]) -> None:
    header = [h.strip().strip('"') for h in text.splitlines()[0].split(",")]
    if missing := [f for f in fields if f not in header]:
        raise InputError(f"{path}: the header has no column {missing[0]!r} (has {header})")


def check_records_file(path: str | Path, fields: Sequence[str] = ()) -> None:
    """Raise InputError unless `path` is a non-empty, well-formed data file with `fields`."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a data file")
    data = path.read_bytes()
    if not data.strip():
        raise InputError(f"{path}: the file is empty")
    if path.suffix == ".parquet":
        _check_parquet(path, fields)
    elif path.suffix in TEXT_SUFFIXES:
        text = _decode(path, data)
        check = {".jsonl": _check_jsonl, ".json": _check_json, ".csv": _check_csv}.get(
            path.suffix)
        if check is not None:
            check(path, text, fields)


_HASHES: dict[tuple, str] = {}


def _file_sha(path: Path) -> str:
    """evals.store.file_sha256, once per file version (path, size, mtime) and process."""
    from evals.store import file_sha256

    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = file_sha256(path)
    return _HASHES[key]


def content_id(path: str | Path) -> dict:
    """{"sha256": ...} of a file's bytes, or of a folder's file names and bytes."""
    path = Path(path)
    if path.is_file():
        return {"sha256": _file_sha(path)}
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{f.relative_to(path).as_posix()}\0{_file_sha(f)}\n".encode())
    return {"sha256": digest.hexdigest()}


def text_id(parts) -> dict:
    """{"sha256": ...} of already-read content (e.g. a hub dataset's documents)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(str(part).encode())
        digest.update(b"\0")
    return {"sha256": digest.hexdigest()}
