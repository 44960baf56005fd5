"""The Hugging Face cache as this tool uses it: snapshot registry, in-use markers, safe eviction.

Layout of one hub repo in the cache (huggingface_hub's; files are links to
content-addressed blobs, and identical files of different revisions are ONE
blob)::

    <cache>/models--EleutherAI--pythia-70m/
        blobs/<sha256 or etag>               the bytes, once per distinct file
        refs/step1000                        text: the commit hash of that revision
        snapshots/<commit>/config.json   ->  ../../blobs/<etag of config.json>
        .dynamics/                           this tool's markers (ignored by scan_cache_dir)
            <commit>.fetched                 a snapshot this tool loaded (mtime = last use)
            <commit>.inuse.<pid>             process <pid> is using the snapshot
    <cache>/.locks/models--EleutherAI--pythia-70m/   (huggingface_hub's lock folder)
        dynamics-fetch.<pid>                 process <pid> is downloading into this repo
        dynamics.lock                        file lock: check-then-delete vs a fetch starting

Deleting a revision (`delete_revision`) removes its snapshot folder, its refs,
and only the blobs no other snapshot of the repo links to, so evicting
step1000 never breaks step2000's config.json or tokenizer.json. Markers live
beside `snapshots/`, not inside it (a file there makes `hf cache scan` report
the repo as corrupted).
"""

from __future__ import annotations

import os
import shutil
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from dynamics.procs import pid_alive

MARKS = ".dynamics"
IO_LOCK = threading.RLock()  # one process: fetches and evictions never overlap


