"""The results store: one parquet part per table x checkpoint, written atomically.

Layout under the store root::

    <root>/batch.toml                                 the batch config that wrote it (last run)
    <root>/seeds.json                                 model -> {group, seed} of seed runs (merged)
    <root>/<table>/<family>/<model>/step=<N>.parquet  one part per table x checkpoint
    <root>/_failures/<what>/<family>/<model>/step=<N>.json   error text of a failed unit
    <root>/_units/<evaluator>/<family>/<model>/step=<N>.json  what produced a unit's parts

A part is written to a temp file in the same folder, fsynced, then renamed,
so a reader (or a resumed run) never sees a partial part. A unit (evaluator x
checkpoint) is complete when its record is written, after all its parts: the
record holds the unit's provenance (evaluator options, inputs by content, code
version, checkpoint identity, tokenizer) and, per part, its size, row count,
modification time and sha256. Resume = skip the units whose record matches
the batch and whose parts are whole (`part_problem`: the size and mtime are
the recorded ones, or else the bytes hash to the recorded sha256, so a moved
or copied store resumes and a truncated or edited part is redone).
`clean_temp` removes temp files a killed run left behind.
One run at a time: `lock()` creates `<root>/_lock.json` (pid, host, start
time) exclusively; a second run gets a `StoreLockedError` naming the holder,
and a lock whose pid is dead on this host is stale and taken over.
Polars only: `stats` reads the store without torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import socket
import tempfile
import time
import logging
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from dynamics.procs import pid_alive

from evals.schema import KEY_COLUMNS, table_schema, validate

log = logging.getLogger(__name__)
_SAFE = re.compile(r"[^A-Za-z0-9._+-]")
LOCK_NAME = "_lock.json"


class StoreLockedError(RuntimeError):
    """Another live run holds the store's lock."""


class StoreReadError(ValueError):
    """A stored part cannot be read (names the file and how to redo it)."""


def file_sha256(path: Path) -> str:
    """sha256 hex digest of a file's bytes."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _safe(name: str) -> str:
    """A path component for a family/model name (no separators, no dot-dot)."""
    out = _SAFE.sub("_", name)
    return "_" + out if out.startswith(".") else out


def _atomic_write_bytes(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_or_none(path: Path) -> dict | None:
    """A JSON file's content, or None when it is missing or cannot be read."""
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def _reads(part: Path) -> bool:
    try:
        pl.read_parquet(part)
    except Exception:  # noqa: BLE001
        return False
    return True


