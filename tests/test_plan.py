"""`dynamics plan BATCH`: a batch's cost before it runs, nothing loaded (evals.plan).

The compute estimate is checked against a measured run on this machine: the
throughput is calibrated in the same test (a random-weight model of each
checkpoint's config), then the token-loss units are run and timed; the estimate
must be within 2x of what they took.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from dynamics.checkpoints import CheckpointRef
from dynamics.cli import main
from dynamics.loading import load_checkpoint
from dynamics.manifest import write_manifest
from dynamics.suites import PYTHIA_PARAMS
from dynamics.tiny import count_params, save_checkpoint, save_pickle_checkpoint, tiny_gpt_neox
from evals.config import load_batch, load_batch_file
from evals.execute import run_batch
from evals.plan import evaluator_tokens, peak_disk, plan_batch
from evals.token_loss import TokenLoss, TokenLossOptions
from tests.helpers import tiny_tokenizer, write_val
from tests.hub_server import TinyHub, point_hub_at

ROOT = Path(__file__).resolve().parents[1]
XIA = ROOT / "batches" / "xia2023-pythia.toml"
HIDDEN = {"w128": 128, "w256": 256}
PARAMS = {"w128": 463_104, "w256": 1_712_640}  # asserted when built


def test_peak_disk_keeps_the_budget_plus_the_next_download():
    assert peak_disk([10, 10, 10, 10], None) == 40  # no budget: everything stays
    assert peak_disk([10, 10, 10, 10], 25) == 30  # two kept (20 <= 25), the third lands
    assert peak_disk([24, 24, 24], 30) == 48  # the one in use + the next
    assert peak_disk([5, 30, 5, 5], 12) == 35  # a checkpoint above the budget still lands
    assert peak_disk([], 10) == 0


def test_xia_batch_offline_from_the_suites_known_sizes(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = load_batch_file(XIA, check_inputs=False)
    plan = plan_batch(cfg, batch_name="xia")
    sizes = ["70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b"]
    assert [m.model for m in plan.models] == [f"pythia-{s}" for s in sizes]
    assert {m.checkpoints for m in plan.models} == {40}
    assert {sum(m.units.values()) for m in plan.models} == {160}  # 40 x 4 evaluators
    assert plan.total_bytes == 40 * 2 * sum(PYTHIA_PARAMS[s] for s in sizes)  # float16
    assert plan.device_class == "h100" and plan.models[0].throughput.flops_per_s == 380e12
    tl = plan.total_seconds("token-loss")
    assert tl == pytest.approx(40 * 2 * sum(PYTHIA_PARAMS[s] for s in sizes) * 1e6 / 380e12)
    assert plan.total_seconds() is None and not plan.complete  # CounterFact offline, bigbench/ missing
    budget = 200 * 2**30
    per = [2 * PYTHIA_PARAMS[s] for s in sizes for _ in range(40)]
    assert plan.peak_disk == peak_disk(per, budget) > budget
    assert main(["plan", str(XIA)]) == 1
    out = capsys.readouterr().out
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert "320" in total and "1280" in total and "2.0 TB" in total
    assert "missing input: [evaluators.bigbench-mc]" in out
    assert "sequences: unknown (azhx/counterfact" in out
    assert "recall-bigram: 4,096 (its probe" in out  # 64 sequences x 64 tokens


def _compute_suite(root: Path) -> Path:
    tok = tiny_tokenizer()
    models = []
    for name, hidden in HIDDEN.items():
        ckpts = []
        for step in (0, 10):
            model = tiny_gpt_neox(vocab_size=len(tok), hidden_size=hidden, num_heads=4,
                                  intermediate_size=4 * hidden, max_positions=128,
                                  seed=step + hidden, expected_params=PARAMS[name])
            save_checkpoint(model, tok, root / name / f"step{step}")
            ckpts.append({"step": step, "path": f"{name}/step{step}"})
        models.append({"name": name, "params": PARAMS[name], "checkpoints": ckpts})
    write_manifest(root / "suite.toml", "widths", models, family="widths", tokens_per_step=10)
    return root


class TimedTokenLoss(TokenLoss):
    """token-loss, timing each unit's `run` (tokenization done before, as it is cached)."""

    seconds: list[float]

    def run(self, lm):
        t0 = time.perf_counter()
        out = super().run(lm)
        self.seconds.append(time.perf_counter() - t0)
        return out


@pytest.mark.slow
def test_compute_estimate_within_2x_of_a_measured_run(tmp_path):
    """One thread, so that the other processes of a busy host slow calibration and run
    alike (two threads wait on each other when one is descheduled)."""
    import torch
    from transformers import AutoTokenizer

    suite = _compute_suite(tmp_path / "suite")
    val = write_val(tmp_path / "val.jsonl", n=800)
    options = {"dataset": str(val), "max_tokens": 127 * 64 + 1, "batch_tokens": 1024}
    cfg = load_batch({"suite": str(suite), "output": str(tmp_path / "out"), "steps": "final",
                      "evaluators": {"token-loss": options}})  # 8 full batches of 8 x 128
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        plan = plan_batch(cfg, calibrate=True)  # measured on this machine, now
        timed = TimedTokenLoss(TokenLossOptions(**options))
        timed.seconds = []
        tok = AutoTokenizer.from_pretrained(suite / "w128" / "step10")
        assert len(timed.stream(tok).token_ids) == options["max_tokens"]  # text long enough
        result = run_batch(cfg, progress=False, evaluators=[timed])
    finally:
        torch.set_num_threads(threads)
    assert {m.throughput.source.split(":")[0] for m in plan.models} == {"calibrated"}
    assert len(result.written) == 2 and not result.failed
    estimate, measured = plan.total_seconds(), sum(timed.seconds)
    assert 0.5 <= estimate / measured <= 2, (estimate, measured, timed.seconds,
                                             [m.throughput for m in plan.models])


