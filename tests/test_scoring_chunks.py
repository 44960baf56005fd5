"""Head chunks are capped by logits count (memory flat in vocab) without changing results."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dynamics.tiny import tiny_gpt_neox
from evals import scoring


def test_vocab_capped_chunks_match_full_logits(monkeypatch):
    model = tiny_gpt_neox(vocab_size=300, hidden_size=32, seed=4)
    ids = torch.randint(0, 300, (3, 20), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        logits = model(input_ids=ids).logits
        ref = -F.cross_entropy(logits[:, :-1].reshape(-1, 300), ids[:, 1:].reshape(-1),
                               reduction="none").view(3, 19)
    scoring._check_head(model)  # one-off check, before counting head calls
    seen = []
    real_head = model.get_output_embeddings().forward
    monkeypatch.setattr(model.get_output_embeddings(), "forward",
                        lambda x: seen.append(x.shape[0]) or real_head(x))
    monkeypatch.setattr(scoring, "CHUNK_ELEMENTS", 300 * 7)  # 7 rows per chunk at vocab 300
    got = scoring.token_logprobs(model, ids, chunk_rows=2048)
    assert seen == [7] * 8 + [57 - 56]  # 3 x 19 = 57 rows in chunks of 7
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