class Store:
    """A folder of parquet parts keyed by table and checkpoint."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._written: dict[Path, dict] = {}  # parts this object wrote: rows, bytes, sha256
        self._readable: dict[Path, tuple[int, int]] = {}  # footers read: (size, mtime_ns)

    # -- parts ------------------------------------------------------------
    def part_path(self, table: str, key: dict) -> Path:
        return (
            self.root / table / _safe(key["family"]) / _safe(key["model"])
            / f"step={int(key['step'])}.parquet"
        )

    def has(self, table: str, key: dict) -> bool:
        return self.part_path(table, key).is_file()

    def write(self, table: str, frame: pl.DataFrame, key: dict | None = None) -> Path:
        """Validate `frame` (one checkpoint) against the table schema and write it atomically.

        `key` (the checkpoint's key dict) is required for an empty frame, e.g. a
        circuit with no edges: an empty part records "evaluated, nothing to report".
        """
        validate(frame, table_schema(table), table)
        keys = frame.select(KEY_COLUMNS).unique()
        if keys.height > 1 or (keys.height == 0 and key is None):
            raise ValueError(f"{table}: a part holds one checkpoint, got {keys.height} key rows")
        if keys.height == 1:
            found = keys.row(0, named=True)
            if key is not None and any(found[c] != key[c] for c in ("family", "model", "step")):
                raise ValueError(f"{table}: frame keys {found} do not match checkpoint {key}")
            key = found
        path = self.part_path(table, key)
        buf = io.BytesIO()
        frame.write_parquet(buf)
        data = buf.getvalue()
        _atomic_write_bytes(path, lambda fh: fh.write(data))
        self._written[path] = {"rows": frame.height, "bytes": len(data),
                               "sha256": hashlib.sha256(data).hexdigest()}
        return path

    def part_facts(self, table: str, key: dict) -> dict:
        """What a unit record says of a part this Store object wrote: rows, bytes, sha256, mtime."""
        path = self.part_path(table, key)
        facts = self._written.get(path) or {"rows": pl.scan_parquet(path).select(pl.len())
                                            .collect().item(), "bytes": path.stat().st_size,
                                            "sha256": file_sha256(path)}
        return {**facts, "mtime_ns": path.stat().st_mtime_ns}

    def part_problem(self, table: str, key: dict, facts: dict) -> str | None:
        """Why the stored part is not the one its record describes, or None when it is whole.

        Cheap when untouched (size and mtime equal the record's); otherwise the bytes are
        hashed, so a moved or copied part with the same content still counts.
        """
        path = self.part_path(table, key)
        try:
            st = path.stat()
        except FileNotFoundError:
            return f"{path} is missing"
        if st.st_size == facts.get("bytes") and st.st_mtime_ns == facts.get("mtime_ns"):
            return None
        if st.st_size != facts.get("bytes"):
            return (f"{path} holds {st.st_size} bytes where its record says "
                    f"{facts.get('bytes')} (truncated or rewritten)")
        if file_sha256(path) != facts.get("sha256"):
            return f"{path} differs from the part its record describes (edited or damaged)"
        return None

    def parts(self, table: str) -> list[Path]:
        folder = self.root / table
        return sorted(folder.glob("*/*/step=*.parquet")) if folder.is_dir() else []

    def tables(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir()
            if p.is_dir() and not p.name.startswith("_") and any(p.glob("*/*/step=*.parquet"))
        )

    def scan(self, table: str) -> pl.LazyFrame:
        """Lazy scan of all parts of a table (empty frame with the schema when none).

        Every part's footer is read first (cheap), so a truncated or foreign file is
        named in a StoreReadError here instead of failing a later `collect`.
        """
        schema = table_schema(table)
        parts = self.parts(table)
        if not parts:
            return pl.LazyFrame(schema=schema)
        for part in parts:
            self._check_readable(part, table, schema)
        return pl.scan_parquet(parts, schema=schema, hive_partitioning=False)

    def unreadable_parts(self) -> list[str]:
        """One line per stored part whose footer cannot be read or whose columns are not its
        table's (cheap: footers only); [] when every part reads."""
        problems = []
        for table in self.tables():
            schema = table_schema(table)
            for part in self.parts(table):
                try:
                    self._check_readable(part, table, schema)
                except StoreReadError as err:
                    problems.append(str(err))
        return problems

    def _check_readable(self, part: Path, table: str, schema: pl.Schema) -> None:
        st = part.stat()
        stamp = (st.st_size, st.st_mtime_ns)
        if self._readable.get(part) == stamp:
            return  # footer read before by this object, and the file is unchanged since
        try:
            got = pl.read_parquet_schema(part)
        except Exception as err:  # noqa: BLE001  (polars raises several types for bad files)
            raise StoreReadError(
                f"stored part {part} cannot be read ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}); `dynamics run` on the "
                "batch redoes it (or delete the file)") from err
        if dict(got) != dict(schema):
            raise StoreReadError(f"stored part {part} does not hold the {table!r} columns "
                                 f"{list(schema)} (found {list(got)}); delete it and rerun the "
                                 "batch to redo it")
        self._readable[part] = stamp

    def read(self, table: str) -> pl.DataFrame:
        try:
            frame = self.scan(table).collect()
        except StoreReadError:
            raise
        except Exception as err:  # noqa: BLE001  (a part damaged past its footer)
            bad = next((p for p in self.parts(table) if not _reads(p)), None)
            if bad is None:
                raise
            raise StoreReadError(f"stored part {bad} cannot be read ({type(err).__name__}); "
                                 "`dynamics run` on the batch redoes it") from err
        return validate(frame, table_schema(table), f"store table {table}")

    # -- unit records (provenance) ------------------------------------------
    def record_path(self, evaluator: str, key: dict) -> Path:
        return (
            self.root / "_units" / _safe(evaluator) / _safe(key["family"]) / _safe(key["model"])
            / f"step={int(key['step'])}.json"
        )

    def write_record(self, evaluator: str, key: dict, tables: tuple[str, ...], record: dict
                     ) -> Path:
        """Write a unit's record after all its parts: it marks the unit complete."""
        body = {**record, "evaluator": evaluator, "key": {k: key[k] for k in KEY_COLUMNS},
                "parts": {t: self.part_facts(t, key) for t in tables}, "time": time.time()}
        data = json.dumps(body, indent=1, sort_keys=True).encode()
        path = self.record_path(evaluator, key)
        _atomic_write_bytes(path, lambda fh: fh.write(data))
        return path

    def drop_record(self, evaluator: str, key: dict) -> None:
        """Forget a unit's record (before its parts are rewritten: a crash then redoes it)."""
        self.record_path(evaluator, key).unlink(missing_ok=True)

    def read_record(self, evaluator: str, key: dict) -> dict | None:
        """A unit's record, or None when there is none or it cannot be read."""
        return _json_or_none(self.record_path(evaluator, key))

    def records(self, evaluator: str) -> list[tuple[Path, dict | None]]:
        """Every record of an evaluator (None for one that cannot be read)."""
        return [(path, _json_or_none(path)) for path in
                sorted((self.root / "_units" / _safe(evaluator)).glob("*/*/step=*.json"))]

    # -- failures ---------------------------------------------------------
    def failure_path(self, what: str, key: dict) -> Path:
        return (
            self.root / "_failures" / _safe(what) / _safe(key["family"]) / _safe(key["model"])
            / f"step={int(key['step'])}.json"
        )

    def record_failure(self, what: str, key: dict, error: BaseException | str) -> Path:
        """Record why `what` (an evaluator name, or "load") failed on a checkpoint."""
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        body = {"what": what, **{k: key[k] for k in KEY_COLUMNS}, "error": text, "time": time.time()}
        path = self.failure_path(what, key)
        data = json.dumps(body, indent=1).encode()
        _atomic_write_bytes(path, lambda fh: fh.write(data))
        return path

    def clear_failure(self, what: str, key: dict) -> None:
        self.failure_path(what, key).unlink(missing_ok=True)

    def has_failure(self, what: str, key: dict) -> bool:
        return self.failure_path(what, key).is_file()

    def failure_error(self, what: str, key: dict) -> str | None:
        """The recorded error text of `what` on a checkpoint, or None if none is recorded."""
        path = self.failure_path(what, key)
        return json.loads(path.read_text())["error"] if path.is_file() else None

    def failures(self) -> pl.DataFrame:
        """All recorded failures as a frame (what, keys, error)."""
        rows = [json.loads(p.read_text()) for p in sorted(self.root.glob("_failures/*/*/*/*.json"))]
        if not rows:
            return pl.DataFrame(schema={"what": pl.String, "family": pl.String, "model": pl.String,
                                        "step": pl.Int64, "error": pl.String})
        return pl.DataFrame(rows).select("what", "family", "model", "step", "error")

    # -- ownership and crash recovery ---------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[Path]:
        """Hold the store exclusively for one run; take over stale locks (dead pid, same host)."""
        path = self.root / LOCK_NAME
        self.root.mkdir(parents=True, exist_ok=True)
        body = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale(path)
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(body, fh)
            break
        else:
            raise StoreLockedError(f"could not lock {self.root}: {path} keeps reappearing")
        try:
            yield path
        finally:
            with contextlib.suppress(OSError, ValueError):
                if json.loads(path.read_text()).get("pid") == os.getpid():
                    path.unlink()

    def _take_over_if_stale(self, path: Path) -> None:
        try:
            holder = json.loads(path.read_text())
        except (OSError, ValueError):
            holder = {}  # half-written by a killed run, or just removed
            if not path.exists():
                return
        if not isinstance(holder, dict):
            holder = {}
        pid, host = holder.get("pid"), holder.get("host")
        if host == socket.gethostname() and isinstance(pid, int) and not pid_alive(pid):
            log.warning("store %s: taking over the lock of a run that is gone (pid %s on %s)",
                        self.root, pid, host)
            path.unlink(missing_ok=True)  # stale: its owner is dead
            return
        if not holder:
            age = time.time() - path.stat().st_mtime
            if age > 60:
                log.warning("store %s: removing the empty lock file %s (%.0f s old: a run "
                            "crashed while taking the lock)", self.root, path, age)
                path.unlink(missing_ok=True)  # unreadable for a minute: a crash mid-write
                return
            raise StoreLockedError(
                f"store {self.root} has an empty lock file {path} written {age:.0f} s ago: "
                "another run may be taking it. Wait a minute and rerun (an empty lock older "
                f"than 60 s is removed), or delete {path} if no run uses the store")
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
        raise StoreLockedError(
            f"store {self.root} is in use by another run (pid {pid} on host {host}, started "
            f"{started}). Wait for it to finish, use another output folder, or delete {path} "
            "if that run is gone.")

    def clean_temp(self) -> list[Path]:
        """Delete temp files of interrupted writes (call only while holding the lock)."""
        stray = sorted(self.root.glob("**/.*.tmp")) if self.root.is_dir() else []
        for p in stray:
            p.unlink(missing_ok=True)
        return stray

    # -- config -----------------------------------------------------------
    def write_config(self, text: str, name: str = "batch.toml") -> Path:
        path = self.root / name
        data = text.encode()
        _atomic_write_bytes(path, lambda fh: fh.write(data))
        return path

    # -- seed runs ----------------------------------------------------------
    def record_seeds(self, seeds: dict[str, dict]) -> Path:
        """Merge `model -> {"group": str, "seed": int}` into `seeds.json` (issue 20).

        Written by every run (the batch's suite knows which models are seeds of
        one configuration); read by stats (stats.seeds) to treat seeds as replicates.
        """
        merged = {**self.seeds(), **seeds}
        data = json.dumps(merged, indent=1, sort_keys=True).encode()
        path = self.root / "seeds.json"
        _atomic_write_bytes(path, lambda fh: fh.write(data))
        return path

    def seeds(self) -> dict[str, dict]:
        """`model -> {"group", "seed"}` recorded by runs; {} when none."""
        path = self.root / "seeds.json"
        return json.loads(path.read_text()) if path.is_file() else {}
