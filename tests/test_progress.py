"""Issue #18: progress output does not flood a log file when stderr is not a terminal."""

from __future__ import annotations

import io

import pytest

from dynamics.progress import LineProgress, progress_bar


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_file_gets_a_line_per_tenth_not_per_update():
    log = io.StringIO()
    bar = progress_bar(51, "checkpoints", "ckpt", stream=log)
    assert isinstance(bar, LineProgress)
    for i in range(51):
        bar.set_postfix_str(f"step{i}")
        bar.update(1)
    bar.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert [ln.split()[1] for ln in lines] == [
        "0/51", "6/51", "12/51", "18/51", "24/51", "30/51", "36/51", "42/51", "48/51", "51/51"]
    assert lines[-1].startswith("checkpoints: 51/51 ckpt (100%") and lines[-1].endswith("[step50]")


def test_terminal_gets_a_bar_and_disabled_prints_nothing():
    from tqdm.auto import tqdm

    tty = _Tty()
    bar = progress_bar(3, "x", stream=tty)
    assert isinstance(bar, tqdm)
    bar.close()
    quiet = io.StringIO()
    off = progress_bar(3, "x", enabled=False, stream=quiet)
    off.update(3)
    off.close()
    assert quiet.getvalue() == ""


@pytest.mark.slow
def test_dynamics_run_log_has_lines_not_bars_nor_dataset_bars(tmp_path):
    """`dynamics run 2> log`: a line per checkpoint step, no tqdm redraws, no datasets bars."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.helpers import make_tiny_suite, write_val

    suite = make_tiny_suite(tmp_path / "suite", "neox", steps=(0, 10))
    val = write_val(tmp_path / "val.jsonl", n=4)
    batch = tmp_path / "b.toml"
    batch.write_text(f'suite = "{suite}"\noutput = "{tmp_path / "out"}"\n'
                     f'[evaluators.token-loss]\ndataset = "{val}"\ncontext = 32\n')
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "ds"), "OMP_NUM_THREADS": "1"}
    env.pop("HF_DATASETS_DISABLE_PROGRESS_BARS", None)
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "dynamics.cli", "run", str(batch)], cwd=root,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "Generating" not in proc.stderr and "\r" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert [ln.split()[1] for ln in lines] == ["0/2", "1/2", "2/2"], proc.stderr
