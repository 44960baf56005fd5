"""Pickle checkpoints load safely by default: Pythia's `step{N}` revisions hold only
`pytorch_model-0000N-of-00003.bin` shards and their index, read here with torch's
restricted unpickler; a pickle that would run code is refused, naming the global,
and its code never runs (dynamics.weights, dynamics.loading)."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
import torch

from dynamics.checkpoints import CheckpointRef, CheckpointUnavailableError
from dynamics.loading import LoadOptions, load_checkpoint
from dynamics.tiny import count_params, save_pickle_checkpoint, tiny_gpt_neox
from dynamics.weights import (
    UnsafeWeightsError,
    WeightFiles,
    choose_weights,
    folder_weights,
    load_pickle_state_dict,
    refused_global,
)
from evals.config import load_batch
from evals.execute import run_batch
from evals.store import Store
from tests.helpers import tiny_tokenizer, write_val
from tests.hub_server import TinyHub, point_hub_at

REPO = "tiny/pythia-tiny"
STEPS = (0, 10)
PARAMS = 33_728  # tiny_gpt_neox(vocab 259, hidden 32, 2 layers): asserted below


def _pythia_buffers(model) -> dict:
    """The attention buffers Pythia's .bin files hold beside the weights (not parameters)."""
    n, ctx = model.config.num_hidden_layers, model.config.max_position_embeddings
    out = {}
    for i in range(n):
        at = f"gpt_neox.layers.{i}.attention"
        out[f"{at}.bias"] = torch.ones(1, 1, ctx, ctx, dtype=torch.bool).tril()
        out[f"{at}.masked_bias"] = torch.tensor(-1e9)
        out[f"{at}.rotary_emb.inv_freq"] = torch.rand(2)
    return out


def _model(step: int):
    return tiny_gpt_neox(vocab_size=len(tiny_tokenizer()), hidden_size=32, seed=7 + step)


@pytest.fixture(scope="module")
def pythia_like(tmp_path_factory):
    """Revisions step0/step10: 3 pickle shards + index (+ a decoy training_args.bin);
    `main`: the step10 weights as both model.safetensors and pytorch_model.bin."""
    root = tmp_path_factory.mktemp("pythia-like")
    folders = {}
    for step in STEPS:
        model = _model(step)
        folder = save_pickle_checkpoint(model, tiny_tokenizer(), root / f"step{step}", shards=3,
                                        extra=_pythia_buffers(model))
        (folder / "training_args.bin").write_bytes(b"not weights: never fetched or read")
        folders[f"step{step}"] = folder
    main = save_pickle_checkpoint(_model(10), tiny_tokenizer(), root / "main")
    _model(10).save_pretrained(main, safe_serialization=True)
    folders["main"] = main
    return folders


@pytest.fixture
def hub(pythia_like, tmp_path, monkeypatch):
    server = TinyHub()
    for rev, folder in pythia_like.items():
        server.add_revision(REPO, rev, folder)
    server.serve()
    point_hub_at(server, monkeypatch, tmp_path / "cache")
    yield server
    server.close()


def _ref(rev: str, step: int) -> CheckpointRef:
    return CheckpointRef("tiny-pythia", "pythia-tiny", PARAMS, step, step * 1000, source=REPO,
                         revision=rev)


def _fetched(hub) -> list[str]:
    return sorted({p.rsplit("/", 1)[1] for m, p in hub.requests if m == "GET" and "/resolve/" in p})


def test_pythia_shaped_bin_revisions_load_by_default_with_the_original_logits(hub):
    ids = torch.randint(0, len(tiny_tokenizer()), (2, 20),
                        generator=torch.Generator().manual_seed(0))
    logits = {}
    for step in STEPS:
        original = _model(step)
        assert count_params(original) == PARAMS
        loaded = load_checkpoint(_ref(f"step{step}", step))  # default options: no opt-in
        with torch.no_grad():
            logits[step] = loaded.model(ids).logits
            assert torch.equal(logits[step], original(ids).logits)
    assert not torch.allclose(logits[0], logits[10])  # each revision its own weights
    shards = [f"pytorch_model-0000{i}-of-00003.bin" for i in (1, 2, 3)]
    assert _fetched(hub) == sorted(["config.json", "pytorch_model.bin.index.json", *shards,
                                    "tokenizer.json", "tokenizer_config.json"])  # no decoy


def test_a_revision_with_both_formats_fetches_only_safetensors(hub):
    loaded = load_checkpoint(_ref("main", 10))
    fetched = _fetched(hub)
    assert "model.safetensors" in fetched and not any(f.endswith(".bin") for f in fetched)
    assert next(loaded.model.parameters()).dtype == torch.float32


def test_a_sweep_over_bin_only_revisions_runs_by_default(hub, tmp_path, monkeypatch):
    import dynamics.suites
    from dynamics.suites import Suite

    suite = Suite("tiny-pythia", "bin-only revisions", {"pythia-tiny": [
        _ref(f"step{s}", s) for s in STEPS]})
    monkeypatch.setitem(dynamics.suites.BUILTIN_SUITES, "tiny-pythia", lambda: suite)
    cfg = load_batch({"suite": "tiny-pythia", "output": str(tmp_path / "out"),
                      "evaluators": {"token-loss": {"dataset": str(write_val(tmp_path / "v.jsonl",
                                                                            4)), "context": 32}}})
    result = run_batch(cfg, progress=False)
    assert not result.failed and len(result.written) == 2
    assert Store(tmp_path / "out").read("token-loss").height > 0


