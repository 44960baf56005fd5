"""The `dynamics run` and `dynamics report` verbs end to end: every config problem in one
run, key=value overrides, exit codes (0 done, 1 failed units or sections, 2 bad input), -v
tracebacks (issue #18)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynamics.cli import main
from evals.store import Store
from tests.helpers import make_tiny_suite, write_val


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


def test_four_planted_problems_reported_in_one_run(tmp_path, capsys):
    """A misspelled device, a bad steps string, a negative max_tokens and a missing data file:
    one `dynamics run` names all four (it took four runs before issue #18)."""
    batch = tmp_path / "batch.toml"
    batch.write_text('suite = "pythia"\nmodels = ["pythia-70m"]\nsteps = "every other"\n'
                     'output = "out"\ndevice = "cdua"\n\n[evaluators.token-loss]\n'
                     'dataset = "missing-val.jsonl"\nmax_tokens = -5\n')
    assert main(["run", str(batch)]) == 2
    lines = _errors(capsys.readouterr().err)
    assert len(lines) == 4, lines
    assert "device 'cdua' not allowed (did you mean 'cuda'?)" in lines[1]
    expected = ["bad steps selection 'every other'", "device 'cdua' not allowed",
                "max_tokens must be >= 1, got -5", "dataset = 'missing-val.jsonl': no such file"]
    for line, text in zip(lines, expected, strict=True):
        assert text in line and line.startswith(f"error: {batch}: "), (text, line)
    assert not (tmp_path / "out").exists()


def test_a_type_error_does_not_hide_the_other_checks(tmp_path, capsys):
    batch = tmp_path / "batch.toml"
    batch.write_text('suite = "pythia"\nmodels = ["pythia-7m"]\nsteps = "every other"\n'
                     'output = 3\nseed = "x"\n\n[evaluators.token-loss]\n'
                     'dataset = "missing.jsonl"\nmax_tokens = -5\nbatch_size = 0\n')
    assert main(["run", str(batch)]) == 2
    text = "\n".join(_errors(capsys.readouterr().err))
    for part in ("output = 3 has the wrong type", "seed = 'x' has the wrong type",
                 "unknown model 'pythia-7m'", "bad steps selection 'every other'",
                 "max_tokens must be >= 1", "batch_size must be >= 1, got 0",
                 "'missing.jsonl': no such file"):
        assert part in text, part
    assert len(text.splitlines()) == 7


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    return make_tiny_suite(tmp_path_factory.mktemp("suite"), "neox", steps=(0, 10, 20))


def _batch(tmp_path: Path, suite: Path) -> Path:
    val = write_val(tmp_path / "val.jsonl")
    batch = tmp_path / "batch.toml"
    batch.write_text(f'suite = "{suite}"\noutput = "out"\n\n[evaluators.token-loss]\n'
                     f'dataset = "{val.name}"\ncontext = 32\nmax_tokens = 400\n')
    return batch


def test_run_overrides_and_exit_codes(tmp_path, suite, capsys):
    batch = _batch(tmp_path, suite)
    # a TOML value, overrides after an option, then a bare string (the final step: stored)
    assert main(["run", str(batch), "-q", "steps=[0, 20]", "prefetch=false"]) == 0
    assert capsys.readouterr().out.startswith("2 evaluator x checkpoint units written, 0 already")
    store = Store(tmp_path / "out")
    assert sorted(p.name for p in store.parts("token-loss")) == ["step=0.parquet",
                                                                  "step=20.parquet"]
    assert main(["run", str(batch), "steps=final", "-q"]) == 0
    assert capsys.readouterr().out.startswith("0 evaluator x checkpoint units written, 1 already")
    # bad overrides: exit 2, nothing run
    assert main(["run", str(batch), "steps=[7]"]) == 2
    assert "steps [7] are not in" in capsys.readouterr().err
    assert main(["run", str(batch), "steps"]) == 2
    assert "override 'steps' must look like key=value" in capsys.readouterr().err
    assert main(["run", str(batch), "colour=red"]) == 2
    assert "unknown key 'colour'" in capsys.readouterr().err
    assert len(store.parts("token-loss")) == 2


def test_run_exits_1_when_a_unit_fails(tmp_path, capsys):
    broken = make_tiny_suite(tmp_path / "suite", "neox", steps=(0, 1))
    weights = next((broken / "tiny-neox-0" / "step1").glob("*.safetensors"))
    weights.write_bytes(b"not a safetensors file")
    batch = _batch(tmp_path, broken)
    assert main(["run", str(batch), "-q"]) == 1
    out = capsys.readouterr().out
    assert "1 failed" in out and "FAILED tiny-neox/tiny-neox-0@step1 [load]: Checkpoint" in out
    assert [p.name for p in Store(tmp_path / "out").parts("token-loss")] == ["step=0.parquet"]
    # issue 28: a rerun does not count the recorded failure as done: exit 1, named, with the fix
    assert main(["run", str(batch), "-q"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("0 evaluator x checkpoint units written, 1 already stored, 0 failed, "
                          "1 failed in an earlier run and not retried")
    assert "FAILED EARLIER tiny-neox/tiny-neox-0@step1 [load]: CheckpointUnavailableError" in out
    assert "--retry-failed" in out
    assert main(["run", str(batch), "-q", "--retry-failed"]) == 1  # retried: fails again
    assert "FAILED tiny-neox/tiny-neox-0@step1 [load]" in capsys.readouterr().out


def test_verbose_shows_the_traceback_of_a_one_line_error(tmp_path, capsys):
    batch = tmp_path / "batch.toml"
    batch.write_text('suite = "pythia"\noutput = "out"\ndevice = "cdua"\n\n'
                     '[evaluators.token-loss]\ndataset = "x/y"\n')
    assert main(["run", str(batch)]) == 2
    quiet = capsys.readouterr().err
    assert "Traceback" not in quiet and len(_errors(quiet)) == 1
    for argv in (["-v", "run", str(batch)], ["run", str(batch), "-v"]):
        assert main(argv) == 2
        loud = capsys.readouterr().err
        assert "Traceback (most recent call last)" in loud and "ConfigError" in loud
        assert _errors(loud) == _errors(quiet)


@pytest.fixture(scope="module")
def store(tmp_path_factory, suite) -> Path:
    root = tmp_path_factory.mktemp("run")
    assert main(["run", str(_batch(root, suite)), "-q"]) == 0
    return root / "out"


def test_report_exit_codes(tmp_path, store, capsys, monkeypatch):
    import reports.build

    monkeypatch.setattr(reports.build, "SECTIONS", (reports.build.ppl_section,))  # fast
    assert main(["report", str(store), "--out", str(tmp_path / "ok"), "--no-images"]) == 0
    assert (tmp_path / "ok" / "index.html").is_file() and not _errors(capsys.readouterr().err)
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r")]) == 2
    assert "no results in" in capsys.readouterr().err and not (tmp_path / "r").exists()
    assert main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 2
    assert "no results store at" in capsys.readouterr().err

    def planted(ctx):
        raise RuntimeError("planted section bug")

    monkeypatch.setattr(reports.build, "SECTIONS", (reports.build.ppl_section, planted))
    assert main(["report", str(store), "--out", str(tmp_path / "bad"), "--no-images"]) == 1
    err = capsys.readouterr().err
    assert "report section 'planted' failed: RuntimeError: planted section bug" in err
    assert "1 report section(s) failed" in err and "Traceback" not in err
    assert "planted section bug" in (tmp_path / "bad" / "index.html").read_text()


def test_report_verbose_logs_the_failed_section_traceback(tmp_path, store, caplog, monkeypatch):
    import logging

    import reports.build

    def planted(ctx):
        raise RuntimeError("planted section bug")

    monkeypatch.setattr(logging.getLogger(), "level", logging.getLogger().level)  # restored
    monkeypatch.setattr(reports.build, "SECTIONS", (planted,))
    for argv, traced in ((["report"], False), (["-v", "report"], True)):
        caplog.clear()
        assert main([*argv, str(store), "--out", str(tmp_path / "r"), "--no-images"]) == 1
        (record,) = [r for r in caplog.records if "report section planted failed" in r.message]
        assert bool(record.exc_info) is traced


def test_help_opens_with_what_the_tool_does_and_a_first_command(capsys):
    """Issue 28: `dynamics --help` says in a line what the tool does and shows a first
    command (it opened with a note for developers); `dynamics --version` prints the version."""
    from importlib.metadata import version

    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    after_usage = text.split("\n\n", 1)[1].splitlines()
    assert after_usage[0] == ("Evaluate every checkpoint of a model suite and relate behaviors "
                              "to perplexity.")
    assert after_usage[2] == "first command:  dynamics demo"
    assert "composition root" not in text and "wires layers" not in text
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"dynamics {version('training-dynamics')}\n"
    assert version("training-dynamics") == "0.1.0"  # pyproject.toml's [project] version
