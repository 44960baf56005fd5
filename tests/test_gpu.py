"""GPU checks of the scoring paths (`pytest -m gpu` on a CUDA machine; CI runs -m 'not gpu').

Selected explicitly, so a machine without CUDA fails here instead of skipping.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dynamics.tiny import tiny_gpt_neox
from evals import scoring

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cuda():
    assert torch.cuda.is_available(), (f"pytest -m gpu needs CUDA; torch {torch.__version__} "
                                       "has none")
    return torch.device("cuda")


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)])
def test_token_logprobs_on_cuda_equal_full_logits(cuda, dtype, tol, monkeypatch):
    monkeypatch.setattr(scoring, "BLOCK_ELEMENTS", 1)  # several vocabulary blocks
    model = tiny_gpt_neox(vocab_size=1000, hidden_size=64, seed=7).to(cuda, dtype)
    ids = torch.randint(0, 1000, (4, 40), generator=torch.Generator().manual_seed(7)).to(cuda)
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[:, :-1].float()
        ref = -F.cross_entropy(logits.reshape(-1, 1000), ids[:, 1:].reshape(-1),
                               reduction="none").view(4, 39)
        got = scoring.token_logprobs(model, ids)
    assert got.device.type == "cuda" and got.dtype == torch.float32
    torch.testing.assert_close(got, ref, atol=tol, rtol=1e-4)


def test_cuda_scores_match_cpu_in_float32(cuda):
    model = tiny_gpt_neox(vocab_size=1000, hidden_size=64, seed=8)
    ids = torch.randint(0, 1000, (2, 64), generator=torch.Generator().manual_seed(8))
    with torch.inference_mode():
        cpu = scoring.token_logprobs(model, ids)
        gpu = scoring.token_logprobs(model.to(cuda), ids.to(cuda)).cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-3, rtol=1e-4)  # TF32 may be on
