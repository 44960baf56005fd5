"""Open suites with public intermediate checkpoints: PolyPythia, OLMo, CRFM GPT-2, LLM360 Amber.

Every number below is cited beside it to the public source it was checked
against (issue 28: a repository + path, at a commit where the file has since
moved, or the model card's URL). Parameter counts are computed from the
published shapes (total, embeddings included, a tied head counted once), the
convention of `dynamics.loading.check_params`, which checks them against every
loaded model. What no stored source settles is listed under "Not found" with
what the code does instead of guessing.

- polypythia: EleutherAI's seed runs of the small Pythia sizes; Pythia's
  schedule (`step{N}`, 154 revisions, 2,097,152 tokens per step). Seeds 1-9 are
  the repos `EleutherAI/pythia-<size>-seed<k>`; the original run is seed 0.
- olmo: AI2's OLMo-1B-hf / OLMo-7B-hf; revisions `step<N>-tokens<M>B`, listed
  from the hub at run time and cached (dynamics.hub_refs); tokens_seen = step x
  the run's batch in tokens, checked against the name's billions (a disagreement
  beyond rounding is refused: it would mean the batch size below is wrong).
- crfm-gpt2: Stanford CRFM's Mistral GPT-2 small / medium runs, five seeds each;
  revisions `checkpoint-<step>` on a fixed schedule (609 per run, step 0 included).
- amber: LLM360's Amber (LLaMA-7B shape); revisions `ckpt_000` .. `ckpt_359`, one
  after each of 360 equal data chunks; `step` is the checkpoint index.

Not found (the code does not guess):
- PolyPythia: that every seed repo holds all 154 revisions. A missing revision
  fails that checkpoint with the hub's error (recorded; `skip_missing` skips it).
- PolyPythia: the 160m data-order-only / weight-init-only runs: EleutherAI's
  README does not list them (their names appear only in third-party code), so
  they are not in the suite.
- CRFM: the weight files of the `checkpoint-<step>` branches (no stored file
  listing). Trained with transformers 4.17/4.18, whose `save_pretrained` writes
  pickle `pytorch_model.bin` only, so the loader refuses them unless the batch
  sets `allow_pickle = true`, naming the files it found.
- Amber: optimizer steps. The card gives checkpoints and tokens, not steps, so
  `step` is the checkpoint index (0..359), said in the suite's description.
- OLMo-1B-hf's own config.json is not in the stored sources: "tied" follows from
  the training config and HF's conversion script (below), and `check_params`
  refuses a loaded model whose count differs (tied vs untied: 103M apart).

Tokenizers differ between families (Pythia and OLMo-1B/7B: GPT-NeoX BPE;
CRFM: GPT-2 BPE; Amber: LLaMA SentencePiece), so validation perplexity per
token is comparable across families only where the tokenizer is the same.
"""

from __future__ import annotations

from dynamics.checkpoints import CheckpointRef
from dynamics.hub_refs import OLMO_REVISION, branch_names, parse_revisions
from dynamics.suite_types import LazyModels, Seed, Suite, SuiteError
from dynamics.suites_core import PYTHIA_PARAMS, PYTHIA_TOKENS_PER_STEP, pythia_steps

# -- PolyPythia ---------------------------------------------------------------
# github.com/EleutherAI/pythia README.md, "Multiple random seeds" (commit a19eecb8, 2025-11-15):
# seeds 1-9 of Pythia 14M, 31M, 70M, 160M and 410M, "the standard Pythia models, not the ones
# trained on the deduplicated Pile", at `https://huggingface.co/EleutherAI/pythia-[size]-seed[num]`;
# "the models trained with seed 1234 [the GPT-NeoX default] do not have a seed specified in
# their url". The PolyPythias paper (van der Wal et al. 2025, openreview bmrYu2Ekdz) labels that
# original run seed 0 (same repo, polypythias/data/training_maps.tsv: seeds 0-9), the label used
# here. Schedule and tokens per step: Pythia's (dynamics.suites_core).
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
# Training configs, github.com/allenai/OLMo at d6170769 (2024-04-03; removed from main later):
#   configs/official/OLMo-1B.yaml: d_model 2048, n_layers 16, mlp_ratio 8 (SwiGLU: 8192 per
#     half), weight_tying: true, vocab 50280 padded to embedding_size 50304, no biases,
#     non-parametric layer norm, max_sequence_length 2048, global_train_batch_size 2048
#     (4,194,304 tokens per step; max_duration 739_328 steps, "3.1T tokens").
#   configs/official/OLMo-7B.yaml: d_model 4096, n_layers 32, mlp_hidden_size 22016 (11008 per
#     half), weight_tying: false. Its global_train_batch_size says 2048, but the 7B was trained
#     with 2160: huggingface.co/allenai/OLMo-7B model card, "batch size (instances) 2160", and
#     configs/mcli/v1_5-mix-medium-mitch-ish.yaml (c3084c55) `--global_train_batch_size=2160`,
#     the run whose step556000 is the card's "not annealed" revision. The revision names agree
#     only with 2160 x 2048 = 4,423,680 tokens per step: step452000-tokens2000B (1,999.5B; 2048
#     would give 1,895.8B) and step556000-tokens2460B (2,459.6B; 2048: 2,332.0B), from the card.
# The -hf repos: HF's converter (huggingface/transformers, src/transformers/models/olmo/
# convert_olmo_weights_to_hf.py) sets tie_word_embeddings = the config's weight_tying and
# intermediate_size = mlp_hidden_size // 2 (or d_model * mlp_ratio // 2): 1B tied, 7B untied.
# Revision names round tokens to whole billions; OLMo-1B-hf's run a little behind step x batch
# (third-party lists: step425000-tokens1781B where step x 4,194,304 = 1,782.6B; the original
# OLMo-1B repo names agree, e.g. step738000-tokens3095B), hence the tolerance of olmo_tokens.
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


