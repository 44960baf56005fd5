"""The architecture as import contracts, checked by import-linter on grimp's import graph.

The contracts live in pyproject.toml ([tool.importlinter]): the layers
dynamics -> evals -> stats -> reports, dynamics.cli as the one composition
root (it alone imports to its right; nothing imports it), no import circle
inside any package at any depth, and stats/reports free of torch and of every
evals module but the polars-only schema and store. grimp records every import,
including those inside functions, so a lazy import neither hides an upward
edge nor breaks a circle. `lint-imports` prints the same report in CI's log.

Each contract is also shown to fail: a planted import is added to a copy of
the real graph, and the report must name the broken contract.
"""

from __future__ import annotations

import copy
from pathlib import Path

import grimp
import pytest
from importlinter import api  # noqa: F401  (configures import-linter's settings)
from importlinter.application import use_cases
from importlinter.application.app_config import settings

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "pyproject.toml")


class _GivenGraph:
    """import-linter's graph builder port, answering with a graph we built (and planted)."""

    def __init__(self, graph: grimp.ImportGraph):
        self.graph = graph

    def build(self, root_package_names, cache_dir=None, include_external_packages=False,
              exclude_type_checking_imports=False):
        return copy.deepcopy(self.graph)


@pytest.fixture(scope="module")
def options():
    return use_cases.read_user_options(CONFIG)


@pytest.fixture(scope="module")
def graph(options):
    session = options.session_options
    return grimp.build_graph(*session["root_packages"], cache_dir=None,
                             include_external_packages=session["include_external_packages"])


def broken(options, graph, monkeypatch) -> dict[str, str]:
    """{contract id: its failure text} of every contract `graph` breaks."""
    monkeypatch.setattr(settings, "_config", {**settings._config,
                                               "GRAPH_BUILDER": _GivenGraph(graph)})
    report = use_cases.create_report(options, cache_dir=None)
    assert not report.could_not_run, report.invalid_contract_options
    out = {}
    for contract, check in report.get_contracts_and_checks():
        if not check.kept:
            out[contract.contract_options["id"]] = repr(check.metadata)
    return out


def planted(graph, *edges: tuple[str, str]) -> grimp.ImportGraph:
    bad = copy.deepcopy(graph)
    for importer, imported in edges:
        if imported.split(".")[0] not in {"dynamics", "evals", "stats", "reports"}:
            bad.add_module(imported, is_squashed=True)
        bad.add_import(importer=importer, imported=imported, line_number=1,
                       line_contents=f"import {imported}  # planted")
    return bad


def test_lint_imports_keeps_every_contract():
    """The same run as `lint-imports` in .ci/run: every contract kept (report on failure)."""
    assert use_cases.lint_imports(CONFIG, cache_dir=None, no_logo=True), (
        "an import breaks the architecture; run `.venv/bin/lint-imports` for the report")


def test_the_real_graph_breaks_no_contract(options, graph, monkeypatch):
    assert broken(options, graph, monkeypatch) == {}


@pytest.mark.parametrize("edges, contract", [
    # upward: a checkpoint module reaching into stats (the layers contract)
    ([("dynamics.checkpoints", "stats.perplexity")], "layers"),
    # upward inside the arrow: evals importing reports
    ([("evals.store", "reports.charts")], "layers"),
    # a circle in dynamics: the manifest's lower module importing the registry again
    ([("dynamics.suite_types", "dynamics.suites")], "no-circles"),
    # a circle two packages deep, as llama <-> model_surgery was (issue 28)
    ([("evals.circuits.heads", "evals.circuits.model_surgery")], "no-circles"),
    # a circle through a lazy import, as sweep.run_batch -> execute was
    ([("evals.sweep", "evals.execute")], "no-circles"),
    # the composition root imported by a library module
    ([("evals.execute", "dynamics.cli")], "composition-root"),
    # torch in stats, directly, and through a torch-importing evals module
    ([("stats.regression", "torch")], "torch-free"),
    ([("stats.regression", "evals.sweep")], "torch-free"),
    ([("reports.build", "evals.config")], "polars-only-evals"),
    ([("evals.sweep", "statsmodels")], "no-fitting-in-evals"),
    ([("stats.summary", "altair")], "stats-draw-nothing"),
])
def test_a_planted_import_breaks_its_contract(options, graph, monkeypatch, edges, contract):
    found = broken(options, planted(graph, *edges), monkeypatch)
    assert contract in found, f"planted {edges} broke {sorted(found)}, not {contract!r}"


def test_the_composition_root_is_the_only_exemption(options, graph, monkeypatch):
    """dynamics.cli may import every layer; any other dynamics module may not."""
    assert broken(options, planted(graph, ("dynamics.cli", "reports.build")), monkeypatch) == {}
    found = broken(options, planted(graph, ("dynamics.loading", "reports.build")), monkeypatch)
    assert "layers" in found
