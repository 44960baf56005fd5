"""Checkers of the user docs (README.md, docs/): snippets, command lines, names, links.

Used by tests/test_docs.py, which says what each check asserts.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import io
import re
import shlex
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
USER_DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
LINKED_DOCS = [*USER_DOCS, *(ROOT / n for n in ("CONTRIBUTING.md", "CHANGELOG.md", "BENCHMARKS.md")
                             if (ROOT / n).is_file())]
SHELL = {"bash", "sh", "shell", "console", ""}
PACKAGES = ("dynamics", "evals", "stats", "reports")


@dataclass(frozen=True)
class Snippet:
    path: Path
    line: int  # 1-based line of the snippet's first content line
    lang: str
    text: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def fenced_blocks(path: Path) -> list[Snippet]:
    """Every ``` fenced block of a markdown file, with its language tag."""
    out, lang, start, body = [], None, 0, []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        fence = re.match(r"^\s*```\s*([\w+-]*)", line)
        if fence and lang is None:
            lang, start, body = fence.group(1).lower(), i + 1, []
        elif fence and lang is not None:
            out.append(Snippet(path, start, lang, "\n".join(body) + "\n"))
            lang = None
        elif lang is not None:
            body.append(line)
    return out


def prose(path: Path) -> str:
    """The file without its fenced blocks and HTML comments (for inline spans and links).

    Line numbers are kept: a removed line or comment leaves its newlines. A TODO comment
    may name a verb that does not exist yet; it is invisible when rendered, so unchecked.
    """
    kept, inside = [], False
    for line in path.read_text().splitlines():
        if re.match(r"^\s*```", line):
            inside = not inside
            kept.append("")
        else:
            kept.append("" if inside else line)
    return re.sub(r"<!--.*?-->", lambda m: "\n" * m.group(0).count("\n"), "\n".join(kept),
                  flags=re.DOTALL)


def inline_spans(path: Path) -> list[tuple[int, str]]:
    text = prose(path)
    return [(text.count("\n", 0, m.start()) + 1, m.group(1))
            for m in re.finditer(r"(?<!`)`([^`\n]+)`(?!`)", text)]


# ---------------------------------------------------------------- command lines

def command_lines(snippet: Snippet) -> list[str]:
    """`dynamics ...` lines of a shell block (continuations joined, `$ ` prompts dropped)."""
    lines, joined = [], ""
    for raw in snippet.text.splitlines():
        joined += raw.rstrip()[:-1] + " " if raw.rstrip().endswith("\\") else raw
        if raw.rstrip().endswith("\\"):
            continue
        line, joined = joined.strip().removeprefix("$ ").strip(), ""
        if re.match(r"^(\.venv/bin/)?dynamics\s", line):
            lines.append(line)
    return lines


def check_command(line: str) -> None:
    """Parse a command line with the real parser; raise AssertionError naming what failed."""
    from dynamics.cli import parse_args
    from evals.config import BatchConfig

    argv = shlex.split(line, comments=True)[1:]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            args = parse_args(argv)
    except SystemExit as exit_:
        if exit_.code != 0:  # --help and --version exit 0
            raise AssertionError(f"`{line}` does not parse: {out.getvalue().strip()}") from None
        return
    keys = {f.name for f in fields(BatchConfig)} - {"base_dir"}
    for item in getattr(args, "overrides", []):
        key = item.split("=", 1)[0].strip()
        assert key in keys, f"`{line}`: override {key!r} is not a batch key ({sorted(keys)})"


def shell_commands() -> list[tuple[str, str]]:
    found = []
    for path in USER_DOCS:
        for snippet in fenced_blocks(path):
            if snippet.lang in SHELL:
                found += [(snippet.id, line) for line in command_lines(snippet)]
        for line_no, span in inline_spans(path):
            if re.match(r"^(\.venv/bin/)?dynamics\s", span) and not re.search(r"[<\[]|\.\.\.",
                                                                              span):
                if len(span.split()) == 2:  # a verb named in prose: it must exist
                    span += " --help"
                found.append((f"{path.relative_to(ROOT)}:{line_no}", span))
    return found


# ---------------------------------------------------------------- TOML

def _stub_file(base: Path, value: str) -> None:
    path = base / value
    if Path(value).is_absolute() or not Path(value).suffix:
        return  # a hub name (no suffix) is not checked by the validator
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"text": "stub"}\n')


def _stub_bigbench(base: Path, folder: str, tasks) -> None:
    from evals.bigbench_tasks import BREAKTHROUGH, LINEAR

    names = {"breakthrough": list(BREAKTHROUGH), "linear": list(LINEAR)}.get(tasks, ["stub_task"])
    for name in tasks if isinstance(tasks, list) else names:
        (base / folder / str(name)).mkdir(parents=True, exist_ok=True)
        (base / folder / str(name) / "task.json").write_text(
            '{"examples": [{"input": "1 + 1 =", "target_scores": {"2": 1, "3": 0}}]}')


