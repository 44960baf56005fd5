"""Issue 20: PolyPythia, OLMo, CRFM GPT-2 and Amber suites; hub ref lists cached; seeds."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from dynamics import hub_refs
from dynamics.hub_refs import OLMO_REVISION, RevisionListUnavailableError, parse_revisions
from dynamics.suites import Suite, SuiteError, combine_suites, get_suite
from dynamics.suites_open import (
    crfm_steps,
    gpt2_params,
    llama_params,
    olmo_params,
    olmo_tokens,
)

OLMO_1B = ["main", *(f"step{s}-tokens{round(s * 2048 * 2048 / 1e9)}B"
                     for s in range(0, 20_001, 1000))]


def fake_refs(monkeypatch, branches: dict[str, list[str]]) -> list[str]:
    """Replace huggingface_hub.list_repo_refs; return the list of repos it was asked for."""
    import huggingface_hub

    calls = []

    def list_repo_refs(repo, **_):
        calls.append(repo)
        if repo not in branches:
            raise OSError(f"404 {repo}")
        return SimpleNamespace(branches=[SimpleNamespace(name=n, target_commit=f"c{i}")
                                         for i, n in enumerate(branches[repo])], tags=[])

    monkeypatch.setattr(huggingface_hub, "list_repo_refs", list_repo_refs)
    return calls


@pytest.fixture
def online(monkeypatch, tmp_path):
    """An empty ref cache under tmp_path and HF_HUB_OFFLINE unset (the hub itself is faked)."""
    monkeypatch.setenv("DYNAMICS_REFS_CACHE", str(tmp_path / "refs"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path / "refs"


def test_param_formulas_match_tiny_hf_models():
    import torch
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        OlmoConfig,
        OlmoForCausalLM,
    )

    def count(model):
        return sum(p.numel() for p in model.parameters())  # tied weights counted once

    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=97, n_positions=32, n_embd=16, n_layer=2,
                                      n_head=2))
    assert count(gpt2) == gpt2_params(2, 16, vocab=97, n_positions=32)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=16, intermediate_size=40,
                                         num_hidden_layers=2, num_attention_heads=2,
                                         num_key_value_heads=2, tie_word_embeddings=False))
    assert count(llama) == llama_params(2, 16, 40, 97)
    for tied in (True, False):
        olmo = OlmoForCausalLM(OlmoConfig(vocab_size=97, hidden_size=16, intermediate_size=40,
                                          num_hidden_layers=2, num_attention_heads=2,
                                          tie_word_embeddings=tied))
        assert olmo.config.intermediate_size == 40 and olmo.config.num_hidden_layers == 2
        assert count(olmo) == olmo_params(2, 16, 40, tied, vocab=97)


def test_builtin_open_suites_sizes_and_published_counts():
    # the counts the model cards state: GPT-2 small 124M, medium 355M; LLaMA-7B 6.74B
    crfm = get_suite("crfm-gpt2")
    assert crfm.params_of("alias-gpt2-small-x21") == 124_439_808
    assert crfm.params_of("eowyn-gpt2-medium-x777") == 354_823_168
    assert get_suite("amber").params_of("Amber") == 6_738_415_616
    olmo = get_suite("olmo")
    assert olmo.params_of("OLMo-1B-hf") == 1_176_764_416
    assert olmo.params_of("OLMo-7B-hf") == 6_888_095_744


def test_crfm_schedule_and_seeds():
    steps = crfm_steps()
    assert len(steps) == 609 and steps[:3] == [0, 10, 20] and steps[-1] == 400_000
    assert steps[10:12] == [100, 150] and 2000 in steps and 2050 not in steps
    assert {b - a for a, b in zip(steps, steps[1:], strict=False) if a >= 20_000} == {1000}
    suite = get_suite("crfm-gpt2")
    refs = suite.checkpoints("caprica-gpt2-small-x81")
    assert refs[-1].revision == "checkpoint-400000"
    assert refs[-1].tokens_seen == 400_000 * 512 * 1024
    assert refs[-1].source == "stanford-crfm/caprica-gpt2-small-x81"
    groups = {}
    for seed in suite.seeds.values():
        groups.setdefault(seed.group, set()).add(seed.seed)
    assert groups == {"gpt2-small": {21, 49, 81, 343, 777}, "gpt2-medium": {21, 49, 81, 343, 777}}


def test_polypythia_seed_runs():
    suite = get_suite("polypythia")
    assert len(suite.models) == 5 * 10
    ref = suite.checkpoints("pythia-160m-seed3")[-1]
    assert (ref.family, ref.source, ref.revision) == ("pythia", "EleutherAI/pythia-160m-seed3",
                                                      "step143000")
    assert ref.tokens_seen == get_suite("pythia").checkpoints("pythia-160m")[-1].tokens_seen
    assert suite.seeds["pythia-160m-seed3"].seed == 3
    assert suite.seeds["pythia-160m"].seed == 0  # the original run (RNG seed 1234), as PolyPythias
    assert suite.checkpoints("pythia-160m")[0].source == "EleutherAI/pythia-160m"  # no -seed
    assert {r.source for m in suite.models for r in suite.checkpoints(m)[:1]} >= {
        f"EleutherAI/pythia-{size}-seed{k}" for size in ("14m", "31m", "70m", "160m", "410m")
        for k in range(1, 10)}  # the README's naming pattern, all 45 seed repos
    assert {s.seed for m, s in suite.seeds.items() if s.group == "pythia-410m"} == set(range(10))
    assert "pythia-1b-seed1" not in suite.models


def test_amber_checkpoints():
    """LLM360/amber-train main.py: 360 equal chunks of 1,706,976 examples of 2,048 tokens, ckpt_i
    saved after chunk i (issue 28; was 1.259T / 360 per chunk, from the card's rounded total)."""
    refs = get_suite("amber").checkpoints("Amber")
    assert [r.revision for r in refs[:2]] == ["ckpt_000", "ckpt_001"]
    assert refs[-1].revision == "ckpt_359" and refs[-1].step == 359 and len(refs) == 360
    assert refs[0].tokens_seen == 1_706_976 * 2048 == 3_495_886_848
    assert refs[-1].tokens_seen == 1_258_519_265_280
    assert round(refs[-1].tokens_seen / 1e12, 2) == 1.26  # the card's "1.26T tokens"


def test_parse_revisions_skips_other_branches_and_sorts():
    revs = parse_revisions("r", ["main", "step1000-tokens4B", "step0-tokens0B", "x-step2"],
                           OLMO_REVISION)
    assert revs == [("step0-tokens0B", 0, 0), ("step1000-tokens4B", 1000, 4)]
    with pytest.raises(SuiteError, match=r"none of its 2 branches matches"):
        parse_revisions("r", ["main", "ckpt_001"], OLMO_REVISION)


def test_olmo_tokens_are_step_times_batch_checked_against_the_name():
    assert olmo_tokens("r", 1000, 4, 4_194_304) == 4_194_304_000
    assert olmo_tokens("r", 20_000, 84, 4_194_304) == 83_886_080_000
    # OLMo-1B-hf's names run up to ~0.1 % behind (step425000-tokens1781B: 1,782.6B): accepted
    assert olmo_tokens("r", 425_000, 1781, 4_194_304) == 425_000 * 4_194_304
    # a name the batch size cannot explain is refused, not taken instead (issue 28)
    with pytest.raises(SuiteError, match=r"r revision step20000-tokens88B: step x 4,194,304 "
                                         r"tokens per step = 83.9B, not 88B"):
        olmo_tokens("r", 20_000, 88, 4_194_304)


def test_olmo_7b_batch_is_the_cards_2160_instances():
    """The OLMo-7B card's revisions step452000-tokens2000B and step556000-tokens2460B fit
    2160 x 2048 tokens per step, and are refused under the config file's 2048 x 2048."""
    from dynamics.suites_open import OLMO_MODELS

    per_step = OLMO_MODELS["OLMo-7B-hf"][4]
    assert per_step == 2160 * 2048 and OLMO_MODELS["OLMo-1B-hf"][4] == 2048 * 2048
    assert olmo_tokens("r", 452_000, 2000, per_step) == 1_999_503_360_000
    assert olmo_tokens("r", 556_000, 2460, per_step) == 2_459_566_080_000
    for step, billions in ((452_000, 2000), (556_000, 2460)):
        with pytest.raises(SuiteError, match="does not fit this repo"):
            olmo_tokens("r", step, billions, 2048 * 2048)


def test_olmo_1b_hf_ties_its_embeddings_and_7b_does_not():
    """OLMo-1B.yaml weight_tying: true, OLMo-7B.yaml false, carried into tie_word_embeddings by
    HF's converter: the 1B count has one 50304 x 2048 matrix, the 7B two of 50304 x 4096."""
    from dynamics.suites_open import OLMO_MODELS

    assert OLMO_MODELS["OLMo-1B-hf"][3] is True and OLMO_MODELS["OLMo-7B-hf"][3] is False
    assert olmo_params(16, 2048, 8192, False) - olmo_params(16, 2048, 8192, True) == 103_022_592


def test_olmo_ref_list_read_once_then_cached(monkeypatch, online):
    calls = fake_refs(monkeypatch, {"allenai/OLMo-1B-hf": OLMO_1B})
    suite = get_suite("olmo")
    assert suite.cached_checkpoints("OLMo-1B-hf") is None and calls == []  # no network to list
    refs = suite.checkpoints("OLMo-1B-hf")
    assert calls == ["allenai/OLMo-1B-hf"]
    assert [r.step for r in refs] == list(range(0, 20_001, 1000))
    assert refs[1].revision == "step1000-tokens4B" and refs[1].tokens_seen == 1000 * 2048 * 2048
    assert refs[-1].flops == 6.0 * 1_176_764_416 * 20_000 * 2048 * 2048
    cached = json.loads((online / "allenai--OLMo-1B-hf.json").read_text())
    assert cached["repo"] == "allenai/OLMo-1B-hf" and len(cached["branches"]) == len(OLMO_1B)
    # a second suite (another process): the cache answers, the hub is not asked again
    again = get_suite("olmo")
    assert [r.revision for r in again.cached_checkpoints("OLMo-1B-hf")] == [
        r.revision for r in refs]
    assert again.select(["OLMo-1B-hf"], "final")[0].step == 20_000
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert len(get_suite("olmo").checkpoints("OLMo-1B-hf")) == 21
    assert calls == ["allenai/OLMo-1B-hf"]


def test_olmo_offline_without_cache_says_what_to_do(monkeypatch, online):
    calls = fake_refs(monkeypatch, {})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RevisionListUnavailableError) as err:
        get_suite("olmo").checkpoints("OLMo-7B-hf")
    text = str(err.value)
    assert "allenai/OLMo-7B-hf" in text and "HF_HUB_OFFLINE is set" in text
    assert str(online / "allenai--OLMo-7B-hf.json") in text
    assert "dynamics suites --steps" in text and calls == []
    monkeypatch.delenv("HF_HUB_OFFLINE")  # online, but the hub fails: the cause is named
    with pytest.raises(RevisionListUnavailableError, match=r"could not be reached \(OSError: "
                                                           r"404 allenai/OLMo-7B-hf\)"):
        get_suite("olmo").checkpoints("OLMo-7B-hf")
    assert not (online / "allenai--OLMo-7B-hf.json").exists()


