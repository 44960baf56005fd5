"""Issue #9: SIGKILL a real batch process mid-run, rerun, get the uninterrupted store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import pytest

from evals.config import load_batch
from evals.execute import run_batch
from evals.store import Store
from tests.helpers import make_tiny_suite, write_val

DRIVER = textwrap.dedent("""
    import os, sys, time
    import evals.store as st
    real_fsync = st.os.fsync
    def slow_fsync(fd):  # a temp file exists while we sleep: kills can land mid-write
        time.sleep(float(os.environ["SLOW_S"]))
        real_fsync(fd)
    st.os.fsync = slow_fsync
    from evals.config import load_batch
    from evals.execute import run_batch
    cfg = load_batch(eval(sys.argv[1]))
    run_batch(cfg, progress=False)
""")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    suite = make_tiny_suite(root / "suite", "neox", steps=(0, 10, 20, 30))
    val = write_val(root / "val.jsonl", n=6)
    seqs = root / "seqs.jsonl"
    seqs.write_text("".join(
        json.dumps({"pair_id": f"p{i}", "set": s, "prefix": "the cat", "text": f" {w} mat."}) + "\n"
        for i, w in enumerate(["sat on a", "ran past the", "sat near a"])
        for s, w in (("factual", w), ("hallucinated", w.replace("a", "red")))))
    batch = {"suite": str(suite), "output": str(root / "full"),
             "evaluators": {"token-loss": {"dataset": str(val), "context": 32},
                            "sequences": {"dataset": str(seqs), "min_pairs": 1}}}
    run_batch(load_batch(batch), progress=False)
    return root, batch


def _content(root: Path) -> dict[str, pl.DataFrame]:
    return {str(p.relative_to(root)): pl.read_parquet(p) for p in sorted(root.rglob("*.parquet"))}


def _kill_when(proc, out: Path, until) -> None:
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if until(out):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"driver ended before the kill point (rc={proc.returncode})")


def _n_parts(out: Path) -> int:
    return len(list(out.glob("*/*/*/step=*.parquet")))


@pytest.mark.slow
@pytest.mark.parametrize("point", ["after-1-part", "mid-write", "after-5-parts"])
def test_sigkill_and_resume_equals_uninterrupted(setup, tmp_path, point):
    root, batch = setup
    out = tmp_path / "out"
    batch = {**batch, "output": str(out)}
    until = {"after-1-part": lambda o: _n_parts(o) >= 1,
             "after-5-parts": lambda o: _n_parts(o) >= 5,
             "mid-write": lambda o: _n_parts(o) >= 2 and any(o.rglob(".*.tmp"))}[point]
    env = {**os.environ, "SLOW_S": "0.4"}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, repr(batch)], env=env,
                            cwd=Path(__file__).resolve().parents[1])
    _kill_when(proc, out, until)
    assert (out / "_lock.json").is_file()  # the killed run left its lock behind
    if point == "mid-write":
        assert any(out.rglob(".*.tmp"))
    # complete units: parts whose record was written (the record comes last; a part killed
    # before its record is redone, issue 33). Here each evaluator writes one same-named table.
    before = {p: p.stat().st_mtime_ns for p in out.rglob("step=*.parquet")
              if (out / "_units" / p.relative_to(out)).with_suffix(".json").is_file()}
    result = run_batch(load_batch(batch), progress=False)  # stale lock taken over
    assert not result.failed
    assert not list(out.rglob("*.tmp")) and not (out / "_lock.json").exists()
    assert {p: p.stat().st_mtime_ns for p in before} == before  # completed units untouched
    full, got = _content(root / "full"), _content(out)
    assert set(got) == set(full) and len(full) == 8
    for name, frame in full.items():
        assert got[name].equals(frame), name
    assert Store(out).failures().height == 0
