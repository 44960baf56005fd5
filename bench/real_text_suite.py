"""A small real-text suite (two families, two sizes each) and its Findings under two code versions.

    OMP_NUM_THREADS=1 python -m bench.real_text_suite --out /tmp/realtext \\
        [--before /work/wt/base] [--after <this checkout>]

What it does (every stage cached under --out; rerun to continue):

1. Text: English prose available offline on any machine with this project installed:
   the long descriptions in the METADATA of the installed distributions
   (`<site-packages>/*.dist-info/METADATA`, the body after the headers) and the
   docstrings of the Python standard library's modules (module, class and function
   docstrings, via `ast`). A unit is a distribution or a stdlib module. Paragraphs
   are kept when >= 8 words, >= 75 % of them plain words (letters, maybe punctuated)
   and no URL, deduplicated over the whole corpus (licence texts and boilerplate recur across packages), and
   each unit's paragraphs form one document. Units go to validation (about 12 %, by
   a hash of the unit's name) or training: disjoint by package/module.
   Written: `data/train.jsonl` ({"text"}, one training document a line),
   `data/validation.jsonl` ({"text"}, documents cut to <= 2,000 characters).
2. Tokenizer: a byte-level BPE (dynamics.tiny.train_bpe_tokenizer, vocab 2,048) trained
   on the training documents; saved beside every checkpoint (dynamics.tiny.save_checkpoint).
3. Suite: GPTNeoX and pre-LN OPT (dynamics.toy.train.build_model / train_model, the toy
   suite's builders, one torch thread), sizes s (2 layers, d 32) and l (3 layers,
   d 96), every model on the same rows in the same order (documents after EOS,
   packed into 128-token rows), 1,024 steps of 16 rows, checkpoints at 0, 1, 2, 4,
   ..., 512, 768, 1024 (13, dynamics.toy.train.checkpoint_steps with 4 regular
   ones); `suite.toml` by dynamics.manifest.write_manifest. Families "rt-neox" and
   "rt-opt", models "rt-<arch>-<size>".
4. Evaluation data (documented in `data/README.md` written beside it):
   `sequences.jsonl`: held-out sentences (validation documents, 8-24 words, >= 90 % plain) as
   "factual"; the same sentence with one content word (alphabetic, >= 4 letters,
   not a stop word) replaced by another word of the same training-frequency band
   (floor(log2(count)); a plausible but altered sentence) as "hallucinated"; its
   words shuffled (final punctuation kept) as "ungrammatical". 150 triples.
5. Batch (`batch.toml`, run by `python -m dynamics.cli run`, device cpu): token-loss
   on validation.jsonl (20,000 tokens); sequences; `[generate.rt-mix]` a=1, b=-1
   (and the grid's 1,0 / 0,1 / -1,1) from rt-neox-s (small) and rt-neox-l (large),
   16 validation prompts of 16 tokens, 24 new tokens; bigbench-mc, k = 0, at most 60
   examples of 5 BIG-bench tasks with short prompts from /work/shared/data/bigbench
   (or $BIGBENCH_DIR); recall-bigram with `text = {dataset = "validation.jsonl"}`
   (the probe built from the held-out text, seq_len 64). Circuits are not run (the
   suite's text has no trigger/IOI data to build circuit tasks from).
6. Findings: `stats.summary.analyze_store(Store(results)).findings`, computed in two
   subprocesses, one with PYTHONPATH=--before and one with PYTHONPATH=--after, on the
   same store; printed as two tables and a before/after comparison (also written to
   `findings_before.json`, `findings_after.json`, `findings.md`).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import math
import os
import random
import re
import subprocess
import sys
import sysconfig
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VERSION = 1  # bump when the text, data or training below changes
ROW_LEN = 128
VOCAB = 2048
VAL_SHARE = 0.12
MAX_DOC_CHARS = 2000
N_TRIPLES = 150
BIGBENCH_TASKS = ["general_knowledge", "human_organs_senses", "sports_understanding",
                  "anachronisms", "phrase_relatedness"]
STOP = set("""a about above after again against all also am an and any are as at be because been
before being below between both but by can could did do does doing down during each few for from
further had has have having he her here hers him his how i if in into is it its itself just me
more most my no nor not now of off on once only or other our out over own same she should so
some such than that the their them then there these they this those through to too under until
up very was we were what when where which while who whom why will with would you your yours
used uses using use may must might shall""".split())


# ---------------------------------------------------------------- text

PLAIN = re.compile(r"^\(?[A-Za-z][a-z'-]*[,.;:!?)]?$")


def _wordy(words: list[str], share: float = 0.75) -> bool:
    """Whether at least `share` of the words are plain words (letters, maybe punctuated)."""
    return sum(bool(PLAIN.match(w)) for w in words) >= share * len(words)


def _prose(text: str) -> list[str]:
    """Paragraphs of `text` that are mostly words (blank-line separated, whitespace squeezed)."""
    out = []
    for para in re.split(r"\n\s*\n", text):
        para = " ".join(para.split())
        words = para.split()
        if len(words) < 8 or para.startswith((">>>", "$ ", "```", ".. ", "|", "+-")):
            continue
        if _wordy(words) and "http" not in para and "](" not in para:
            out.append(para)
    return out


def metadata_units() -> dict[str, str]:
    """{"dist:<name>": long description} of every installed distribution."""
    site = Path(sysconfig.get_paths()["purelib"])
    units = {}
    for meta in sorted(site.glob("*.dist-info/METADATA")):
        text = meta.read_text(errors="replace")
        head, _, body = text.partition("\n\n")
        name = next((ln.split(":", 1)[1].strip() for ln in head.splitlines()
                     if ln.startswith("Name:")), meta.parent.name)
        units[f"dist:{name.lower()}"] = body
    return units


def stdlib_units() -> dict[str, str]:
    """{"stdlib:<module>": its docstrings joined by blank lines} of the stdlib's modules
    (packages included; no tests, no site-packages)."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    units = {}
    for path in sorted(lib.rglob("*.py")):
        parts = path.relative_to(lib).parts
        if any(p in SKIP_DIRS or p.startswith("test") for p in parts[:-1]):
            continue
        try:
            tree = ast.parse(path.read_text(errors="replace"))
        except (SyntaxError, ValueError):
            continue
        docs = [ast.get_docstring(n) for n in ast.walk(tree)
                if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
        units[f"stdlib:{'.'.join(parts)[:-3]}"] = "\n\n".join(d for d in docs if d)
    return units


def is_validation(unit: str) -> bool:
    return int(hashlib.sha1(unit.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < VAL_SHARE


def documents() -> tuple[list[str], list[str], dict]:
    """(training documents, validation documents, counts): prose, deduplicated, split by unit."""
    seen: set[str] = set()
    train, val = [], []
    counts = Counter()
    for unit, text in {**metadata_units(), **stdlib_units()}.items():
        paras = []
        for p in _prose(text):
            key = hashlib.sha1(p.lower().encode()).hexdigest()
            counts["paragraphs"] += 1
            if key in seen:
                counts["duplicate paragraphs"] += 1
                continue
            seen.add(key)
            paras.append(p)
        if not paras:
            continue
        if is_validation(unit):
            counts["validation units"] += 1
            doc = ""
            for p in paras:  # cut into documents of <= MAX_DOC_CHARS at paragraph ends
                if doc and len(doc) + len(p) > MAX_DOC_CHARS:
                    val.append(doc)
                    doc = ""
                doc = f"{doc}\n\n{p}" if doc else p
            val.append(doc)
        else:
            counts["training units"] += 1
            train.append("\n\n".join(paras))
    return train, val, dict(counts)


# ---------------------------------------------------------------- sequences

SKIP_DIRS = {"site-packages", "idlelib", "lib2to3", "tkinter", "turtledemo", "ensurepip",
             "config-3.11-x86_64-linux-gnu"}
WORD = re.compile(r"^[a-z]{4,}$")


def sentence_triples(val_docs: list[str], train_docs: list[str], n: int, seed: int = 0):
    """factual / hallucinated / ungrammatical triples from held-out sentences (module docstring)."""
    rng = random.Random(seed)
    freq = Counter(w for d in train_docs for w in re.findall(r"[a-z]+", d.lower()))
    bands: dict[int, list[str]] = {}
    for w, c in freq.items():
        if WORD.match(w) and w not in STOP and c >= 5:
            bands.setdefault(int(math.log2(c)), []).append(w)
    for b in bands.values():
        b.sort()
    sentences = []
    for d in val_docs:
        for s in re.split(r"(?<=[.!?])\s+", d):
            words = s.split()
            if (8 <= len(words) <= 24 and s[-1] in ".!?" and all(c.isprintable() for c in s)
                    and _wordy(words, 0.9)):
                sentences.append(words)
    rng.shuffle(sentences)
    rows, seen = [], set()
    for words in sentences:
        if len(rows) >= 3 * n:
            break
        key = " ".join(words)
        slots = [i for i, w in enumerate(words)
                 if WORD.match(w) and w not in STOP and freq[w] >= 5
                 and len(bands.get(int(math.log2(freq[w])), [])) > 1]
        if key in seen or not slots:
            continue
        seen.add(key)
        i = rng.choice(slots)
        band = bands[int(math.log2(freq[words[i]]))]
        swap = words[i]
        while swap == words[i]:
            swap = rng.choice(band)
        false = words[:i] + [swap] + words[i + 1:]
        body, end = words[:-1] + [words[-1][:-1]], words[-1][-1]
        shuffled = body[:]
        for _ in range(10):
            rng.shuffle(shuffled)
            if shuffled != body:
                break
        pair = f"s{len(rows) // 3:03d}"
        rows += [{"pair_id": pair, "set": "factual", "text": key},
                 {"pair_id": pair, "set": "hallucinated", "text": " ".join(false)},
                 {"pair_id": pair, "set": "ungrammatical", "text": " ".join(shuffled) + end}]
    return rows


DATA_README = """# Evaluation data of the real-text suite (bench/real_text_suite.py)

- `validation.jsonl`: held-out documents ({counts}); disjoint from training by
  distribution / stdlib module.
- `sequences.jsonl`: {n} triples from held-out sentences (8-24 words). "factual": the
  sentence as written. "hallucinated": one content word (>= 4 letters, not a stop word,
  seen >= 5 times in training) replaced by a different word of the same training-frequency
  band (floor(log2(count))), so it stays fluent-looking text with one altered fact or
  term. "ungrammatical": the sentence's words shuffled, final punctuation kept.
"""


# ---------------------------------------------------------------- suite

def scale():
    from dynamics.toy.corpus import CorpusSpec
    from dynamics.toy.train import ModelSpec, ToyScale

    return ToyScale(models=(ModelSpec("s", 2, 32, 4), ModelSpec("l", 3, 96, 4)), steps=1024,
                    batch_size=16, lr=0.005, warmup=32, n_regular=4, dense=None,
                    corpus=CorpusSpec(row_len=ROW_LEN))


def training_rows(tokenizer, docs: list[str], n_rows: int):
    """Documents after EOS, packed into [n_rows, ROW_LEN] (cycled if the text is shorter)."""
    import torch

    eos = tokenizer.eos_token_id
    ids = []
    for chunk in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        ids += [eos] + chunk
    need = n_rows * ROW_LEN
    epochs = need / len(ids)
    ids = (ids * math.ceil(epochs))[:need]
    return torch.tensor(ids, dtype=torch.int16).view(n_rows, ROW_LEN), epochs


def build(out: Path, seed: int = 0) -> Path:
    """Text, tokenizer, evaluation data and the trained suite under `out/suite` (cached)."""
    import torch

    from dynamics.manifest import write_manifest
    from dynamics.tiny import train_bpe_tokenizer
    from dynamics.toy.train import _train_all, config_hash

    folder = out / "suite"
    cfg = scale()
    train_docs, val_docs, counts = documents()
    text_hash = hashlib.sha256(json.dumps([train_docs, val_docs]).encode()).hexdigest()[:16]
    digest = f"{VERSION}-{config_hash(cfg, seed)}-{text_hash}"
    marker = folder / "COMPLETE"
    if marker.is_file() and marker.read_text().strip() == digest:
        print(f"suite: {folder} (cached)")
        return folder
    t0 = time.perf_counter()
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "validation.jsonl").write_text("".join(json.dumps({"text": d}) + "\n"
                                                    for d in val_docs))
    (data / "train.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in train_docs))
    triples = sentence_triples(val_docs, train_docs, N_TRIPLES, seed)
    (data / "sequences.jsonl").write_text("".join(json.dumps(r) + "\n" for r in triples))
    (data / "README.md").write_text(DATA_README.format(
        counts=", ".join(f"{k}: {v}" for k, v in counts.items()), n=len(triples) // 3))
    tokenizer = train_bpe_tokenizer(train_docs, vocab_size=VOCAB)
    tokenizer.save_pretrained(folder / "tokenizer")
    rows, epochs = training_rows(tokenizer, train_docs, cfg.n_rows())
    print(f"text: {counts}; {len(train_docs)} training docs "
          f"({sum(map(len, train_docs)) / 1e6:.2f} M chars), {len(val_docs)} validation docs "
          f"({sum(map(len, val_docs)) / 1e6:.2f} M chars); {len(triples) // 3} sequence triples; "
          f"training reads {epochs:.2f} epochs of the training text")
    jobs = [(arch, spec, rows, cfg, tokenizer, folder, seed, f"rt-{arch}-{spec.size}")
            for arch, spec in cfg.jobs()]
    cpu0 = time.process_time()
    threads = torch.get_num_threads()
    trained = _train_all(jobs, workers=1)  # one process, one torch thread (train_model sets it)
    torch.set_num_threads(threads)
    models = []
    for job in jobs:
        entry = trained[job[-1]]
        entry["family"] = f"rt-{job[0]}"
        models.append(entry)
    write_manifest(folder / "suite.toml", "real-text", models,
                   description="two families (GPTNeoX, OPT) x 2 sizes trained on installed "
                               "packages' descriptions and stdlib docstrings "
                               "(bench/real_text_suite.py)",
                   tokens_per_step=cfg.batch_size * ROW_LEN)
    marker.write_text(digest + "\n")
    sizes = ", ".join(f"{m['name']} {m['params']:,}" for m in models)
    print(f"trained {len(models)} models ({sizes}): {time.process_time() - cpu0:.0f} s CPU, "
          f"{time.perf_counter() - t0:.0f} s wall")
    return folder


def bigbench_dir() -> str:
    return os.environ.get("BIGBENCH_DIR", "/work/shared/data/bigbench")


def write_batch(out: Path, suite: Path) -> Path:
    from dynamics.toml_writer import dumps

    data = suite / "data"
    val = str(data / "validation.jsonl")
    batch = {
        "suite": str(suite.resolve()), "output": "results", "steps": "all", "device": "cpu",
        "evaluators": {
            "token-loss": {"dataset": val, "max_tokens": 20_000},
            "sequences": {"dataset": str(data / "sequences.jsonl")},
            "bigbench-mc": {"folder": bigbench_dir(), "tasks": BIGBENCH_TASKS, "k": 0,
                            "max_examples": 60},
            "recall-bigram": {"text": {"dataset": val}, "seq_len": 64},
        },
        "generate": {"rt-mix": {"small": "rt-neox-s", "large": "rt-neox-l",
                                "grid": [[1, 0], [0, 1], [-1, 1], [1, -1]], "prompts": val,
                                "n_prompts": 16, "prompt_tokens": 16, "max_new_tokens": 24}},
    }
    path = out / "batch.toml"
    path.write_text(dumps(batch))
    return path


def run_batch(out: Path, batch: Path, code: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dynamics.cli", "run", str(batch)], env=env,
                   check=True, cwd=out)
    print(f"batch: {time.perf_counter() - t0:.0f} s wall")


# ---------------------------------------------------------------- findings

FINDINGS_SNIPPET = """
import sys
import stats
print(stats.__file__)
from evals.store import Store
from stats.summary import analyze_store
print(analyze_store(Store(sys.argv[1])).findings.write_json())
"""


def findings_under(code: Path, results: Path) -> list[dict]:
    """The Findings rows computed with the code at `code` (a subprocess, PYTHONPATH=code)."""
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1"}
    # cwd = code: `python -c` puts the working directory first on sys.path, before PYTHONPATH
    done = subprocess.run([sys.executable, "-c", FINDINGS_SNIPPET, str(results)], env=env,
                          cwd=code, check=True, capture_output=True, text=True)
    where, rows = done.stdout.strip().splitlines()[-2:]
    if not Path(where).resolve().is_relative_to(code.resolve()):
        raise RuntimeError(f"the Findings for {code} were computed by {where}")
    return json.loads(rows)


def _num(x) -> str:
    if x is None:
        return ""
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def _cell(r: dict) -> str:
    value = _num(r["value"])
    if r["ci_low"] is not None or r["ci_high"] is not None:
        value += f" [{_num(r['ci_low'])}, {_num(r['ci_high'])}]"
    return value


def _esc(s) -> str:
    return str(s or "").replace("|", "\\|").replace("\n", " ")


def table(rows: list[dict]) -> str:
    lines = ["| claim | verdict | value [interval] | detail |", "|---|---|---|---|"]
    lines += [f"| {_esc(r['claim'])} | {_esc(r['verdict'])} | {_esc(_cell(r))} | "
              f"{_esc(r['detail'])} |" for r in rows]
    return "\n".join(lines)


def comparison(before: list[dict], after: list[dict]) -> str:
    """Row by row (claims in order; a claim's k-th row against its k-th row)."""
    def keyed(rows):
        seen = Counter()
        out = {}
        for r in rows:
            seen[r["claim"]] += 1
            out[(r["claim"], seen[r["claim"]])] = r
        return out

    b, a = keyed(before), keyed(after)
    keys = list(b) + [k for k in a if k not in b]
    lines = ["| claim | before | after | changed |", "|---|---|---|---|"]
    for k in keys:
        rb, ra = b.get(k), a.get(k)
        cb, ca = (", ".join(filter(None, (r["verdict"], _cell(r)))) if r else "(no row)"
                  for r in (rb, ra))
        lines.append(f"| {_esc(k[0])} | {_esc(cb)} | {_esc(ca)} | "
                     f"{'yes' if cb != ca else 'no'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="/tmp/realtext", help="working folder (cached stages)")
    p.add_argument("--before", default="/work/wt/base", help="checkout for the 'before' Findings")
    p.add_argument("--after", default=str(ROOT), help="checkout for the 'after' Findings "
                   "(and the one that runs the batch)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    suite = build(out)
    batch = write_batch(out, suite)
    run_batch(out, batch, Path(args.after))
    results = out / "results"
    before = findings_under(Path(args.before), results)
    after = findings_under(Path(args.after), results)
    (out / "findings_before.json").write_text(json.dumps(before, indent=1))
    (out / "findings_after.json").write_text(json.dumps(after, indent=1))
    text = (f"## Findings before ({args.before})\n\n{table(before)}\n\n"
            f"## Findings after ({args.after})\n\n{table(after)}\n\n"
            f"## Before / after\n\n{comparison(before, after)}\n")
    (out / "findings.md").write_text(text)
    print(text)
    print(f"total: {time.perf_counter() - t0:.0f} s wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
