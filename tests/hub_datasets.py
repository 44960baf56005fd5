"""Fixtures in the exact schemas of the shipped batches' named inputs, for the loopback hub.

- `pile_val_files`: EleutherAI/pile_val_test's files (`val.jsonl`, `test.jsonl`; one
  {"text", "meta": {"pile_set_name"}} per line, as the Pile ships them).
- `counterfact_files`: azhx/counterfact's parquet files (`data/{train,test}-00000-of-00001
  .parquet`) with its nested columns (case_id, pararel_idx, requested_rewrite{prompt,
  relation_id, subject, target_new{id, str}, target_true{id, str}}, paraphrase_prompts,
  neighborhood_prompts, attribute_prompts, generation_prompts).
- `write_bigbench`: a BIG-bench clone's `bigbench/benchmark_tasks` layout: JSON tasks
  (multiple choice, with subtasks, generative) as the repository holds them.
- `use_hub`: point huggingface_hub and datasets at a TinyHub, caches under a tmp folder.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
SUBSETS = ("Pile-CC", "PubMed Central", "ArXiv", "Github", "Wikipedia (en)")


def pile_docs(n: int = 120, seed: int = 0, prefix: str = "") -> list[dict]:
    """Documents whose words are runs of a fixed letter cycle (A B C ... 9 A): every letter's
    dominant successor is the next one, so the recall-bigram probe finds global bigrams."""
    rng = np.random.default_rng(seed)

    def word() -> str:
        i, k = rng.integers(len(ALPHABET)), rng.integers(3, 7)
        return "".join(ALPHABET[(i + j) % len(ALPHABET)] for j in range(k))

    return [{"text": prefix + " ".join(word() for _ in range(rng.integers(20, 60))),
             "meta": {"pile_set_name": SUBSETS[d % len(SUBSETS)]}} for d in range(n)]


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def pile_val_files(n_val: int = 120) -> dict[str, bytes]:
    readme = ("---\nlicense: mit\npretty_name: The Pile - Validation & Test Splits\n---\n"
              "# The Pile: Validation and Test Splits\n")
    return {"README.md": readme.encode(), "val.jsonl": jsonl(pile_docs(n_val, 0)),
            "test.jsonl": jsonl(pile_docs(40, 1, prefix="TEST "))}


FACTS = [  # (case_id, prompt, subject, true, new), as in ROME's counterfact.json
    (0, "The mother tongue of {} is", "Danielle Darrieux", "French", "English"),
    (1, "{} is a native speaker of", "Edwin of Northumbria", "English", "French"),
    (2, "{}, that was created by", "Toko Yasuda", "Nintendo", "Apple"),
    (3, "{} is located in the continent of", "Autonomous University of Madrid", "Europe",
     "Asia"),
    (4, "The official religion of {} is", "Thomas Joannes Stieltjes", "Christianity",
     "Islam"),
    (5, "{} plays", "Apple A5", "piano", "violin"),
]


def counterfact_records(facts=FACTS) -> list[dict]:
    return [{"case_id": c, "pararel_idx": 1000 + c,
             "requested_rewrite": {"prompt": p, "relation_id": "P103", "subject": s,
                                   "target_new": {"id": f"Q{c}n", "str": new},
                                   "target_true": {"id": f"Q{c}t", "str": true}},
             "paraphrase_prompts": [f"{s} says. {p.format(s)}"],
             "neighborhood_prompts": [p.format("someone")],
             "attribute_prompts": [p.format("another")],
             "generation_prompts": [f"{s} is known for"]} for c, p, s, true, new in facts]


COUNTERFACT_SCHEMA = pa.schema([
    ("case_id", pa.int64()), ("pararel_idx", pa.int64()),
    ("requested_rewrite", pa.struct([
        ("prompt", pa.string()), ("relation_id", pa.string()), ("subject", pa.string()),
        ("target_new", pa.struct([("id", pa.string()), ("str", pa.string())])),
        ("target_true", pa.struct([("id", pa.string()), ("str", pa.string())]))])),
    ("paraphrase_prompts", pa.list_(pa.string())),
    ("neighborhood_prompts", pa.list_(pa.string())),
    ("attribute_prompts", pa.list_(pa.string())),
    ("generation_prompts", pa.list_(pa.string())),
])


def _parquet(rows: list[dict]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=COUNTERFACT_SCHEMA), buf)
    return buf.getvalue()


def counterfact_files() -> dict[str, bytes]:
    records = counterfact_records()
    readme = "---\n# Dataset Card for \"counterfact\"\n---\nDataset from ROME by Meng et al.\n"
    return {"README.md": readme.encode(),
            "data/train-00000-of-00001.parquet": _parquet(records[:2]),
            "data/test-00000-of-00001.parquet": _parquet(records[2:])}


def _mc(name: str, n: int, n_choices: int = 3, **settings) -> dict:
    examples = [{"input": f"{name} question {i}?",
                 "target_scores": {f"answer {j}": int(j == i % n_choices)
                                   for j in range(n_choices)}} for i in range(n)]
    return {"name": name, "description": "fixture", "keywords": ["multiple choice"],
            "metrics": ["multiple_choice_grade"], **settings, "examples": examples}


def write_bigbench(root: Path) -> Path:
    """`<root>/bigbench/benchmark_tasks` of a BIG-bench clone: 2 tasks Xia et al.'s rule keeps
    (one with subtasks), one too large, one generative, one with a choice-less example."""
    tasks = root / "bigbench" / "benchmark_tasks"
    files = {
        "animal_facts/task.json": _mc("animal_facts", 5, example_input_prefix="Q: ",
                                      example_output_prefix=" A:"),
        "huge_task/task.json": _mc("huge_task", 1000),
        "two_parts/task.json": {"name": "two_parts", "description": "subtasks"},
        "two_parts/first/task.json": _mc("first", 4),
        "two_parts/second/task.json": _mc("second", 4, n_choices=2),
        "poems/task.json": {"name": "poems", "metrics": ["bleu"],
                            "examples": [{"input": "a", "target": "b"}] * 3},
        "broken/task.json": {**_mc("broken", 3), "examples": [
            {"input": "x", "target_scores": {"a": 1, "b": 0}}, {"input": "y"}]},
    }
    for rel, data in files.items():
        path = tasks / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))
    (tasks / "programmatic_only").mkdir()
    (tasks / "programmatic_only" / "task.py").write_text("# a programmatic task\n")
    return tasks


def use_hub(monkeypatch, url: str, cache: Path) -> None:
    """huggingface_hub and datasets (already imported) read from `url`, caching under `cache`."""
    import datasets.config
    from huggingface_hub import constants

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache / "hub"))
    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", url)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache / "datasets")
