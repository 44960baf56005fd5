"""Loading one checkpoint: hub revision or local folder, safely.

Weights: safetensors where the checkpoint has them; otherwise pickle
(`pytorch_model.bin`, or shards with `pytorch_model.bin.index.json`, as Pythia's
`step{N}` revisions hold), read with torch's restricted unpickler, which runs
no code and refuses, naming it, any global that is not a tensor or a plain
container (dynamics.weights). The unrestricted unpickler is used only with
`allow_pickle=True`. A hub download fetches the config and tokenizer files and
only the weight files chosen (`hub_weight_files`), at the ref's revision.
`trust_remote_code` is never on unless the caller asks.

The declared parameter count (`CheckpointRef.params`, from the suite or a
`suite.toml`) drives flops = 6 * params * tokens_seen and the size axis, so
every load checks it against the loaded model (`check_params`). Convention:
the total count with embeddings, tied weights once (Pythia's model card, our
suites). Within PARAMS_TOLERANCE (5%: nominal sizes such as "160m" for
162,322,944 pass) it is accepted; within 5% of the count *without* embeddings
(Kaplan et al.'s N, another common convention) it is accepted with a warning
naming both counts; anything else raises ParamsMismatchError naming both.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from dynamics.checkpoints import CheckpointRef, CheckpointUnavailableError
from dynamics.exact import check_exact_load
from dynamics.weights import (
    NON_WEIGHT_PATTERNS,
    UnsafeWeightsError,
    WeightFiles,
    choose_weights,
    folder_weights,
    load_pickle_state_dict,
    shard_names,
)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PARAMS_TOLERANCE = 0.05
log = logging.getLogger(__name__)


class ParamsMismatchError(ValueError):
    """The declared parameter count does not describe the loaded model."""


def param_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(total, without embeddings): tied weights count once; embeddings are every
    nn.Embedding weight (tokens, learned positions) plus an untied output embedding."""
    total = sum(p.numel() for p in model.parameters())
    emb = {id(m.weight): m.weight.numel() for m in model.modules()
           if isinstance(m, torch.nn.Embedding)}
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if out is not None:
        emb.setdefault(id(out.weight), out.weight.numel())
    return total, total - sum(emb.values())


def check_params(ref: CheckpointRef, model: torch.nn.Module) -> None:
    """Compare ref.params with the loaded model (rule in the module docstring)."""
    total, non_embedding = param_counts(model)
    close = lambda n: n > 0 and abs(ref.params - n) <= PARAMS_TOLERANCE * n  # noqa: E731
    if close(total):
        return
    counts = (f"{ref.label} declares params = {ref.params:,}; the loaded model has "
              f"{total:,} parameters ({non_embedding:,} without embeddings)")
    if close(non_embedding):
        log.warning("%s: the declared count is the non-embedding one; flops and the size axis "
                    "follow it", counts)
        return
    raise ParamsMismatchError(f"{counts}: fix `params` in the suite (total count, embeddings "
                              f"included, within {PARAMS_TOLERANCE:.0%})")

DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|mps(:\d+)?)$")


def device_problem(device: str) -> str | None:
    """Why `device` is not a torch device string this tool runs on, or None if it is.

    Spelling only: whether CUDA is present is decided where the model loads (a Ray
    driver without a GPU may schedule GPU workers).
    """
    if DEVICE.match(device):
        return None
    hint = difflib.get_close_matches(device, ["cpu", "cuda", "mps"], n=1, cutoff=0.5)
    extra = f" (did you mean {hint[0]!r}?)" if hint else ""
    return f"device {device!r} not allowed{extra}; use cpu, cuda, cuda:N or mps"


