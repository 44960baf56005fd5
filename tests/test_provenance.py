"""Issue 33: every stored part knows what produced it; only whole parts count as stored;
checkpoints load exactly; inputs are read once, up front; Ctrl-C leaves a whole store."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import polars as pl
import pytest

from dynamics.cli import main
from evals.config import load_batch, load_batch_file
from evals.execute import run_batch
from evals.store import Store
from tests.helpers import make_tiny_suite, write_val

TL = {"dataset": "val.jsonl", "context": 32, "max_tokens": 300}


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    return make_tiny_suite(tmp_path_factory.mktemp("prov"), "neox", steps=(0, 10, 20))


def _folder(tmp_path: Path, suite: Path, **tl) -> Path:
    """A self-contained folder: suite, data, batch.toml (relative paths), store `out`."""
    from dynamics.toml_writer import dumps

    root = tmp_path / "work"
    if not root.exists():
        shutil.copytree(suite, root / "suite")
        write_val(root / "val.jsonl", n=8)
    (root / "batch.toml").write_text(dumps({"suite": "suite", "output": "out",
                                            "evaluators": {"token-loss": {**TL, **tl}}}))
    return root


def _mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("step=*.*")}


def test_changed_options_are_refused_then_rescored_on_request(tmp_path, suite, capsys):
    root = _folder(tmp_path, suite)
    assert main(["run", str(root / "batch.toml"), "-q"]) == 0
    store = Store(root / "out")
    assert store.read("token-loss").group_by("step").len()["len"].max() == 299
    rec = store.read_record("token-loss", store.read("token-loss").row(0, named=True))
    assert rec["provenance"]["options"]["max_tokens"] == 300 and "dataset" in rec["provenance"][
        "options"] and "val.jsonl" not in json.dumps(rec["provenance"])  # content, not path
    assert rec["checkpoint"]["sha256"]["config.json"] and rec["tokenizer"]
    before, toml = _mtimes(root / "out"), (root / "out" / "batch.toml").read_text()
    _folder(tmp_path, suite, max_tokens=200)
    assert main(["run", str(root / "batch.toml"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "max_tokens = 200 in this batch, 300 in the stored units" in err and "--rescore" in err
    assert _mtimes(root / "out") == before and (root / "out" / "batch.toml").read_text() == toml
    assert main(["run", str(root / "batch.toml"), "-q", "--rescore"]) == 0
    assert capsys.readouterr().out.startswith("3 evaluator x checkpoint units written")
    frame = store.read("token-loss")
    assert frame.height == 3 * 199 and frame.group_by("step").len()["len"].to_list() == [199] * 3
    assert "max_tokens = 200" in (root / "out" / "batch.toml").read_text()
    assert main(["run", str(root / "batch.toml"), "-q"]) == 0  # one experiment again: resumes
    assert capsys.readouterr().out.startswith("0 evaluator x checkpoint units written, 3 already")


def test_rescore_refuses_units_outside_the_selection(tmp_path, suite):
    from evals.sweep import ProvenanceError

    root = _folder(tmp_path, suite)
    run_batch(load_batch_file(root / "batch.toml"), progress=False)
    cfg = load_batch_file(root / "batch.toml", ["steps=[0]", "evaluators={'token-loss'={"
                                                "dataset='val.jsonl', max_tokens=50}}"])
    with pytest.raises(ProvenanceError, match=r"2 stored unit\(s\) with other options are "
                                              r"outside .* tiny-neox/tiny-neox-0@step10"):
        run_batch(cfg, progress=False, rescore=True)


def test_records_without_parts_block_nothing(tmp_path, suite):
    """A user who deletes a table's parts to redo it with other options is not refused."""
    root = _folder(tmp_path, suite)
    run_batch(load_batch_file(root / "batch.toml"), progress=False)
    shutil.rmtree(root / "out" / "token-loss")
    _folder(tmp_path, suite, max_tokens=100)
    again = run_batch(load_batch_file(root / "batch.toml"), progress=False)
    assert len(again.written) == 3
    assert Store(root / "out").read("token-loss").height == 3 * 99


