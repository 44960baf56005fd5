"""Open suites with public intermediate checkpoints: PolyPythia, OLMo, CRFM GPT-2, LLM360 Amber.

Every number below is from the suite's own documentation (cited beside it);
where we were not sure of a number it says so, and the code prefers what it
can read at run time. Parameter counts are computed from the published shapes
(total, embeddings included, a tied head counted once), the convention of
`dynamics.loading.check_params`, which checks them against every loaded model.

- polypythia: EleutherAI's seed runs of the small Pythia sizes; Pythia's
  schedule (`step{N}`, 154 revisions, 2,097,152 tokens per step). Seeds 1-9 are
  the repos `EleutherAI/pythia-<size>-seed<k>`; the original run is seed 0.
- olmo: AI2's OLMo-1B-hf / OLMo-7B-hf; revisions `step<N>-tokens<M>B`, listed
  from the hub at run time and cached (dynamics.hub_refs).
- crfm-gpt2: Stanford CRFM's Mistral GPT-2 small / medium runs, five seeds each;
  revisions `checkpoint-<step>` on a fixed schedule (609 per run).
- amber: LLM360's Amber (LLaMA-7B shape); revisions `ckpt_000` .. `ckpt_359`.

Tokenizers differ between families (Pythia and OLMo-1B/7B: GPT-NeoX BPE;
CRFM: GPT-2 BPE; Amber: LLaMA SentencePiece), so validation perplexity per
token is comparable across families only where the tokenizer is the same.
"""

from __future__ import annotations

import logging

from dynamics.checkpoints import CheckpointRef
from dynamics.hub_refs import OLMO_REVISION, branch_names, parse_revisions
from dynamics.suite_types import LazyModels, Seed, Suite
from dynamics.suites_core import PYTHIA_PARAMS, PYTHIA_TOKENS_PER_STEP, pythia_steps

log = logging.getLogger(__name__)

# -- PolyPythia ---------------------------------------------------------------
# van der Wal et al. 2025, "PolyPythia: Ten Seeds for Pythia" (arXiv:2503.09543) and the
# model cards (huggingface.co/EleutherAI/pythia-160m-seed1): 9 new seeds (1-9) of the
# 14m, 31m, 70m, 160m and 410m models, same data, architecture and 154-checkpoint schedule
# as Pythia; the paper counts the original Pythia run as seed 0. Not sure: that every seed
# repo has all 154 revisions (a missing one fails that checkpoint: see skip_missing), and
# whether the seed repos use the standard Pile (we assume so, as the original runs). The
# 160m data-order-only / weight-init-only variants are not included (their repo names we
# could not confirm).
POLYPYTHIA_SIZES = ("14m", "31m", "70m", "160m", "410m")
POLYPYTHIA_SEEDS = tuple(range(1, 10))


def polypythia_suite() -> Suite:
    """Seeds 0 (the original `EleutherAI/pythia-<size>`) to 9 of each PolyPythia size."""
    models, seeds = {}, {}
    for size in POLYPYTHIA_SIZES:
        group = f"pythia-{size}"
        for seed in (0, *POLYPYTHIA_SEEDS):
            name = group if seed == 0 else f"{group}-seed{seed}"
            models[name] = [
                CheckpointRef(family="pythia", model=name, params=PYTHIA_PARAMS[size], step=s,
                              tokens_seen=s * PYTHIA_TOKENS_PER_STEP,
                              source=f"EleutherAI/{name}", revision=f"step{s}")
                for s in pythia_steps()
            ]
            seeds[name] = Seed(group, seed)
    return Suite("polypythia", "EleutherAI PolyPythia: seeds 0-9 of Pythia 14m-410m "
                 "(seed 0 = the original run), 154 revisions each", models, seeds)


# -- OLMo -------------------------------------------------------------------------
# Groeneveld et al. 2024, "OLMo: Accelerating the Science of Language Models"
# (arXiv:2402.00838), Table 1, and the model cards (huggingface.co/allenai/OLMo-1B-hf,
# huggingface.co/allenai/OLMo-7B-hf): non-parametric layer norm (no weights), SwiGLU MLP,
# no biases, vocab 50280 padded to 50304; 1B: 16 layers, d_model 2048, MLP hidden 8192
# (per SwiGLU half), tied embeddings; 7B: 32 layers, d_model 4096, MLP hidden 11008,
# untied. Sequence length 2048; batch ~4M tokens: 2048 instances for 1B, 2160 for 7B.
# Not sure of the batch in instances: tokens_seen is step x tokens per step only where
# that agrees with the revision name's rounded billions, else the name's (logged).
OLMO_MODELS = {  # name -> (layers, d_model, mlp_hidden, tied, tokens per step)
    "OLMo-1B-hf": (16, 2048, 8192, True, 2048 * 2048),
    "OLMo-7B-hf": (32, 4096, 11008, False, 2160 * 2048),
}
OLMO_VOCAB = 50304


def olmo_params(n_layers: int, d_model: int, mlp_hidden: int, tied: bool,
                vocab: int = OLMO_VOCAB) -> int:
    """OLMo (v1) parameters: q, k, v, o + SwiGLU (gate, up, down), no biases, no LN weights."""
    per_layer = 4 * d_model * d_model + 3 * d_model * mlp_hidden
    return vocab * d_model * (1 if tied else 2) + n_layers * per_layer


def olmo_tokens(repo: str, step: int, tokens_b: int | None, tokens_per_step: int) -> int:
    """step x tokens_per_step if it rounds to the name's billions (+-1B), else the name's."""
    exact = step * tokens_per_step
    if tokens_b is None or abs(exact - tokens_b * 10**9) <= 10**9:
        return exact
    log.warning("%s step %d: step x %d tokens = %d disagrees with the revision name's %dB; "
                "using the name's", repo, step, tokens_per_step, exact, tokens_b)
    return tokens_b * 10**9