def stub_paths(values: dict, base: Path) -> None:
    """Create every local file or folder a batch names, so only its keys and values are checked."""
    for table in (values.get("evaluators") or {}).values():
        if not isinstance(table, dict):
            continue
        for key in ("dataset", "trigger_path"):
            if isinstance(table.get(key), str):
                _stub_file(base, table[key])
        for extra in table.get("extra_datasets") or []:
            _stub_file(base, extra)
        if isinstance(table.get("folder"), str):
            _stub_bigbench(base, table["folder"], table.get("tasks", "all"))
    for table in (values.get("generate") or {}).values():
        if isinstance(table, dict) and isinstance(table.get("prompts"), str):
            _stub_file(base, table["prompts"])


def check_toml(text: str, base: Path) -> None:
    """A batch (or batch fragment) through load_batch, a suite.toml through load_manifest."""
    from dynamics.manifest import load_manifest
    from evals.config import load_batch

    values = tomllib.loads(text)
    if "suite" in values and isinstance(values["suite"], dict):  # a suite.toml manifest
        (base / "suite.toml").write_text(text)
        load_manifest(base / "suite.toml")
        return
    values.setdefault("suite", "pythia")
    values.setdefault("output", "out")
    stub_paths(values, base)
    from unittest import mock

    # docs snippets name devices of the machines they run on (cuda): the device string is
    # checked, not whether this machine has that device
    with mock.patch("dynamics.loading.device_absent_problem", lambda device: None):
        load_batch(values, base, "snippet")


def toml_snippets() -> list[Snippet]:
    return [s for path in USER_DOCS for s in fenced_blocks(path) if s.lang == "toml"]


# ---------------------------------------------------------------- Python

def resolve(dotted: str):
    """Import the longest module prefix of `dotted`, then getattr the rest."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for i, attr in enumerate(parts[cut:], cut):
            if not hasattr(obj, attr):
                raise AssertionError(f"{'.'.join(parts[:i])} has no {attr!r} (in {dotted})")
            obj = getattr(obj, attr)
        return obj
    raise AssertionError(f"no module {parts[0]!r} (in {dotted})")


def check_python(text: str) -> int:
    """Compile; resolve what is imported and every dotted name reached through an import."""
    tree = ast.parse(text)
    names: dict[str, str] = {}  # local name -> dotted target
    checked = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                resolve(alias.name)
                names[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0])
                checked += 1
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                resolve(f"{node.module}.{alias.name}")
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                checked += 1
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and not isinstance(node.ctx, ast.Store):
            chain, cur = [], node
            while isinstance(cur, ast.Attribute):
                chain.insert(0, cur.attr)
                cur = cur.value
            if isinstance(cur, ast.Name) and cur.id in names:
                target = names[cur.id]
                if _is_module(target):  # a module's attributes; not an object's methods
                    resolve(".".join([target, *_module_chain(target, chain)]))
                    checked += 1
    return checked


def _is_module(dotted: str) -> bool:
    import types

    return isinstance(resolve(dotted), types.ModuleType)


def _module_chain(module: str, chain: list[str]) -> list[str]:
    """The part of `chain` to resolve: through submodules, then one attribute."""
    import types

    out, obj = [], resolve(module)
    for attr in chain:
        out.append(attr)
        obj = getattr(obj, attr, None)
        if not isinstance(obj, types.ModuleType):
            break
    return out


def python_snippets() -> list[Snippet]:
    return [s for path in USER_DOCS for s in fenced_blocks(path) if s.lang in ("python", "py")]


def dotted_names() -> list[tuple[str, str]]:
    """Inline spans naming a project module or object, e.g. `stats.equivalence.mde(...)`."""
    pattern = re.compile(rf"^((?:{'|'.join(PACKAGES)})(?:\.[A-Za-z_]\w*)+)(?:\(.*\))?$")
    found = []
    for path in USER_DOCS:
        for line_no, span in inline_spans(path):
            if m := pattern.match(span.strip()):
                found.append((f"{path.relative_to(ROOT)}:{line_no}", m.group(1)))
    return found


# ---------------------------------------------------------------- links

def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, punctuation dropped, spaces -> '-'."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in prose(path).splitlines():
        if m := re.match(r"^#{1,6}\s+(.*?)\s*#*$", line):
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[tuple[int, str]]:
    text = prose(path)
    return [(text.count("\n", 0, m.start()) + 1, m.group(1))
            for m in re.finditer(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text)]


def link_problem(path: Path, target: str, root: Path = ROOT) -> str | None:
    if re.match(r"^[a-z]+:", target):
        return None  # http(s), mailto: not checked offline
    file_part, _, anchor = target.partition("#")
    dest = (path.parent / file_part).resolve() if file_part else path
    if not dest.exists():
        return f"{target}: no such file {dest}"
    if not dest.resolve().is_relative_to(root):
        return f"{target}: points outside the repository"
    if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
        return f"{target}: no heading #{anchor} in {dest.name}"
    return None
