"""Column names and `pl.Schema`s of every record the tool writes (polars only).

Every table starts with the checkpoint key columns, then the table's own keys,
then measures (units in names). `stats` and `reports` import this module
without pulling in torch.

Adding a table: put its own columns in TABLES under the table name; the full
schema is KEY_SCHEMA followed by them (see `table_schema`).
"""

from __future__ import annotations

import polars as pl

KEY_COLUMNS = ("family", "model", "params", "step", "tokens_seen", "flops")
KEY_SCHEMA = pl.Schema(
    {
        "family": pl.String,
        "model": pl.String,
        "params": pl.Int64,
        "step": pl.Int64,
        "tokens_seen": pl.Int64,
        "flops": pl.Float64,
    }
)


class SchemaError(ValueError):
    """A frame does not match its table's schema."""


# Each table's own columns (after the key columns). Declare every table the
# project writes HERE (not in the evaluator module), so that stats/reports can
# read the store without importing torch. Table names are store folder names.
TABLES: dict[str, pl.Schema] = {
    "token-loss": pl.Schema(
        {
            "doc_id": pl.Int64,
            "token_index": pl.Int64,
            "token_id": pl.Int64,
            "loss_nats": pl.Float32,
        }
    ),
    # One row per scored sequence of a labeled set (factual / hallucinated / ...).
    "sequences": pl.Schema(
        {
            "set": pl.String,
            "pair_id": pl.String,
            "logprob_nats": pl.Float64,
            "n_tokens": pl.Int64,
        }
    ),
    # One row per choice of a BIG-bench multiple-choice example.
    "bigbench-mc": pl.Schema(
        {
            "task": pl.String,
            "example_id": pl.Int64,
            "choice_index": pl.Int64,
            "logprob_nats": pl.Float64,
            "n_tokens": pl.Int64,
            "is_target": pl.Boolean,
            "target_score": pl.Float64,
            # prompt tokens cut from the left so prompt + longest choice fit the window
            "truncated_tokens": pl.Int64,
        }
    ),
    # EAP-IG edge scores, one row per edge ("a0.h3->m1", EAP-IG naming).
    "circuit-edges": pl.Schema(
        {"task": pl.String, "edge": pl.String, "score": pl.Float32, "in_circuit": pl.Boolean}
    ),
    # One row per task: the minimal-faithful circuit found at this checkpoint.
    "circuit-summary": pl.Schema(
        {
            "task": pl.String,
            "metric_clean": pl.Float64,
            "metric_corrupted": pl.Float64,
            "circuit_edges": pl.Int64,
            "faithfulness": pl.Float64,
            # null when the model performs the task; else why not (then circuit_edges
            # and faithfulness are null): evals.circuits.search.not_performed_reason
            "reason": pl.String,
        }
    ),
    # Loss and accuracy per position kind ("recall" / "bigram" / ...) of labelled
    # token sequences (evals/recall_bigram.py): loss_nats is the SUM over n_tokens.
    "recall-bigram": pl.Schema(
        {"position_kind": pl.String, "loss_nats": pl.Float64, "n_correct": pl.Int64,
         "n_tokens": pl.Int64}
    ),
    # Per-head component scores (induction, previous-token, successor, ...).
    "components": pl.Schema(
        {"layer": pl.Int64, "head": pl.Int64, "kind": pl.String, "score": pl.Float64}
    ),
}


def register_table(name: str, columns: dict) -> pl.Schema:
    """Declare a table's own columns (evaluator modules call this at import)."""
    schema = pl.Schema(columns)
    if name in TABLES and TABLES[name] != schema:
        raise SchemaError(f"table {name!r} is already registered with another schema")
    overlap = set(schema) & set(KEY_COLUMNS)
    if overlap:
        raise SchemaError(f"table {name!r} redeclares key columns {sorted(overlap)}")
    TABLES[name] = schema
    return schema


def table_schema(name: str) -> pl.Schema:
    """The full schema of a table: key columns, then its own columns."""
    if name not in TABLES:
        raise SchemaError(f"unknown table {name!r}; known tables: {sorted(TABLES)}")
    return pl.Schema({**KEY_SCHEMA, **TABLES[name]})


def validate(frame: pl.DataFrame, schema: pl.Schema, where: str = "frame") -> pl.DataFrame:
    """Check column names, order and dtypes exactly; return the frame unchanged.

    Raises SchemaError naming the missing/extra columns or the mismatched dtypes.
    """
    got = frame.schema
    if list(got) != list(schema):
        missing = [c for c in schema if c not in got]
        extra = [c for c in got if c not in schema]
        raise SchemaError(
            f"{where}: columns {list(got)} do not match {list(schema)}"
            f" (missing {missing}, extra {extra})"
        )
    bad = {c: (str(got[c]), str(schema[c])) for c in schema if got[c] != schema[c]}
    if bad:
        detail = ", ".join(f"{c}: got {g}, want {w}" for c, (g, w) in bad.items())
        raise SchemaError(f"{where}: wrong dtypes: {detail}")
    return frame


def with_keys(frame: pl.DataFrame, key: dict, table: str) -> pl.DataFrame:
    """Prepend the checkpoint key columns to a table's own columns and cast to its schema."""
    schema = table_schema(table)
    own = TABLES[table]
    missing = [c for c in own if c not in frame.columns]
    if missing:
        raise SchemaError(f"{table}: frame lacks columns {missing}; has {frame.columns}")
    keys = [pl.lit(key[c], dtype=KEY_SCHEMA[c]).alias(c) for c in KEY_COLUMNS]
    out = frame.select([*keys, *[pl.col(c).cast(own[c], strict=True) for c in own]])
    return validate(out, schema, table)
