"""The `dynamics` command: the composition root (the only module that wires layers).

Verbs are thin wrappers of Python functions:
    dynamics suites [--steps NAME]        list suites, models, and a model's revisions
    dynamics run batch.toml [key=value]   run an evaluation batch (resumable)
    dynamics report RESULTS --out DIR     offline HTML report (charts, PNG/SVG, tables)
"""

from __future__ import annotations

import argparse
import logging
import sys

from dynamics.suites import BUILTIN_SUITES, SuiteError, get_suite


def cmd_suites(args: argparse.Namespace) -> int:
    if args.steps:
        return _print_steps(args.steps, args.suite)
    names = [args.suite] if args.suite else list(BUILTIN_SUITES)
    for name in names:
        suite = get_suite(name)
        print(f"{suite.name}: {suite.description}")
        for model, refs in suite.models.items():
            print(f"  {model:28s} params={refs[0].params:>15,d}  checkpoints={len(refs)}")
    return 0


def _print_steps(model: str, suite_name: str | None) -> int:
    names = [suite_name] if suite_name else list(BUILTIN_SUITES)
    for name in names:
        suite = get_suite(name)
        if model in suite.models:
            print(f"{'revision':>12s} {'step':>8s} {'tokens_seen':>16s} {'flops':>12s}")
            for r in suite.models[model]:
                rev = r.revision or r.source
                print(f"{rev:>12s} {r.step:8d} {r.tokens_seen:16,d} {r.flops:12.3e}")
            return 0
    raise SuiteError(f"no model {model!r} in suites {names}; run `dynamics suites` to list them")


def cmd_run(args: argparse.Namespace) -> int:
    from evals.config import load_batch_file

    cfg = load_batch_file(args.batch, args.overrides)
    if cfg.executor == "ray":
        from evals.ray_executor import run_batch_ray as run
    else:
        from evals.sweep import run_batch as run
    result = run(cfg, retry_failed=args.retry_failed, progress=not args.quiet)
    print(result.summary())
    for label, what, err in result.failed:
        print(f"  FAILED {label} [{what}]: {err.splitlines()[0] if err else ''}")
    print(f"results: {cfg.output_dir}")
    return 1 if result.failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    from reports.build import build_report

    index = build_report(args.results, args.out, images=not args.no_images)
    print(f"report: {index}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dynamics", description=__doc__.split("\n")[0])
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="verb", required=True)

    s = sub.add_parser("suites", help="list checkpoint suites and their models")
    s.add_argument("--steps", metavar="MODEL", help="list one model's revisions with tokens_seen")
    s.add_argument("--suite", help="a built-in suite name or a local suite folder")
    s.set_defaults(func=cmd_suites)

    r = sub.add_parser("run", help="run an evaluation batch from a TOML file")
    r.add_argument("batch", help="batch TOML (see README)")
    r.add_argument("overrides", nargs="*", help="key=value overrides of top-level batch keys")
    r.add_argument("--retry-failed", action="store_true", help="retry units recorded as failed")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    r.set_defaults(func=cmd_run)

    rp = sub.add_parser("report", help="write the offline HTML report of a results store")
    rp.add_argument("results", help="the results store (a batch's output folder)")
    rp.add_argument("--out", required=True, help="folder for index.html and chart files")
    rp.add_argument("--no-images", action="store_true", help="skip the PNG/SVG of each chart")
    rp.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except BrokenPipeError:  # e.g. `dynamics suites | head`
        sys.stderr.close()
        return 0
    except (ValueError, KeyError, FileNotFoundError) as err:
        # ConfigError / SuiteError / SchemaError: user input; one clear message, no traceback.
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