def test_a_complete_local_plan_exits_0_and_counts_stored_units(tmp_path, capsys):
    suite = _compute_suite(tmp_path / "suite")
    val = write_val(tmp_path / "val.jsonl", n=20)
    seqs = tmp_path / "seqs.jsonl"
    rows = [{"pair_id": p, "set": s, "prefix": "ab", "text": t}
            for p in ("x", "y") for s, t in (("factual", " cdef"), ("hallucinated", " gh"))]
    seqs.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    batch = tmp_path / "b.toml"
    batch.write_text(f'suite = "{suite}"\noutput = "out"\nsteps = "final"\n'
                     f'[evaluators.token-loss]\ndataset = "{val}"\nmax_tokens = 300\n'
                     f'[evaluators.sequences]\ndataset = "{seqs}"\n')
    cfg = load_batch_file(batch)
    assert evaluator_tokens("sequences", cfg.evaluators["sequences"], cfg) == (
        round((4 * 2 + 2 * 5 + 2 * 3) / 4), "characters / 4")
    plan = plan_batch(cfg, tflops=0.01)
    assert plan.complete and plan.total_bytes == sum(
        f.stat().st_size for m in HIDDEN for f in (suite / m / "step10").iterdir())
    assert plan.peak_disk == 0  # a local suite downloads nothing
    expected = sum(2 * PARAMS[m] * (300 + 6) for m in HIDDEN) / 0.01e12
    assert plan.total_seconds() == pytest.approx(expected)
    assert main(["plan", str(batch), "--tflops", "0.01"]) == 0
    assert "total" in capsys.readouterr().out
    run_batch(load_batch_file(batch, ["models=['w128']"]), progress=False)
    again = plan_batch(cfg, tflops=0.01)
    assert again.stored_units == 2 and [sum(m.units.values()) for m in again.models] == [0, 2]


def test_bad_batch_or_option_is_exit_2(tmp_path, capsys):
    batch = tmp_path / "b.toml"
    batch.write_text('suite = "pythia"\noutput = "o"\nmodelz = ["pythia-70m"]\n'
                     '[evaluators.token-loss]\ndataset = "v.jsonl"\n')
    assert main(["plan", str(batch)]) == 2
    assert "unknown key 'modelz'" in capsys.readouterr().err
    assert main(["plan", str(XIA), "--tflops", "-3"]) == 2
    assert "tflops = -3.0: give a positive number" in capsys.readouterr().err
    assert main(["plan", str(XIA), "--device-class", "h1000"]) == 2
    assert "device class 'h1000' not allowed; choose one of cpu, h200, h100, a100" in \
        capsys.readouterr().err


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """tiny/bins@step0: pickle shards + index + a decoy; tiny/bins@main: both formats."""
    tok = tiny_tokenizer()
    model = tiny_gpt_neox(vocab_size=len(tok), hidden_size=32, seed=1)
    step = save_pickle_checkpoint(model, tok, tmp_path / "step0", shards=2)
    (step / "training_args.bin").write_bytes(b"x" * 1000)
    both = save_pickle_checkpoint(model, tok, tmp_path / "main")
    model.save_pretrained(both, safe_serialization=True)
    server = TinyHub()
    server.add_revision("tiny/bins", "step0", step)
    server.add_revision("tiny/bins", "main", both)
    server.serve()
    point_hub_at(server, monkeypatch, tmp_path / "cache")
    yield count_params(model)
    server.close()


def test_hub_bytes_are_the_files_a_load_fetches(hub, tmp_path, monkeypatch):
    import dynamics.suites
    from dynamics.streaming import folder_bytes
    from dynamics.suites import Suite

    refs = [CheckpointRef("tiny-bins", "bins", hub, step, step, source="tiny/bins",
                          revision=rev) for step, rev in ((0, "step0"), (1, "main"))]
    monkeypatch.setitem(dynamics.suites.BUILTIN_SUITES, "tiny-bins",
                        lambda: Suite("tiny-bins", "", {"bins": refs}))
    cfg = load_batch({"suite": "tiny-bins", "output": str(tmp_path / "o"),
                      "evaluators": {"token-loss": {"dataset": "some/hub-set"}}})
    plan = plan_batch(cfg, offline=False)
    assert plan.models[0].bytes_source == "hub file sizes"
    fetched = sum(folder_bytes(load_checkpoint(r).local_dir) for r in refs)
    assert plan.total_bytes == fetched
    offline = plan_batch(cfg, offline=True)  # a family with no known stored dtype
    assert offline.total_bytes is None and not offline.complete
    assert "unknown offline" in offline.models[0].bytes_source