def _olmo_loader(name: str, params: int, tokens_per_step: int):
    repo = f"allenai/{name}"

    def load(cached_only: bool) -> list[CheckpointRef] | None:
        names = branch_names(repo, cached_only=cached_only)
        if names is None:
            return None
        return [CheckpointRef(family="olmo", model=name, params=params, step=r.step,
                              tokens_seen=olmo_tokens(repo, r.step, r.tokens_b, tokens_per_step),
                              source=repo, revision=r.name)
                for r in parse_revisions(repo, names, OLMO_REVISION)]

    return load


def olmo_suite() -> Suite:
    loaders, params = {}, {}
    for name, (layers, d, hidden, tied, per_step) in OLMO_MODELS.items():
        params[name] = olmo_params(layers, d, hidden, tied)
        loaders[name] = _olmo_loader(name, params[name], per_step)
    return Suite("olmo", "AI2 OLMo 1B / 7B (-hf repos), revisions step<N>-tokens<M>B "
                 "listed from the hub at run time and cached", LazyModels(loaders, params))


# -- Stanford CRFM GPT-2 (Mistral) ----------------------------------------------------
# github.com/stanford-crfm/mistral README ("Resources": GPT-2 small and medium, five
# seeds each, trained on OpenWebText for 400k steps at batch 512 x 1024 tokens; 609
# checkpoints per run, branches `checkpoint-<step>`: every 10 steps to 100, every 50 to
# 2000, every 100 to 20000, every 1000 to 400000). The repo names carry the seed
# ("-x21"). Not sure: that step 0 is one of the 609 (the count matches only with it).
# The weights may be pickle (.bin) only: such a batch needs allow_pickle = true.
CRFM_RUNS = {  # size -> ((run name, seed), ...)
    "small": (("alias", 21), ("battlestar", 49), ("caprica", 81), ("darkmatter", 343),
              ("expanse", 777)),
    "medium": (("arwen", 21), ("beren", 49), ("celebrimbor", 81), ("durin", 343),
               ("eowyn", 777)),
}
CRFM_SHAPES = {"small": (12, 768), "medium": (24, 1024)}  # GPT-2 (Radford et al. 2019)
CRFM_TOKENS_PER_STEP = 512 * 1024


def crfm_steps() -> list[int]:
    """The 609 Mistral checkpoint steps (schedule above)."""
    return [*range(0, 100, 10), *range(100, 2000, 50), *range(2000, 20000, 100),
            *range(20000, 400_001, 1000)]


def gpt2_params(n_layers: int, d_model: int, vocab: int = 50257, n_positions: int = 1024) -> int:
    """GPT-2 parameters: tied head, biases, 2 LNs per layer and a final LN."""
    per_layer = 12 * d_model * d_model + 13 * d_model
    return (vocab + n_positions) * d_model + n_layers * per_layer + 2 * d_model


def crfm_gpt2_suite() -> Suite:
    models, seeds = {}, {}
    for size, runs in CRFM_RUNS.items():
        params = gpt2_params(*CRFM_SHAPES[size])
        for run, seed in runs:
            name = f"{run}-gpt2-{size}-x{seed}"
            models[name] = [
                CheckpointRef(family="crfm-gpt2", model=name, params=params, step=s,
                              tokens_seen=s * CRFM_TOKENS_PER_STEP,
                              source=f"stanford-crfm/{name}", revision=f"checkpoint-{s}")
                for s in crfm_steps()
            ]
            seeds[name] = Seed(f"gpt2-{size}", seed)
    return Suite("crfm-gpt2", "Stanford CRFM Mistral GPT-2 small/medium, 5 seeds each, "
                 "609 revisions (checkpoint-<step>); weights may need allow_pickle",
                 models, seeds)


# -- LLM360 Amber ---------------------------------------------------------------
# Liu et al. 2023, "LLM360: Towards Fully Transparent Open-Source LLMs" (arXiv:2312.06550)
# and huggingface.co/LLM360/Amber: LLaMA-7B architecture (32 layers, d_model 4096, MLP
# 11008, vocab 32000, untied, RMSNorm), 1.259T tokens in 360 data chunks, one checkpoint
# after each: branches ckpt_000 .. ckpt_359. The card gives tokens, not optimizer steps, so
# `step` is the checkpoint index and tokens_seen = (index + 1) / 360 of 1.259T (the chunks
# taken as equal; not sure of their exact sizes, nor that ckpt_000 follows the first chunk).
AMBER_CHECKPOINTS = 360
AMBER_TOKENS = 1_259_000_000_000


def llama_params(n_layers: int, d_model: int, mlp_hidden: int, vocab: int) -> int:
    """LLaMA parameters: untied head, RMSNorm weights (2 per layer + final), no biases."""
    per_layer = 4 * d_model * d_model + 3 * d_model * mlp_hidden + 2 * d_model
    return 2 * vocab * d_model + n_layers * per_layer + d_model


def amber_suite() -> Suite:
    params = llama_params(32, 4096, 11008, 32000)
    refs = [CheckpointRef(family="amber", model="Amber", params=params, step=i,
                          tokens_seen=round(AMBER_TOKENS * (i + 1) / AMBER_CHECKPOINTS),
                          source="LLM360/Amber", revision=f"ckpt_{i:03d}")
            for i in range(AMBER_CHECKPOINTS)]
    return Suite("amber", "LLM360 Amber 7B, 360 revisions ckpt_000..ckpt_359 "
                 "(step = checkpoint index; tokens from 1.259T / 360)", {"Amber": refs})