def test_runtime_options_are_not_provenance(tmp_path, suite):
    """Batch sizes change speed and memory, not what is scored: no refusal, nothing redone."""
    root = _folder(tmp_path, suite)
    run_batch(load_batch_file(root / "batch.toml"), progress=False)
    _folder(tmp_path, suite, batch_size=1, chunk_rows=7)
    again = run_batch(load_batch_file(root / "batch.toml"), progress=False)
    assert again.written == [] and again.skipped == 3


def test_a_moved_folder_resumes_generate_tables_included(tmp_path, suite, monkeypatch):
    import evals.mixture
    from dynamics.toml_writer import dumps

    calls = []
    real = evals.mixture.generate_from_refs
    monkeypatch.setattr(evals.mixture, "generate_from_refs",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    root = _folder(tmp_path, suite)
    (root / "batch.toml").write_text(dumps({
        "suite": "suite", "output": "out", "evaluators": {"token-loss": TL},
        "generate": {"mix": {"small": "tiny-neox-0", "large": "tiny-neox-0", "step_small": 0,
                             "grid": [[1, 0], [0, 1]], "n_prompts": 3, "prompt_tokens": 4,
                             "max_new_tokens": 4}}}))
    first = run_batch(load_batch_file(root / "batch.toml"), progress=False)
    assert not first.failed and len(first.written) == 6 and calls == [1]
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(root, moved)
    again = run_batch(load_batch_file(moved / "batch.toml"), progress=False)
    assert again.written == [] and again.skipped == 6 and calls == [1]
    copied = tmp_path / "copied"  # a copy (new mtimes): parts are checked by content
    shutil.copytree(moved, copied)
    assert run_batch(load_batch_file(copied / "batch.toml"), progress=False).written == []


def test_damaged_or_unrecorded_parts_are_redone_with_a_warning(tmp_path, suite, caplog):
    root = _folder(tmp_path, suite)
    cfg = load_batch_file(root / "batch.toml")
    run_batch(cfg, progress=False)
    store = Store(root / "out")
    p0, p10, p20 = store.parts("token-loss")
    good = {p: p.read_bytes() for p in (p0, p10, p20)}
    p10.write_bytes(good[p10][:200])  # truncated
    data = bytearray(good[p20])
    data[len(data) // 2] ^= 0xFF  # same size, other content
    p20.write_bytes(bytes(data))
    store.record_path("token-loss", {"family": "tiny-neox", "model": "tiny-neox-0",
                                     "step": 0}).unlink()  # a part with no record
    with caplog.at_level(logging.WARNING):
        result = run_batch(cfg, progress=False)
    assert sorted(label for label, _ in result.written) == [
        f"tiny-neox/tiny-neox-0@step{s}" for s in (0, 10, 20)]
    text = caplog.text
    assert f"{p10} holds" in text and "truncated or rewritten" in text
    assert f"{p20} differs from the part its record describes" in text
    assert f"1 stored part(s) have no provenance record (an interrupted write, or a store " \
           f"written by an older version), e.g. {p0}" in text
    assert all(p.read_bytes() == good[p] for p in (p0, p10, p20))  # redone: the same bytes


def test_a_scoring_that_yields_no_row_is_never_stored(tmp_path, suite):
    from evals.base import Evaluator
    from evals.sweep import run_unit

    class Empty(Evaluator):
        name, tables, Options = "token-loss", ("token-loss",), dict

        def run(self, lm):
            return {"token-loss": pl.DataFrame(schema={"doc_id": pl.Int64,
                                                       "token_index": pl.Int64,
                                                       "token_id": pl.Int64,
                                                       "loss_nats": pl.Float32})}

    from dynamics.suites import get_suite

    ref = get_suite(str(suite)).select(None, [0])[0]
    store = Store(tmp_path / "out")
    with pytest.raises(ValueError, match="scored nothing"):
        run_unit(store, Empty({}), None, ref)
    assert store.parts("token-loss") == [] and store.read_record("token-loss", ref.key) is None


def test_datasets_are_read_once_before_any_checkpoint(tmp_path, suite, monkeypatch):
    from evals.texts import TextSource

    root = _folder(tmp_path, suite)
    reads, loads = [], []
    real = TextSource.documents
    monkeypatch.setattr(TextSource, "documents", lambda self: reads.append(1) or real(self))

    def loader(ref, options):
        from dynamics.loading import load_checkpoint

        loads.append(ref.step)
        return load_checkpoint(ref, options)

    result = run_batch(load_batch_file(root / "batch.toml"), progress=False, loader=loader)
    assert len(result.written) == 3 and reads == [1] and sorted(loads) == [0, 10, 20]
    (root / "val.jsonl").write_text('{"text": "a"}\n{"text": \n')
    reads.clear(), loads.clear()
    with pytest.raises(ValueError, match=r"val.jsonl: line 2 is not valid JSON"):
        run_batch(load_batch_file(root / "batch.toml"), progress=False, loader=loader)
    assert loads == [] and Store(root / "out").failures().height == 0


def test_hub_dataset_is_read_once_per_run(tmp_path, suite, monkeypatch):
    """A hub dataset name (no local file) is loaded at the first check, once per run."""
    from evals.texts import TextSource

    root = _folder(tmp_path, suite, dataset="some-org/some-set")
    reads = []
    monkeypatch.setattr(TextSource, "documents", lambda self: reads.append(self.dataset) or
                        iter(["the cat sat on a mat"] * 20))
    result = run_batch(load_batch_file(root / "batch.toml"), progress=False)
    assert len(result.written) == 3 and reads == ["some-org/some-set"]


# -- exact loading ---------------------------------------------------------------------
def _copy_ckpt(suite: Path, tmp_path: Path, step: int = 20) -> Path:
    folder = tmp_path / "ckpt"
    shutil.copytree(suite / "tiny-neox-0" / f"step{step}", folder)
    return folder


def _ref(folder: Path):
    from dynamics.checkpoints import CheckpointRef

    return CheckpointRef("tiny-neox", "tiny-neox-0", 0, 20, 0, source=str(folder), is_local=True)


def test_unexpected_and_missing_weights_refuse_the_checkpoint(tmp_path, suite):
    from safetensors.torch import load_file, save_file

    from dynamics.exact import InexactLoadError
    from dynamics.loading import load_checkpoint

    folder = _copy_ckpt(suite, tmp_path)
    weights = load_file(folder / "model.safetensors")
    extra = {**weights, "gpt_neox.layers.9.mlp.dense_h_to_4h.weight": weights[next(iter(
        weights))].clone()}
    save_file(extra, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(InexactLoadError, match=r"1 weights the model does not use "
                                               r"\(gpt_neox.layers.9.mlp.dense_h_to_4h.weight\)"):
        load_checkpoint(_ref(folder))
    dropped = {k: v for k, v in weights.items() if "layers.1.attention.dense" not in k}
    save_file(dropped, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(InexactLoadError, match=r"2 weights missing from the checkpoint "
                                               r"\(gpt_neox.layers.1.attention.dense.bias, "):
        load_checkpoint(_ref(folder))


def test_arch_reference_names_the_field_and_both_values(tmp_path, suite):
    from dynamics.exact import ArchitectureMismatchError, ArchReference
    from dynamics.suites import get_suite

    refs = get_suite(str(suite)).checkpoints("tiny-neox-0")
    arch = ArchReference({"tiny-neox-0": refs[0]})
    config = json.loads((Path(refs[2].source) / "config.json").read_text())
    arch.check(refs[2], config)  # equal: passes
    config.update(num_attention_heads=2, rotary_pct=0.5)
    with pytest.raises(ArchitectureMismatchError) as err:
        arch.check(refs[2], config)
    assert "num_attention_heads = 2 where tiny-neox/tiny-neox-0@step0 has 4" in str(err.value)
    assert "rotary_pct = 0.5 where" in str(err.value)


# -- Ctrl-C --------------------------------------------------------------------------------
def test_ctrl_c_exits_130_with_the_count_and_a_whole_store(tmp_path, suite, capsys,
                                                           monkeypatch):
    import evals.sweep

    root = _folder(tmp_path, suite)
    real, seen = evals.sweep.run_checkpoint, []

    def interrupted(*args, **kwargs):
        if len(seen) == 2:
            raise KeyboardInterrupt
        seen.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(evals.sweep, "run_checkpoint", interrupted)
    assert main(["run", str(root / "batch.toml"), "-q"]) == 130
    out, err = capsys.readouterr()
    assert err.strip().splitlines()[-1] == "interrupted: 2 units stored; rerun to continue"
    assert "Traceback" not in out + err
    out_dir = root / "out"
    assert not (out_dir / "_lock.json").exists() and not list(out_dir.rglob("*.tmp"))
    assert len(Store(out_dir).parts("token-loss")) == 2
    monkeypatch.setattr(evals.sweep, "run_checkpoint", real)
    assert main(["run", str(root / "batch.toml"), "-q"]) == 0
    assert capsys.readouterr().out.startswith("1 evaluator x checkpoint units written, 2 already")


def test_stats_warnings_print_once_as_one_line(capsys, monkeypatch):
    import warnings

    from dynamics import cli

    def verb(args):
        for _ in range(3):
            warnings.warn("m: window holds 2 checkpoints; not classified", stacklevel=1)
        warnings.warn("m2: window holds 1 checkpoints; not classified", stacklevel=1)
        return 0

    monkeypatch.setattr(cli, "cmd_suites", verb)
    monkeypatch.setattr(warnings, "filters", [])  # as a plain shell sees them (no pytest filter)
    assert main(["suites"]) == 0
    err = capsys.readouterr().err
    assert err.splitlines() == ["warning: m: window holds 2 checkpoints; not classified",
                                "warning: m2: window holds 1 checkpoints; not classified"]


def test_load_batch_refuses_relative_paths_outside_the_batch_folder(tmp_path, monkeypatch):
    (tmp_path / "cwd").mkdir()
    write_val(tmp_path / "cwd" / "v.jsonl")
    monkeypatch.chdir(tmp_path / "cwd")
    from evals.base import ConfigError

    with pytest.raises(ConfigError, match=r"dataset = 'v.jsonl': no such file \(looked for "
                                          rf"{tmp_path / 'b' / 'v.jsonl'}\)"):
        load_batch({"suite": "pythia", "output": "o", "models": ["pythia-70m"], "steps": [0],
                    "evaluators": {"token-loss": {"dataset": "v.jsonl"}}}, tmp_path / "b")


@pytest.mark.parametrize("name,data,needle", [
    ("a.json", b'[{"text": "a"}, {"txt": "b"}]', "record 2 has no field 'text'"),
    ("a.json", b'{"text": "a"}\n{"text": \n', "line 2 is not valid JSON"),
    ("a.csv", b"txt,other\nx,y\n", "the header has no column 'text'"),
    ("a.txt", b"caf\xe9\n", "not UTF-8 text: byte offset 3 (line 1)"),
    ("a.parquet", b"PAR1 not really", "not a readable parquet file"),
    ("a.jsonl", b"\n\n  \n", "the file is empty"),
])
def test_input_files_are_checked_by_format(tmp_path, name, data, needle):
    from evals.inputs import InputError, check_records_file

    (tmp_path / name).write_bytes(data)
    with pytest.raises(InputError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        check_records_file(tmp_path / name, ("text",))
    pl.DataFrame({"txt": ["a"]}).write_parquet(tmp_path / "b.parquet")
    with pytest.raises(InputError, match="no column 'text'"):
        check_records_file(tmp_path / "b.parquet", ("text",))
