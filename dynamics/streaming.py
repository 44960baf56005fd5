"""Streaming checkpoints: load each once, prefetch the next, evict under a disk budget.

While checkpoint i is being evaluated, checkpoint i+1 is fetched and loaded
in a background thread, so a sweep costs about max(load, compute) per
checkpoint instead of their sum. At most two models are in memory at once.

Downloaded hub snapshots are deleted oldest-first once the downloaded total
exceeds `disk_budget_gb`, never the one being evaluated or prefetched, and
never local-suite folders (we only delete what we downloaded).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from dynamics.checkpoints import CheckpointRef
from dynamics.procs import pid_alive
from dynamics.loading import LoadedModel, LoadOptions, load_checkpoint


def folder_bytes(folder: Path) -> int:
    """Bytes under a folder, following the hub cache's symlinks to blobs."""
    total = 0
    for p in folder.rglob("*"):
        try:
            if p.is_file():
                total += p.resolve().stat().st_size
        except OSError:
            continue
    return total


def _delete_snapshot(folder: Path) -> None:
    """Delete a hub snapshot folder and the blobs its links point to."""
    for p in folder.rglob("*"):
        if p.is_symlink():
            target = p.resolve()
            target.unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)


def in_use_marker(folder: Path, pid: int | None = None) -> Path:
    """The marker file saying process `pid` (default: this one) uses `folder`."""
    return folder.parent / f".{folder.name}.inuse.{os.getpid() if pid is None else pid}"


def is_in_use(folder: Path) -> bool:
    """Whether a live process marked `folder` in use; stale markers (dead pids) are removed."""
    busy = False
    for marker in folder.parent.glob(f".{folder.name}.inuse.*"):
        pid = marker.name.rsplit(".", 1)[-1]
        if pid.isdigit() and pid_alive(int(pid)):
            busy = True
        else:
            marker.unlink(missing_ok=True)
    return busy


@dataclass
class DiskBudget:
    """Evict downloaded checkpoints, oldest first, when they exceed a byte budget.

    Only folders registered with `add` (downloads) are ever deleted. A folder
    in use is marked on disk, beside it, so other processes (Ray workers,
    a second sweep sharing the hub cache) see it too: `acquire` writes
    `.<name>.inuse.<pid>` next to the folder, `release` removes it when this
    process's count drops to zero, and `evict` skips a folder with any marker
    whose pid is alive (markers of dead pids are stale and removed). Example:
    acquiring `cache/snapshots/abc123` in pid 4242 creates
    `cache/snapshots/.abc123.inuse.4242`.
    """

    budget_bytes: int | None
    delete: Callable[[Path], None] = _delete_snapshot
    size_of: Callable[[Path], int] = folder_bytes
    _order: list[Path] = field(default_factory=list)
    _in_use: dict[Path, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, folder: Path) -> None:
        with self._lock:
            if folder not in self._order:
                self._order.append(folder)

    def acquire(self, folder: Path) -> None:
        with self._lock:
            self._in_use[folder] = self._in_use.get(folder, 0) + 1
            in_use_marker(folder).touch()

    def release(self, folder: Path) -> None:
        with self._lock:
            n = self._in_use.get(folder, 0) - 1
            if n > 0:
                self._in_use[folder] = n
            else:
                self._in_use.pop(folder, None)
                in_use_marker(folder).unlink(missing_ok=True)

    def evict(self) -> list[Path]:
        """Delete the oldest unused downloads until the total fits; return what was deleted."""
        if self.budget_bytes is None:
            return []
        with self._lock:
            sizes = {f: self.size_of(f) for f in self._order}
            total = sum(sizes.values())
            deleted = []
            for folder in list(self._order):
                if total <= self.budget_bytes:
                    break
                if self._in_use.get(folder) or is_in_use(folder):
                    continue
                self.delete(folder)
                self._order.remove(folder)
                total -= sizes[folder]
                deleted.append(folder)
            return deleted


@dataclass
class Streamed:
    """One item of a checkpoint stream: the loaded model, or why it failed."""

    ref: CheckpointRef
    loaded: LoadedModel | None
    error: Exception | None = None


def stream_checkpoints(
    refs: Iterable[CheckpointRef],
    options: LoadOptions | None = None,
    *,
    prefetch: bool = True,
    disk_budget_gb: float | None = None,
    loader: Callable[[CheckpointRef, LoadOptions], LoadedModel] = load_checkpoint,
) -> Iterator[Streamed]:
    """Yield each checkpoint loaded once, in order; failures are yielded, not raised.

    With `prefetch`, the next checkpoint loads in a background thread while the
    caller works on the current one. The caller should drop its reference to
    the model before asking for the next item so memory is freed.
    """
    options = options or LoadOptions()
    budget = DiskBudget(None if disk_budget_gb is None else int(disk_budget_gb * 2**30))
    refs = list(refs)

    def load(ref: CheckpointRef) -> Streamed:
        try:
            loaded = loader(ref, options)
        except Exception as err:  # noqa: BLE001  (recorded by the caller)
            return Streamed(ref, None, err)
        if not ref.is_local and loaded.local_dir is not None:
            budget.add(loaded.local_dir)
            budget.acquire(loaded.local_dir)
        return Streamed(ref, loaded)

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") if prefetch else None
    try:
        pending: Future | None = pool.submit(load, refs[0]) if pool and refs else None
        for i, ref in enumerate(refs):
            item = pending.result() if pending else load(ref)
            pending = pool.submit(load, refs[i + 1]) if pool and i + 1 < len(refs) else None
            yield item
            if item.loaded is not None and item.loaded.local_dir is not None and not ref.is_local:
                budget.release(item.loaded.local_dir)
            item.loaded = None
            budget.evict()
    finally:
        if pool:
            pool.shutdown(wait=True, cancel_futures=True)
