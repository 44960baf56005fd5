"""The `dynamics` command line.

For developers: this module is the composition root, the only module that
wires the layers (it alone imports to its right: evals, stats, reports), and
nothing imports it; the import contracts in pyproject.toml check both. Users
see `DESCRIPTION` and `FIRST_COMMAND` in `dynamics --help` instead.

Verbs (suites, run, plan, generate, demo, report, compare) are thin wrappers of Python
functions; `dynamics --help` lists them.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback

from dynamics.suites import BUILTIN_SUITES, SuiteError, get_suite

DESCRIPTION = "Evaluate every checkpoint of a model suite and relate behaviors to perplexity."
FIRST_COMMAND = ("first command:  dynamics demo\n"
                 "  trains a toy suite, evaluates every checkpoint, writes "
                 "demo-out/report/index.html")


def version() -> str:
    """The installed package's version (pyproject.toml), as `dynamics --version` prints it."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("training-dynamics")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed; pip install -e .)"


def cmd_suites(args: argparse.Namespace) -> int:
    if args.steps:
        return _print_steps(args.steps, args.suite)
    names = [args.suite] if args.suite else list(BUILTIN_SUITES)
    for name in names:
        suite = get_suite(name)
        print(f"{suite.name}: {suite.description}")
        for model in suite.models:
            refs = suite.cached_checkpoints(model)  # None: a hub ref list not cached yet
            count = len(refs) if refs is not None else "hub list, not cached"
            seed = suite.seeds.get(model)
            extra = f"  seed={seed.seed} of {seed.group}" if seed else ""
            print(f"  {model:28s} params={suite.params_of(model):>15,d}  "
                  f"checkpoints={count}{extra}")
    return 0


def _print_steps(model: str, suite_name: str | None) -> int:
    names = [suite_name] if suite_name else list(BUILTIN_SUITES)
    for name in names:
        suite = get_suite(name)
        if model in suite.models:
            refs = suite.checkpoints(model)  # reads (and caches) a hub ref list if needed
            width = max(12, *(len(r.revision or r.source) for r in refs))
            print(f"{'revision':>{width}s} {'step':>8s} {'tokens_seen':>19s} {'flops':>12s}")
            for r in refs:
                rev = r.revision or r.source
                print(f"{rev:>{width}s} {r.step:8d} {r.tokens_seen:19,d} {r.flops:12.3e}")
            return 0
    raise SuiteError(f"no model {model!r} in suites {names}; run `dynamics suites` to list them")


def _generate_locked(cfg):
    """Make or reuse the batch's [generate.*] sets while holding the store's lock."""
    from evals.execute import generate_sets

    return generate_sets(cfg)