def device_absent_problem(device: str) -> str | None:
    """Why a well-spelled `device` is not present on this machine, or None if it is.

    For runs that load here (the local executor): `cuda` without CUDA would fail every
    unit the same way, so it is refused before any checkpoint is loaded.
    """
    kind, _, index = device.partition(":")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            return (f"device {device!r}: this machine has no CUDA device (torch "
                    f"{torch.__version__}, torch.cuda.is_available() is False); use device = "
                    '"cpu", or run where CUDA is')
        if index and int(index) >= count:
            return (f"device {device!r}: this machine has {count} CUDA device(s), "
                    f"cuda:0..cuda:{count - 1}")
    if kind == "mps" and not torch.backends.mps.is_available():
        return f"device {device!r}: MPS is not available on this machine; use device = \"cpu\""
    return None


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo; platform.processor() elsewhere)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_dtype_problem(dtype: str | torch.dtype) -> str | None:
    """Why `dtype` matmuls are slow on this CPU, or None when they take a fast path.

    float32 always has one (MKL/OpenBLAS). bf16 and fp16 are fast only through oneDNN's
    kernels, which need the CPU's support (bf16: AVX-512 or AVX2-VNNI-2 on x86, BF16 on
    Arm; fp16: AVX-512-FP16/AMX-FP16). Without it torch takes its reference GEMM:
    measured 1-3 GFLOP/s on 2 threads against 150-190 fp32 (BENCHMARKS.md, "bf16 on a
    CPU without native bf16"). torch's own check is used, so a capped oneDNN
    (ONEDNN_MAX_CPU_ISA=AVX2) counts as no support, as it behaves.
    """
    dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    checks = {torch.bfloat16: ("bf16", "_is_mkldnn_bf16_supported"),
              torch.float16: ("fp16", "_is_mkldnn_fp16_supported")}
    if dtype not in checks:
        return None
    name, check = checks[dtype]
    fast = (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
            and bool(getattr(torch.ops.mkldnn, check)()))
    if fast:
        return None
    return (f"this CPU ({cpu_model()}) has no native {name} matmul for torch "
            f"(torch.ops.mkldnn.{check}() is False): {name} matmuls take torch's reference "
            f"path, 20-100x slower than float32")


_warned_dtypes: set[str] = set()


def warn_slow_cpu_dtype(dtype: str, device: str) -> None:
    """Log once per dtype when a CPU run asks for a dtype this CPU multiplies slowly."""
    if torch.device(device).type != "cpu" or dtype in _warned_dtypes:
        return
    if problem := cpu_dtype_problem(dtype):
        _warned_dtypes.add(dtype)
        log.warning("dtype %s on the CPU: %s; use dtype = \"float32\" on this machine",
                    dtype, problem)


@dataclass(frozen=True)
class LoadOptions:
    """How to load checkpoints.

    Attributes:
        device: torch device string ("cpu", "cuda", "cuda:1").
        dtype: one of DTYPES.
        allow_pickle: read pickle weights that torch's restricted unpickler refuses
            with the unrestricted one (runs the code they hold; off by default).
        trust_remote_code: run model code from the repo (unsafe; off by default).
        cache_dir: hub download cache (default: the Hugging Face cache).
    """

    device: str = "cpu"
    dtype: str = "float32"
    allow_pickle: bool = False
    trust_remote_code: bool = False
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r} not allowed; choose one of {list(DTYPES)}")
        if problem := device_problem(self.device):
            raise ValueError(problem)



@dataclass
class LoadedModel:
    """A model in eval mode plus its tokenizer and the ref it came from."""

    ref: CheckpointRef
    model: torch.nn.Module
    tokenizer: object
    local_dir: Path | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def context_length(self) -> int:
        cfg = self.model.config
        for key in ("max_position_embeddings", "n_positions", "n_ctx"):
            if getattr(cfg, key, None):
                return int(getattr(cfg, key))
        return 2048


def check_local_weights(folder: Path) -> WeightFiles:
    """The folder's weight files (dynamics.weights); an error naming what is missing."""
    if not folder.is_dir():
        raise CheckpointUnavailableError(f"checkpoint folder {folder} does not exist")
    if not (folder / "config.json").is_file():
        raise CheckpointUnavailableError(f"{folder} has no config.json: not an HF checkpoint folder")
    found = folder_weights(folder)
    if found is None:
        raise CheckpointUnavailableError(
            f"{folder} has no weights (model.safetensors, pytorch_model.bin, or a "
            "model.safetensors.index.json / pytorch_model.bin.index.json with its shards)")
    return found


def _hub_error(ref: CheckpointRef, err: Exception) -> CheckpointUnavailableError:
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{ref.source} on {constants.ENDPOINT}"
    if isinstance(err, RevisionNotFoundError):  # the hub answered: no such revision
        return CheckpointUnavailableError(
            f"revision {ref.revision} does not exist in {where}; `dynamics suites --steps "
            f"{ref.model}` lists the suite's revisions (the repo may publish fewer); "
            "drop the step from `steps` or mirror the checkpoint in a local suite.toml")
    if isinstance(err, RepositoryNotFoundError):
        gated = " (gated: accept its terms on the hub)" if isinstance(err, GatedRepoError) else ""
        return CheckpointUnavailableError(
            f"repository {where} is not accessible{gated}; private or gated repos need a token "
            "(`hf auth login` or HF_TOKEN)")
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    return CheckpointUnavailableError(
        f"cannot fetch {ref.source} revision {ref.revision} from the Hugging Face hub "
        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). "
        + ("HF_HUB_OFFLINE=1 is set, so only the local cache is used. " if offline else "")
        + "If this machine has no internet, download the checkpoints elsewhere and describe "
        "them in a local suite.toml (see README), or set HF_HUB_OFFLINE=1 to use the cache."
    )