def hub_repo_dir(repo_id: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder of a hub model repo (where snapshot_download puts it)."""
    from huggingface_hub import constants

    root = Path(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE)
    return root / constants.REPO_ID_SEPARATOR.join(["models", *repo_id.split("/")])


def repo_of(snapshot: Path) -> Path:
    """`<cache>/models--a--b/snapshots/<commit>` -> `<cache>/models--a--b`."""
    return snapshot.parent.parent


def _marks(repo: Path) -> Path:
    return repo / MARKS


def _locks(repo: Path) -> Path:
    """Beside huggingface_hub's own locks: a failed fetch leaves no half repo folder."""
    return repo.parent / ".locks" / repo.name


def in_use_marker(snapshot: Path, pid: int | None = None) -> Path:
    """The marker file saying process `pid` (default: this one) uses `snapshot`."""
    pid = os.getpid() if pid is None else pid
    return _marks(repo_of(snapshot)) / f"{snapshot.name}.inuse.{pid}"


def fetched_marker(snapshot: Path) -> Path:
    """The registry entry of a snapshot this tool loaded (its mtime orders eviction)."""
    return _marks(repo_of(snapshot)) / f"{snapshot.name}.fetched"


def _live(markers, *, other_than: int | None = None) -> bool:
    """Whether any marker `<...>.<pid>` names a live process; stale ones are removed."""
    busy = False
    for marker in markers:
        pid = marker.name.rsplit(".", 1)[-1]
        if pid.isdigit() and pid_alive(int(pid)):
            busy = busy or int(pid) != other_than
        else:
            marker.unlink(missing_ok=True)
    return busy


def is_in_use(snapshot: Path) -> bool:
    """Whether a live process marked `snapshot` in use; stale markers (dead pids) are removed."""
    return _live(_marks(repo_of(snapshot)).glob(f"{snapshot.name}.inuse.*"))


@contextmanager
def repo_lock(repo: Path):
    """An inter-process lock on one repo's markers (held only for short checks)."""
    from filelock import FileLock

    _locks(repo).mkdir(parents=True, exist_ok=True)
    with FileLock(str(_locks(repo) / "dynamics.lock")):
        yield


@contextmanager
def fetching(repo: Path):
    """Mark this process as downloading into `repo`: other processes evict nothing there."""
    marker = _locks(repo) / f"dynamics-fetch.{os.getpid()}"
    with repo_lock(repo):
        marker.touch()
    try:
        yield
    finally:
        marker.unlink(missing_ok=True)


def snapshot_blobs(snapshot: Path) -> dict[Path, int]:
    """Each file of a snapshot as the repo blob it links to (first hop only), with its size.

    The first hop matters: a repo blob may itself link into huggingface_hub's
    cache-wide shared store, which other repos use; we never delete there.
    """
    out = {}
    for p in snapshot.rglob("*"):
        try:
            if p.is_symlink():
                blob = Path(os.path.normpath(p.parent / os.readlink(p)))
                out[blob] = blob.stat().st_size
            elif p.is_file():
                out[p] = p.stat().st_size
        except OSError:
            continue  # a dangling link: nothing on disk to count or delete
    return out


def _snapshots(repo: Path) -> list[Path]:
    folder = repo / "snapshots"
    return [p for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []


def delete_revision(snapshot: Path) -> int:
    """Delete one snapshot, its refs, and the blobs no other snapshot links to; bytes freed."""
    repo = repo_of(snapshot)
    mine = snapshot_blobs(snapshot)
    keep = set()
    for other in _snapshots(repo):
        if other != snapshot:
            keep |= set(snapshot_blobs(other))
    shutil.rmtree(snapshot, ignore_errors=True)
    freed = 0
    for blob, size in mine.items():
        if blob in keep or blob.parent != repo / "blobs":
            continue  # shared with another revision, or inside the snapshot (gone with it)
        blob.unlink(missing_ok=True)
        freed += size
    for ref in (repo / "refs").rglob("*") if (repo / "refs").is_dir() else ():
        if ref.is_file() and ref.read_text().strip() == snapshot.name:
            ref.unlink()
    fetched_marker(snapshot).unlink(missing_ok=True)
    return freed


def registered(roots) -> list[Path]:
    """Snapshots this tool loaded under the cache folders `roots`, least recently used first."""
    found = []
    for root in roots:
        for marker in Path(root).glob(f"*/{MARKS}/*.fetched"):
            snapshot = marker.parent.parent / "snapshots" / marker.name[: -len(".fetched")]
            try:
                found.append((marker.stat().st_mtime_ns, str(snapshot), snapshot))
            except OSError:
                continue
    return [s for *_, s in sorted(found)]


def usage(snapshots) -> int:
    """Bytes of the distinct blobs the snapshots link to (a shared blob counts once)."""
    blobs = {}
    for s in snapshots:
        blobs.update(snapshot_blobs(s))
    return sum(blobs.values())


@dataclass
class DiskBudget:
    """Keep the snapshots this tool loaded within a byte budget, least recently used first.

    `add` registers a loaded snapshot on disk (`.dynamics/<commit>.fetched`), so
    every process sharing the cache (Ray workers on a node, a second sweep) sees
    the same set; `acquire`/`release` write and remove `<commit>.inuse.<pid>`.
    `evict` deletes registered snapshots (`delete_revision`) until their blobs
    fit, skipping any marked in use by a live process and any repo another
    live process is fetching into. Example: budget 1 GiB, snapshots A (old)
    and B share a 1 MiB tokenizer blob and hold 0.6 GiB of weights each: usage
    is 1.2 GiB + 1 MiB, so A is deleted (0.6 GiB freed; the tokenizer blob stays).
    """

    budget_bytes: int | None
    roots: set[Path] = field(default_factory=set)
    _in_use: dict[Path, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, snapshot: Path) -> None:
        snapshot = Path(snapshot)
        self.roots.add(repo_of(snapshot).parent)
        marker = fetched_marker(snapshot)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        os.utime(marker)  # most recently used now

    def acquire(self, snapshot: Path) -> None:
        with self._lock:
            self._in_use[snapshot] = self._in_use.get(snapshot, 0) + 1
            in_use_marker(snapshot).parent.mkdir(parents=True, exist_ok=True)
            in_use_marker(snapshot).touch()

    def release(self, snapshot: Path) -> None:
        with self._lock:
            n = self._in_use.get(snapshot, 0) - 1
            if n > 0:
                self._in_use[snapshot] = n
            else:
                self._in_use.pop(snapshot, None)
                in_use_marker(snapshot).unlink(missing_ok=True)

    def usage(self) -> int:
        """Bytes the registered snapshots hold now."""
        return usage(registered(self.roots))

    def evict(self) -> list[Path]:
        """Delete the least recently used unneeded snapshots until usage fits; return them."""
        if self.budget_bytes is None:
            return []
        deleted = []
        with IO_LOCK, self._lock:
            for snapshot in registered(self.roots):
                if usage(registered(self.roots)) <= self.budget_bytes:
                    break
                if self._in_use.get(snapshot) or self._delete_if_free(snapshot):
                    continue
                deleted.append(snapshot)
        return deleted

    def _delete_if_free(self, snapshot: Path) -> bool:
        """Delete unless in use or the repo is being fetched into; True when kept."""
        repo = repo_of(snapshot)
        with repo_lock(repo):
            busy = _live(_locks(repo).glob("dynamics-fetch.*"), other_than=os.getpid())
            if busy or is_in_use(snapshot):
                return True
            delete_revision(snapshot)
        return False
