"""End-to-end batch on tiny local suites: correctness of token losses, store, resume, failures."""

from pathlib import Path

import polars as pl
import pytest
import torch

from dynamics.loading import load_checkpoint
from dynamics.suites import get_suite
from evals.base import ConfigError
from evals.config import load_batch
from evals.execute import run_batch
from evals.store import Store
from stats.perplexity import validation_ppl
from tests.helpers import make_tiny_suite, write_val


@pytest.fixture(scope="module")
def neox_suite(tmp_path_factory):
    return make_tiny_suite(tmp_path_factory.mktemp("neox"), "neox", steps=(0, 10, 20))


@pytest.fixture(scope="module")
def opt_suite(tmp_path_factory):
    return make_tiny_suite(tmp_path_factory.mktemp("opt"), "opt", steps=(0, 5))


def _batch(suite: Path, out: Path, val: Path, **extra) -> dict:
    return {"suite": str(suite), "output": str(out), "prefetch": True,
            "evaluators": {"token-loss": {"dataset": str(val), "context": 32, "batch_size": 3,
                                          "chunk_rows": 7, **extra}}}


@pytest.mark.parametrize("suite_name", ["neox_suite", "opt_suite"])
def test_token_losses_match_model_loss(request, tmp_path, suite_name):
    suite = request.getfixturevalue(suite_name)
    val = write_val(tmp_path / "val.jsonl")
    cfg = load_batch(_batch(suite, tmp_path / "out", val))
    result = run_batch(cfg, progress=False)
    assert not result.failed
    store = Store(tmp_path / "out")
    refs = get_suite(suite).select(None, "all")
    assert len(store.parts("token-loss")) == len(refs)
    frame = store.read("token-loss")
    ref = refs[-1]
    rows = frame.filter(pl.col("step") == ref.step)
    lm = load_checkpoint(ref)
    ids = torch.tensor(rows["token_id"].to_list())
    # Reassemble the stream: the first token (not scored) is the first token of doc 0.
    first = lm.tokenizer(write_val_texts(val)[0], add_special_tokens=False)["input_ids"][0]
    stream = torch.cat([torch.tensor([first]), ids])
    losses = torch.tensor(rows["loss_nats"].to_list())
    for start in range(0, len(stream) - 1, 31):  # windows of 32 overlapping by one
        window = stream[start:start + 32].unsqueeze(0)
        if window.shape[1] < 2:
            continue
        with torch.no_grad():
            expected = lm.model(input_ids=window, labels=window).loss.item()
        got = losses[start:start + window.shape[1] - 1].double().mean().item()
        assert abs(got - expected) < 1e-5


def write_val_texts(val: Path) -> list[str]:
    import json

    return [json.loads(line)["text"] for line in val.read_text().splitlines()]


def test_resume_does_no_work_and_ppl(tmp_path, neox_suite):
    val = write_val(tmp_path / "val.jsonl")
    cfg = load_batch(_batch(neox_suite, tmp_path / "out", val))
    first = run_batch(cfg, progress=False)
    assert len(first.written) == 3
    calls = []

    def counting_loader(ref, options):
        calls.append(ref)
        return load_checkpoint(ref, options)

    second = run_batch(cfg, progress=False, loader=counting_loader)
    assert second.written == [] and second.skipped == 3 and calls == []
    ppl = validation_ppl(Store(tmp_path / "out").scan("token-loss"))
    assert ppl.height == 3 and (ppl["val_ppl"] > 1).all()
    assert ppl["n_tokens"].n_unique() == 1


def test_corrupt_checkpoint_recorded_others_complete(tmp_path):
    suite = make_tiny_suite(tmp_path / "suite", "neox", steps=(0, 1, 2))
    weights = next((suite / "tiny-neox-0" / "step1").glob("*.safetensors"))
    weights.write_bytes(b"not a safetensors file")
    val = write_val(tmp_path / "val.jsonl")
    cfg = load_batch(_batch(suite, tmp_path / "out", val))
    result = run_batch(cfg, progress=False)
    assert [f[1] for f in result.failed] == ["load"]
    store = Store(tmp_path / "out")
    assert sorted(p.name for p in store.parts("token-loss")) == ["step=0.parquet", "step=2.parquet"]
    failures = store.failures()
    assert failures["step"].to_list() == [1] and "step1" in failures["error"][0]
    # a rerun skips the recorded failure; --retry-failed retries it (and fails again)
    again = run_batch(cfg, progress=False)
    assert again.failed == [] and again.skipped == 2 and again.has_failures
    assert [(label, what) for label, what, _ in again.not_retried] == [
        ("tiny-neox/tiny-neox-0@step1", "load")]
    assert "step1" in again.not_retried[0][2]  # the recorded error text
    assert len(run_batch(cfg, progress=False, retry_failed=True).failed) == 1