def test_corrupt_cache_names_the_file(online):
    online.mkdir(parents=True)
    (online / "allenai--OLMo-1B-hf.json").write_text("{not json")
    with pytest.raises(SuiteError, match="does not parse.*delete it"):
        hub_refs.read_cached("allenai/OLMo-1B-hf")


def test_suites_joined_with_plus(monkeypatch, online):
    fake_refs(monkeypatch, {"allenai/OLMo-1B-hf": OLMO_1B})
    both = get_suite("pythia+olmo")
    assert both.name == "pythia+olmo" and {"pythia-1b", "OLMo-7B-hf"} <= set(both.models)
    assert both.params_of("OLMo-7B-hf") == 6_888_095_744  # no ref list needed
    refs = both.select(["pythia-1b", "OLMo-1B-hf"], "final")
    assert [(r.family, r.step) for r in refs] == [("pythia", 143_000), ("olmo", 20_000)]
    seeded = get_suite("polypythia+olmo")
    assert seeded.seeds["pythia-70m-seed2"].group == "pythia-70m"
    # Pythia's models are PolyPythia's seed 0: the same checkpoints, kept once
    all_pythia = get_suite("pythia+polypythia+olmo")
    assert len(all_pythia.models) == 10 + 45 + 2
    assert all_pythia.seeds["pythia-160m"].seed == 0 and "pythia-12b" not in all_pythia.seeds
    assert len(get_suite("pythia+pythia").models) == 10  # the same suite twice is harmless
    pythia = get_suite("pythia")
    other = Suite("mine", "a local run named like Pythia",
                  {"pythia-14m": pythia.checkpoints("pythia-14m")[:3]})
    with pytest.raises(SuiteError, match="'pythia-14m' is in more than one .* with different"):
        combine_suites([pythia, other])
    with pytest.raises(SuiteError, match="unknown suite 'pythia\\+nope'"):
        get_suite("pythia+nope")


