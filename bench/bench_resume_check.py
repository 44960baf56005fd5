"""What deciding "already stored" costs on a cached rerun: provenance records vs existence.

A synthetic store the demo's size (5 evaluators x 6 models x 34 steps = 1,020
units, one small parquet part each, written through `Store.write` and
`Store.write_record`) is planned twice per repeat, in the same process:

- `exists`: the old rule, every part file exists (`Store.has`);
- `records`: `check_provenance` (every record read once) + `plan` (each unit's
  record matched to the fingerprint, each part stat'ed against it).

Prints the median seconds of each and their ratio. Usage:

    PYTHONPATH=. python bench/bench_resume_check.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import polars as pl

from dynamics.checkpoints import CheckpointRef
from evals.store import Store
from evals.sweep import check_provenance, plan

N_EVALS, N_MODELS, N_STEPS = 5, 6, 34


class FakeEvaluator:
    """Stands for an evaluator: a name, one table, a provenance."""

    def __init__(self, i: int):
        self.name = ("token-loss", "sequences", "bigbench-mc", "recall-bigram", "circuits")[i]
        self.tables = (self.name,) if i < 4 else ("circuit-summary",)


def _frame(table: str, ref: CheckpointRef) -> pl.DataFrame:
    from evals.schema import TABLES, with_keys

    own = TABLES[table]
    rows = {c: pl.Series(c, [], dtype=t) for c, t in own.items()}
    return with_keys(pl.DataFrame(rows), ref.key, table).extend(
        with_keys(pl.DataFrame(rows), ref.key, table))


def build(root: Path) -> tuple[Store, list[CheckpointRef], list[FakeEvaluator], dict]:
    store, evals = Store(root), [FakeEvaluator(i) for i in range(N_EVALS)]
    refs = [CheckpointRef("toy", f"m{m}", 1000, s, s * 10, source=f"/x/m{m}/{s}", is_local=True)
            for m in range(N_MODELS) for s in range(N_STEPS)]
    prov = {ev.name: {"fingerprint": f"fp-{ev.name}", "options": {"max_tokens": 1}}
            for ev in evals}
    for ref in refs:
        for ev in evals:
            for table in ev.tables:
                schema_frame = _frame(table, ref)
                store.write(table, schema_frame, ref.key)
            store.write_record(ev.name, ref.key, ev.tables,
                               {"fingerprint": prov[ev.name]["fingerprint"],
                                "provenance": prov[ev.name]})
    return store, refs, evals, prov


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store, refs, evals, prov = build(Path(tmp))
        fps = {n: p["fingerprint"] for n, p in prov.items()}
        exists, records = [], []
        for _ in range(args.repeats):
            fresh = Store(store.root)  # no per-object caches carried over
            t0 = time.perf_counter()
            done = sum(all(fresh.has(t, r.key) for t in ev.tables) for r in refs for ev in evals)
            exists.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            check_provenance(fresh, evals, prov, refs)
            todo, result = plan(fresh, refs, evals, False, fps)
            records.append(time.perf_counter() - t0)
            assert done == result.skipped == len(refs) * len(evals) and not todo
        a, b = statistics.median(exists), statistics.median(records)
        print(f"units {len(refs) * len(evals)}: exists {a:.3f} s, records {b:.3f} s, "
              f"+{b - a:.3f} s ({b / a:.1f}x)")


if __name__ == "__main__":
    main()
