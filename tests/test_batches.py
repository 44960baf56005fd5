"""The shipped batch files validate offline (every key checked, models and steps in the suite)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from evals.config import ConfigError, load_batch_file

ROOT = Path(__file__).resolve().parents[1]
BIGBENCH = ROOT.parent / "shared" / "data" / "bigbench"


def _with_local_data(tmp_path: Path) -> Path:
    """A copy of the paper's batch file beside stand-ins for the data a user supplies."""
    batch = tmp_path / "xia2023-pythia.toml"
    shutil.copy(ROOT / "batches" / "xia2023-pythia.toml", batch)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "pile_val.jsonl").write_text(
        "".join(json.dumps({"text": f"validation document {i} ."}) + "\n" for i in range(3)))
    (tmp_path / "data" / "facts.jsonl").write_text("".join(
        json.dumps({"set": s, "pair_id": i, "text": f"{w} is in france ."}) + "\n"
        for i in range(2) for s, w in (("factual", "paris"), ("hallucinated", "rome"))))
    (tmp_path / "bigbench").symlink_to(BIGBENCH)
    return batch


@pytest.mark.skipif(not BIGBENCH.is_dir(), reason="needs ../shared/data/bigbench")
def test_xia2023_pythia_batch_validates(tmp_path):
    cfg = load_batch_file(_with_local_data(tmp_path))
    assert set(cfg.evaluators) == {"token-loss", "sequences", "bigbench-mc"}
    assert len(cfg.models) == 8 and "pythia-12b" in cfg.models
    gen = cfg.generate["paper"]
    assert (gen["small"], gen["large"]) == ("pythia-160m", "pythia-6.9b")
    assert gen["grid"] == "paper"
    assert cfg.evaluators["bigbench-mc"]["tasks"] == "xia74"
    # issue 17: the paper's schedule (early log-spaced + evenly spaced), 40 checkpoints
    from dynamics.suites import get_suite
    steps = sorted({r.step for r in get_suite("pythia").select(["pythia-70m"], cfg.steps)})
    assert len(steps) == 40 and steps[:11] == [0] + [2**i for i in range(10)]
    assert steps[11:] == [*range(5000, 140_001, 5000), 143_000]


def test_missing_data_files_stop_the_batch_before_any_checkpoint(tmp_path):
    batch = tmp_path / "xia2023-pythia.toml"
    shutil.copy(ROOT / "batches" / "xia2023-pythia.toml", batch)
    with pytest.raises(ConfigError) as err:
        load_batch_file(batch)
    problems = "\n".join(err.value.problems)
    assert "[evaluators.token-loss]: dataset = 'data/pile_val.jsonl': no such file" in problems
    assert "[evaluators.sequences]: dataset = 'data/facts.jsonl': no such file" in problems
    assert "[evaluators.bigbench-mc]: folder = 'bigbench': no such folder" in problems
    assert len(err.value.problems) == 3, problems  # one line each, nothing else


def test_hub_dataset_names_and_bad_task_selections(tmp_path):
    batch = _with_local_data(tmp_path)
    # a name without a file suffix is a hub dataset: not checked here
    cfg = load_batch_file(batch, ['evaluators={"token-loss"={dataset="NeelNanda/pile-10k"}}'])
    assert cfg.evaluators["token-loss"]["dataset"] == "NeelNanda/pile-10k"
    with pytest.raises(ConfigError, match=r"tasks = \['no_such_task'\]: tasks \['no_such_task'\] "
                                          "not found"):
        load_batch_file(batch, ['evaluators={"bigbench-mc"={folder="bigbench", '
                                'tasks=["no_such_task"]}}'])
