"""`[generate.<name>]` batch tables (issue #12): strict parsing, generate-then-score, resume."""

from __future__ import annotations

import json

import polars as pl
import pytest

import evals.mixture
from evals.base import ConfigError
from evals.config import load_batch, load_batch_file
from evals.execute import generate_sets, run_batch
from evals.generated import GeneratedSetError, generated_path
from evals.store import Store
from evals.sweep import ProvenanceError
from tests.helpers import make_tiny_suite, write_val

GEN = {"small": "tiny-neox-0", "large": "tiny-neox-1", "grid": [[1, -1], [-1, 1], [1, 0]],
       "n_prompts": 3, "prompt_tokens": 4, "max_new_tokens": 5, "top_p": 0.9, "seed": 1}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    folder = make_tiny_suite(root / "suite", "neox", steps=(0, 10), n_models=2)
    return folder, write_val(root / "val.jsonl")


def _batch(suite, out, gen=None, **extra):
    folder, val = suite
    return {"suite": str(folder), "output": str(out),
            "evaluators": {"token-loss": {"dataset": str(val), "max_tokens": 200}},
            "generate": {"mix": {**GEN, **(gen or {})}}, **extra}


def _problems(values) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_batch(values, ".", "b.toml")
    return err.value.problems


def test_generate_tables_are_parsed_strictly(suite, tmp_path):
    cfg = load_batch(_batch(suite, tmp_path), ".", "b.toml")
    assert cfg.generate["mix"]["small"] == "tiny-neox-0"
    problems = _problems(_batch(suite, tmp_path, {"topp": 0.9, "large": "tiny-neox-7"}))
    assert any("unknown key 'topp' (did you mean 'top_p'?); allowed: small, large" in p
               for p in problems)
    assert any("large: unknown model 'tiny-neox-7'" in p and "tiny-neox-1" in p
               for p in problems)  # both problems at once
    assert all(p.startswith("b.toml: [generate.mix]") for p in problems)
    bad = {"grid": [[0, -1]], "top_p": 1.5}
    assert any("a or b must be > 0" in p for p in _problems(_batch(suite, tmp_path, bad)))
    assert any("top_p must be in (0, 1]" in p
               for p in _problems(_batch(suite, tmp_path, {"top_p": 1.5})))
    assert any('use "paper"' in p for p in _problems(_batch(suite, tmp_path, {"grid": "pape"})))
    assert any("wrong type" in p and "n_prompts" in p
               for p in _problems(_batch(suite, tmp_path, {"n_prompts": "3"})))
    assert any("steps [7] are not in" in p
               for p in _problems(_batch(suite, tmp_path, {"step_small": 7})))
    no_val = _batch(suite, tmp_path)
    no_val["evaluators"] = {"sequences": {"dataset": "x.jsonl"}}
    assert any("no prompt source" in p for p in _problems(no_val))
    named = _batch(suite, tmp_path)
    named["generate"] = {"a b": GEN, "c": 3}
    problems = _problems(named)
    assert any("[generate.a b]: 'a b' names a file" in p for p in problems)
    assert any("[generate.c] must be a table, got 3" in p for p in problems)