OLMO_NAME_TOLERANCE = 0.002  # relative; the -hf names lag step x batch by up to ~0.1 %


def olmo_tokens(repo: str, step: int, tokens_b: int | None, tokens_per_step: int) -> int:
    """step x tokens_per_step, checked against the revision name's billions.

    The name rounds to whole billions (and OLMo-1B-hf's lag by up to ~0.1 %), so
    they may differ by max(1B, 0.2 %). A larger difference means `tokens_per_step`
    (the batch size cited above) is wrong for this repo: refused, not guessed.
    Example: step 20000 at 4,194,304 tokens -> 83,886,080,000 (name "tokens84B": agrees).

    Raises:
        SuiteError: the name's tokens disagree with step x tokens_per_step.
    """
    exact = step * tokens_per_step
    if tokens_b is None or abs(exact - tokens_b * 10**9) <= max(10**9,
                                                                OLMO_NAME_TOLERANCE * exact):
        return exact
    raise SuiteError(
        f"{repo} revision step{step}-tokens{tokens_b}B: step x {tokens_per_step:,} tokens per "
        f"step = {exact / 1e9:,.1f}B, not {tokens_b}B; the batch size this suite assumes "
        "(dynamics/suites_open.py, OLMO_MODELS) does not fit this repo. Describe its "
        "checkpoints in a local suite.toml with the right tokens_per_step instead")


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
# github.com/stanford-crfm/mistral (bf9eff08, 2022-12-16): README.md "Resources" (the runs, their
# sizes and seeds, repos stanford-crfm/<run>-gpt2-<size>-x<seed>, one branch per checkpoint);
# conf/mistral-small.yaml and conf/mistral-medium.yaml: effective_bsz 512, checkpoint_frequency
# [[10, 100], [50, 2000], [100, 20000], [1000, 400000]]; conf/models/mistral-{small,medium}.yaml:
# seq_len 1024; conf/trainers/gpt2-{small,medium}.yaml: max_steps 400000. mistral_models.json
# (in the repo until 27ae0a42, 2023-03-18) lists every run's 609 branches, checkpoint-0 to
# checkpoint-400000: step 0 is one of them (the README's "600 checkpoints" is rounded).
# Weights: not listed in any stored source (module docstring, "Not found").
CRFM_RUNS = {  # size -> ((run name, seed), ...)
    "small": (("alias", 21), ("battlestar", 49), ("caprica", 81), ("darkmatter", 343),
              ("expanse", 777)),
    "medium": (("arwen", 21), ("beren", 49), ("celebrimbor", 81), ("durin", 343),
               ("eowyn", 777)),
}
CRFM_SHAPES = {"small": (12, 768), "medium": (24, 1024)}  # GPT-2 (Radford et al. 2019)
CRFM_TOKENS_PER_STEP = 512 * 1024  # effective_bsz x seq_len (above)


def crfm_steps() -> list[int]:
    """The 609 Mistral checkpoint steps: mistral_models.json's, from step 0 (schedule above)."""
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
# huggingface.co/LLM360/Amber model card: 360 checkpoints, revisions ckpt_000 .. ckpt_358, and
# ckpt_359 the final one (= main). github.com/LLM360/amber-train main.py: the model config is
# huggyllama/llama-7b's (LLaMA-7B: 32 layers, d_model 4096, MLP 11008, vocab 32000, untied,
# RMSNorm); N_CHUNKS = 360 and TRAIN_EXAMPLES_PER_CHUNK = 1706976, and after training chunk i
# it saves ckpt_i: ckpt_000 follows the first chunk. github.com/LLM360/amber-data-prep:
# convert_dataset_hf_refinedpajama_json.py concatenates tokens into 2048-token examples, and
# mix_and_split.py deals every subset's examples evenly over the 360 chunks, so the chunks are
# equal: 1,706,976 x 2,048 = 3,495,886,848 tokens each, 1,258,519,265,280 in all (the card's
# data total, 1259.13B, includes what the even split left unused). Optimizer steps: not found.
AMBER_CHECKPOINTS = 360
AMBER_EXAMPLES_PER_CHUNK = 1_706_976
AMBER_SEQ_LEN = 2048
AMBER_TOKENS_PER_CHUNK = AMBER_EXAMPLES_PER_CHUNK * AMBER_SEQ_LEN


def llama_params(n_layers: int, d_model: int, mlp_hidden: int, vocab: int) -> int:
    """LLaMA parameters: untied head, RMSNorm weights (2 per layer + final), no biases."""
    per_layer = 4 * d_model * d_model + 3 * d_model * mlp_hidden + 2 * d_model
    return 2 * vocab * d_model + n_layers * per_layer + d_model


def amber_suite() -> Suite:
    params = llama_params(32, 4096, 11008, 32000)
    refs = [CheckpointRef(family="amber", model="Amber", params=params, step=i,
                          tokens_seen=(i + 1) * AMBER_TOKENS_PER_CHUNK,
                          source="LLM360/Amber", revision=f"ckpt_{i:03d}")
            for i in range(AMBER_CHECKPOINTS)]
    return Suite("amber", "LLM360 Amber 7B, 360 revisions ckpt_000..ckpt_359, one per data chunk "
                 "(step = checkpoint index, not an optimizer step; 3.50B tokens per chunk)",
                 {"Amber": refs})
