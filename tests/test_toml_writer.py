"""The one TOML writer (dynamics.toml_writer): what it writes, tomllib reads back equal
(issue #18: three hand-rolled writers, none escaping newlines or quoting dotted names)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import tomllib

import pytest

from dynamics.manifest import load_manifest, write_manifest
from dynamics.toml_writer import dumps, toml_value
from evals.config import batch_to_toml, load_batch

HAS_RAY = importlib.util.find_spec("ray") is not None
ODD = 'a "quoted" back\\slash\nnew line\ttab \x01 \x7f ü 😀 [x] # not a comment'


def test_dumps_round_trips_scalars_strings_tables_and_table_arrays():
    doc = {
        "s": ODD, "empty": "", "t": True, "f": False, "i": -3, "big": 2**62,
        "x": 0.1, "e": 1e20, "neg0": -0.0, "inf": math.inf, "ninf": -math.inf,
        "list": [1, 2.5, "three", [True, ODD]], "no_list": [], "inline": [{"a": 1}, 2],
        "dotted.key": 1, "sp ace": "v", "unset": None,
        "table": {"k": 1, "sub": {"deep": ["d"]}, "only": {"tables": {"z": 0}}},
        "empty_table": {},
        "models": [{"name": "m1", "checkpoints": [{"step": 0}, {"step": 10, "p": "x"}]},
                   {"name": "m2", "checkpoints": [{"step": 5}]}],
        "generate": {"paper.v1": {"grid": [[1, -1], [0.5, 1]]}, "plain": {"n": 2}},
    }
    text = dumps(doc)
    expected = {k: v for k, v in doc.items() if v is not None}
    assert tomllib.loads(text) == expected
    assert '[generate."paper.v1"]' in text and "[[models.checkpoints]]" in text
    assert "[table.only]" not in text  # a table of tables needs no header of its own
    assert math.isnan(tomllib.loads(f"v = {toml_value(math.nan)}")["v"])
    with pytest.raises(TypeError, match="cannot write None"):
        toml_value([1, None])


def _every_section(tmp_path):
    """A batch that sets every top-level field off its default, and every section."""
    data = tmp_path / "dätä dir"
    (data / "bb" / "task_a").mkdir(parents=True)
    (data / "bb" / "task_a" / "task.json").write_text(json.dumps(
        {"name": "task_a", "examples": [{"input": "1+1=", "target_scores": {"2": 1, "3": 0}}]}))
    for name in ("val \"ü\".jsonl", "facts.jsonl", "more.jsonl"):
        (data / name).write_text(json.dumps({"text": "x"}) + "\n")
    return {
        "suite": "pythia", "output": "out/run 1", "models": ["pythia-70m", "pythia-1.4b"],
        "steps": [0, 512, 143000], "device": "cuda:1", "dtype": "bfloat16",
        "executor": "ray" if HAS_RAY else "local", "prefetch": False, "disk_budget_gb": 2.5,
        "allow_pickle": True, "trust_remote_code": True, "seed": 7, "equivalence_margin": 0.05,
        "evaluators": {
            "token-loss": {"dataset": str(data / 'val "ü".jsonl'), "max_tokens": 5000,
                           "context": 128, "split": "train"},
            "sequences": {"dataset": str(data / "facts.jsonl"), "sets": ["factual", "mix a"],
                          "extra_datasets": [str(data / "more.jsonl")]},
            "bigbench-mc": {"folder": str(data / "bb"), "tasks": ["task_a"], "k": 0,
                            "max_examples": 3},
            "circuits": {"tasks": ["ioi", "induction"], "threshold": 0.75,
                         "components": ["copy"], "edges": "circuit", "prepend_bos": True},
        },
        "generate": {
            "paper": {"small": "pythia-70m", "large": "pythia-1.4b", "grid": "paper",
                      "top_p": 0.9, "n_prompts": 10},
            "v1.two": {"small": "pythia-70m", "large": "pythia-1.4b", "step_small": 512,
                       "grid": [[1, -1], [0.5, 1.5]], "prompts": str(data / "facts.jsonl"),
                       "seed": 3, "max_new_tokens": 20},
        },
    }


def test_batch_to_toml_round_trips_a_batch_with_every_section(tmp_path):
    cfg = load_batch(_every_section(tmp_path), base_dir=tmp_path)
    text = batch_to_toml(cfg)
    values = tomllib.loads(text)
    defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
    changed = {k for k in values if values[k] != defaults[k]}
    every = {f.name for f in dataclasses.fields(cfg)} - (set() if HAS_RAY else {"executor"})
    assert changed == every - {"base_dir"}  # every user field, off its default (issue 33:
    assert "base_dir" not in values  # the folder the file is read from is no batch key)
    assert load_batch(values, base_dir=tmp_path) == cfg
    assert '[generate."v1.two"]' in text


def test_manifest_and_demo_batch_written_by_the_same_writer(tmp_path):
    from dynamics.cli import _demo_batch

    models = [{"name": 'odd "name"', "params": 10, "tokens_per_step": 3,
               "checkpoints": [{"step": 0, "path": "m/step0"}, {"step": 2, "path": "m/s 2"}]},
              {"name": "big", "params": 99, "tokens_per_step": 3,
               "checkpoints": [{"step": 4, "path": "b/step4", "flops": 1.5e12}]}]
    (tmp_path / "suite").mkdir()
    path = write_manifest(tmp_path / "suite" / "suite.toml", "toy\nx", models, family="fam",
                          description='d "q"')
    suite = load_manifest(path)
    assert suite.name == "toy\nx" and suite.description == 'd "q"'
    assert [r.step for r in suite.models['odd "name"']] == [0, 2]
    assert suite.models["big"][0].flops == 1.5e12
    batch = tomllib.loads(_demo_batch(tmp_path / "suite", tmp_path).read_text())
    assert batch["suite"] == str((tmp_path / "suite").resolve())
    assert batch["steps"] == "all" and set(batch["evaluators"]) >= {"token-loss"}
    if "sequences" in batch["evaluators"]:
        gen = batch["generate"]["toy-mix"]
        assert (gen["small"], gen["large"]) == ('odd "name"', "big")