class _Payload:
    """Unpickling this calls eval, which writes `marker`, then returns a tensor."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        code = (f"__import__('pathlib').Path({self.marker!r}).write_text('ran') or "
                "__import__('torch').zeros(())")
        return (eval, (code,))


def _malicious_checkpoint(tmp_path):
    model = _model(0)
    marker = tmp_path / "payload-ran"
    folder = save_pickle_checkpoint(model, tiny_tokenizer(), tmp_path / "evil", extra={
        "gpt_neox.layers.0.attention.masked_bias": _Payload(marker)})
    return folder, marker


def test_code_running_pickle_is_refused_naming_the_global_and_never_runs(tmp_path):
    folder, marker = _malicious_checkpoint(tmp_path)
    ref = CheckpointRef("t", "evil", PARAMS, 0, 0, source=str(folder), is_local=True)
    with pytest.raises(UnsafeWeightsError) as err:
        load_checkpoint(ref)
    text = str(err.value)
    assert "\n" not in text and text.startswith("pytorch_model.bin: torch's restricted "
                                                "unpickler refused global builtins.eval")
    assert "allow_pickle = true" in text
    assert not marker.exists()  # the payload never ran

    # in a batch: a recorded load failure, the same line; still nothing ran
    cfg = load_batch({"suite": str(_local_suite(tmp_path, folder)), "output": str(tmp_path / "o"),
                      "evaluators": {"token-loss": {"dataset": str(write_val(tmp_path / "v.jsonl",
                                                                            3))}}})
    [(_, what, line)] = run_batch(cfg, progress=False).failed
    assert what == "load" and "refused global builtins.eval" in line and not marker.exists()


def test_allow_pickle_is_the_only_way_to_the_unrestricted_unpickler(tmp_path, caplog):
    folder, marker = _malicious_checkpoint(tmp_path)
    ref = CheckpointRef("t", "evil", PARAMS, 0, 0, source=str(folder), is_local=True)
    loaded = load_checkpoint(ref, LoadOptions(allow_pickle=True))
    assert marker.read_text() == "ran"  # opted in: the unrestricted unpickler ran it
    assert count_params(loaded.model) == PARAMS
    assert "builtins.eval refused" in caplog.text


def _local_suite(tmp_path, folder):
    from dynamics.manifest import write_manifest

    write_manifest(tmp_path / "suite.toml", "evil", [{"name": "evil", "params": PARAMS,
                                                      "checkpoints": [{"step": 0, "path":
                                                                       folder.name}]}],
                   family="evil", tokens_per_step=1)
    return tmp_path / "suite.toml"


def test_refused_global_is_read_from_both_of_torchs_wordings(tmp_path):
    import os

    class System:
        def __reduce__(self):
            return (os.system, ("true",))

    names = []
    for i, obj in enumerate((System(), _Payload(tmp_path / "m"))):
        path = tmp_path / f"{i}.bin"
        torch.save({"w": torch.ones(1), "x": obj}, path)
        with pytest.raises(pickle.UnpicklingError) as err:
            torch.load(path, weights_only=True)
        names.append(refused_global(err.value))
    assert names == [f"{os.name == 'posix' and 'posix' or 'nt'}.system", "builtins.eval"]
    assert refused_global(ValueError("something else")) is None


def test_a_file_that_is_not_a_pickle_is_a_load_error_not_a_refusal(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(b"pickle")
    with pytest.raises(CheckpointUnavailableError) as err:
        load_pickle_state_dict([path])
    assert not isinstance(err.value, UnsafeWeightsError)
    assert str(err.value).startswith("pytorch_model.bin: torch's restricted unpickler cannot "
                                     "read it (Unsupported operand 112)")


def test_choose_weights_from_a_listing():
    step = ["config.json", "pytorch_model.bin.index.json", "pytorch_model-00001-of-00002.bin",
            "pytorch_model-00002-of-00002.bin", "training_args.bin", "tokenizer.json"]
    assert choose_weights(step) == WeightFiles(
        "pickle", "pytorch_model.bin.index.json",
        ("pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"))
    both = ["pytorch_model.bin", "model.safetensors", "config.json"]
    assert choose_weights(both) == WeightFiles("safetensors", None, ("model.safetensors",))
    assert choose_weights(["config.json", "training_args.bin", "optimizer.pt"]) is None


def test_an_index_naming_a_missing_shard_is_an_error(pythia_like, tmp_path):
    import shutil

    folder = shutil.copytree(pythia_like["step0"], tmp_path / "partial")
    (folder / "pytorch_model-00002-of-00003.bin").unlink()
    with pytest.raises(CheckpointUnavailableError, match="pytorch_model-00002-of-00003.bin"):
        folder_weights(folder)
    state = load_pickle_state_dict([folder / "pytorch_model-00001-of-00003.bin"])
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_pickle_weights_load_in_the_batch_dtype(pythia_like):
    ref = dataclasses.replace(_ref("step0", 0), source=str(pythia_like["step0"]), is_local=True,
                              revision=None)
    loaded = load_checkpoint(ref, LoadOptions(dtype="bfloat16"))
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
