"""Issue 33: a catalogue of bad inputs run through the `dynamics` command line.

Each case builds a bad batch, data file, checkpoint, store or argument beside a
finished store, runs the CLI in-process, and asserts: the exit code, an
`error:` line (or a FAILED line, for a refused checkpoint) naming the bad value,
no Python traceback, and the store's parts, records and batch.toml unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from dynamics.cli import main
from tests.helpers import make_tiny_suite, write_val

TOKEN_LOSS = {"dataset": "val.jsonl", "context": 32, "max_tokens": 300}


def _toml(values: dict) -> str:
    from dynamics.toml_writer import dumps

    return dumps(values)


@dataclass
class Case:
    """One bad input: `make(root)` writes it under `root` and returns the CLI's argv."""

    id: str
    make: Callable[[Path], list[str]]
    needle: str
    code: int = 2
    lines: int = 1  # `error:` lines expected (one per problem)
    stream: str = "err"  # where the naming line is: "err" (error:) or "out" (FAILED)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A folder with a tiny suite, data, a batch and its finished store (`out`)."""
    root = tmp_path_factory.mktemp("catalogue")
    make_tiny_suite(root / "suite", "neox", steps=(0, 10, 20))
    write_val(root / "val.jsonl", n=8)
    _write_seqs(root / "seqs.jsonl")
    _batch(root)
    assert main(["run", str(root / "batch.toml"), "-q"]) == 0
    assert len(list((root / "out").glob("*/*/*/step=*.parquet"))) == 3
    return root


def _write_seqs(path: Path, **drop) -> Path:
    rows = [{"pair_id": f"p{i}", "set": s, "text": f" the cat {w}"}
            for i, w in enumerate(["sat", "ran", "hid"]) for s in ("factual", "hallucinated")]
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k not in drop}) + "\n"
                            for r in rows))
    return path


def _batch(root: Path, name: str = "batch.toml", evaluators: dict | None = None,
           **top) -> Path:
    values = {"suite": "suite", "output": "out", "steps": [0, 10, 20], **top,
              "evaluators": evaluators if evaluators is not None else {"token-loss": TOKEN_LOSS}}
    path = root / name
    path.write_text(_toml(values))
    return path


def run_with(name="bad.toml", evaluators=None, **top) -> Callable[[Path], list[str]]:
    """A case maker: a batch beside the finished store with these values."""
    return lambda root: ["run", str(_batch(root, name, evaluators, **top)), "-q"]


def tl(**options) -> dict:
    return {"token-loss": {**TOKEN_LOSS, **options}}


def data_file(text: bytes | str, name: str = "bad.jsonl", evaluator: str = "token-loss",
              extra: dict | None = None):
    def make(root: Path) -> list[str]:
        path = root / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        options = {"dataset": name, **(extra or {})}
        if evaluator == "token-loss":
            options = {**TOKEN_LOSS, **options}
        return ["run", str(_batch(root, "bad.toml", {evaluator: options})), "-q"]
    return make


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def raw_batch(text: bytes | str):
    def make(root: Path) -> list[str]:
        (root / "raw.toml").write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["run", str(root / "raw.toml")]
    return make


def _cuda_case() -> tuple[str, str]:
    if not torch.cuda.is_available():
        return "cuda", "no CUDA device"
    return f"cuda:{torch.cuda.device_count()}", "CUDA device(s)"


def _output_is_file(root: Path) -> list[str]:
    (root / "afile").write_text("x")
    return ["run", str(_batch(root, "bad.toml", output="afile")), "-q"]


def _output_under_file(root: Path) -> list[str]:
    (root / "afile").write_text("x")
    return ["run", str(_batch(root, "bad.toml", output="afile/out")), "-q"]


def _relative_in_cwd_only(root: Path) -> list[str]:
    """The data file exists in the working directory, not beside the batch: refused."""
    other = root / "elsewhere"
    (other / "sub").mkdir(parents=True)
    write_val(other / "cwd_only.jsonl", n=3)
    os.chdir(other)
    return ["run", str(_batch(root, "bad.toml", tl(dataset="cwd_only.jsonl"))), "-q"]