def test_pickle_weights_refused(tmp_path):
    suite = make_tiny_suite(tmp_path / "suite", "neox", steps=(0,))
    folder = suite / "tiny-neox-0" / "step0"
    weights = next(folder.glob("*.safetensors"))
    weights.rename(folder / "pytorch_model.bin")
    ref = get_suite(suite).checkpoints("tiny-neox-0")[0]
    with pytest.raises(RuntimeError, match="pickle.*allow_pickle"):
        load_checkpoint(ref)


def test_bad_config_lists_every_problem(tmp_path, neox_suite):
    val = write_val(tmp_path / "val.jsonl")
    bad = _batch(neox_suite, tmp_path / "out", val, max_tokns=5)
    bad.update(dtype="float64", models=["tiny-neox-9"], colour="red")
    bad["evaluators"]["token-los"] = {}
    with pytest.raises(ConfigError) as err:
        load_batch(bad)
    # one line per problem, each found although the others are there too (issue #18)
    expected = ["batch: unknown key 'colour'", "batch: dtype = 'float64' has the wrong type; "
                "expected one of 'float32', 'bfloat16', 'float16'",
                "batch: models: unknown model 'tiny-neox-9' in suite 'tiny-neox'",
                "batch: [evaluators.token-loss]: unknown key 'max_tokns' (did you mean "
                "'max_tokens'?)", "batch: unknown evaluator 'token-los'"]
    problems = err.value.problems
    assert len(problems) == len(expected), problems
    for line, start in zip(problems, expected, strict=True):
        assert line.startswith(start), (line, start)
    bad2 = _batch(neox_suite, tmp_path / "out", val, max_tokns=5)
    bad2["evaluators"]["token-los"] = {}
    with pytest.raises(ConfigError) as err:
        load_batch(bad2)
    assert "max_tokns" in str(err.value) and "did you mean 'max_tokens'" in str(err.value)
    assert "unknown evaluator 'token-los'" in str(err.value)
    bad3 = _batch(neox_suite, tmp_path / "out", val)
    bad3["steps"] = [7]
    with pytest.raises(ConfigError, match=r"steps \[7\] are not in"):
        load_batch(bad3)


def test_empty_frame_is_a_part(tmp_path):
    """A checkpoint whose evaluator finds nothing (e.g. an empty circuit) still gets its part,
    so a rerun does not redo it (the demo hit "got 0 key rows" with edges = "circuit")."""
    from dynamics.checkpoints import CheckpointRef
    from evals.schema import table_schema, with_keys

    ref = CheckpointRef("f", "m", params=10, step=3, tokens_seen=30, source="x")
    empty = pl.DataFrame(schema={k: v for k, v in table_schema("circuit-edges").items()
                                 if k in ("task", "edge", "score", "in_circuit")})
    frame = with_keys(empty, ref.key, "circuit-edges")
    store = Store(tmp_path)
    with pytest.raises(ValueError, match="0 key rows"):
        store.write("circuit-edges", frame)
    store.write("circuit-edges", frame, ref.key)
    assert store.has("circuit-edges", ref.key) and store.read("circuit-edges").height == 0
    other = CheckpointRef("f", "m", params=10, step=4, tokens_seen=40, source="x")
    with pytest.raises(ValueError, match="do not match"):
        store.write("circuit-edges", with_keys(empty.clear(), ref.key, "circuit-edges").vstack(
            with_keys(pl.DataFrame({"task": ["t"], "edge": ["a"], "score": [1.0],
                                    "in_circuit": [True]}), ref.key, "circuit-edges")),
            other.key)


def test_bf16_on_a_cpu_without_native_bf16_is_loaded_with_one_warning(tmp_path, caplog,
                                                                      monkeypatch):
    """The run still loads in the dtype asked for; the log says once why it will be slow."""
    from dynamics import loading

    suite = make_tiny_suite(tmp_path / "suite", steps=(0, 10))
    refs = get_suite(suite).checkpoints("tiny-neox-0")
    monkeypatch.setattr(loading, "cpu_dtype_problem",
                        lambda dtype: None if dtype == "float32" else f"no native {dtype} here")
    monkeypatch.setattr(loading, "_warned_dtypes", set())
    with caplog.at_level("WARNING", logger="dynamics.loading"):
        for ref in refs:
            lm = load_checkpoint(ref, loading.LoadOptions(dtype="bfloat16"))
            assert next(lm.model.parameters()).dtype == torch.bfloat16
        load_checkpoint(refs[0], loading.LoadOptions(dtype="float32"))
    warned = [r.getMessage() for r in caplog.records if "no native" in r.getMessage()]
    assert warned == ['dtype bfloat16 on the CPU: no native bfloat16 here; use dtype = '
                      '"float32" on this machine']
