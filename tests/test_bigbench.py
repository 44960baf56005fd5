"""BIG-bench MC: formatting against hand-written strings, malformed files, fast path exactness."""

import json
from pathlib import Path

import polars as pl
import pytest
import torch

from dynamics.tiny import tiny_gpt2, tiny_gpt_neox, tiny_opt
from evals import bigbench_mc
from evals.bigbench_mc import Tokenized, pack_rows, shared_prompt_scores
from evals.bigbench_tasks import (
    MCExample,
    TaskFileError,
    format_task,
    read_task,
    select_tasks,
    xia74,
)
from evals.scoring import Request, score_requests
from stats.bigbench import macro_accuracy, option_ppl, task_accuracy

BB = Path(__file__).resolve().parents[2] / "shared" / "data" / "bigbench"
needs_bb = pytest.mark.skipif(not BB.is_dir(), reason="../shared/data/bigbench not beside the repo")


@needs_bb
def test_zero_and_one_shot_strings_simple_arithmetic():
    (task,) = read_task(BB / "simple_arithmetic_json_multiple_choice")[0]
    zero = format_task(task, k=0)
    # sorted choices [3, 4, 5, 6] permuted by RandomState(42) -> 4 6 3 5; choice_prefix " option: "
    assert zero[0].prompt == "\nQ: 1 + 4 = option: 4 option: 6 option: 3 option: 5\nA: "
    assert zero[0].choices == ["5", "4", "6", "3"] and zero[0].target_scores == [1, 0, 0, 0]
    one = format_task(task, k=1)
    # the shot for query 0 is example 1 ("4 + 9 ="), answered with its target "13"
    assert one[0].prompt == (
        "\nQ: 4 + 9 = option: 3 option: 6 option: 13 option: 4\nA: 13"
        "\n"
        "\nQ: 1 + 4 = option: 4 option: 6 option: 3 option: 5\nA: "
    )


@needs_bb
def test_custom_prefixes_and_no_appended_choices():
    (task,) = read_task(BB / "anachronisms")[0]
    ex = format_task(task, k=0, max_examples=1)[0]
    assert ex.prompt == (
        "\nDuring the Allied bombardment of the beaches of Iwo Jima, Ralph spoke loudly into "
        "his radio.\nDoes the preceding sentence contain non-contemporaneous (anachronistic) "
        "elements?\n"
    )
    assert ex.choices == ["Yes", "No"]
    (task,) = read_task(BB / "crash_blossom")[0]
    raw = json.loads((BB / "crash_blossom" / "task.json").read_text())["examples"][0]
    ex = format_task(task, k=0, max_examples=1)[0]
    assert ex.prompt == ("Identify the part of speech (verb, adjective, noun, or preposition) of "
                         "the specified word in the following headlines.\n\n" + raw["input"]
                         + "\nA: ")


@needs_bb
def test_shots_never_the_query_and_deterministic():
    (task,) = read_task(BB / "simple_arithmetic_json_multiple_choice")[0]
    a, b = format_task(task, k=2), format_task(task, k=2)
    assert [e.prompt for e in a] == [e.prompt for e in b]
    for e, raw in zip(a, task.examples):
        assert e.prompt.count(raw["input"]) == 1  # the query appears once: not as its own shot


@needs_bb
def test_subtasks_and_xia74():
    tasks, skipped = read_task(BB / "periodic_elements")
    assert skipped == ["periodic_elements/subtask_1"]
    assert all(t.name.startswith("periodic_elements/") for t in tasks) and tasks
    picked = xia74(BB)
    assert len(picked) == 71 and "periodic_elements" in picked
    assert "sports_understanding" not in picked  # 1,000 examples (986 distinct)
    with_subtasks = [t for t in picked if not (BB / t / "task.json").read_text().count('"examples"')]
    assert len(with_subtasks) == 10  # 9 meeting the rule + periodic_elements
    assert select_tasks(BB, "breakthrough")[0] == "code_line_description"
    with pytest.raises(ValueError, match="unknown task selection 'xia75'"):
        select_tasks(BB, "xia75")


def _write(tmp_path, name, data):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "task.json").write_text(json.dumps(data))
    return folder


@pytest.mark.parametrize(
    "data,match",
    [
        ({"name": "x", "examples": []}, "no examples"),
        ({"name": "x", "examples": [{"input": "a", "target_scores": {"b": 1}}, {"input": "c"}]},
         "example 1 has no choices"),
        ({"name": "x", "examples": [{"input": "a", "target_scores": {"b": "1"}}]},
         "non-numeric target_scores"),
    ],
)
def test_malformed_files_name_the_file(tmp_path, data, match):
    folder = _write(tmp_path, "bad", data)
    with pytest.raises(TaskFileError, match=match) as err:
        read_task(folder)
    assert str(folder / "task.json") in str(err.value)