def _counting(monkeypatch) -> list:
    calls = []
    real = evals.mixture.generate_from_refs

    def counted(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(evals.mixture, "generate_from_refs", counted)
    return calls


def test_generated_sets_are_scored_at_every_checkpoint_and_not_regenerated(
        suite, tmp_path, monkeypatch):
    calls = _counting(monkeypatch)
    cfg = load_batch(_batch(suite, tmp_path / "out"), ".", "b.toml")
    result = run_batch(cfg, progress=False)
    assert not result.failed and len(calls) == 1
    path = generated_path(cfg, "mix")
    record = json.loads(path.with_suffix(".json").read_text())
    names = set(record["sets"])
    assert len(names) == 3 and all(n.startswith("mix a=") and "| gen: mix#" in n for n in names)
    assert record["options"]["step_small"] == 10  # "final", resolved
    seqs = Store(cfg.output_dir).read("sequences")
    per_ckpt = seqs.group_by("model", "step").agg(pl.col("set").unique())
    assert per_ckpt.height == 4  # 2 models x 2 steps
    assert all(set(s) == names for s in per_ckpt["set"])

    again = run_batch(cfg, progress=False)  # resume: no generation, nothing re-scored
    assert len(calls) == 1 and again.written == [] and again.skipped == 8

    changed = load_batch(_batch(suite, tmp_path / "out", {"max_new_tokens": 6}), ".", "b.toml")
    with pytest.raises(GeneratedSetError, match=r"max_new_tokens: 5 -> 6"):
        run_batch(changed, progress=False)
    assert len(calls) == 1

    path.unlink()  # the user asks for a regeneration: new set names ...
    with pytest.raises(ProvenanceError, match=r"\[evaluators.sequences\]: dataset = "):
        run_batch(changed, progress=False)  # ... scored only with --rescore (issue 33)
    assert len(calls) == 2 and Store(cfg.output_dir).read("sequences")["set"].unique().sort(
    ).to_list() == sorted(names)  # nothing scored with the new sets, nothing lost
    result = run_batch(changed, progress=False, rescore=True)  # every checkpoint re-scored
    assert len(calls) == 2
    assert sorted(result.written) == sorted((lbl, "sequences") for lbl, _ in again_labels(cfg))
    new = set(Store(cfg.output_dir).read("sequences")["set"].unique())
    assert len(new) == 3 and not new & names


def test_generated_sets_are_found_from_a_batch_folder_relative_to_the_cwd(
        suite, tmp_path, monkeypatch):
    """`dynamics demo` (--out demo-out) and `dynamics run batches/x.toml` give a batch folder
    relative to the working directory: the generated sets (under the output, itself
    relative to the batch folder) are scored, not looked for under the folder twice."""
    calls = _counting(monkeypatch)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "work").mkdir()
    cfg = load_batch(_batch(suite, "out"), "work", "work/b.toml")
    result = run_batch(cfg, progress=False)
    assert not result.failed and len(calls) == 1, result.failed
    assert (tmp_path / "work" / "out" / "generated" / "mix.jsonl").is_file()
    assert Store(tmp_path / "work" / "out").read("sequences")["set"].n_unique() == 3


def again_labels(cfg):
    from dynamics.suites import get_suite

    return [(r.label, None) for r in get_suite(cfg.suite_path).select(cfg.models, cfg.steps)]


def test_generated_set_joins_an_existing_sequences_source(suite, tmp_path, monkeypatch):
    calls = _counting(monkeypatch)
    cfg = load_batch(_batch(suite, tmp_path / "out"), ".", "b.toml")
    src = tmp_path / "facts.jsonl"
    src.write_text("".join(json.dumps({"pair_id": str(i // 2), "set": ("factual", "false")[i % 2],
                                       "text": f" the cat sat {i}"}) + "\n" for i in range(6)))
    cfg = load_batch({**_batch(suite, tmp_path / "out"),
                      "evaluators": {**cfg.evaluators, "sequences": {"dataset": str(src)}}},
                     ".", "b.toml")
    prepared = generate_sets(cfg)
    seq = prepared.evaluators["sequences"]
    assert seq["dataset"] == str(src)
    assert seq["extra_datasets"] == [str(generated_path(cfg, "mix"))]
    assert generate_sets(prepared).evaluators == prepared.evaluators  # idempotent
    assert len(calls) == 1
    run_batch(cfg, progress=False)
    sets = set(Store(cfg.output_dir).read("sequences")["set"].unique())
    assert {"factual", "false"} < sets and len(sets) == 5


def test_generate_verb(suite, tmp_path, capsys):
    from dynamics import cli

    values = _batch(suite, tmp_path / "out")
    lines = [f'suite = "{values["suite"]}"', f'output = "{values["output"]}"',
             "[evaluators.token-loss]", f'dataset = "{suite[1]}"', "[generate.mix]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in GEN.items()]
    batch = tmp_path / "b.toml"
    batch.write_text("\n".join(lines) + "\n")
    assert load_batch_file(batch).generate["mix"]["grid"] == GEN["grid"]
    assert cli.main(["generate", str(batch)]) == 0
    assert "out/generated/mix.jsonl" in capsys.readouterr().out
    assert (tmp_path / "out" / "generated" / "mix.jsonl").is_file()
    batch.write_text(batch.read_text().replace("n_prompts = 3", "n_prompts = 2"))
    assert cli.main(["generate", str(batch)]) == 2  # changed options: a clear error
    assert "n_prompts: 3 -> 2" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_batch_generates_from_the_toy_suite(toy_suite, tmp_path):
    from dynamics import cli
    from dynamics.suites import get_suite

    cfg = load_batch_file(cli._demo_batch(toy_suite, tmp_path))
    (gen,) = cfg.generate.values()
    models = get_suite(str(toy_suite)).models
    family = models[gen["small"]][0].family  # the first family's models (issue 19: two families)
    sizes = {m: refs[0].params for m, refs in models.items() if refs[0].family == family}
    assert family == "toy-neox" and len(sizes) == 3
    assert gen["small"] == min(sizes, key=sizes.get) and gen["large"] == max(sizes, key=sizes.get)
    assert [1, -1] in gen["grid"] and [-1, 1] in gen["grid"]