def test_cli_lists_the_new_suites_without_network(monkeypatch, online, capsys):
    from dynamics.cli import main

    calls = fake_refs(monkeypatch, {})
    assert main(["suites"]) == 0
    out = capsys.readouterr().out
    for line in ("polypythia: ", "olmo: ", "crfm-gpt2: ", "amber: "):
        assert f"\n{line}" in out
    assert "pythia-160m-seed9" in out and "seed=9 of pythia-160m" in out
    assert "seed=343 of gpt2-small" in out
    olmo = next(x for x in out.splitlines() if x.strip().startswith("OLMo-7B-hf"))
    assert "6,888,095,744" in olmo and "hub list, not cached" in olmo
    amber = next(x for x in out.splitlines() if x.strip().startswith("Amber "))
    assert "checkpoints=360" in amber
    assert calls == []


def test_cli_steps_from_the_ref_list_then_the_cache(monkeypatch, online, capsys):
    from dynamics.cli import main

    calls = fake_refs(monkeypatch, {"allenai/OLMo-1B-hf": OLMO_1B})
    assert main(["suites", "--steps", "OLMo-1B-hf"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split() == ["revision", "step", "tokens_seen", "flops"]
    assert rows[2].split()[:3] == ["step1000-tokens4B", "1000", "4,194,304,000"]
    assert len(rows) == 1 + 21 and calls == ["allenai/OLMo-1B-hf"]
    assert main(["suites", "--suite", "olmo"]) == 0
    assert "checkpoints=21" in capsys.readouterr().out  # now cached
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["suites", "--steps", "OLMo-1B-hf"]) == 0 and calls == ["allenai/OLMo-1B-hf"]
    capsys.readouterr()
    assert main(["suites", "--steps", "OLMo-7B-hf"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the revisions of allenai/OLMo-7B-hf are read from the "
                          "Hugging Face hub") and "HF_HUB_OFFLINE is set" in err
    assert main(["suites", "--steps", "alias-gpt2-small-x21"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[-1].split()[:3] == ["checkpoint-400000", "400000", "209,715,200,000"]


def test_ref_list_through_the_real_client_against_a_local_hub(monkeypatch, online, tmp_path):
    """The real `huggingface_hub.list_repo_refs` (HTTP, parsing) on a hub at 127.0.0.1."""
    import huggingface_hub.hf_api

    from tests.hub_server import TinyHub

    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    server = TinyHub()
    for name in ("main", "step0-tokens0B", "step2000-tokens8B", "step1000-tokens4B"):
        server.add_revision("allenai/OLMo-1B-hf", name, folder)
    server.serve()
    try:
        # the module-level list_repo_refs is bound to an HfApi made at import: repoint it
        monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", server.url)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # read at import
        refs = get_suite("olmo").checkpoints("OLMo-1B-hf")
        assert [(r.revision, r.tokens_seen) for r in refs] == [
            ("step0-tokens0B", 0), ("step1000-tokens4B", 1000 * 2048 * 2048),
            ("step2000-tokens8B", 2000 * 2048 * 2048)]
        assert server.requests == [("GET", "/api/models/allenai/OLMo-1B-hf/refs")]
        cached = json.loads((online / "allenai--OLMo-1B-hf.json").read_text())
        assert {b["commit"] for b in cached["branches"]} == {
            r.commit for r in server.repos["allenai/OLMo-1B-hf"].values()}
        with pytest.raises(RevisionListUnavailableError, match="could not be reached .*"
                                                               "RepositoryNotFoundError"):
            get_suite("olmo").checkpoints("OLMo-7B-hf")  # a repo the hub does not have
    finally:
        server.close()
