"""Checkpoints are loaded exactly or refused; what identifies a checkpoint's weights.

`check_exact_load` refuses a load whose weights do not fill the model built
from its config.json: missing keys (a layer the config declares that the
weights lack would otherwise be randomly initialised), unexpected keys, and
mismatched shapes. It takes transformers' loading info
(`from_pretrained(..., output_loading_info=True)`), so it holds for every
weights format the loader reads.

`ArchReference` refuses a checkpoint whose architecture-defining config
fields (`ARCH_FIELDS`: layers, heads, widths, vocabulary, positions, ...)
differ from the first checkpoint of its model: a config.json that says 2
heads where the run was trained with 4 loads without a shape error and
silently computes something else.

`checkpoint_identity` says which weights a stored result came from: the hub
commit, or the sha256 of a local folder's config and weight files (hashed once
per checkpoint and process).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from dynamics.checkpoints import CheckpointRef, CheckpointUnavailableError

log = logging.getLogger(__name__)

# config.json fields that define the computation (names used by GPT-NeoX, OPT, GPT-2,
# Llama, OLMo and most decoder-only configs); dropout, init and token ids are not here.
ARCH_FIELDS = (
    "model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "intermediate_size", "ffn_dim", "word_embed_proj_dim",
    "max_position_embeddings", "hidden_act", "activation_function", "rotary_pct",
    "partial_rotary_factor", "rotary_emb_base", "rope_theta", "rope_scaling", "rope_parameters",
    "use_parallel_residual", "do_layer_norm_before", "tie_word_embeddings", "attention_bias",
    "mlp_bias", "layer_norm_eps", "rms_norm_eps", "n_layer", "n_head", "n_embd", "n_inner",
    "n_positions", "n_ctx", "position_embedding_type", "sliding_window", "clip_qkv",
)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
MAX_NAMED = 4


class InexactLoadError(CheckpointUnavailableError):
    """The weights do not fill the model their config.json describes."""


class ArchitectureMismatchError(CheckpointUnavailableError):
    """A checkpoint's architecture differs from the first checkpoint of its model."""


def _names(keys) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - MAX_NAMED} more" if len(keys) > MAX_NAMED else ""
    return ", ".join(keys[:MAX_NAMED]) + more


def check_exact_load(ref: CheckpointRef, info: dict, folder: Path | str) -> None:
    """Raise InexactLoadError unless every model weight came from the checkpoint, unchanged.

    `info` is transformers' loading info: missing_keys, unexpected_keys, mismatched_keys.
    """
    problems = []
    if missing := list(info.get("missing_keys") or ()):
        problems.append(f"{len(missing)} weights missing from the checkpoint ({_names(missing)}): "
                        "they would be randomly initialised")
    if unexpected := list(info.get("unexpected_keys") or ()):
        problems.append(f"{len(unexpected)} weights the model does not use "
                        f"({_names(unexpected)})")
    if mismatched := list(info.get("mismatched_keys") or ()):
        shown = [f"{k[0]} {tuple(k[1])} vs {tuple(k[2])}" if isinstance(k, tuple) and len(k) == 3
                 else str(k) for k in mismatched]
        problems.append(f"{len(mismatched)} weights of the wrong shape ({_names(shown)})")
    if problems:
        raise InexactLoadError(f"{ref.label}: {folder}/config.json does not describe its "
                               f"weights: {'; '.join(problems)}; fix config.json or the weights")


def arch_fields(config) -> dict:
    """The architecture-defining fields of a config (a transformers config or a dict)."""
    values = config if isinstance(config, dict) else config.to_dict()
    return {k: values[k] for k in ARCH_FIELDS if k in values}


def read_config(ref: CheckpointRef, cache_dir: str | None = None) -> dict:
    """A checkpoint's config.json without its weights (local folder, or the hub file)."""
    if ref.is_local:
        return json.loads((Path(ref.source) / "config.json").read_text())
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(ref.source, "config.json", revision=ref.revision, cache_dir=cache_dir)
    return json.loads(Path(path).read_text())


class ArchReference:
    """The architecture of each model's first checkpoint; `check` compares a loaded one.

    `firsts` maps a model name to its first checkpoint in the suite. Its config is read
    once (a local file, or the hub's config.json); where that cannot be read (offline,
    not cached) the first checkpoint of the model loaded in this process stands in.
    """

    def __init__(self, firsts: dict[str, CheckpointRef], cache_dir: str | None = None):
        self.firsts, self.cache_dir = dict(firsts), cache_dir
        self._fields: dict[str, tuple[str, dict]] = {}

    def _reference(self, ref: CheckpointRef, fields: dict) -> tuple[str, dict]:
        if ref.model not in self._fields:
            first = self.firsts.get(ref.model, ref)
            try:
                self._fields[ref.model] = (first.label, arch_fields(read_config(first,
                                                                                self.cache_dir)))
            except Exception as err:  # noqa: BLE001  (offline hub, missing file)
                log.info("architecture of %s not readable (%s); %s is the reference",
                         first.label, err, ref.label)
                self._fields[ref.model] = (ref.label, fields)
        return self._fields[ref.model]

    def check(self, ref: CheckpointRef, config) -> None:
        """Raise ArchitectureMismatchError naming each differing field and both values."""
        if config is None:
            return
        fields = arch_fields(config)
        label, want = self._reference(ref, fields)
        diffs = [f"{k} = {fields.get(k)!r} where {label} has {want.get(k)!r}"
                 for k in sorted(set(want) | set(fields)) if fields.get(k) != want.get(k)]
        if diffs:
            raise ArchitectureMismatchError(
                f"{ref.label}: its config.json describes another architecture than the "
                f"model's first checkpoint: {'; '.join(diffs)}; every checkpoint of a model "
                "must have the same architecture")


_IDENTITY: dict[tuple, dict] = {}


def checkpoint_identity(ref: CheckpointRef, folder: Path | str | None) -> dict:
    """Which weights these are: the hub commit, else sha256 of config.json and weight files."""
    if folder is None:
        return {"source": ref.source, "revision": ref.revision}
    folder = Path(folder)
    if folder.parent.name == "snapshots":  # a hub cache snapshot: its folder is the commit
        return {"hub": ref.source, "revision": ref.revision, "commit": folder.name}
    files = sorted(p for p in folder.iterdir()
                   if p.name == "config.json" or p.suffix in WEIGHT_SUFFIXES)
    stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    key = (str(folder.resolve()), stamp)
    if key not in _IDENTITY:
        digests = {}
        for p in files:
            with open(p, "rb") as fh:
                digests[p.name] = hashlib.file_digest(fh, "sha256").hexdigest()
        _IDENTITY[key] = {"sha256": digests}
    return _IDENTITY[key]
