"""Checkpoint suites by name: the registry of built-in suites, "+" combinations, local suites.

A suite maps model names to their checkpoints (`CheckpointRef`s; the types are
in dynamics.suite_types). Built-in suites describe hub repositories (Pythia and
OPT: dynamics.suites_core; PolyPythia, OLMo, CRFM GPT-2, Amber:
dynamics.suites_open); local suites describe folders on disk (a user's own
training run, the toy suite, or mirrored hub checkpoints: dynamics.manifest).
Built-in names joined by "+" ("pythia+olmo") make one suite of both, for a batch
that compares them.

This module is the top of the suite code: it imports the suite modules, none of
them imports it. The names below the imports are re-exported for callers that
know them from here (`from dynamics.suites import Suite, get_suite`).
"""

from __future__ import annotations

from pathlib import Path

from dynamics import suites_open
from dynamics.manifest import load_manifest
from dynamics.suite_types import LazyModels, Loader, Seed, Suite, SuiteError
from dynamics.suites_core import (
    OPT_SHAPES,
    OPT_TRAIN_TOKENS,
    OPT_VOCAB,
    PYTHIA_PARAMS,
    PYTHIA_TOKENS_PER_STEP,
    STORED_DTYPES,
    opt_params,
    opt_suite,
    pythia_steps,
    pythia_suite,
)

__all__ = [
    "BUILTIN_SUITES", "OPT_SHAPES", "OPT_TRAIN_TOKENS", "OPT_VOCAB", "PYTHIA_PARAMS",
    "PYTHIA_TOKENS_PER_STEP", "STORED_DTYPES", "LazyModels", "Seed", "Suite", "SuiteError",
    "combine_suites", "get_suite", "opt_params", "opt_suite", "pythia_steps", "pythia_suite",
]

BUILTIN_SUITES = {
    "pythia": lambda: pythia_suite(False),
    "pythia-deduped": lambda: pythia_suite(True),
    "opt": opt_suite,
    "polypythia": suites_open.polypythia_suite,
    "olmo": suites_open.olmo_suite,
    "crfm-gpt2": suites_open.crfm_gpt2_suite,
    "amber": suites_open.amber_suite,
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
        return load_manifest(path)
    raise SuiteError(
        f"unknown suite {text!r}: not a built-in suite ({', '.join(BUILTIN_SUITES)}, or "
        "several joined by '+') and no suite.toml at that path"
    )
