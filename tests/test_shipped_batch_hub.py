"""batches/xia2023-pythia.toml runs as shipped, to a report, against the loopback hub.

Everything the batch names is fetched by name from a hub on 127.0.0.1: the models
(tiny GPT-NeoX models in Pythia's layout, revisions `step{N}`), the Pile's validation
split and CounterFact (fixtures of their exact schemas, tests/hub_datasets.py). BIG-bench
is a clone's folder layout where the batch expects the clone. Only what cannot run here
changes: the models (and the two `[generate.paper]` names them), device and dtype. No
input file is prepared by hand.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import polars as pl
import pytest

import dynamics.suites
from dynamics.cli import main
from dynamics.toml_writer import dumps
from evals.store import Store
from tests.helpers import hub_suite, make_tiny_suite
from tests.hub_datasets import counterfact_files, pile_val_files, use_hub, write_bigbench
from tests.hub_server import TinyHub

ROOT = Path(__file__).resolve().parents[1]
STEPS = (0, 10, 20)
MODELS = ("tiny-neox-0", "tiny-neox-1")
# The revisions' weight files. "safetensors" for now; flip to "bin" (sharded
# pytorch_model-0000N-of-0000M.bin + index, as Pythia's step revisions hold) once .bin
# revisions load safely by default (restricted unpickler): the batch must still run.
FIXTURE_WEIGHTS = "bin"


def as_pickle_shards(folder: Path, n_shards: int = 2) -> None:
    """Replace model.safetensors by Pythia-style sharded .bin files with an index."""
    import json

    import torch
    from safetensors.torch import load_file

    state = load_file(folder / "model.safetensors")
    names = sorted(state)
    shards = [names[i::n_shards] for i in range(n_shards)]
    weight_map = {}
    for i, part in enumerate(shards, start=1):
        file = f"pytorch_model-{i:05d}-of-{n_shards:05d}.bin"
        torch.save({k: state[k] for k in part}, folder / file)
        weight_map.update(dict.fromkeys(part, file))
    size = sum(t.numel() * t.element_size() for t in state.values())
    (folder / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {"total_size": size}, "weight_map": weight_map}))
    (folder / "model.safetensors").unlink()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    local = make_tiny_suite(tmp_path / "suite", "neox", steps=STEPS, n_models=len(MODELS))
    server = TinyHub()
    for model in MODELS:
        for step in STEPS:
            folder = local / model / f"step{step}"
            if FIXTURE_WEIGHTS == "bin":
                as_pickle_shards(folder)
            server.add_revision(f"tiny/{model}", f"step{step}", folder)
    server.add_dataset("EleutherAI/pile_val_test", pile_val_files())
    server.add_dataset("azhx/counterfact", counterfact_files())
    server.serve()
    use_hub(monkeypatch, server.url, tmp_path / "hf")
    monkeypatch.setitem(dynamics.suites.BUILTIN_SUITES, "tiny-pythia",
                        lambda: hub_suite("tiny-pythia", local, org="tiny"))
    yield server
    server.close()


def _swapped_batch(folder: Path) -> tuple[Path, dict]:
    """The shipped batch with tiny models, in `folder` beside a BIG-bench clone's layout."""
    shipped = tomllib.loads((ROOT / "batches" / "xia2023-pythia.toml").read_text())
    batch = {**shipped, "suite": "tiny-pythia", "models": list(MODELS), "device": "cpu",
             "dtype": "float32"}
    batch["generate"] = {"paper": {**shipped["generate"]["paper"], "small": MODELS[0],
                                   "large": MODELS[1]}}
    write_bigbench(folder / "BIG-bench")  # where `git clone .../BIG-bench` puts it
    path = folder / "xia2023-pythia.toml"
    path.write_text(dumps(batch))
    return path, shipped


@pytest.mark.slow
def test_xia2023_pythia_runs_as_shipped_on_the_loopback_hub(hub, tmp_path, capsys):
    batch, shipped = _swapped_batch(tmp_path / "batches")
    assert tomllib.loads(batch.read_text())["evaluators"] == shipped["evaluators"]
    assert main(["run", str(batch), "-q"]) == 0, capsys.readouterr().out
    store = Store(tmp_path / "batches" / shipped["output"])
    assert sorted(store.tables()) == ["bigbench-mc", "recall-bigram", "sequences", "token-loss"]
    for table in store.tables():  # every evaluator ran at every checkpoint
        keys = store.read(table).select("model", "step").unique()
        assert keys.height == len(MODELS) * len(STEPS), table
    seqs = store.read("sequences")
    sets = set(seqs["set"].unique())
    assert {"factual", "hallucinated", "ungrammatical"} <= sets
    assert len([s for s in sets if s.startswith("mix ")]) == 5  # the paper's grid
    assert seqs.filter(pl.col("set") == "factual")["pair_id"].n_unique() == 4  # test split
    assert set(store.read("bigbench-mc")["task"].unique()) == {
        "animal_facts", "two_parts/first", "two_parts/second"}
    kinds = set(store.read("recall-bigram")["position_kind"].unique())
    assert {"recall", "bigram"} <= kinds
    fetched = {p.split("/")[2] + "/" + p.split("/")[3] for m, p in hub.requests
               if m == "GET" and p.startswith("/datasets/")}
    assert fetched == {"EleutherAI/pile_val_test", "azhx/counterfact"}
    report = tmp_path / "report"
    assert main(["report", str(store.root), "--out", str(report), "--no-images"]) == 0
    html = (report / "index.html").read_text()
    assert "no recall-bigram results" not in html  # the order-of-learning claim is testable
    shutil.rmtree(tmp_path / "hf", ignore_errors=True)