def _random_items(n=9, seed=0):
    g = torch.Generator().manual_seed(seed)

    def ids(lo, hi):
        return torch.randint(3, 120, (int(torch.randint(lo, hi, (1,), generator=g)),),
                             generator=g).tolist()

    items = []
    for i in range(n):
        choices = [ids(1, 5) for _ in range(int(torch.randint(2, 5, (1,), generator=g)))]
        items.append(Tokenized(MCExample("t", i, "", ["c"] * len(choices), [0.0] * len(choices)),
                               ids(1, 25), choices))
    return items


@pytest.mark.parametrize("build", [tiny_gpt_neox, tiny_opt, tiny_gpt2])
def test_shared_prompt_equals_separate_scoring(build):
    model, items = build(), _random_items()
    fast, truncated = shared_prompt_scores(model, items, max_length=64, batch_tokens=50)
    assert truncated == 0
    reqs = [Request((i, j), tuple(t.prompt), tuple(c))
            for i, t in enumerate(items) for j, c in enumerate(t.choices)]
    for req, base in zip(reqs, score_requests(model, reqs, max_length=64)):
        got = fast[req.example_id[0]][req.example_id[1]]
        assert torch.allclose(got, torch.from_numpy(base.logprobs), atol=1e-4)


def test_truncation_counted_and_equal_to_left_cut():
    model, items = tiny_gpt_neox(), _random_items(seed=3)
    fast, truncated = shared_prompt_scores(model, items, max_length=12)
    assert truncated == sum(len(t.prompt) + max(map(len, t.choices)) > 12 for t in items) > 0
    reqs = [Request((i, j), tuple(t.prompt[len(t.prompt) - (12 - max(map(len, t.choices)))
                                            if len(t.prompt) + max(map(len, t.choices)) > 12
                                            else 0:]), tuple(c))
            for i, t in enumerate(items) for j, c in enumerate(t.choices)]
    for req, base in zip(reqs, score_requests(model, reqs, max_length=12)):
        assert abs(float(fast[req.example_id[0]][req.example_id[1]].sum()) - base.total) < 1e-4


def _mc_frame():
    keys = {"family": "f", "model": "m", "params": 1, "step": 1, "tokens_seen": 1, "flops": 6.0}
    rows = [  # task A: ex0 right by raw and by norm; ex1 wrong raw, right normalized
        ("A", 0, 0, -1.0, 1, True, 1.0), ("A", 0, 1, -3.0, 1, False, 0.0),
        ("A", 1, 0, -4.0, 4, True, 1.0), ("A", 1, 1, -2.0, 1, False, 0.0),
        ("B/s1", 0, 0, -5.0, 1, False, 0.0), ("B/s1", 0, 1, -1.0, 1, True, 1.0),
        ("B/s2", 0, 0, -1.0, 1, False, 0.0), ("B/s2", 0, 1, -2.0, 1, True, 1.0),
    ]
    cols = ["task", "example_id", "choice_index", "logprob_nats", "n_tokens", "is_target",
            "target_score"]
    return pl.DataFrame([{**keys, **dict(zip(cols, r))} for r in rows])


def test_accuracy_raw_norm_subtasks_and_option_ppl():
    acc = task_accuracy(_mc_frame()).sort("task")
    assert acc["task"].to_list() == ["A", "B"]
    assert acc["accuracy"].to_list() == [0.5, 0.5]  # B = mean(s1 right, s2 wrong)
    assert acc["accuracy_norm"].to_list() == [1.0, 0.5]
    assert acc["random_baseline"].to_list() == [0.5, 0.5]
    assert macro_accuracy(_mc_frame())["accuracy"].item() == 0.5
    ppl = option_ppl(_mc_frame()).sort("option")
    import math
    assert ppl["option_ppl"][0] == pytest.approx(math.exp((1 + 4 + 1 + 2) / 7))


@needs_bb
@pytest.mark.slow
def test_sweep_writes_choices_and_stats_read_them(tmp_path):
    from evals.config import load_batch
    from evals.execute import run_batch
    from evals.store import Store
    from stats.bigbench import behaviors
    from tests.helpers import make_tiny_suite

    suite = make_tiny_suite(tmp_path / "suite", "neox", steps=(0, 3))
    tasks = ["simple_arithmetic_json_multiple_choice", "periodic_elements"]
    cfg = load_batch({"suite": str(suite), "output": str(tmp_path / "out"),
                      "evaluators": {"bigbench-mc": {"folder": str(BB), "tasks": tasks, "k": 1,
                                                     "max_examples": 3}}})
    assert not run_batch(cfg, progress=False).failed
    mc = Store(tmp_path / "out").read("bigbench-mc")
    first = mc.filter(pl.col("step") == 0)
    assert first.filter(pl.col("task") == tasks[0]).height == 3 * 4  # 3 examples x 4 choices
    assert first["task"].str.starts_with("periodic_elements/").any()
    assert (mc["logprob_nats"] < 0).all() and (mc["n_tokens"] >= 1).all()
    rows = behaviors(Store(tmp_path / "out"))
    from stats.behaviors import BEHAVIOR_COLUMNS
    assert rows.columns == list(BEHAVIOR_COLUMNS)
    names = set(rows["behavior"].to_list())
    assert {"bigbench:periodic_elements", "bigbench_macro", "option_ppl_correct"} <= names
    assert rows.filter(pl.col("behavior") == f"bigbench:{tasks[0]}")["n_trials"].to_list() == [3, 3]


