"""The user docs are tested: README.md and docs/**/*.md.

- every `dynamics ...` command line (in a fenced shell block, or an inline code span
  without usage placeholders `<`, `[` or `...`) parses with the real CLI parser, and the
  key=value overrides of `run` / `generate` name batch keys;
- every ```toml block passes the real validator with its local paths stubbed: a batch
  through `evals.config.load_batch` (a fragment without `suite` / `output` gets the
  built-in "pythia" suite and a stub output), a `suite.toml` (it has a [suite] table)
  through `dynamics.manifest.load_manifest`;
- every ```python block compiles, and what it imports (and the dotted names it reaches
  through an imported module) exists; so does every dotted project name in an inline
  code span (`stats.families.family_differences`);
- every relative link or image resolves to a file in the repository (and a `#anchor`
  to a heading of the target page); no page points outside the repository or names
  internal work items;
- `dynamics <verb> --help` names a docs page that exists, and `dynamics run --help`
  lists every registered evaluator.

The checkers are checked too: a planted misspelled key, a bad command line, a missing
import and a dangling link each fail (`test_checkers_reject_planted_mistakes`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
from dataclasses import fields

import pytest

from tests.docs_check import (
    LINKED_DOCS,
    ROOT,
    check_command,
    check_python,
    check_toml,
    dotted_names,
    link_problem,
    links,
    prose,
    python_snippets,
    resolve,
    shell_commands,
    toml_snippets,
)


@pytest.mark.parametrize("where,line", shell_commands(), ids=lambda v: str(v)[:60])
def test_command_lines_parse(where, line):
    check_command(line)


@pytest.mark.parametrize("snippet", toml_snippets(), ids=lambda s: s.id)
def test_toml_snippets_validate(snippet, tmp_path):
    try:
        check_toml(snippet.text, tmp_path)
    except ValueError as err:  # ConfigError, SuiteError
        pytest.fail(f"{snippet.id}: {err}")


@pytest.mark.parametrize("snippet", python_snippets(), ids=lambda s: s.id)
def test_python_snippets_import_what_they_name(snippet):
    assert check_python(snippet.text) > 0, f"{snippet.id}: names nothing to check"


@pytest.mark.parametrize("where,name", dotted_names(), ids=lambda v: str(v)[:60])
def test_dotted_names_in_prose_exist(where, name):
    resolve(name)


@pytest.mark.parametrize("path", LINKED_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    problems = [f"{path.relative_to(ROOT)}:{n}: {p}" for n, t in links(path)
                if (p := link_problem(path, t))]
    assert not problems, "\n".join(problems)


INTERNAL = re.compile(r"\bissues?\s*#?\d+|\bour machines?\b|\bthese machines\b|\.\./shared",
                      re.IGNORECASE)


@pytest.mark.parametrize("path", LINKED_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_user_docs_name_no_internal_work_items_or_outside_paths(path):
    hits = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
            for n, line in enumerate(path.read_text().splitlines(), 1) if INTERNAL.search(line)]
    assert not hits, "\n".join(hits)


def test_there_is_something_to_check():
    """The collectors find the snippets (a broken fence regex would check nothing)."""
    assert len(shell_commands()) >= 20
    assert len(toml_snippets()) >= 8
    assert len(python_snippets()) >= 3
    assert len(dotted_names()) >= 30


def _documented_keys(page: Path) -> set[str]:
    """Keys named in a reference table's first column: `key` or `a`, `b`."""
    keys = set()
    for line in prose(page).splitlines():
        if line.startswith("| `"):
            keys |= set(re.findall(r"`([\w-]+)`", line.split("|")[1]))
    return keys


def test_reference_pages_list_every_key():
    """The batch file page lists every batch and [generate.*] key; each evaluator's page
    lists every option of its Options class (a new option without docs fails here)."""
    from evals.base import EVALUATORS, evaluator_class
    from evals.config import BatchConfig, GenerateConfig

    batch_page = ROOT / "docs" / "batch-file.md"
    wanted = {f.name for f in fields(BatchConfig)} - {"base_dir"}
    wanted |= {f.name for f in fields(GenerateConfig)}
    assert not wanted - _documented_keys(batch_page), sorted(wanted - _documented_keys(batch_page))
    for name in EVALUATORS:
        page = ROOT / "docs" / "evaluators" / f"{name}.md"
        options = {f.name for f in fields(evaluator_class(name).Options)}
        missing = options - _documented_keys(page)
        assert not missing, f"{page.relative_to(ROOT)} does not list {sorted(missing)}"


def _help(verb: str) -> str:
    from dynamics.cli import build_parser

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args([verb, "--help"])
    return out.getvalue()


def _verbs() -> list[str]:
    from dynamics.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


@pytest.mark.parametrize("verb", _verbs())
def test_verb_help_points_to_an_existing_docs_page(verb):
    text = _help(verb)
    pages = re.findall(r"docs/[\w/-]+\.md", text)
    assert pages, f"`dynamics {verb} --help` names no docs page:\n{text}"
    for page in pages:
        assert (ROOT / page).is_file(), f"`dynamics {verb} --help` names {page}, which is missing"


def test_run_help_lists_every_registered_evaluator():
    from evals.base import EVALUATORS

    text = " ".join(_help("run").split())
    missing = [name for name in EVALUATORS if name not in text]
    assert not missing, f"`dynamics run --help` does not list {missing}"
    for name in EVALUATORS:  # and each has its docs page
        assert (ROOT / "docs" / "evaluators" / f"{name}.md").is_file(), name


def test_checkers_reject_planted_mistakes(tmp_path):
    """Each checker fails on a planted mistake (it would not pass a broken docs page)."""
    from evals.config import ConfigError

    good = '[evaluators.token-loss]\ndataset = "val.jsonl"\nmax_tokens = 1000\n'
    check_toml(good, tmp_path)
    with pytest.raises(ConfigError, match="unknown key 'max_tokns'"):
        check_toml(good.replace("max_tokens", "max_tokns"), tmp_path)
    with pytest.raises(ConfigError, match="unknown key 'devise'"):
        check_toml('devise = "cuda"\n' + good, tmp_path)
    check_command("dynamics run batch.toml steps=final -q")
    with pytest.raises(AssertionError, match="does not parse"):
        check_command("dynamics run batch.toml --retry-faild")
    with pytest.raises(AssertionError, match="not a batch key"):
        check_command("dynamics run batch.toml step=final")
    with pytest.raises(AssertionError, match="no 'family_diffs'"):
        check_python("from stats.families import family_diffs\n")
    with pytest.raises(AssertionError, match="no 'edge_score'"):
        check_python("import evals.circuits.attribution as a\na.edge_score(x)\n")
    page = tmp_path / "page.md"
    page.write_text("# Title\n[ok](page.md#title) [bad](nowhere.md) [anchor](page.md#nope)\n")
    assert [link_problem(page, t, tmp_path) is None for _, t in links(page)] == [True, False, False]
    assert INTERNAL.search("as issue #12 did") and INTERNAL.search("measured on our machines")
