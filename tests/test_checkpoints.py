import pytest

from dynamics.checkpoints import CheckpointRef, log_spaced, select_steps
from dynamics.suites import PYTHIA_TOKENS_PER_STEP, get_suite, opt_params, pythia_steps


def test_pythia_schedule_has_154_revisions_and_tokens():
    steps = pythia_steps()
    assert len(steps) == 154
    assert steps[:12] == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000]
    assert steps[-1] == 143000 and steps[-2] == 142000
    suite = get_suite("pythia")
    refs = suite.checkpoints("pythia-70m")
    assert len(refs) == 154
    by_step = {r.step: r for r in refs}
    assert by_step[1000].tokens_seen == 1000 * 2_097_152
    assert by_step[143000].tokens_seen == 299_892_736_000
    assert by_step[143000].revision == "step143000"
    assert by_step[143000].source == "EleutherAI/pythia-70m"
    assert by_step[143000].flops == 6 * 70_426_624 * 143000 * PYTHIA_TOKENS_PER_STEP


def test_pythia_sizes_and_deduped():
    plain, dedup = get_suite("pythia"), get_suite("pythia-deduped")
    sizes = ["14m", "31m", "70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b"]
    assert plain.model_names() == [f"pythia-{s}" for s in sizes]
    assert dedup.model_names() == [f"pythia-{s}-deduped" for s in sizes]
    assert dedup.checkpoints("pythia-1b-deduped")[0].family == "pythia-deduped"


def test_opt_params_match_published_counts():
    # facebook/opt-125m and opt-350m parameter counts as reported by HF.
    assert opt_params(12, 768) == 125_239_296
    assert opt_params(24, 1024, word_embed_proj_dim=512) == 331_196_416
    opt = get_suite("opt")
    assert len(opt.model_names()) == 8
    (ref,) = opt.checkpoints("opt-1.3b")
    assert ref.tokens_seen == pytest.approx(300e9, rel=0.01)


def test_unknown_model_suggests():
    with pytest.raises(ValueError, match="Did you mean pythia-70m"):
        get_suite("pythia").checkpoints("pythia-70")


@pytest.mark.parametrize(
    "selection,expected",
    [
        ([0, 1000], [0, 1000]),
        ("final", [143000]),
        ("1000..5000", [1000, 2000, 3000, 4000, 5000]),
        ("0..512 every 128", [0, 128, 256, 512]),
        ("every 50000", [0, 50000, 100000]),
        ("every 50000 + final + 1..4", [0, 1, 2, 4, 50000, 100000, 143000]),  # issue 17
        ("0..512 + every 5000 + final", [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
         + list(range(5000, 140001, 5000)) + [143000]),
    ],
)
def test_select_steps(selection, expected):
    assert select_steps(pythia_steps(), selection) == expected


def test_log_spaced_matches_docstring_example():
    assert log_spaced(pythia_steps(), 5) == [0, 16, 512, 7000, 143000]
    picked = log_spaced(pythia_steps(), 20)
    assert picked[0] == 0 and picked[-1] == 143000 and len(picked) == 20


@pytest.mark.parametrize("bad", ["log-spaced", "every 0", "5..1", [3], ["a"], 3.5, "sometimes",
                                 "final + ", "final + sometimes"])
def test_bad_selection_names_value(bad):
    with pytest.raises(ValueError) as err:
        select_steps(pythia_steps(), bad)
    assert "steps" in str(err.value) or "every" in str(err.value) or "range" in str(err.value)


def test_ref_flops_default_and_override():
    r = CheckpointRef("f", "m", params=10, step=2, tokens_seen=100, source="x")
    assert r.flops == 6000.0
    assert CheckpointRef("f", "m", 10, 2, 100, "x", flops=5.0).flops == 5.0