def _changed(**options):
    return lambda root: ["run", str(_batch(root, "batch.toml", tl(**options))), "-q"]


def _changed_data(root: Path) -> list[str]:
    write_val(root / "val2.jsonl", n=8, seed=5)
    return ["run", str(_batch(root, "batch.toml", tl(dataset="val2.jsonl"))), "-q"]


def _changed_dtype(root: Path) -> list[str]:
    return ["run", str(_batch(root, "batch.toml", dtype="bfloat16")), "-q"]


def _lock(body: dict | None):
    def make(root: Path) -> list[str]:
        text = "" if body is None else json.dumps(body)
        (root / "out" / "_lock.json").write_text(text)
        return ["run", str(root / "batch.toml"), "-q"]
    return make


def _truncated(verb: str):
    def make(root: Path) -> list[str]:
        part = next((root / "out" / "token-loss").rglob("step=10.parquet"))
        part.write_bytes(part.read_bytes()[:100])
        if verb == "report":
            return ["report", str(root / "out"), "--out", str(root / "rep")]
        return ["compare", str(root / "out"), "--families", "a,b"]
    return make


def _report_out_file(root: Path) -> list[str]:
    (root / "index.html").write_text("mine")
    return ["report", str(root / "out"), "--out", str(root / "index.html")]


def _checkpoint(edit: Callable[[dict], None], step: int = 20):
    """The suite's step-20 checkpoint with an edited config.json; the store lacks that unit."""
    def make(root: Path) -> list[str]:
        cfg_path = root / "suite" / "tiny-neox-0" / f"step{step}" / "config.json"
        cfg = json.loads(cfg_path.read_text())
        edit(cfg)
        cfg_path.write_text(json.dumps(cfg))
        for p in (root / "out").rglob(f"step={step}.*"):
            p.unlink()
        return ["run", str(root / "batch.toml"), "-q"]
    return make


def _extra_layer(cfg: dict) -> None:
    cfg["num_hidden_layers"] += 1


def _two_heads(cfg: dict) -> None:
    cfg["num_attention_heads"] = 2


