"""Circuit emergence end to end (issue #6): induction heads form, the trigger circuit uses them.

Runs the `circuits` evaluator through the sweep on the toy suite (fixture
`toy_suite`, its 2+-layer models and `data/trigger.jsonl`) when that fixture
exists; otherwise on a 2-layer GPTNeoX trained here for ~140 steps on
repeated random sequences (induction forms by step ~100), saved as a local
suite with a trigger.jsonl in the toy suite's format.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import polars as pl
import pytest
import torch

from dynamics.manifest import write_manifest
from dynamics.suites import get_suite
from dynamics.tiny import count_params, save_checkpoint, tiny_gpt_neox, word_tokenizer
from evals.config import load_batch
from evals.execute import run_batch
from evals.store import Store

N_WORDS, SEQ = 40, 12


def _trigger_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        s = rng.sample(range(N_WORDS), SEQ + 1)
        s, spare = s[:-1], s[-1]
        k = rng.randrange(2, SEQ)
        corr = s[:k] + [spare] + s[k + 1:]
        w = lambda ids: " ".join(f"z{i}" for i in ids)  # noqa: E731
        rows.append({"clean": w(s + s[:k]), "corrupted": w(corr + s[:k]), "correct": f"z{s[k]}",
                     "incorrect": f"z{spare}", "trigger": f"z{s[k - 1]}", "n_tokens": SEQ + k})
    return rows


def _induction_suite(root: Path, steps=(0, 30, 70, 140)) -> Path:
    """A 2-layer GPTNeoX trained on EOS + s + s (s random words), checkpoints at `steps`."""
    tok = word_tokenizer([f"z{i}" for i in range(N_WORDS)])
    model = tiny_gpt_neox(vocab_size=len(tok), hidden_size=64, num_layers=2, num_heads=4,
                          intermediate_size=128, max_positions=64, seed=0).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    ckpts = []
    for step in range(max(steps) + 1):
        if step in steps:
            save_checkpoint(model.eval(), tok, root / "induction-2l" / f"step{step}")
            ckpts.append({"step": step, "path": f"induction-2l/step{step}"})
            model.train()
        s = torch.randint(3, len(tok), (32, SEQ), generator=g)
        ids = torch.cat([torch.zeros(32, 1, dtype=torch.long), s, s], 1)
        loss = model(ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data" / "trigger.jsonl").write_text(
        "\n".join(json.dumps(r) for r in _trigger_rows(48, 1)) + "\n")
    write_manifest(root / "suite.toml", "induction", [
        {"name": "induction-2l", "params": count_params(model), "checkpoints": ckpts}],
        family="induction", tokens_per_step=32 * (2 * SEQ + 1))
    return root


def _suite(request, tmp_path) -> tuple[Path, dict[str, list[int]], float]:
    """(suite root, {model: (n_layers, steps to evaluate)}, minimal score rise).

    On the toy suite: per family, the 2+ layer model whose final checkpoint has the
    strongest induction head by the report's score (tests.test_toy._induction_score).
    Which size forms most clearly depends on the CPU the suite was trained on (training
    numerics differ; test_toy.test_induction_heads_form_in_both_families): toy-opt m
    reached 0.61 on one host and 0.35 on another, toy-opt s 0.61 on both. The best
    trigger-induction head of the chosen models moves from ~0.06 (uniform) at step 0 to
    0.6-0.94, so a rise of 0.15 is required there; the model trained here forms a sharp
    induction head (> 0.5), so 0.2 is required.
    """
    try:
        root = Path(request.getfixturevalue("toy_suite"))
    except pytest.FixtureLookupError:
        root = None
    min_rise = 0.15
    rank = None  # the toy suite: by final induction score
    if root is None or not (root / "data" / "trigger.jsonl").is_file():
        root, min_rise = _induction_suite(tmp_path / "suite"), 0.2
        rank = lambda refs: refs[0].params  # noqa: E731  (one model)
    if rank is None:
        from tests.test_toy import _induction_score

        rank = lambda refs: _induction_score(refs[-1].source)  # noqa: E731
    suite = get_suite(str(root))
    largest: dict[str, tuple] = {}  # family -> (rank, name, n_layers, steps)
    for name in suite.model_names():
        refs = suite.checkpoints(name)
        config = json.loads((Path(refs[-1].source) / "config.json").read_text())
        if config.get("num_hidden_layers", 0) >= 2:
            steps = [r.step for r in refs]
            entry = (rank(refs), name, config["num_hidden_layers"],
                     sorted({steps[0], steps[len(steps) // 2], steps[-1]}))
            largest[refs[0].family] = max(largest.get(refs[0].family, entry), entry)
    return root, {name: (n, steps) for _, name, n, steps in largest.values()}, min_rise


@pytest.mark.slow
def test_induction_heads_emerge_and_trigger_circuit_uses_them(request, tmp_path):
    root, chosen, min_rise = _suite(request, tmp_path)
    assert chosen, "no model with 2+ layers"
    store = Store(tmp_path / "out")
    for model, (_, steps) in chosen.items():
        cfg = load_batch({"suite": str(root), "output": str(store.root), "models": [model],
                          "steps": steps, "evaluators": {"circuits": {
                              "tasks": ["trigger"], "components": ["induction", "trigger-induction"],
                              "ig_steps": 5, "n_examples": 24, "batch_size": 12, "search_start": 10,
                              "search_step": 10, "edges": "all", "component_seq_len": SEQ,
                              "prepend_bos": True}}})
        assert not run_batch(cfg, progress=False).failed
    edges = store.read("circuit-edges")
    summary = store.read("circuit-summary")
    comps = store.read("components").filter((pl.col("layer") >= 1)  # reads a previous layer
                                            & (pl.col("kind") == "trigger-induction"))
    for model in chosen:
        last = comps.filter((pl.col("model") == model) & (pl.col("step") == max(chosen[model][1])))
        top, best = last.sort("score").select("layer", "head").row(-1)
        series = (comps.filter((pl.col("model") == model) & (pl.col("layer") == top)
                               & (pl.col("head") == best)).sort("step")["score"].to_list())
        assert series[-1] > series[0] + min_rise, series
        assert series[-1] >= max(series) - min_rise / 4, series
        end = max(chosen[model][1])
        circuit = edges.filter((pl.col("model") == model) & (pl.col("step") == end)
                               & pl.col("in_circuit"))["edge"].to_list()
        row = summary.filter((pl.col("model") == model) & (pl.col("step") == end))
        assert row["faithfulness"].item() >= 0.8 and row["metric_clean"].item() > 0
        assert any(e.startswith(f"a{top}.h{best}->") for e in circuit), (best, circuit)
