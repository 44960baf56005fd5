"""Which weight files a checkpoint holds, and reading pickle weights without running code.

A Hugging Face checkpoint stores its weights one of four ways (transformers'
own names; anything else in the folder is not weights and is never loaded):

    model.safetensors                                   safetensors, one file
    model.safetensors.index.json + model-0000N-of-0000M.safetensors
    pytorch_model.bin                                   pickle, one file
    pytorch_model.bin.index.json + pytorch_model-0000N-of-0000M.bin

Safetensors wins where both exist (Pythia's `main` has both since a conversion
bot added `model.safetensors`; its `step{N}` revisions hold only the three
pickle shards and their index). `choose_weights` picks from a file listing (a
hub revision's, before anything is downloaded, or a folder's), so a download
fetches only the index and the shards it names (`shard_names`).

Pickle can run code while it is read (a `__reduce__` returning `os.system`).
`load_pickle_state_dict` reads every file with torch's restricted unpickler
(`torch.load(weights_only=True)`: tensors, dtypes and plain containers only;
any other global is refused before it is called), so a `.bin` checkpoint loads
by default. A file it refuses raises `UnsafeWeightsError` naming the global
(e.g. `posix.system`); only `allow_unsafe=True` (the batch's `allow_pickle =
true`) then reads it with the unrestricted unpickler, with a warning.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dynamics.checkpoints import CheckpointUnavailableError

SAFE_SINGLE, SAFE_INDEX = "model.safetensors", "model.safetensors.index.json"
PICKLE_SINGLE, PICKLE_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
SHARD = {"safetensors": re.compile(r"^model-\d+-of-\d+\.safetensors$"),
         "pickle": re.compile(r"^pytorch_model-\d+-of-\d+\.bin$")}
# Config and tokenizer files a checkpoint needs besides its weights (download patterns).
NON_WEIGHT_PATTERNS = ("*.json", "*.txt", "*.model")
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
log = logging.getLogger(__name__)


class UnsafeWeightsError(CheckpointUnavailableError):
    """Weights that only an unrestricted unpickler reads (they may run code), not opted in."""


@dataclass(frozen=True)
class WeightFiles:
    """The weight files of one checkpoint.

    Attributes:
        kind: "safetensors" or "pickle".
        index: the shard index file name, or None for a single file.
        files: the weight file names (the single file, or the shards; from the
            index's `weight_map` once it is readable, else every shard-named file).
    """

    kind: str
    index: str | None
    files: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """Every file to fetch: the index first, then the weights."""
        return ((self.index,) if self.index else ()) + self.files


def choose_weights(names: Iterable[str]) -> WeightFiles | None:
    """The weights in a file listing: safetensors if any, else pickle; None if neither.

    An index wins over a single file of the same kind (transformers' order).
    """
    names = set(names)
    for kind, single, index in (("safetensors", SAFE_SINGLE, SAFE_INDEX),
                                ("pickle", PICKLE_SINGLE, PICKLE_INDEX)):
        if index in names:
            return WeightFiles(kind, index, tuple(sorted(n for n in names if SHARD[kind].match(n))))
        if single in names:
            return WeightFiles(kind, None, (single,))
    return None


def shard_names(index_file: Path) -> tuple[str, ...]:
    """The shard files an index's `weight_map` names, sorted."""
    try:
        weight_map = json.loads(Path(index_file).read_text())["weight_map"]
        return tuple(sorted(set(weight_map.values())))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointUnavailableError(f"{index_file}: not a shard index with a weight_map "
                                         f"({type(err).__name__}: {err})") from err


def folder_weights(folder: Path) -> WeightFiles | None:
    """The weights of a local checkpoint folder, shards as its index names them.

    Raises CheckpointUnavailableError when the index names a shard the folder lacks.
    """
    folder = Path(folder)
    found = choose_weights(p.name for p in folder.iterdir() if p.is_file())
    if found is None or found.index is None:
        return found
    files = shard_names(folder / found.index)
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise CheckpointUnavailableError(f"{folder}: {found.index} names shards that are not "
                                         f"there: {', '.join(missing)}")
    return WeightFiles(found.kind, found.index, files)


def unpickler_detail(err: Exception) -> str:
    """The restricted unpickler's own reason (after "WeightsUnpickler error:"), one line."""
    text = str(err).split("WeightsUnpickler error:", 1)[-1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else type(err).__name__


def refused_global(err: Exception) -> str | None:
    """The global torch's restricted unpickler refused, from its error text (None: no global).

    torch words it two ways: "Unsupported global: GLOBAL eval was not an allowed
    global" (a builtin, written bare: builtins.eval) and "unsupported GLOBAL
    posix.system whose module posix is blocked".
    """
    found = _GLOBAL.search(str(err))
    if not found:
        return None
    name = found.group(1)
    return name if "." in name else f"builtins.{name}"  # torch writes builtins bare


def _torch_load(path: Path, weights_only: bool) -> dict:
    import torch

    try:  # mmap: tensors stay on disk until copied into the model (zip-format files)
        return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):
            raise
        return torch.load(path, map_location="cpu", weights_only=weights_only)  # legacy tar


def load_pickle_state_dict(paths: Iterable[Path], *, allow_unsafe: bool = False) -> dict:
    """One state dict from pickle weight files, read with torch's restricted unpickler.

    Raises UnsafeWeightsError naming the refused global, unless `allow_unsafe`
    (then the file is read again with the unrestricted unpickler, with a warning).
    """
    state: dict = {}
    for path in map(Path, paths):
        try:
            part = _torch_load(path, weights_only=True)
        except pickle.UnpicklingError as err:
            name = refused_global(err)
            if name is None and not allow_unsafe:
                raise CheckpointUnavailableError(
                    f"{path.name}: torch's restricted unpickler cannot read it "
                    f"({unpickler_detail(err)}): not a torch weights file, or one holding "
                    "objects beyond tensors (allow_pickle = true reads it unrestricted, "
                    "running any code it holds)") from err
            if not allow_unsafe:
                raise UnsafeWeightsError(
                    f"{path.name}: torch's restricted unpickler refused global {name} (a "
                    "weights file holds only tensors; this one would call code on load); "
                    "load it only if you trust its source: allow_pickle = true") from err
            log.warning("%s: global %s refused by the restricted unpickler; reading it with "
                        "the unrestricted one because allow_pickle = true", path, name)
            part = _torch_load(path, weights_only=False)
        if not isinstance(part, dict):
            raise CheckpointUnavailableError(f"{path}: holds a {type(part).__name__}, not a "
                                             "state dict of tensors")
        state.update(part)
    return state
