"""Calibration of the verdicts and family comparisons on simulated suites (issue 16).

Every replicate is a seeded :func:`stats.simulate.simulate_suite` (AR(1) noise
along each model's checkpoints, rho 0.8, sd 0.03; 15 checkpoints per model)
run through the real code paths: :func:`stats.regression.fit_behaviors` for
"size adds", :func:`stats.families.family_test` for "family differs" and
:func:`stats.families.family_differences` for the CI of the difference at
matched ppl. "today" is the pre-issue-16 rule: the iid-SE 95 % CI of log
params in the ppl+params fit (OLS, or binomial GLM for the accuracy case: 200
examples per checkpoint, AR(1) noise of sd 0.3 on the logit scale) excludes 0.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.bench_calibration --reps 200

prints one table (rates with a binomial 95 % interval) and exits 1 if a
target is missed (false positives <= 10 %, power >= 80 %, coverage >= 85 %).
``--claims`` instead prints the calibration of every Findings claim rule
(stats.simulate_claims.SCENARIOS: stores where the claim holds and where it
does not): per scenario the share of each outcome; a wrong "supported" (claim
fails) or a wrong "contradicted" (claim holds) must be <= 10 %; the
"supported" share where it holds is the power. Claim (b) fits 12 behaviors
per replicate and runs reps / 4 replicates; its "one suite" scenarios measure
all behaviors on the same models (all noise; half noise, half size-driven at
fixed ppl; tokens only; half ppl-driven, half noise), and claim (c2)'s include
sets whose generator models are recorded (only the generator rises; a
non-generator large model rises) and an early rise. Exits 1 if a wrong rate is
over 10 %.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.bench_calibration --claims --reps 200

``--compare-methods`` instead prints the false-positive rate of each covariance
choice (iid, statsmodels CR1 and CV3 with t(G-1), the jackknife used here) for
3, 5 and 8 models: the simulation that chose the method.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd
import polars as pl

from stats.families import family_differences, family_test
from stats.inference import fit
from stats.regression import _design, fit_behaviors
from stats.simulate import simulate_suite

SIZE_EFFECT = 0.02  # value per unit log params: 0.10 across 70M..12B = 3.4 noise sd
FAMILY_SHIFT = 0.06  # value units at equal ppl = 2 noise sd
PPL_OFFSET = 0.15  # family b's log ppl is 0.15 higher at equal size and tokens
N_TRIALS = 200  # examples per checkpoint in the accuracy case (binomial GLM)
ACC_NOISE_SD = 0.3  # its AR(1) noise on the logit scale (binomial sampling sd is ~0.14)
DIFF_PPL = 20.0  # where family_differences is checked (inside every model's range)


def today_size_adds(rows: pl.DataFrame, response: str = "ols") -> bool:
    """The rule before issue 16: iid CI of log params at fixed ppl (OLS or binomial) excludes 0."""
    res = fit(_design(rows).to_pandas(), ("log_ppl", "log_params"), response)
    lo, hi = res.conf_int().loc["log_params"]
    return not (lo <= 0 <= hi)


def size_case(rng, n_sizes: int, effect: float, n_trials=None) -> tuple[bool, bool]:
    rows = simulate_suite(rng, n_sizes=n_sizes, size_effect=effect, n_trials=n_trials,
                          noise_sd=ACC_NOISE_SD if n_trials else 0.03)
    verdict = fit_behaviors(rows, mixed=False).verdicts.row(0, named=True)
    return bool(verdict["size_adds"]), today_size_adds(rows, "binomial" if n_trials else "ols")


def _two_families(rng, per_family: int, shift: float) -> pl.DataFrame:
    return simulate_suite(rng, n_sizes=per_family, families=("fa", "fb"),
                          family_shift={"fb": shift}, ppl_offset={"fb": PPL_OFFSET})


def family_case(rng, per_family: int, shift: float) -> tuple[bool, bool]:
    rows = _two_families(rng, per_family, shift)
    test = family_test(rows, ("fa", "fb")).row(0, named=True)
    diff = family_differences(rows, ("fa", "fb"), [DIFF_PPL], n_boot=1000,
                              seed=int(rng.integers(1 << 31))).row(0, named=True)
    covered = diff["ci_low"] is not None and diff["ci_low"] <= shift <= diff["ci_high"]
    return bool(test["p_value"] is not None and test["p_value"] < 0.05), covered


def method_rejects(rows: pl.DataFrame) -> dict[str, bool]:
    """Does each covariance reject "log params = 0" at 5 % (OLS ppl+params, ppl-only truth)?"""
    import statsmodels.api as sm

    from stats.inference import design, robust_fit

    df = _design(rows).to_pandas()
    terms = ("log_ppl", "log_params")
    model = sm.OLS(df["value"].to_numpy(), design(df, terms))
    groups = {"groups": pd.factorize(df["model"])[0]}
    out = {"iid": model.fit().pvalues["log_params"] < 0.05}
    for name, cov in (("CR1 t(G-1)", "cluster"), ("CV3 t(G-1)", "cluster-crv3")):
        res = model.fit(cov_type=cov, cov_kwds=groups, use_t=True)
        out[name] = res.pvalues["log_params"] < 0.05
    rob = robust_fit(df, terms, "ols")
    out["jackknife t(G-1) (used)"] = rob.p_value[rob.terms.index("log_params")] < 0.05
    return out


def compare_methods(reps: int, seed: int) -> None:
    """False-positive rate of each covariance choice: how the jackknife was chosen."""
    rng = np.random.default_rng(seed)
    print(f"| models ({reps} replicates, ppl-only truth, nominal 5 %) | iid | CR1 t(G-1) | "
          "CV3 t(G-1) | jackknife t(G-1) (used) |")
    print("|---|---|---|---|---|")
    for n_sizes in (3, 5, 8):
        hits = [method_rejects(simulate_suite(rng, n_sizes=n_sizes)) for _ in range(reps)]
        rates = [_rate([h[k] for h in hits]) for k in hits[0]]
        print(f"| {n_sizes} | " + " | ".join(rates) + " |")


def _rate(hits: list[bool]) -> str:
    k, n = int(np.sum(hits)), len(hits)
    half = 1.96 * np.sqrt(max(k, 1) * max(n - k, 1) / n) / n
    return f"{k / n:6.1%} ± {half:4.1%}"


def run(reps: int, seed: int) -> list[tuple[str, str, str, bool]]:
    """Rows (what, rate now, rate today or '', target met)."""
    rng = np.random.default_rng(seed)
    rows = []
    for n_sizes, effect, trials in ((3, 0.0, None), (8, 0.0, None), (8, SIZE_EFFECT, None),
                                    (8, 0.0, N_TRIALS)):
        now, old = zip(*(size_case(rng, n_sizes, effect, trials) for _ in range(reps)))
        what = (f"size adds, {n_sizes} sizes, "
                + (f"accuracy with {trials} real counts, " if trials else "")
                + ("ppl-only truth (false positives)" if effect == 0 else
                   f"size effect {effect}/log-param (power)"))
        ok = np.mean(now) <= 0.10 if effect == 0 else np.mean(now) >= 0.80
        rows.append((what, _rate(now), _rate(old), bool(ok)))
    for shift in (0.0, FAMILY_SHIFT):
        differs, covered = zip(*(family_case(rng, 4, shift) for _ in range(reps)))
        what = ("family differs, 4+4 models, " + ("no shift (false positives)" if shift == 0
                                                  else f"shift {shift} (power)"))
        ok = np.mean(differs) <= 0.10 if shift == 0 else np.mean(differs) >= 0.80
        rows.append((what, _rate(differs), "", bool(ok)))
        rows.append((f"CI of the difference at ppl {DIFF_PPL:g} covers {shift}, 4+4 models",
                     _rate(covered), "", bool(np.mean(covered) >= 0.85)))
    return rows


SLOW_CLAIMS = {"b": 4}  # claim -> reps divisor (claim (b) fits a dozen behaviors per replicate)
WRONG_MAX = 0.10


def claims_table(reps: int, seed: int, only: str | None = None) -> bool:
    """Print the outcome shares of every claim scenario; True when no wrong rate is > 10 %."""
    from stats.outcomes import CONTRADICTED, INCONCLUSIVE, NOT_TESTABLE, SUPPORTED
    from stats.simulate_claims import SCENARIOS, run_scenario

    words = (SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_TESTABLE)
    print(f"| claim | simulated truth | claim | {' | '.join(words)} | wrong | wrong <= 10 % |")
    print("|---|---|---|---|---|---|---|---|---|")
    ok = True
    for i, (key, name, truth, simulate) in enumerate(SCENARIOS):
        if only is not None and key != only:
            continue
        rng = np.random.default_rng([seed, i])
        n = max(reps // SLOW_CLAIMS.get(key, 1), 10)
        got = [run_scenario(key, simulate, rng) for _ in range(n)]
        wrong_word = CONTRADICTED if truth == "holds" else SUPPORTED
        wrong = [w == wrong_word for w in got]
        ok &= float(np.mean(wrong)) <= WRONG_MAX
        cells = " | ".join(_rate([w == word for w in got]) for word in words)
        print(f"| ({key}) | {name} ({n} reps) | {truth} | {cells} | {wrong_word} "
              f"{np.mean(wrong):.1%} | {'yes' if np.mean(wrong) <= WRONG_MAX else 'NO'} |",
              flush=True)
    return ok


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=200, help="replicates per configuration")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare-methods", action="store_true",
                   help="only compare covariance choices (iid, CR1, CV3, jackknife)")
    p.add_argument("--claims", action="store_true",
                   help="only the calibration of every Findings claim rule")
    p.add_argument("--only", default=None, help="with --claims: one claim's key (a, b, c1, ...)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    if args.claims:
        ok = claims_table(args.reps, args.seed, args.only)
        print(f"\n{time.perf_counter() - t0:.0f} s")
        return 0 if ok else 1
    if args.compare_methods:
        compare_methods(args.reps, args.seed)
        print(f"\n{time.perf_counter() - t0:.0f} s")
        return 0
    rows = run(args.reps, args.seed)
    head = f"what ({args.reps} replicates, seed {args.seed})"
    print(f"| {head} | now | today (iid SEs) | target met |")
    print("|---|---|---|---|")
    for what, now, old, ok in rows:
        print(f"| {what} | {now} | {old} | {'yes' if ok else 'NO'} |")
    print(f"\n{time.perf_counter() - t0:.0f} s")
    return 0 if all(r[3] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
