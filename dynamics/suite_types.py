"""What a suite is: `Suite`, `Seed`, `LazyModels` and `SuiteError`, shared by every suite module.

The lowest module of the suite code: the built-in suites (dynamics.suites_core,
dynamics.suites_open), local manifests (dynamics.manifest), the hub revision
lists (dynamics.hub_refs) and the registry (dynamics.suites) all import these
types from here, and this module imports none of them, so the suite code has
no import circle (ARCHITECTURE.md; checked by the "no-circles" import contract).

A suite maps model names to their checkpoints (`CheckpointRef`s). A suite
whose revision list comes from the hub (OLMo) holds a `LazyModels` mapping: a
model's list is read on first use, so listing suites needs no network. Suites
with seed runs (PolyPythia, CRFM GPT-2) map each model to a `Seed`: the
configuration it replicates and its seed, so stats can treat seeds as replicates.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from dynamics.checkpoints import CheckpointRef, select_steps


class SuiteError(ValueError):
    """A suite, model or manifest that does not exist or does not parse."""


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