def cmd_generate(args: argparse.Namespace) -> int:
    from evals.config import load_batch_file
    from evals.generated import generated_path

    cfg = load_batch_file(args.batch, args.overrides)
    if not cfg.generate:
        raise ValueError(f"{args.batch}: no [generate.<name>] table; nothing to generate")
    _generate_locked(cfg)
    for name in cfg.generate:
        print(f"[generate.{name}]: {generated_path(cfg, name)}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from evals.config import load_batch_file
    from evals.execute import execute as run  # the same path as run_batch / run_batch_ray

    cfg = load_batch_file(args.batch, args.overrides)
    result = run(cfg, retry_failed=args.retry_failed, rescore=args.rescore,
                 progress=not args.quiet)
    _print_result(result, verbose=args.verbose)
    print(f"results: {cfg.output_dir}")
    return 1 if result.has_failures else 0


def cmd_plan(args: argparse.Namespace) -> int:
    """Print the batch's projected cost; exit 1 when a figure is unknown or an input missing."""
    from evals.config import load_batch_file
    from evals.plan import plan_batch

    cfg = load_batch_file(args.batch, args.overrides, check_inputs=False)
    plan = plan_batch(cfg, device=args.device_class, tflops=args.tflops,
                      calibrate=args.calibrate, offline=True if args.offline else None,
                      batch_name=args.batch)
    print(plan.text())
    return 0 if plan.complete else 1


def _print_result(result, verbose: bool = False) -> None:
    """The summary, then one line per failed unit: this run's, and earlier ones not retried."""
    print(result.summary())
    for tag, rows in (("FAILED", result.failed), ("FAILED EARLIER", result.not_retried)):
        for label, what, err in rows:
            text = err if verbose else (err.splitlines() or [""])[0]
            print(f"  {tag} {label} [{what}]: {text}")
    if result.not_retried:
        print(f"  {len(result.not_retried)} unit(s) failed in an earlier run and were not "
              "rerun; `dynamics run <batch> --retry-failed` retries them")


def cmd_report(args: argparse.Namespace) -> int:
    """Write the report; exit 1 if any section failed (the page is still written)."""
    from reports.build import build_report

    _check_out_folder(args.out)
    store = _readable_store(args.results)
    if store.root.is_dir() and not store.tables():
        failed = store.failures().height
        why = f"; {failed} unit(s) failed, see {store.root / '_failures'}" if failed else ""
        raise FileNotFoundError(f"no results in {store.root}: it holds no evaluator tables{why} "
                                "(give the `output` folder of a batch that has run)")
    failures: list[str] = []
    index = build_report(args.results, args.out, images=not args.no_images, failures=failures)
    print(f"report: {index}")
    for line in failures:
        print(f"error: report section {line}", file=sys.stderr)
    if failures:
        print(f"error: {len(failures)} report section(s) failed (rerun with -v for tracebacks)",
              file=sys.stderr)
    return 1 if failures else 0


def _readable_store(results: str):
    """The store at `results`; StoreReadError naming every part that cannot be read."""
    from evals.store import Store, StoreReadError

    store = Store(results)
    if bad := store.unreadable_parts():
        raise StoreReadError("\n".join(bad))
    return store


def _check_out_folder(out: str) -> None:
    """`report --out`: a folder, or a path where one can be made (checked before the report)."""
    from pathlib import Path

    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {out}: is a file; give a folder for index.html and the charts")
    blocker = next((p for p in path.absolute().parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ValueError(f"--out {out}: cannot create it, {blocker} is a file")


def _floats(text: str, option: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise ValueError(f"{option} takes comma-separated numbers, e.g. 20,30; "
                         f"got {text!r}") from err


def _check_out_file(out: str) -> None:
    """`compare --out`: a .csv or .parquet file in an existing folder (checked first)."""
    from pathlib import Path

    path = Path(out)
    if path.suffix not in (".csv", ".parquet"):
        raise ValueError(f"--out {out}: use a .csv or .parquet file name")
    if path.is_dir():
        raise ValueError(f"--out {out}: is a folder; give a .csv or .parquet file name")
    if not path.absolute().parent.is_dir():
        raise ValueError(f"--out {out}: the folder {path.absolute().parent} does not exist")


def _write_frame(frame, path) -> None:
    from pathlib import Path

    path = Path(path)
    if path.suffix == ".csv":
        frame.write_csv(path)
    else:
        frame.write_parquet(path)


def cmd_compare(args: argparse.Namespace) -> int:
    """Differences between two families at matched ppl, and the family test at fixed ppl."""
    from pathlib import Path

    import polars as pl

    from reports.text import comparison_text
    from stats.behaviors import behavior_table
    from stats.families import compare
    from stats.seeds import seed_frame

    families = [f.strip() for f in args.families.split(",") if f.strip()]
    if len(families) != 2:
        raise ValueError(f"--families takes two families, e.g. pythia,opt; got {args.families!r}")
    if args.out:
        _check_out_file(args.out)
    store = _readable_store(args.results)
    table = behavior_table(store)
    for line in table.missing:
        print(f"behavior provider not available: {line}", file=sys.stderr)
    ppls = _floats(args.at_ppl, "--at-ppl") if args.at_ppl else None
    from stats.summary import declared_margin

    margin = args.margin if args.margin is not None else declared_margin(store)
    result = compare(table.rows, families, ppls, behavior=args.behavior, seeds=seed_frame(store),
                     margin=margin)
    diffs, tests = result.differences, result.test
    print(comparison_text(diffs, tests))
    if args.out:
        out = Path(args.out)
        _write_frame(diffs, out)
        _write_frame(tests, out.with_name(f"{out.stem}.family_test{out.suffix}"))
        print(f"written: {out} and {out.stem}.family_test{out.suffix}")
    return 0


def demo_evaluator_options(suite_dir) -> dict:
    """The demo batch's `[evaluators.*]` tables for a toy suite: only registered evaluators.

    Every option points at the suite's exported data (`<suite>/data/`, see
    dynamics.toy.export); an evaluator appears only if its name is in EVALUATORS.
    """
    from pathlib import Path

    from evals.base import EVALUATORS

    data = Path(suite_dir).resolve() / "data"
    wanted = {
        "token-loss": {"dataset": str(data / "validation.jsonl"), "max_tokens": 10_000},
        "sequences": {"dataset": str(data / "sequences.jsonl")},
        # k = 0: the toy QA inputs carry their own examples, and 2 shots overflow the toy context
        "bigbench-mc": {"folder": str(data / "bigbench"), "tasks": "all", "k": 0},
        "circuits": {"tasks": ["trigger"], "trigger_path": str(data / "trigger.jsonl"),
                     "n_examples": 8, "ig_steps": 10, "prepend_bos": True,
                     "components": ["induction", "previous-token", "trigger-induction"]},
        "recall-bigram": {"dataset": str(data / "recall_bigram.jsonl")},
    }
    return {name: opts for name, opts in wanted.items() if name in EVALUATORS}


def demo_generate_options(suite_dir) -> dict:
    """The demo batch's `[generate.*]` table: Xia et al.'s mixture sets from the toy suite.

    The smallest and the largest model's final checkpoints of the suite's first family,
    four (a, b) pairs of the paper's grid, 16 prompts from the validation set, 24 greedy
    tokens each (prompt + continuation stay within the toy context of 64).
    """
    from pathlib import Path

    suite = get_suite(str(Path(suite_dir).resolve()))
    family = next(iter(suite.models.values()))[0].family  # the first family (toy-neox)
    by_size = sorted((m for m, refs in suite.models.items() if refs[0].family == family),
                     key=lambda m: suite.models[m][0].params)
    data = Path(suite_dir).resolve() / "data"
    return {"toy-mix": {"small": by_size[0], "large": by_size[-1],
                        "grid": [[1, 0], [0, 1], [-1, 1], [1, -1]],
                        "prompts": str(data / "validation.jsonl"), "n_prompts": 16,
                        "prompt_tokens": 16, "max_new_tokens": 24}}


def _demo_batch(suite_dir, out_dir):
    from pathlib import Path

    from dynamics.toml_writer import dumps

    path = Path(out_dir) / "batch.toml"
    # every saved checkpoint (34 per model: dense around the induction phase change, 8+ in
    # each Xia trend window; issues 19 and 26, BENCHMARKS.md)
    batch = {"suite": str(Path(suite_dir).resolve()), "output": "results",
             "steps": "all", "evaluators": demo_evaluator_options(suite_dir)}
    if "sequences" in batch["evaluators"]:
        batch["generate"] = demo_generate_options(suite_dir)
    path.write_text(dumps(batch))
    return path


def cmd_demo(args: argparse.Namespace) -> int:
    import importlib.util
    import time
    from pathlib import Path

    from dynamics.toy.train import build_toy_suite
    from evals.base import EVALUATORS
    from evals.config import load_batch_file
    from evals.execute import run_batch

    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suite = build_toy_suite(out / "suites", scale=args.scale, seed=args.seed)
    print(f"toy suite: {suite} ({time.perf_counter() - t0:.0f} s so far)")
    batch = _demo_batch(suite, out)
    ran = demo_evaluator_options(suite)
    skipped = sorted(set(EVALUATORS) - set(ran))
    print(f"evaluators: {', '.join(ran)}" + (f" (no demo options for: {', '.join(skipped)})"
                                              if skipped else ""))
    cfg = load_batch_file(batch)
    if cfg.generate:
        t_gen = time.perf_counter()
        _generate_locked(cfg)  # run_batch would do it too; here to report its time
        print(f"generated sets ({', '.join(cfg.generate)}): {cfg.output_dir / 'generated'} "
              f"({time.perf_counter() - t_gen:.0f} s)")
    result = run_batch(cfg, progress=not args.quiet)
    _print_result(result)
    print(f"results: {cfg.output_dir} ({time.perf_counter() - t0:.0f} s so far)")
    if importlib.util.find_spec("reports.build") is None:
        print("report: skipped (reports.build is not installed yet)")
    else:
        from reports.build import build_report, findings_summary

        index = build_report(cfg.output_dir, out / "report", images=not args.no_images)
        print(findings_summary(index.parent))
        print(f"report: {index}")
    print(f"demo done in {time.perf_counter() - t0:.0f} s")
    return 1 if result.has_failures else 0


DOCS = {"suites": "docs/suites.md", "run": "docs/batch-file.md", "report": "docs/report.md",
        "generate": "docs/evaluators/sequences.md", "compare": "docs/statistics.md",
        "demo": "docs/toy-suite.md", "plan": "docs/tutorial-pythia.md"}
# each verb's docs page (tests/test_docs.py checks them)


class _VerbParser(argparse.ArgumentParser):
    """`epilog_fn` makes the epilog when help is printed (run's imports the registry)."""

    epilog_fn = None

    def format_help(self) -> str:
        if self.epilog_fn is not None:
            self.epilog = self.epilog_fn()
        return super().format_help()


def _run_epilog() -> str:
    """The registered evaluators, each with its docs page; the batch file's page."""
    from evals.base import EVALUATORS

    lines = [f"  {f'[evaluators.{name}]':30s} docs/evaluators/{name}.md" for name in EVALUATORS]
    return "\n".join(["evaluators (one [evaluators.<name>] table each):", *lines,
                      f"batch file (every key, steps, overrides, exit codes): {DOCS['run']}"])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dynamics", description=f"{DESCRIPTION}\n\n{FIRST_COMMAND}",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="`dynamics <verb> --help` describes a verb; docs/README.md "
                                       "lists the docs pages.")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="log at INFO level and show tracebacks")
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = p.add_subparsers(dest="verb", required=True, parser_class=_VerbParser)

    s = sub.add_parser("suites", help="list checkpoint suites and their models")
    s.add_argument("--steps", metavar="MODEL", help="list one model's revisions with tokens_seen")
    s.add_argument("--suite", help="a built-in suite name or a local suite folder")
    s.set_defaults(func=cmd_suites)

    r = sub.add_parser("run", help="run an evaluation batch from a TOML file",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.epilog_fn = _run_epilog
    r.add_argument("batch", help=f"batch TOML ({DOCS['run']})")
    r.add_argument("overrides", nargs="*", help="key=value overrides of top-level batch keys")
    r.add_argument("--retry-failed", action="store_true", help="retry units recorded as failed")
    r.add_argument("--rescore", action="store_true", help="score again the stored units whose "
                   "evaluator options or inputs differ from the batch's (otherwise refused)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    r.set_defaults(func=cmd_run)

    pl = sub.add_parser("plan", help="a batch's cost before it runs: checkpoints, units, "
                        "download, peak disk, compute per evaluator (nothing is loaded)")
    pl.add_argument("batch", help=f"batch TOML ({DOCS['run']})")
    pl.add_argument("overrides", nargs="*", help="key=value overrides of top-level batch keys")
    pl.add_argument("--device-class", default=None, help="the device to project for: cpu, "
                    "h100, a100 or h200 (default: the batch's device; a GPU here is "
                    "recognized, else cuda is projected as an h100)")
    pl.add_argument("--tflops", type=float, default=None,
                    help="effective TFLOP/s to project with (2 x params FLOPs per token)")
    pl.add_argument("--calibrate", action="store_true", help="measure the throughput on this "
                    "device: a random-weight model per config.json, token-loss's batch shape")
    pl.add_argument("--offline", action="store_true", help="sizes from params x stored dtype, "
                    "no hub listing (also when HF_HUB_OFFLINE=1)")
    pl.set_defaults(func=cmd_plan)

    g = sub.add_parser("generate", help="make a batch's [generate.*] mixture sets only "
                       "(`run` does it before the sweep)")
    g.add_argument("batch", help="batch TOML with [generate.<name>] tables")
    g.add_argument("overrides", nargs="*", help="key=value overrides of top-level batch keys")
    g.set_defaults(func=cmd_generate)

    rp = sub.add_parser("report", help="write the offline HTML report of a results store")
    rp.add_argument("results", help="the results store (a batch's output folder)")
    rp.add_argument("--out", required=True, help="folder for index.html and chart files")
    rp.add_argument("--no-images", action="store_true", help="skip the PNG/SVG of each chart")
    rp.set_defaults(func=cmd_report)

    c = sub.add_parser("compare", help="compare families at matched validation perplexity")
    c.add_argument("results", help="the results store (a batch's output folder)")
    c.add_argument("--families", required=True, help="comma-separated families, e.g. pythia,opt")
    c.add_argument("--at-ppl", default=None, help="comma-separated ppl values, e.g. 20,30 "
                   "(default: 5 values inside every model's ppl range)")
    c.add_argument("--behavior", default=None, help="one behavior name (default: all but val_loss)")
    c.add_argument("--margin", type=float, default=None, help="equivalence margin (behaviors' "
                   "units) for 'the families do not differ'; the seed SD at matched ppl wins where "
                   "the suite has seeds (default: the batch's equivalence_margin, else a tenth "
                   "of the behavior's spread)")
    c.add_argument("--out", default=None, help="also write the differences to a .csv or "
                   ".parquet file (and the family test to <name>.family_test.<ext>)")
    c.set_defaults(func=cmd_compare)

    d = sub.add_parser("demo", help="train the toy suite (cached), evaluate it, write the report")
    d.add_argument("--out", default="demo-out", help="output folder (suite, results, report)")
    d.add_argument("--scale", default="demo", choices=["fast", "demo"], help="toy suite scale")
    d.add_argument("--seed", type=int, default=0, help="seed of the corpus and the models")
    d.add_argument("--no-images", action="store_true", help="skip the PNG/SVG of each chart")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=cmd_demo)
    for name, verb in sub.choices.items():  # `-v` also after the verb; SUPPRESS keeps a leading one
        verb.epilog = verb.epilog or f"docs: {DOCS.get(name, 'docs/README.md')}"
        verb.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                          help="log at INFO level and show tracebacks")
    return p


def _quiet_progress() -> None:
    """No `datasets` bars ("Generating train split"); no hub download bars in a log file.

    Environment variables, read when those libraries are imported (after this).
    """
    import os

    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    if not sys.stderr.isatty():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed command line; key=value overrides may also follow options (`run b.toml -q
    steps=final`), which argparse alone rejects once `-q` has ended the positionals."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in e and e[0] != "-" for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _one_line_warnings() -> object:
    """Show each distinct warning once, as `warning: <text>` (no source line); returns the
    previous `warnings.showwarning` to restore."""
    import warnings

    previous, seen = warnings.showwarning, set()

    def show(message, category, filename, lineno, file=None, line=None):
        text = str(message)
        if text not in seen:
            seen.add(text)
            print(f"warning: {text}", file=sys.stderr)

    warnings.showwarning = show
    return previous


def _user_error(err: BaseException, verbose: bool) -> int:
    """One `error:` line per problem (the traceback only with -v); exit status 2."""
    if verbose:
        traceback.print_exception(err, file=sys.stderr)
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    for line in text.splitlines() or [type(err).__name__]:
        print(f"error: {line}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    import warnings

    from evals.store import StoreLockedError

    args = parse_args(argv)
    _quiet_progress()
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)  # also where a host (pytest) set up logging first
    shown = None if args.verbose else _one_line_warnings()
    try:
        return args.func(args)
    except BrokenPipeError:  # e.g. `dynamics suites | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt as err:  # Ctrl-C: what is stored stays (evals.execute)
        stored = getattr(err, "stored", None)
        done = f": {stored} units stored; rerun to continue" if stored is not None else ""
        print(f"interrupted{done}", file=sys.stderr)
        return 130
    except (ValueError, KeyError, OSError, StoreLockedError) as err:
        # ConfigError / SuiteError / SchemaError / StoreReadError, a held lock, a path that
        # cannot be written: user input or the user's machine; one line per problem.
        return _user_error(err, args.verbose)
    finally:
        if shown is not None:
            warnings.showwarning = shown


if __name__ == "__main__":
    sys.exit(main())
