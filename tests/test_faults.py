"""Issue #9: faults, bad input and unsafe input; completed parts stay untouched."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
import torch

from dynamics.checkpoints import CheckpointRef, CheckpointUnavailableError
from dynamics.loading import LoadOptions, fetch_checkpoint, load_checkpoint
from dynamics.manifest import write_manifest
from dynamics.suites import SuiteError, get_suite
from dynamics.tiny import count_params, save_checkpoint, tiny_gpt_neox, train_bpe_tokenizer
from evals.base import ConfigError
from evals.config import load_batch
from evals.execute import run_batch
from evals.store import Store, StoreLockedError
from tests.helpers import make_tiny_suite, sample_texts, tiny_tokenizer, write_val


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return make_tiny_suite(tmp_path_factory.mktemp("faults"), "neox", steps=(0, 10, 20))


def _batch(suite, out, val, **extra):
    return {"suite": str(suite), "output": str(out), **extra,
            "evaluators": {"token-loss": {"dataset": str(val), "context": 32}}}


def _mtimes(out: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in out.rglob("step=*.parquet")}


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# -- lock -------------------------------------------------------------------
def test_second_run_is_refused_naming_the_holder(tmp_path, suite):
    val = write_val(tmp_path / "val.jsonl", n=3)
    out = tmp_path / "out"
    (out / "x").mkdir(parents=True)
    cfg = load_batch(_batch(suite, out, val))
    with Store(out).lock():
        with pytest.raises(StoreLockedError) as err:
            run_batch(cfg, progress=False)
    msg = str(err.value)
    assert f"pid {os.getpid()}" in msg and socket.gethostname() in msg and "started" in msg
    assert not (out / "_lock.json").exists()  # released by its owner
    assert not list(out.rglob("*.parquet"))


def test_stale_lock_is_taken_over(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    body = {"pid": _dead_pid(), "host": socket.gethostname(), "started": 0}
    (out / "_lock.json").write_text(json.dumps(body))
    with Store(out).lock() as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_lock_of_other_host_is_respected(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "_lock.json").write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": 0}))
    with pytest.raises(StoreLockedError, match="pid 1 on host elsewhere"):
        with Store(out).lock():
            pass


# -- non-finite, load failures, retry -----------------------------------------
@pytest.mark.slow
def test_nan_weights_and_broken_file_recorded_then_retried(tmp_path, suite):
    import shutil

    local = tmp_path / "suite"
    shutil.copytree(suite, local)
    nan_model = tiny_gpt_neox(vocab_size=len(tiny_tokenizer()), hidden_size=32, seed=10)
    with torch.no_grad():
        nan_model.get_output_embeddings().weight[0, 0] = float("nan")
    save_checkpoint(nan_model, tiny_tokenizer(), local / "tiny-neox-0" / "step10")
    good = (local / "tiny-neox-0" / "step20" / "model.safetensors").read_bytes()
    (local / "tiny-neox-0" / "step20" / "model.safetensors").write_bytes(b"broken")
    val = write_val(tmp_path / "val.jsonl", n=3)
    out = tmp_path / "out"
    cfg = load_batch(_batch(local, out, val))
    result = run_batch(cfg, progress=False)
    failed = {(what, err.split(":")[0]) for _, what, err in result.failed}
    assert failed == {("token-loss", "FloatingPointError"), ("load", "CheckpointUnavailableError")}
    assert any("non-finite" in err for *_, err in result.failed)
    store = Store(out)
    assert len(store.parts("token-loss")) == 1 and store.failures().height == 2
    done = _mtimes(out)
    again = run_batch(cfg, progress=False)  # failures are skipped without --retry-failed
    assert again.written == [] and again.failed == [] and _mtimes(out) == done
    (local / "tiny-neox-0" / "step20" / "model.safetensors").write_bytes(good)
    retry = run_batch(cfg, retry_failed=True, progress=False)
    assert sorted(w for w in retry.written) == [(retry.written[0][0], "token-loss")]
    assert [what for _, what, _ in retry.failed] == ["token-loss"]  # NaN model fails again
    assert _mtimes(out).items() >= done.items()  # completed part untouched
    assert len(store.parts("token-loss")) == 2
    assert store.failures()["what"].to_list() == ["token-loss"]


# -- bad input ------------------------------------------------------------------
def test_every_config_problem_reported_once(tmp_path, suite):
    val = write_val(tmp_path / "val.jsonl", n=3)
    bad = {"suite": str(suite), "output": str(tmp_path / "out"), "prefetch": "yes",
           "colour": "red", "models": ["tiny-neox-0", "tiny-neox-9"],
           "evaluators": {"token-los": {}, "token-loss": {"dataset": str(val), "contxt": 3}}}
    with pytest.raises(ConfigError) as err:
        load_batch(bad)
    text = "\n".join(err.value.problems)
    needles = ("'colour'", "prefetch = 'yes'", "'tiny-neox-9'", "evaluator 'token-los'",
               "'contxt'")
    for needle in needles:  # each problem once, none hidden by another (issue #18)
        assert sum(needle in p for p in err.value.problems) == 1, (needle, text)
    assert len(err.value.problems) == len(needles), text
    steps = {"suite": str(suite), "output": str(tmp_path / "out"), "steps": [10, 99],
             "evaluators": {"token-loss": {"dataset": str(val)}}}
    with pytest.raises(ConfigError, match="99"):
        load_batch(steps)
    models = {**steps, "steps": "all", "models": ["tiny-neox-9"]}
    with pytest.raises(ConfigError, match="tiny-neox-9"):
        load_batch(models)
    assert not (tmp_path / "out").exists()  # nothing touched before validation passes


@pytest.mark.slow
def test_tokenizer_change_within_suite_is_retokenized(tmp_path):
    tok_a = tiny_tokenizer()
    tok_b = train_bpe_tokenizer(sample_texts(300, seed=7), vocab_size=400)
    assert tok_a.get_vocab() != tok_b.get_vocab()
    ckpts = []
    for step, tok in ((0, tok_a), (10, tok_b)):
        # one padded vocabulary for both: the suite declares one params count per model,
        # checked on load (issue 17)
        model = tiny_gpt_neox(vocab_size=max(len(tok_a), len(tok_b)), hidden_size=32, seed=step)
        save_checkpoint(model, tok, tmp_path / "s" / "m" / f"step{step}")
        ckpts.append({"step": step, "path": f"m/step{step}"})
    write_manifest(tmp_path / "s" / "suite.toml", "two-tok",
                   [{"name": "m", "params": count_params(model), "checkpoints": ckpts}],
                   family="two-tok", tokens_per_step=100)
    val = write_val(tmp_path / "val.jsonl", n=3)
    result = run_batch(load_batch(_batch(tmp_path / "s", tmp_path / "out", val)), progress=False)
    assert not result.failed
    frame = Store(tmp_path / "out").read("token-loss")
    text = json.loads(val.read_text().splitlines()[0])["text"]
    for step, tok in ((0, tok_a), (10, tok_b)):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        got = frame.filter(frame["step"] == step).sort("doc_id", "token_index")
        assert got["token_id"].to_list()[: len(ids) - 1] == ids[1:]


# -- security -------------------------------------------------------------------
def test_offline_hub_fetch_asks_only_for_weight_files_by_name(tmp_path, monkeypatch, suite):
    """Pickle-only revisions load by default now (restricted unpickler, tests/
    test_pickle_weights.py); offline, the cache is asked for transformers' weight names
    only, never for any *.bin (a training_args.bin is a pickle of arbitrary objects)."""
    folder = tmp_path / "snap"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    seen = []

    def fake_download(repo, revision=None, cache_dir=None, allow_patterns=()):
        seen.append(list(allow_patterns))
        return str(folder)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    ref = CheckpointRef("pythia", "pythia-70m", 70, 1000, 2000, source="EleutherAI/pythia-70m",
                        revision="step1000")
    assert fetch_checkpoint(ref, LoadOptions()) == folder
    assert "*.bin" not in seen[0] and "pytorch_model*.bin" in seen[0]
    with pytest.raises(CheckpointUnavailableError, match="failed to load"):
        load_checkpoint(ref)  # b"pickle" is no zip or pickle file: a load error, not a crash


def test_trust_remote_code_off_unless_opted_in(monkeypatch, suite):
    import transformers

    calls = []
    real = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        calls.append(kwargs["trust_remote_code"])
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    ref = get_suite(suite).select(None, "final")[0]
    load_checkpoint(ref)
    assert calls == [False]


def test_manifest_symlink_cannot_escape(tmp_path, suite):
    root = tmp_path / "s"
    (root / "m").mkdir(parents=True)
    (root / "m" / "step0").symlink_to(suite / "tiny-neox-0" / "step0")
    write_manifest(root / "suite.toml", "esc", [{"name": "m", "params": 10, "checkpoints": [
        {"step": 0, "path": "m/step0"}]}], family="esc", tokens_per_step=1)
    with pytest.raises(SuiteError, match="escapes the suite folder"):
        get_suite(str(root)).select(None, "all")