CUDA, CUDA_NEEDLE = _cuda_case()
BAD_UTF8 = b'{"text": "ok"}\n{"text": "caf\xe9"}\n'
CASES = [
    # -- the batch's top-level values
    Case("models-empty", run_with(models=[]), "models = [] selects no model"),
    Case("output-dot", run_with(output="."), "holds the batch file"),
    Case("output-is-batch", run_with(output="bad.toml"), "is the batch file itself"),
    Case("output-is-file", _output_is_file, "is a file; give a folder"),
    Case("output-under-file", _output_under_file, "cannot create"),
    Case("disk-budget-zero", run_with(disk_budget_gb=0), "disk_budget_gb = 0"),
    Case("disk-budget-negative", run_with(disk_budget_gb=-1.5), "disk_budget_gb = -1.5"),
    Case("device-absent", run_with(device=CUDA), CUDA_NEEDLE),
    Case("device-typo", run_with(device="cdua"), "device 'cdua' not allowed"),
    Case("dtype", run_with(dtype="float64"), "dtype = 'float64' has the wrong type"),
    Case("unknown-key", run_with(colour="red"), "unknown key 'colour'"),
    Case("base-dir-not-a-key", run_with(base_dir="/tmp"), "unknown key 'base_dir'"),
    Case("steps-form", run_with(steps="every other"), "bad steps selection 'every other'"),
    Case("steps-absent", run_with(steps=[7]), "steps [7] are not in"),
    Case("model-unknown", run_with(models=["tiny-neox-9"]), "unknown model 'tiny-neox-9'"),
    Case("suite-unknown", run_with(suite="no-such-suite"), "no-such-suite"),
    Case("no-evaluators", run_with(evaluators={}), "evaluators: none configured"),
    Case("evaluator-unknown", run_with(evaluators={"token-los": TOKEN_LOSS}),
         "unknown evaluator 'token-los'"),
    Case("prefetch-type", run_with(prefetch="yes"), "prefetch = 'yes' has the wrong type"),
    Case("margin", run_with(equivalence_margin=-1), "equivalence_margin = -1"),
    # -- evaluator tables: every problem, one line each
    Case("max-tokens-1", run_with(evaluators=tl(max_tokens=1)), "max_tokens = 1 scores no token"),
    Case("max-tokens-0", run_with(evaluators=tl(max_tokens=0)), "max_tokens must be >= 1, got 0"),
    Case("type-hides-nothing", run_with(evaluators=tl(max_tokens="many", batch_size=0)),
         "max_tokens = 'many' has the wrong type", lines=2),
    Case("context-1", run_with(evaluators=tl(context=1)), "context must be >= 2 tokens, got 1"),
    Case("max-docs-0", run_with(evaluators=tl(max_docs=0)), "max_docs must be >= 1"),
    Case("option-typo", run_with(evaluators=tl(contxt=3)), "unknown key 'contxt'"),
    Case("seq-values", run_with(evaluators={"sequences": {
        "dataset": "seqs.jsonl", "min_pairs": 0, "batch_tokens": 0}}),
         "min_pairs must be >= 1, got 0", lines=2),
    Case("seq-sets-empty", run_with(evaluators={"sequences": {"dataset": "seqs.jsonl",
                                                              "sets": []}}), "sets = []"),
    Case("recall-txt", run_with(evaluators={"recall-bigram": {"dataset": "val.txt"}}),
         "dataset 'val.txt' must be a local"),
    Case("bigbench-folder", run_with(evaluators={"bigbench-mc": {"folder": "nope"}}),
         "folder = 'nope': no such folder"),
    Case("bigbench-no-tasks", run_with(evaluators={"bigbench-mc": {"folder": "suite",
                                                                   "tasks": []}}),
         "tasks = [] selects no task"),
    Case("circuit-task", run_with(evaluators={"circuits": {"tasks": ["iou"]}}),
         "unknown circuit tasks ['iou']"),
    Case("generate-prompts", lambda root: ["run", str(_batch(
        root, "bad.toml", generate={"mix": {"small": "tiny-neox-0", "large": "tiny-neox-0",
                                            "prompts": str(_write_bytes(root / "p.jsonl",
                                                                        b'{"txt": 1}\n'))}})),
        "-q"], "p.jsonl: line 1 has no field 'text'"),
    Case("generate-key", run_with(generate={"mix": {"small": "tiny-neox-0",
                                                    "large": "tiny-neox-0", "topp": 0.9}}),
         "unknown key 'topp'"),
    # -- data files: read once, before any checkpoint
    Case("data-missing", run_with(evaluators=tl(dataset="nope.jsonl")),
         "dataset = 'nope.jsonl': no such file"),
    Case("data-cwd-only", _relative_in_cwd_only, "dataset = 'cwd_only.jsonl': no such file"),
    Case("data-empty", data_file(""), "bad.jsonl: the file is empty"),
    Case("data-malformed-line", data_file('{"text": "a"}\n{"text": "b"}\n{"text": \n'),
         "bad.jsonl: line 3 is not valid JSON"),
    Case("data-not-utf8", data_file(BAD_UTF8),
         "bad.jsonl: not UTF-8 text: byte offset 28 (line 2) is 0xe9"),
    Case("data-missing-field", data_file('{"txt": "a"}\n'), "line 1 has no field 'text'"),
    Case("data-no-documents", data_file('{"text": ""}\n{"text": "  "}\n'),
         "no non-empty documents in column 'text'"),
    Case("data-not-object", data_file('["a", "b"]\n'), "line 1 is a JSON list"),
    Case("seq-bad-json", data_file('{"pair_id": "a", "set": "x", "text": "t"}\nnot json\n',
                                   evaluator="sequences"), "bad.jsonl: line 2 is not valid JSON"),
    Case("recall-missing-field", data_file('{"text": "a b"}\n', evaluator="recall-bigram"),
         "line 1 has no field 'kinds'"),
    # -- the batch file itself and the command line
    Case("batch-missing", lambda root: ["run", str(root / "nope.toml")], "does not exist"),
    Case("batch-folder", lambda root: ["run", str(root / "suite")], "is a folder"),
    Case("batch-not-toml", raw_batch('suite = "suite\n'), "not valid TOML"),
    Case("batch-not-utf8", raw_batch(b'suite = "caf\xe9"\n'),
         "not UTF-8 text (byte offset 12 is 0xe9)"),
    Case("override-form", lambda root: ["run", str(root / "batch.toml"), "steps"],
         "override 'steps' must look like key=value"),
    # -- the store: stored units with other options, locks, damaged parts
    Case("rerun-max-tokens", _changed(max_tokens=200),
         "max_tokens = 200 in this batch, 300 in the stored units", lines=2),
    Case("rerun-dataset-content", _changed_data, "[evaluators.token-loss]: dataset = content",
         lines=2),
    Case("rerun-dtype", _changed_dtype, 'dtype = "bfloat16" in this batch', lines=2),
    Case("lock-held", _lock({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": time.time()}), f"in use by another run (pid {os.getpid()}"),
    Case("lock-other-host", _lock({"pid": 1, "host": "elsewhere", "started": 0}),
         "pid 1 on host elsewhere"),
    Case("lock-empty", _lock(None), "has an empty lock file"),
    Case("report-truncated-part", _truncated("report"), "step=10.parquet cannot be read"),
    Case("compare-truncated-part", _truncated("compare"), "step=10.parquet cannot be read"),
    Case("report-out-file", _report_out_file, "index.html: is a file"),
    Case("compare-out-suffix", lambda root: ["compare", str(root / "out"), "--families", "a,b",
                                             "--out", str(root / "x.txt")],
         "use a .csv or .parquet file name"),
    Case("report-no-store", lambda root: ["report", str(root / "nope"), "--out",
                                          str(root / "r")], "no results store at"),
    # -- checkpoints that do not load exactly: refused, recorded, the batch goes on
    Case("ckpt-extra-layer", _checkpoint(_extra_layer), "weights missing from the checkpoint",
         code=1, stream="out"),
    Case("ckpt-heads", _checkpoint(_two_heads),
         "num_attention_heads = 2 where tiny-neox/tiny-neox-0@step0 has 4", code=1,
         stream="out"),
]
CASES.append(Case("seq-missing-field", lambda root: ["run", str(_batch(root, "bad.toml", {
    "sequences": {"dataset": str(_write_seqs(root / "noid.jsonl", pair_id=1))}})), "-q"],
    "noid.jsonl: line 1 has no field 'pair_id'"))


def _snapshot(out: Path) -> dict[str, bytes]:
    """Every file of the store but its failure records (a refused checkpoint adds one)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and not str(p.relative_to(out)).startswith(("_failures", "_lock"))}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, finished, tmp_path, capsys, monkeypatch):
    root = tmp_path / "c"
    shutil.copytree(finished, root, symlinks=True)
    monkeypatch.chdir(root)
    argv = case.make(root)
    before = _snapshot(root / "out")
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, (case.id, err)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    if case.stream == "err":
        assert code == case.code, (case.id, code, out, err)
        assert len(errors) == case.lines, (case.id, errors)
        assert any(case.needle in line for line in errors), (case.id, case.needle, errors)
    else:
        assert code == case.code, (case.id, code, out, err)
        failed = [line for line in out.splitlines() if line.lstrip().startswith("FAILED")]
        assert len(failed) == 1 and case.needle in failed[0], (case.id, failed)
    after = _snapshot(root / "out")
    assert after == before, (case.id, sorted(set(after) ^ set(before)))
    if case.code == 2:
        assert not (root / "out" / "_failures").exists()


def test_the_catalogue_holds_at_least_40_distinct_cases():
    assert len({c.id for c in CASES}) == len(CASES) >= 40
