"""The shipped batch files validate offline (every key checked, models and steps in the suite)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from evals.config import ConfigError, load_batch_file

ROOT = Path(__file__).resolve().parents[1]
BIGBENCH = ROOT.parent / "shared" / "data" / "bigbench"
# The shipped batches say device = "cuda"; a batch asking for CUDA where there is none is
# refused (issue 33), so on a CPU machine these checks run them with device = "cpu".
CPU = [] if __import__("torch").cuda.is_available() else ["device=cpu"]


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
    cfg = load_batch_file(_with_local_data(tmp_path), CPU)
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
        load_batch_file(batch, CPU)
    problems = "\n".join(err.value.problems)
    assert "[evaluators.token-loss]: dataset = 'data/pile_val.jsonl': no such file" in problems
    assert "[evaluators.sequences]: dataset = 'data/facts.jsonl': no such file" in problems
    assert "[evaluators.bigbench-mc]: folder = 'bigbench': no such folder" in problems
    assert len(err.value.problems) == 3, problems  # one line each, nothing else


def test_hub_dataset_names_and_bad_task_selections(tmp_path):
    batch = _with_local_data(tmp_path)
    # a name without a file suffix is a hub dataset: not checked here
    cfg = load_batch_file(batch, [*CPU, 'evaluators={"token-loss"={dataset="NeelNanda/pile-10k"}}'])
    assert cfg.evaluators["token-loss"]["dataset"] == "NeelNanda/pile-10k"
    with pytest.raises(ConfigError, match=r"tasks = \['no_such_task'\]: tasks \['no_such_task'\] "
                                          "not found"):
        load_batch_file(batch, [*CPU, 'evaluators={"bigbench-mc"={folder="bigbench", '
                                'tasks=["no_such_task"]}}'])


def _olmo_branches(tokens_per_step: int, last: int) -> list[str]:
    """A stand-in for an OLMo repo's branches: main + step<N>-tokens<M>B every 1000 steps."""
    return ["main", *(f"step{s}-tokens{round(s * tokens_per_step / 1e9)}B"
                      for s in range(0, last + 1, 1000))]


def _pythia_vs_olmo(tmp_path: Path) -> Path:
    batch = tmp_path / "pythia-vs-olmo.toml"
    shutil.copy(ROOT / "batches" / "pythia-vs-olmo.toml", batch)
    _with_local_data(tmp_path)
    (tmp_path / "data" / "val.jsonl").write_text(json.dumps({"text": "a held-out text ."}))
    return batch


@pytest.mark.skipif(not BIGBENCH.is_dir(), reason="needs ../shared/data/bigbench")
def test_pythia_vs_olmo_batch_validates_from_a_cached_ref_list(tmp_path, monkeypatch):
    """Issue 20: OLMo's revisions come from a (faked) hub ref list, cached, then offline."""
    from types import SimpleNamespace

    import huggingface_hub

    from dynamics.suites import get_suite

    branches = {"allenai/OLMo-1B-hf": _olmo_branches(2048 * 2048, 738_000),
                "allenai/OLMo-7B-hf": _olmo_branches(2160 * 2048, 556_000)}
    monkeypatch.setattr(huggingface_hub, "list_repo_refs", lambda repo, **_: SimpleNamespace(
        branches=[SimpleNamespace(name=n, target_commit=None) for n in branches[repo]]))
    monkeypatch.setenv("DYNAMICS_REFS_CACHE", str(tmp_path / "refs"))
    batch = _pythia_vs_olmo(tmp_path)
    with pytest.raises(ConfigError) as err:  # offline, nothing cached: says what to do
        load_batch_file(batch, CPU)
    assert "allenai/OLMo-1B-hf are read from the Hugging Face hub" in str(err.value)
    assert "HF_HUB_OFFLINE is set" in str(err.value)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    for model in ("OLMo-1B-hf", "OLMo-7B-hf"):  # what `dynamics suites --steps` does online
        get_suite("olmo").checkpoints(model)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "list_repo_refs", None)  # the cache must answer
    cfg = load_batch_file(batch, CPU)
    assert cfg.suite == "pythia+olmo" and set(cfg.evaluators) == {"token-loss", "sequences",
                                                                  "bigbench-mc"}
    refs = get_suite(cfg.suite).select(cfg.models, cfg.steps)
    by_family = {f: {r.model for r in refs if r.family == f} for f in ("pythia", "olmo")}
    assert by_family == {"pythia": {"pythia-410m", "pythia-1b", "pythia-1.4b", "pythia-2.8b",
                                    "pythia-6.9b"}, "olmo": {"OLMo-1B-hf", "OLMo-7B-hf"}}
    olmo7 = [r for r in refs if r.model == "OLMo-7B-hf"]
    assert olmo7[0].step == 0 and olmo7[-1].revision == "step556000-tokens2460B"
    assert olmo7[-1].tokens_seen == 556_000 * 2160 * 2048
    # log-spaced over 0, 1000, 2000, ...: targets below 1000 merge, so fewer than 24
    assert [r.step for r in olmo7[:4]] == [0, 1000, 2000, 3000] and len(olmo7) == 13
    assert len([r for r in refs if r.model == "pythia-1b"]) == 21  # 3 targets merge too
    # the seed-runs variant the file's comment gives
    seeded = load_batch_file(batch, [*CPU, 'suite="pythia+polypythia+olmo"',
                                     'models=["pythia-410m", "pythia-410m-seed1", "OLMo-1B-hf"]'])
    assert get_suite(seeded.suite).seeds["pythia-410m-seed1"].group == "pythia-410m"