def test_rows_record_the_prompt_tokens_cut_to_fit(tmp_path):
    """Issue 17: the README promised truncation in a column; `truncated_tokens` is it."""
    from types import SimpleNamespace

    from evals.bigbench_mc import BigBenchMC, BigBenchOptions
    from tests.helpers import tiny_tokenizer

    tok = tiny_tokenizer()
    opts = BigBenchOptions(folder=str(BB), tasks=["simple_arithmetic_json_multiple_choice"],
                           k=2, max_examples=4, max_length=40)
    ev = BigBenchMC(opts)
    lm = SimpleNamespace(model=tiny_gpt_neox(vocab_size=len(tok)), tokenizer=tok,
                         context_length=2048)
    frame = ev.run(lm)["bigbench-mc"]
    items = ev.tokenized(tok)
    want = [max(0, len(t.prompt) - (40 - max(map(len, t.choices))))
            for t in items for _ in t.choices]
    assert frame["truncated_tokens"].to_list() == want
    assert frame["truncated_tokens"].max() > 0 and ev.truncated == sum(
        1 for t in items if len(t.prompt) + max(map(len, t.choices)) > 40)
    full = BigBenchMC(BigBenchOptions(folder=str(BB), tasks=opts.tasks, k=2, max_examples=4))
    assert (full.run(lm)["bigbench-mc"]["truncated_tokens"] == 0).all()


def test_pack_rows_splits_choices_that_do_not_fit():
    """The worked example of `pack_rows`: prompt 5, choices 3, 2, 4, window 11."""
    item = Tokenized(MCExample("t", 0, "", ["a", "b", "c"], [1.0, 0.0, 0.0]),
                     [1] * 5, [[2] * 3, [3] * 2, [4] * 4])
    rows = pack_rows([item], [item.prompt], max_length=11)
    assert [r.choices for r in rows] == [[0, 1], [2]]
    assert all(r.prompt == item.prompt for r in rows)


def test_packed_eager_attention_and_row_splits_equal_separate_scoring():
    """Eager attention gets an additive mask; a small window forces several rows per prompt."""
    model = tiny_gpt_neox()
    model.config._attn_implementation = "eager"
    items = _random_items(seed=5)
    assert sum(len(r.choices) < len(t.choices) for t in items
               for r in pack_rows([t], [t.prompt], 30)) > 0  # some example is split
    fast, _ = shared_prompt_scores(model, items, max_length=30, batch_tokens=64)
    reqs = [Request((i, j), tuple(t.prompt), tuple(c))
            for i, t in enumerate(items) for j, c in enumerate(t.choices)]
    for req, base in zip(reqs, score_requests(model, reqs, max_length=30)):
        got = fast[req.example_id[0]][req.example_id[1]]
        assert torch.allclose(got, torch.from_numpy(base.logprobs), atol=1e-4)


def test_attention_without_custom_masks_falls_back_to_separate_scoring(monkeypatch, caplog):
    model, items = tiny_opt(), _random_items(n=4, seed=2)
    ref, _ = shared_prompt_scores(model, items, max_length=64)
    monkeypatch.setattr(bigbench_mc, "PACKED_ATTENTION", ())
    called = []
    monkeypatch.setattr(bigbench_mc, "_score_packed", lambda *a: called.append(1))
    with caplog.at_level("INFO"):
        got, _ = shared_prompt_scores(model, items, max_length=64)
    assert not called and "scoring choices separately" in caplog.text
    for a, b in zip(ref, got):
        for x, y in zip(a, b):
            assert torch.allclose(x, y, atol=1e-4)


@pytest.mark.parametrize("build", [tiny_gpt_neox, tiny_opt])
def test_long_prompts_split_into_prompt_and_choice_passes_equal_separate_scoring(build,
                                                                                 monkeypatch):
    """Prompts >= SPLIT_PROMPT run alone: unmasked prompt pass, then choices on its cache."""
    monkeypatch.setattr(bigbench_mc, "SPLIT_PROMPT", 10)
    model, items = build(), _random_items(seed=4)
    split = []
    real = bigbench_mc._packed_hidden
    monkeypatch.setattr(bigbench_mc, "_packed_hidden", lambda m, it, rows, *a: split.append(
        len(rows) == 1 and len(rows[0].prompt) >= 10) or real(m, it, rows, *a))
    fast, _ = shared_prompt_scores(model, items, max_length=64, batch_tokens=50)
    assert any(split) and not all(split)
    reqs = [Request((i, j), tuple(t.prompt), tuple(c))
            for i, t in enumerate(items) for j, c in enumerate(t.choices)]
    for req, base in zip(reqs, score_requests(model, reqs, max_length=64)):
        got = fast[req.example_id[0]][req.example_id[1]]
        assert torch.allclose(got, torch.from_numpy(base.logprobs), atol=1e-4)
