"""Checkpoint suites: Pythia, OPT, the open suites of dynamics.suites_open, and local suites.

A suite maps model names to their checkpoints (`CheckpointRef`s). Built-in
suites describe hub repositories; local suites describe folders on disk (a
user's own training run, the toy suite, or mirrored hub checkpoints). A
suite whose revision list comes from the hub (OLMo) holds a `LazyModels`
mapping: a model's list is read (hub or cache, dynamics.hub_refs) on first
use, so listing suites needs no network. Suites with seed runs (PolyPythia,
CRFM GPT-2) map each model to a `Seed`: the configuration it replicates and
its seed, so stats can treat seeds as replicates. Built-in names joined by
"+" ("pythia+olmo") make one suite of both, for a batch that compares them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dynamics.checkpoints import CheckpointRef, select_steps

PYTHIA_TOKENS_PER_STEP = 2_097_152  # 1024 sequences x 2048 tokens

# Total parameter counts (embeddings included) from the Pythia model card.
PYTHIA_PARAMS = {
    "14m": 14_067_712,
    "31m": 30_494_720,
    "70m": 70_426_624,
    "160m": 162_322_944,
    "410m": 405_334_016,
    "1b": 1_011_781_632,
    "1.4b": 1_414_647_808,
    "2.8b": 2_775_208_960,
    "6.9b": 6_857_302_016,
    "12b": 11_846_072_320,
}

# OPT shapes (layers, d_model) from the OPT paper; ffn = 4 d_model, vocab 50272,
# 2048 learned positions (+2 offset rows). Batch tokens per step from Table 1.
OPT_SHAPES = {
    "125m": (12, 768, 524_288),
    "350m": (24, 1024, 524_288),
    "1.3b": (24, 2048, 1_048_576),
    "2.7b": (32, 2560, 1_048_576),
    "6.7b": (32, 4096, 2_097_152),
    "13b": (40, 5120, 4_194_304),
    "30b": (48, 7168, 4_194_304),
    "66b": (64, 9216, 2_097_152),
}
OPT_TRAIN_TOKENS = 300_000_000_000  # every public OPT model saw ~300B tokens
OPT_VOCAB = 50_272


class SuiteError(ValueError):
    """A suite, model or manifest that does not exist or does not parse."""


def pythia_steps() -> list[int]:
    """The 154 Pythia revisions: step0, 1, 2, 4, ..., 512, then 1000..143000 every 1000."""
    return [0] + [2**i for i in range(10)] + list(range(1000, 143_001, 1000))


def opt_params(n_layers: int, d_model: int, *, word_embed_proj_dim: int | None = None) -> int:
    """Parameter count of an OPT decoder from its shape (tied head, biases, 2 LNs per layer).

    OPT-350m projects a 512-d embedding into the 1024-d model (project_in/out,
    no bias) and has no final layer norm.
    """
    d, ffn = d_model, 4 * d_model
    e = word_embed_proj_dim or d
    per_layer = 4 * (d * d + d) + (d * ffn + ffn) + (ffn * d + d) + 2 * 2 * d
    total = OPT_VOCAB * e + 2050 * d + n_layers * per_layer
    if word_embed_proj_dim:
        total += 2 * d * e  # project_in, project_out
    else:
        total += 2 * d  # final layer norm
    return total


@dataclass(frozen=True)
class Seed:
    """A model that is one seed of a configuration run several times.

    Attributes:
        group: the configuration the seeds replicate, e.g. "pythia-160m".
        seed: the seed label the suite's documentation gives this run.
    """

    group: str
    seed: int


Loader = Callable[[bool], "list[CheckpointRef] | None"]


class LazyModels(Mapping):
    """model -> checkpoints, each list built on first access (`loader(cached_only=False)`).

    `peek(model)` asks the loader with cached_only=True: the list if it needs no
    network (a fixed schedule or a cached ref list), else None.
    """

    def __init__(self, loaders: dict[str, Loader], params: dict[str, int]):
        self._loaders, self.params, self._done = loaders, params, {}

    def __getitem__(self, model: str) -> list[CheckpointRef]:
        if model not in self._done:
            self._done[model] = self._loaders[model](False)
        return self._done[model]

    def __contains__(self, model: object) -> bool:  # Mapping's default would load the list
        return model in self._loaders

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaders)

    def __len__(self) -> int:
        return len(self._loaders)

    def peek(self, model: str) -> list[CheckpointRef] | None:
        return self._done.get(model) or self._loaders[model](True)


@dataclass(frozen=True)
class Suite:
    """A named collection of models and their checkpoints (`seeds`: model -> Seed, if any)."""

    name: str
    description: str
    models: Mapping[str, list[CheckpointRef]]
    seeds: dict[str, Seed] = field(default_factory=dict)

    def model_names(self) -> list[str]:
        return list(self.models)

    def params_of(self, model: str) -> int:
        """A model's parameter count, without reading a lazy revision list."""
        if isinstance(self.models, LazyModels):
            return self.models.params[model]
        return self.checkpoints(model)[0].params

    def cached_checkpoints(self, model: str) -> list[CheckpointRef] | None:
        """The model's checkpoints if they need no network, else None."""
        if isinstance(self.models, LazyModels):
            return self.models.peek(model)
        return self.checkpoints(model)

    def checkpoints(self, model: str) -> list[CheckpointRef]:
        if model not in self.models:
            hint = difflib.get_close_matches(model, list(self.models), n=3)
            extra = f" Did you mean {', '.join(hint)}?" if hint else ""
            raise SuiteError(
                f"unknown model {model!r} in suite {self.name!r}; "
                f"allowed: {', '.join(self.models)}.{extra}"
            )
        return self.models[model]

    def select(self, models: list[str] | None, steps: object = "all") -> list[CheckpointRef]:
        """Checkpoints of `models` (all when None) at the selected steps, model-major."""
        out = []
        for name in models or self.model_names():
            refs = self.checkpoints(name)
            by_step = {r.step: r for r in refs}
            try:
                chosen = select_steps(list(by_step), steps)
            except ValueError as err:
                raise SuiteError(f"model {name!r}: {err}") from err
            out.extend(by_step[s] for s in chosen)
        return out


