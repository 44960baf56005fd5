"""Revision lists read from the hub at run time, cached on disk.

Some suites publish their checkpoints as branches whose names cannot be
derived in code: OLMo names them `step<N>-tokens<M>B` and saved them with
gaps. `branch_names(repo)` lists a repo's branches once with
`huggingface_hub.list_repo_refs`, writes them to `<cache>/<owner>--<name>.json`,
and later calls (and offline runs) read that file; `parse_revisions` turns the
names into (revision, step, tokens) with the suite's documented pattern.

Cache folder: `$DYNAMICS_REFS_CACHE`, else `<HF_HOME>/dynamics/refs` (HF_HOME
as huggingface_hub resolves it, `~/.cache/huggingface` by default). Delete a
file to refresh its list; copy the folder to an offline machine to use it there.

Example: branches ["main", "step1000-tokens4B", "step0-tokens0B"] parsed with
OLMO_REVISION give [Revision("step0-tokens0B", 0, 0), Revision("step1000-tokens4B",
1000, 4)]: "main" does not match and is skipped; the list is sorted by step.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from dynamics.suite_types import SuiteError

log = logging.getLogger(__name__)

# OLMo's branch names (the OLMo-1B-hf / OLMo-7B-hf model cards: "revisions are named
# step{step}-tokens{tokens}B"); tokens are whole billions, rounded.
OLMO_REVISION = re.compile(r"^step(?P<step>\d+)-tokens(?P<tokens_b>\d+)B$")
_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub's reading of HF_HUB_OFFLINE


class RevisionListUnavailableError(SuiteError):
    """A revision list must come from the hub, which cannot be reached, and none is cached."""


class Revision(NamedTuple):
    """One parsed branch: its name, optimizer step, and tokens in billions (None if unnamed)."""

    name: str
    step: int
    tokens_b: int | None


def refs_cache_dir() -> Path:
    """Where ref lists are cached (module docstring)."""
    if env := os.environ.get("DYNAMICS_REFS_CACHE"):
        return Path(env).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "dynamics" / "refs"


def cache_path(repo: str) -> Path:
    return refs_cache_dir() / (repo.replace("/", "--") + ".json")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub reads it only once, at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in _TRUE


def read_cached(repo: str) -> list[str] | None:
    """The cached branch names of `repo`, or None when there is no cache file."""
    path = cache_path(repo)
    if not path.is_file():
        return None
    try:
        body = json.loads(path.read_text())
        return [b["name"] for b in body["branches"]]
    except (ValueError, KeyError, TypeError) as err:
        raise SuiteError(f"cached ref list {path} does not parse ({err}); delete it to "
                         "read the list from the hub again") from err


def _unavailable(repo: str, why: str) -> RevisionListUnavailableError:
    return RevisionListUnavailableError(
        f"the revisions of {repo} are read from the Hugging Face hub at run time and {why}; "
        f"no cached list at {cache_path(repo)}. Run `dynamics suites --steps <model>` once "
        "with network access (HF_HUB_OFFLINE unset), or copy that file from a machine that "
        "has it (the folder is $DYNAMICS_REFS_CACHE, default <HF_HOME>/dynamics/refs)")


def fetch_branches(repo: str) -> list[str]:
    """List `repo`'s branches on the hub and cache them (atomic write)."""
    import huggingface_hub

    if hub_offline():
        raise _unavailable(repo, "HF_HUB_OFFLINE is set")
    try:
        refs = huggingface_hub.list_repo_refs(repo)
    except Exception as err:  # network, auth, missing repo: one clear message, cause chained
        raise _unavailable(repo, f"the hub could not be reached ({type(err).__name__}: "
                                 f"{err})") from err
    branches = [{"name": b.name, "commit": getattr(b, "target_commit", None)}
                for b in refs.branches]
    body = {"repo": repo, "fetched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "branches": branches}
    path = cache_path(repo)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(body, fh, indent=1)
    os.replace(tmp, path)
    log.info("cached %d branches of %s at %s", len(branches), repo, path)
    return [b["name"] for b in branches]


def branch_names(repo: str, *, cached_only: bool = False) -> list[str] | None:
    """Branch names of `repo`: from the cache, else from the hub (None if `cached_only`)."""
    names = read_cached(repo)
    if names is None and not cached_only:
        names = fetch_branches(repo)
    return names


def parse_revisions(repo: str, names: list[str], pattern: re.Pattern) -> list[Revision]:
    """Branches matching `pattern` (groups `step`, optional `tokens_b`), sorted by step.

    Two branches with one step keep the first name in sorted order (logged).
    """
    by_step: dict[int, Revision] = {}
    for name in sorted(names):
        m = pattern.match(name)
        if m is None:
            continue
        tokens = m.groupdict().get("tokens_b")
        rev = Revision(name, int(m.group("step")), None if tokens is None else int(tokens))
        if rev.step in by_step:
            log.warning("%s: branches %s and %s are both step %d; using %s", repo,
                        by_step[rev.step].name, name, rev.step, by_step[rev.step].name)
            continue
        by_step[rev.step] = rev
    if not by_step:
        raise SuiteError(f"{repo}: none of its {len(names)} branches matches the revision "
                         f"pattern {pattern.pattern!r} (e.g. {sorted(names)[:3]})")
    return [by_step[s] for s in sorted(by_step)]
