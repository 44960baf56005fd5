"""The shipped batch files validate offline (every key checked, models and steps in the suite);
every input is named (hub datasets, a BIG-bench clone), none points outside the repository."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from evals.config import ConfigError, load_batch_file

ROOT = Path(__file__).resolve().parents[1]
BATCHES = sorted((ROOT / "batches").glob("*.toml"))
# The shipped batches say device = "cuda"; a batch asking for CUDA where there is none is
# refused, so on a CPU machine these checks run them with device = "cpu".
CPU = [] if __import__("torch").cuda.is_available() else ["device=cpu"]


def _with_local_data(tmp_path: Path) -> Path:
    """A copy of the paper's batch file beside a BIG-bench clone's layout (the only input not
    fetched by name)."""
    from tests.hub_datasets import write_bigbench

    batch = tmp_path / "xia2023-pythia.toml"
    shutil.copy(ROOT / "batches" / "xia2023-pythia.toml", batch)
    write_bigbench(tmp_path / "BIG-bench")
    return batch


@pytest.mark.parametrize("path", BATCHES, ids=lambda p: p.name)
def test_shipped_batches_name_their_inputs_and_point_nowhere_outside(path):
    """Issue 35: inputs are hub datasets or the documented BIG-bench clone, never ../shared or
    hand-made data/ files."""
    import tomllib

    text = path.read_text()
    assert "../" not in text and "shared/" not in text
    ev = tomllib.loads(text)["evaluators"]
    assert ev["token-loss"]["dataset"] == "EleutherAI/pile_val_test"
    assert ev["token-loss"]["data_files"] == {"validation": "val.jsonl"}
    assert (ev["sequences"]["dataset"], ev["sequences"]["adapter"]) == ("azhx/counterfact",
                                                                         "counterfact")
    assert ev["bigbench-mc"]["folder"] == "BIG-bench/bigbench/benchmark_tasks"
    assert ev["recall-bigram"]["text"]["dataset"] == "EleutherAI/pile_val_test"
    assert "git clone --depth 1 https://github.com/google/BIG-bench" in text


def test_xia2023_pythia_batch_validates(tmp_path):
    cfg = load_batch_file(_with_local_data(tmp_path), CPU)
    assert set(cfg.evaluators) == {"token-loss", "sequences", "bigbench-mc", "recall-bigram"}
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


def test_missing_bigbench_clone_stops_the_batch_saying_how_to_get_it(tmp_path):
    batch = tmp_path / "xia2023-pythia.toml"
    shutil.copy(ROOT / "batches" / "xia2023-pythia.toml", batch)
    with pytest.raises(ConfigError) as err:
        load_batch_file(batch, CPU)
    [problem] = err.value.problems  # the hub datasets are names: nothing else to supply
    assert "[evaluators.bigbench-mc]: folder = 'BIG-bench/bigbench/benchmark_tasks': no such " \
           "folder" in problem
    assert "git clone --depth 1 https://github.com/google/BIG-bench" in problem


def test_hub_dataset_names_and_bad_task_selections(tmp_path):
    batch = _with_local_data(tmp_path)
    # a name without a file suffix is a hub dataset: not checked here
    cfg = load_batch_file(batch, [*CPU, 'evaluators={"token-loss"={dataset="NeelNanda/pile-10k"}}'])
    assert cfg.evaluators["token-loss"]["dataset"] == "NeelNanda/pile-10k"
    with pytest.raises(ConfigError, match=r"tasks = \['no_such_task'\]: tasks \['no_such_task'\] "
                                          "not found"):
        load_batch_file(batch, [*CPU, 'evaluators={"token-loss"={dataset="x"}, "bigbench-mc"={'
                                'folder="BIG-bench/bigbench/benchmark_tasks", '
                                'tasks=["no_such_task"]}}'])


def _olmo_branches(tokens_per_step: int, last: int) -> list[str]:
    """A stand-in for an OLMo repo's branches: main + step<N>-tokens<M>B every 1000 steps."""
    return ["main", *(f"step{s}-tokens{round(s * tokens_per_step / 1e9)}B"
                      for s in range(0, last + 1, 1000))]


def _pythia_vs_olmo(tmp_path: Path) -> Path:
    batch = tmp_path / "pythia-vs-olmo.toml"
    shutil.copy(ROOT / "batches" / "pythia-vs-olmo.toml", batch)
    _with_local_data(tmp_path)
    return batch


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
    assert cfg.suite == "pythia+olmo" and set(cfg.evaluators) == {
        "token-loss", "sequences", "bigbench-mc", "recall-bigram"}
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
