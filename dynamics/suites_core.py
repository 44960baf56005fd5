"""The Pythia and OPT suites: revision schedules and parameter counts fixed in code.

Pythia: revisions `step{N}` (154 per size), 2,097,152 tokens per step. OPT:
the final checkpoints of the public sizes (Meta released no intermediate ones).
Registered by name in dynamics.suites; dynamics.suites_open builds PolyPythia
on Pythia's schedule from here.
"""

from __future__ import annotations

from dynamics.checkpoints import CheckpointRef
from dynamics.suite_types import Suite

# github.com/EleutherAI/pythia README.md (a19eecb8): "trained for the equivalent of 143000 steps
# at a batch size of 2,097,152 tokens" (each model saw 299,892,736,000 = 143000 x 2,097,152), and
# "154 checkpoints ... steps 0 (initialization), 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, and
# then every 1,000 subsequent steps" (pythia_steps).
PYTHIA_TOKENS_PER_STEP = 2_097_152  # 1024 sequences x 2048 tokens

# Total parameter counts (embeddings included) from the Pythia model card.
PYTHIA_PARAMS = {
    "14m": 14_067_712,
    "31m": 30_494_720,
    "70m": 70_426_624,
    "160m": 162_322_944,
    "410m": 405_334_016,
    "1b": 1_011_781_632,
    "1.4b": 1_414_647_808,
    "2.8b": 2_775_208_960,
    "6.9b": 6_857_302_016,
    "12b": 11_846_072_320,
}

# OPT shapes (layers, d_model) from the OPT paper; ffn = 4 d_model, vocab 50272,
# 2048 learned positions (+2 offset rows). Batch tokens per step from Table 1.
OPT_SHAPES = {
    "125m": (12, 768, 524_288),
    "350m": (24, 1024, 524_288),
    "1.3b": (24, 2048, 1_048_576),
    "2.7b": (32, 2560, 1_048_576),
    "6.7b": (32, 4096, 2_097_152),
    "13b": (40, 5120, 4_194_304),
    "30b": (48, 7168, 4_194_304),
    "66b": (64, 9216, 2_097_152),
}
OPT_TRAIN_TOKENS = 300_000_000_000  # every public OPT model saw ~300B tokens
OPT_VOCAB = 50_272

# The dtype each family's hub files store (config.json `torch_dtype`), for sizes without
# the hub (`dynamics plan` offline: params x bytes per parameter). Pythia: float16 (e.g.
# pythia-12b's three step shards hold ~23.8 GB for 11.8 B params; its .bin files also
# hold a 4 MiB causal-mask buffer per layer); OPT: float16 (opt-125m's 251 MB).
STORED_DTYPES = {"pythia": "float16", "pythia-deduped": "float16", "opt": "float16"}


def pythia_steps() -> list[int]:
    """The 154 Pythia revisions: step0, 1, 2, 4, ..., 512, then 1000..143000 every 1000."""
    return [0] + [2**i for i in range(10)] + list(range(1000, 143_001, 1000))


def opt_params(n_layers: int, d_model: int, *, word_embed_proj_dim: int | None = None) -> int:
    """Parameter count of an OPT decoder from its shape (tied head, biases, 2 LNs per layer).

    OPT-350m projects a 512-d embedding into the 1024-d model (project_in/out,
    no bias) and has no final layer norm.
    """
    d, ffn = d_model, 4 * d_model
    e = word_embed_proj_dim or d
    per_layer = 4 * (d * d + d) + (d * ffn + ffn) + (ffn * d + d) + 2 * 2 * d
    total = OPT_VOCAB * e + 2050 * d + n_layers * per_layer
    if word_embed_proj_dim:
        total += 2 * d * e  # project_in, project_out
    else:
        total += 2 * d  # final layer norm
    return total


def pythia_suite(deduped: bool = False) -> Suite:
    family = "pythia-deduped" if deduped else "pythia"
    models = {}
    for size, params in PYTHIA_PARAMS.items():
        name = f"pythia-{size}" + ("-deduped" if deduped else "")
        models[name] = [
            CheckpointRef(
                family=family,
                model=name,
                params=params,
                step=s,
                tokens_seen=s * PYTHIA_TOKENS_PER_STEP,
                source=f"EleutherAI/{name}",
                revision=f"step{s}",
            )
            for s in pythia_steps()
        ]
    kind = "deduplicated Pile" if deduped else "Pile"
    return Suite(family, f"EleutherAI Pythia on the {kind}, 154 revisions per size", models)


def opt_suite() -> Suite:
    """OPT final checkpoints only (Meta never released intermediate ones publicly).

    The final step is 300B tokens / batch tokens; users with intermediate OPT
    checkpoints describe them in a local `suite.toml` with family = "opt".
    """
    models = {}
    for size, (layers, d, batch_tokens) in OPT_SHAPES.items():
        proj = 512 if size == "350m" else None
        params = opt_params(layers, d, word_embed_proj_dim=proj)
        step = OPT_TRAIN_TOKENS // batch_tokens
        models[f"opt-{size}"] = [
            CheckpointRef(
                family="opt",
                model=f"opt-{size}",
                params=params,
                step=step,
                tokens_seen=step * batch_tokens,
                source=f"facebook/opt-{size}",
                revision="main",
            )
        ]
    return Suite("opt", "Meta OPT final checkpoints (intermediate ones: use a local suite.toml)", models)
