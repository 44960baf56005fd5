"""Streaming checkpoints: load each once, prefetch the next, evict under a disk budget.

While checkpoint i is being evaluated, checkpoint i+1 is fetched and loaded
in a background thread, so a sweep costs about max(load, compute) per
checkpoint instead of their sum. At most two models are in memory at once.

Disk budget (dynamics.cache): every hub snapshot this tool loads is
registered in its repo's cache folder; after each checkpoint the oldest
registered snapshots that no live process marks in use are deleted until the
registered snapshots' blobs fit `disk_budget_gb`. A blob is deleted only when
no other snapshot links to it (the hub cache shares identical files between
revisions), and never while another process is fetching into that repo.
Local-suite folders are never registered, so never deleted. In one process,
fetching and eviction are serialized (a module lock), so eviction cannot
race the prefetch thread's download.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from dynamics.cache import IO_LOCK, DiskBudget, fetching, hub_repo_dir, usage
from dynamics.checkpoints import CheckpointRef
from dynamics.loading import LoadedModel, LoadOptions, load_checkpoint

__all__ = ["DiskBudget", "Streamed", "folder_bytes", "stream_checkpoints"]


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under a folder (a hub snapshot's links count each blob once)."""
    return usage([Path(folder)])


@dataclass
class Streamed:
    """One item of a checkpoint stream: the loaded model, or why it failed."""

    ref: CheckpointRef
    loaded: LoadedModel | None
    error: Exception | None = None


def _load_one(ref: CheckpointRef, options: LoadOptions, loader: Callable,
              budget: DiskBudget) -> Streamed:
    """Fetch and load `ref`, marking the download in use before eviction can see it."""
    with IO_LOCK:  # no eviction in this process while a download is half linked
        try:
            if ref.is_local:
                return Streamed(ref, loader(ref, options))
            with fetching(hub_repo_dir(ref.source, options.cache_dir)):
                loaded = loader(ref, options)
                if loaded.local_dir is not None:  # in use before registered: never evictable
                    budget.acquire(loaded.local_dir)
                    budget.add(loaded.local_dir)
        except Exception as err:  # noqa: BLE001  (recorded by the caller)
            return Streamed(ref, None, err)
    return Streamed(ref, loaded)


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
    the model before asking for the next item so memory is freed. After each
    item, downloads beyond `disk_budget_gb` are evicted (see the module docstring).
    """
    options = options or LoadOptions()
    budget = DiskBudget(None if disk_budget_gb is None else int(disk_budget_gb * 2**30))
    refs = list(refs)

    def load(ref: CheckpointRef) -> Streamed:
        return _load_one(ref, options, loader, budget)

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") if prefetch else None
    try:
        pending: Future | None = pool.submit(load, refs[0]) if pool and refs else None
        for i, ref in enumerate(refs):
            item = pending.result() if pending else load(ref)
            pending = pool.submit(load, refs[i + 1]) if pool and i + 1 < len(refs) else None
            held = item.loaded.local_dir if item.loaded is not None and not ref.is_local else None
            yield item  # the caller may drop item.loaded: release what we acquired, not what's left
            if held is not None:
                budget.release(held)
            item.loaded = None
            budget.evict()
    finally:
        if pool:
            pool.shutdown(wait=True, cancel_futures=True)