def pythia_suite(deduped: bool = False) -> Suite:
    family = "pythia-deduped" if deduped else "pythia"
    models = {}
    for size, params in PYTHIA_PARAMS.items():
        name = f"pythia-{size}" + ("-deduped" if deduped else "")
        models[name] = [
            CheckpointRef(
                family=family,
                model=name,
                params=params,
                step=s,
                tokens_seen=s * PYTHIA_TOKENS_PER_STEP,
                source=f"EleutherAI/{name}",
                revision=f"step{s}",
            )
            for s in pythia_steps()
        ]
    kind = "deduplicated Pile" if deduped else "Pile"
    return Suite(family, f"EleutherAI Pythia on the {kind}, 154 revisions per size", models)


def opt_suite() -> Suite:
    """OPT final checkpoints only (Meta never released intermediate ones publicly).

    The final step is 300B tokens / batch tokens; users with intermediate OPT
    checkpoints describe them in a local `suite.toml` with family = "opt".
    """
    models = {}
    for size, (layers, d, batch_tokens) in OPT_SHAPES.items():
        proj = 512 if size == "350m" else None
        params = opt_params(layers, d, word_embed_proj_dim=proj)
        step = OPT_TRAIN_TOKENS // batch_tokens
        models[f"opt-{size}"] = [
            CheckpointRef(
                family="opt",
                model=f"opt-{size}",
                params=params,
                step=step,
                tokens_seen=step * batch_tokens,
                source=f"facebook/opt-{size}",
                revision="main",
            )
        ]
    return Suite("opt", "Meta OPT final checkpoints (intermediate ones: use a local suite.toml)", models)


def _open(builder: str) -> Callable[[], Suite]:
    def build() -> Suite:
        from dynamics import suites_open

        return getattr(suites_open, builder)()

    return build


BUILTIN_SUITES = {
    "pythia": lambda: pythia_suite(False),
    "pythia-deduped": lambda: pythia_suite(True),
    "opt": opt_suite,
    "polypythia": _open("polypythia_suite"),
    "olmo": _open("olmo_suite"),
    "crfm-gpt2": _open("crfm_gpt2_suite"),
    "amber": _open("amber_suite"),
}


def _loader(suite: Suite, model: str) -> Loader:
    if isinstance(suite.models, LazyModels):
        return lambda cached_only: (suite.models.peek(model) if cached_only
                                    else suite.models[model])
    return lambda cached_only, refs=suite.models[model]: refs


def combine_suites(suites: list[Suite]) -> Suite:
    """One suite holding every model of `suites`; stays lazy.

    A model in two suites must be the same checkpoints in both (Pythia's
    `pythia-160m` is PolyPythia's seed 0): kept once; otherwise a SuiteError.
    """
    loaders, params, seeds, eager = {}, {}, {}, {}
    for suite in suites:
        for model in suite.models:
            same = (model in eager and not isinstance(suite.models, LazyModels)
                    and suite.models[model] == eager[model])
            if model in loaders and not same:
                raise SuiteError(f"model {model!r} is in more than one of the suites "
                                 f"{[s.name for s in suites]} with different checkpoints; "
                                 "combine suites without overlap")
            if not isinstance(suite.models, LazyModels):
                eager[model] = suite.models[model]
            loaders[model] = _loader(suite, model)
            params[model] = suite.params_of(model)
        seeds.update(suite.seeds)
    return Suite("+".join(s.name for s in suites),
                 "; ".join(f"{s.name}: {s.description}" for s in suites),
                 LazyModels(loaders, params), seeds)


def get_suite(name_or_path: str | Path) -> Suite:
    """A built-in suite by name ("a+b" for several), or a local suite (folder or `suite.toml`)."""
    text = str(name_or_path)
    if text in BUILTIN_SUITES:
        return BUILTIN_SUITES[text]()
    parts = [p.strip() for p in text.split("+")]
    if len(parts) > 1 and all(p in BUILTIN_SUITES for p in parts):
        return combine_suites([BUILTIN_SUITES[p]() for p in parts])
    path = Path(text)
    if path.is_dir():
        path = path / "suite.toml"
    if path.is_file():
        from dynamics.manifest import load_manifest

        return load_manifest(path)
    raise SuiteError(
        f"unknown suite {text!r}: not a built-in suite ({', '.join(BUILTIN_SUITES)}, or "
        "several joined by '+') and no suite.toml at that path"
    )
