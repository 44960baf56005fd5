"""The layering dynamics -> evals -> stats -> reports, checked on the import graph."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RANK = {"dynamics": 0, "evals": 1, "stats": 2, "reports": 3}
HEAVY = {"torch", "transformers", "datasets", "tokenizers", "safetensors", "ray"}
# Modules of evals that stay polars-only, so stats/reports may import them.
TORCH_FREE_EVALS = {"evals.schema", "evals.store"}
COMPOSITION_ROOT = ROOT / "dynamics" / "cli.py"


def imports_of(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return out


def violations(root: Path = ROOT) -> list[str]:
    bad = []
    for pkg, rank in RANK.items():
        for path in (root / pkg).rglob("*.py"):
            if path == COMPOSITION_ROOT:
                continue
            rel = path.relative_to(root)
            for mod in imports_of(path):
                top = mod.split(".")[0]
                if top in RANK and RANK[top] > rank:
                    bad.append(f"{rel} imports {mod} (against the arrow)")
                if mod.startswith("dynamics.cli"):
                    bad.append(f"{rel} imports the composition root {mod}")
                if pkg in ("stats", "reports"):
                    if top in HEAVY:
                        bad.append(f"{rel} imports {top}")
                    if top == "evals" and mod not in TORCH_FREE_EVALS:
                        bad.append(f"{rel} imports {mod}; only {sorted(TORCH_FREE_EVALS)} allowed")
                if pkg in ("evals", "dynamics") and top in ("statsmodels", "altair"):
                    bad.append(f"{rel} imports {top}")
                if pkg == "reports" and top == "statsmodels":
                    bad.append(f"{rel} imports statsmodels (reports do not fit)")
                if pkg == "stats" and top == "altair":
                    bad.append(f"{rel} imports altair")
    return bad


def test_no_import_against_the_arrow():
    assert violations() == []


def test_torch_free_evals_modules_import_no_torch():
    for name in TORCH_FREE_EVALS:
        path = ROOT / (name.replace(".", "/") + ".py")
        tops = {m.split(".")[0] for m in imports_of(path)}
        assert not tops & HEAVY, f"{name} imports {tops & HEAVY}"
        assert not any(m.startswith("evals.") and m not in TORCH_FREE_EVALS
                       for m in imports_of(path))


def test_checker_catches_a_bad_edge(tmp_path):
    for pkg in RANK:
        (tmp_path / pkg).mkdir()
    (tmp_path / "dynamics" / "bad.py").write_text("from stats.perplexity import validation_ppl\n")
    (tmp_path / "stats" / "bad.py").write_text("import torch\nfrom evals.sweep import run_batch\n")
    found = violations(tmp_path)
    assert any("dynamics/bad.py imports stats.perplexity" in v for v in found)
    assert any("stats/bad.py imports torch" in v for v in found)
    assert any("stats/bad.py imports evals.sweep" in v for v in found)
