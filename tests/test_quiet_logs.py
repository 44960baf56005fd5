"""What a tokenizer decides is logged once per tokenizer, not at every checkpoint (issue #18:
a 51-checkpoint suite printed the same skipped-task and truncation warnings 51 times)."""

from __future__ import annotations

import json
import logging

from evals.config import load_batch
from evals.execute import run_batch
from tests.helpers import make_tiny_suite, sample_texts


def _long_prompt_task(root):
    folder = root / "bigbench" / "long_prompts"
    folder.mkdir(parents=True)
    examples = [{"input": " ".join(sample_texts(3, seed=i)), "target_scores": {"yes": 1, "no": 0}}
                for i in range(4)]
    (folder / "task.json").write_text(json.dumps({"name": "long_prompts", "examples": examples}))
    return folder.parent


def test_tokenizer_warnings_once_over_checkpoints_sharing_a_tokenizer(tmp_path, caplog):
    suite = make_tiny_suite(tmp_path / "suite", "neox", steps=(0, 1, 2))  # one tokenizer
    cfg = load_batch({
        "suite": str(suite), "output": str(tmp_path / "out"), "prefetch": False,
        "evaluators": {
            # the tiny BPE has no single-token names: ioi has no usable pairs
            "circuits": {"tasks": ["ioi"], "components": ["copy"], "n_examples": 4},
            # prompts of ~50 tokens cut to max_length 12
            "bigbench-mc": {"folder": str(_long_prompt_task(tmp_path)), "tasks": "all",
                            "k": 0, "max_length": 12},
        }})
    with caplog.at_level(logging.INFO, logger="evals"):
        result = run_batch(cfg, progress=False)
    assert not result.failed and len(result.written) == 6  # 3 checkpoints x 2 evaluators
    messages = [r.getMessage() for r in caplog.records]
    skipped = [m for m in messages if "task ioi has no usable pairs" in m]
    truncated = [m for m in messages if "prompts truncated from the left" in m]
    copy = [m for m in messages if "copy scores skipped" in m]
    assert len(skipped) == 1 and len(copy) == 1, messages
    assert truncated == ["bigbench-mc: 4 of 4 prompts truncated from the left to fit 12 tokens"]


def test_another_tokenizer_or_message_logs_again(caplog):
    from dynamics.tiny import word_tokenizer
    from evals.token_loss import TokenLoss, TokenLossOptions
    from tests.helpers import tiny_tokenizer

    ev = TokenLoss(TokenLossOptions(dataset="x.jsonl"))
    other = word_tokenizer(["cat", "mat"])
    with caplog.at_level(logging.INFO, logger="evals"):
        for tok, n in ((tiny_tokenizer(), 3), (tiny_tokenizer(), 3), (other, 3), (other, 4)):
            ev.log_once(tok, logging.WARNING, "%d prompts cut", n)
    assert [r.getMessage() for r in caplog.records] == ["3 prompts cut"] * 2 + ["4 prompts cut"]
    assert {r.name for r in caplog.records} == {"evals.token_loss"}