def hub_weight_files(ref: CheckpointRef, options: LoadOptions) -> WeightFiles | None:
    """The weight files of a hub revision, from its file listing (one API call) and, when
    sharded, its index (one small download); None when offline (the cache decides)."""
    from huggingface_hub import HfApi, constants, hf_hub_download

    if constants.HF_HUB_OFFLINE:
        return None
    info = HfApi().model_info(ref.source, revision=ref.revision)
    found = choose_weights(s.rfilename for s in info.siblings or [])
    if found is None or found.index is None:
        return found
    index = hf_hub_download(ref.source, found.index, revision=ref.revision,
                            cache_dir=options.cache_dir)
    return WeightFiles(found.kind, found.index, shard_names(Path(index)))


def fetch_checkpoint(ref: CheckpointRef, options: LoadOptions) -> Path:
    """Make the checkpoint's files local (download for hub refs) and return the folder."""
    return _fetch(ref, options)[0]


def _fetch(ref: CheckpointRef, options: LoadOptions) -> tuple[Path, WeightFiles]:
    """The checkpoint's local folder and its weight files (`check_local_weights`).

    From the hub: the config and tokenizer files plus only the chosen weight files
    (`hub_weight_files`: safetensors if the revision has them, else the pickle
    index and the shards it names), at `ref.revision`.
    """
    if ref.is_local:
        folder = Path(ref.source)
        return folder, check_local_weights(folder)
    from huggingface_hub import snapshot_download

    try:
        chosen = hub_weight_files(ref, options)
        weights = (list(chosen.names) if chosen is not None else  # offline: what the cache has
                   ["*.safetensors", "pytorch_model*.bin"])
        folder = Path(snapshot_download(ref.source, revision=ref.revision,
                                        cache_dir=options.cache_dir,
                                        allow_patterns=[*NON_WEIGHT_PATTERNS, *weights]))
    except CheckpointUnavailableError:
        raise  # a bad shard index: already says which file
    except Exception as err:  # noqa: BLE001  (hub errors come in many types)
        raise _hub_error(ref, err) from err
    return folder, check_local_weights(folder)


def _pickle_model(folder: Path, weights: WeightFiles, options: LoadOptions):
    """A model (and transformers' loading info) from pickle weights read by the restricted
    unpickler (dynamics.weights).

    The state dict goes through `from_pretrained(None, config=..., state_dict=...)`,
    so key renames, tied weights and the dtype are handled as for safetensors.
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    state = load_pickle_state_dict([folder / f for f in weights.files],
                                   allow_unsafe=options.allow_pickle)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=options.trust_remote_code)
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise CheckpointUnavailableError(
            f"{folder}: pickle weights of architecture {type(config).__name__}, which "
            "transformers has no causal-LM class for; convert the checkpoint to safetensors")
    cls = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    return cls.from_pretrained(None, config=config, state_dict=state, dtype=DTYPES[options.dtype],
                               output_loading_info=True)


def load_checkpoint(ref: CheckpointRef, options: LoadOptions | None = None) -> LoadedModel:
    """Fetch (if needed) and load a checkpoint with its tokenizer, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    options = options or LoadOptions()
    warn_slow_cpu_dtype(options.dtype, options.device)
    folder, weights = _fetch(ref, options)
    try:
        if weights.kind == "pickle":
            model, info = _pickle_model(folder, weights, options)
        else:
            model, info = AutoModelForCausalLM.from_pretrained(
                folder,
                dtype=DTYPES[options.dtype],
                use_safetensors=True,
                trust_remote_code=options.trust_remote_code,
                output_loading_info=True,
            )
        tokenizer = AutoTokenizer.from_pretrained(
            folder, trust_remote_code=options.trust_remote_code
        )
    except UnsafeWeightsError:
        raise  # already one line naming the file and the refused global
    except Exception as err:  # noqa: BLE001
        raise CheckpointUnavailableError(
            f"failed to load {ref.label} from {folder}: {type(err).__name__}: {err}"
        ) from err
    check_exact_load(ref, info, folder)  # no randomly initialised weights, ever
    check_params(ref, model)
    model.to(options.device).eval()
    return LoadedModel(ref=ref, model=model, tokenizer=tokenizer, local_dir=folder)
