"""Build the report of a results store: `build_report(store_dir, out_dir) -> index.html`.

The page opens with the findings (stats.findings: each paper's claim, this
run's statistic and a verdict), then the verdicts table (ppl or size?), then
the charts; long per-checkpoint tables are folded in <details> elements.

Sections only lay out frames: the analysis (fits, fitted curves, emergence
points, findings) comes from stats.summary.analyze_store, and the other
sections call stats aggregations (validation ppl, class fractions, set
log-probs, ...). Behaviors are selected by their identity columns (evaluator,
kind, task, set), never by their labels. A table that is missing or empty
turns into a note saying which table (and which evaluator writes it) is
missing, so an empty or partial store still gives a report. Stats modules
that this installation lacks are skipped the same way.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from pathlib import Path

import polars as pl

from evals.schema import KEY_COLUMNS
from evals.store import Store
from reports import charts, family_charts, mechanism_charts, xia_charts
from reports.html import Section, findings_html, write_html
from stats import (
    bigbench,
    circuits,
    findings,
    hallucination,
    summary,
    trajectories,
)
from stats.perplexity import flag_ppl_rises, ppl_rises, validation_ppl

log = logging.getLogger(__name__)
KEYS = list(KEY_COLUMNS)
MAX_HEATMAPS = 12
MAX_BEHAVIORS = 16
FINDINGS_FILE = "findings.csv"
WRITER = {"token-loss": "token-loss", "sequences": "sequences", "bigbench-mc": "bigbench-mc",
          "circuit-summary": "circuits", "circuit-edges": "circuits", "components": "circuits"}


def _missing(table: str) -> str:
    return (f"No `{table}` table in this store (written by the `{WRITER.get(table, table)}` "
            "evaluator); this section is empty.")


class Context:
    """The store plus values shared by sections (validation ppl is everyone's x-axis).

    Args:
        store: the results store.
        family_differences: families at matched ppl with CIs, handed to the
            findings (claim (e) of stats.findings); None when not computed.
    """

    def __init__(self, store: Store, family_differences: pl.DataFrame | None = None):
        self.store = store
        self.tables = set(store.tables())
        self.family_differences = family_differences
        self.ppl = (flag_ppl_rises(validation_ppl(store.scan("token-loss")))
                    if "token-loss" in self.tables else None)

    @functools.cached_property
    def analysis(self) -> summary.Analysis | None:
        """Fits, curves, emergence points and findings (None without validation ppl)."""
        if self.ppl is None:
            return None
        return summary.analyze_store(self.store, family_differences=self.family_differences)

    def with_ppl(self, frame: pl.DataFrame) -> pl.DataFrame:
        """`frame` with the checkpoint's val_ppl joined on the keys (null when unknown)."""
        if self.ppl is None:
            return frame.with_columns(pl.lit(None, pl.Float64).alias("val_ppl"))
        return frame.join(self.ppl.select(*KEYS, "val_ppl"), on=KEYS, how="left")


def _no_ppl(sec: Section) -> Section:
    sec.notes.append(_missing("token-loss") + " Every analysis uses validation perplexity, "
                     "so this section is empty too.")
    return sec


def findings_section(ctx: Context) -> Section:
    sec = Section("Findings")
    if ctx.analysis is None:
        return _no_ppl(sec)
    sec.notes.append("Each claim's outcome (supported, contradicted, inconclusive: what the run "
                     "could detect, not testable) and the interval its rule used, named.")
    sec.html.append(findings_html(ctx.analysis.findings))
    sec.files.append((FINDINGS_FILE, ctx.analysis.findings))
    return sec


def findings_summary(report_dir: str | Path) -> str:
    """The findings of a written report, one line per claim (stats.findings.summary_text).

    Reads `findings.csv` beside index.html; says so when the report has none
    (a store without validation ppl, or a failed findings section).
    """
    path = Path(report_dir) / FINDINGS_FILE
    if not path.is_file():
        return f"no findings: {path} was not written (see the report's Findings section)"
    table = pl.read_csv(path, schema=findings.FINDINGS_SCHEMA)
    return "findings:\n" + findings.summary_text(table)


def verdicts_section(ctx: Context) -> Section:
    sec = Section("Perplexity or size? Verdicts per behavior")
    if ctx.analysis is None:
        return _no_ppl(sec)
    sec.notes += ctx.analysis.notes
    fits = ctx.analysis.fits
    sec.tables.append(("Verdicts: which predictor wins per behavior (best_spec by AIC; "
                       "loso_ratio > 1 means ppl predicts held-out sizes better than size or "
                       "compute; size_adds: log(params) significant at fixed ppl)",
                       fits.verdicts))
    sec.details.append(("Fit comparison (R2 or McFadden pseudo-R2, AIC, BIC, "
                        "leave-one-size-out RMSE)", fits.fits))
    sec.details.append(("Coefficients", fits.coefficients))
    if fits.skipped is not None and not fits.skipped.is_empty():
        sec.details.append(("Behaviors not fitted", fits.skipped))
    return sec


def ppl_section(ctx: Context) -> Section:
    sec = Section("Validation perplexity")
    if ctx.ppl is None:
        return _no_ppl(sec)
    sec.charts.append(("ppl_vs_tokens", charts.ppl_vs_tokens(ctx.ppl)))
    for _, model, steps in ppl_rises(ctx.ppl).iter_rows():
        sec.notes.append(f"Validation ppl of {model} rises again at step(s) "
                         f"{', '.join(map(str, steps))} (ringed in the chart): matched-ppl "
                         "comparisons use its best ppl so far there.")
    sec.details.append(("Validation perplexity per checkpoint",
                        ctx.ppl.select(*KEYS, "n_tokens", "val_ppl", "ppl_rises")))
    return sec


def behaviors_section(ctx: Context) -> Section:
    sec = Section("Behaviors vs validation perplexity, tokens and FLOPs")
    if ctx.analysis is None:
        return _no_ppl(sec)
    table, an = ctx.analysis.behaviors, ctx.analysis
    generated = table.filter(pl.col("task") == hallucination.GENERATED)
    shown = table.filter(pl.col("task").is_null() | (pl.col("task") != hallucination.GENERATED))
    names = sorted(shown["behavior"].unique())
    if not generated.is_empty():  # drawn as ppl in the Xia section; fitted like every behavior
        sec.notes.append(f"{generated['behavior'].n_unique()} generated sets are drawn in the "
                         "Xia et al. section, not here; their fits are in the verdicts.")
    if len(names) > MAX_BEHAVIORS:
        sec.notes.append(f"{len(names)} behaviors; showing the first {MAX_BEHAVIORS}.")
    for name in names[:MAX_BEHAVIORS]:
        curves = an.curves.filter(pl.col("behavior") == name).drop("behavior")
        sec.charts.append((f"behavior_{_slug(name)}",
                           charts.behavior_panels(table, name, curves)))
    if not an.emergence.is_empty():
        sec.charts.append(("emergence_points", mechanism_charts.emergence_points(an.emergence)))
        sec.details.append((f"Emergence points: first checkpoint past "
                            f"{summary.EMERGENCE_FRACTION:.0%} of the change from the first "
                            "checkpoint's value to the final one (accuracies, head scores); "
                            "compare tokens_seen (matched tokens, Tigges) with val_ppl "
                            "(matched ppl, Xia) across models", an.emergence))
    return sec


def families_section(ctx: Context) -> Section:
    """Two families compared at matched ppl: the stats.summary family frames, drawn."""
    sec = Section("Families at matched perplexity")
    if ctx.analysis is None:
        return _no_ppl(sec)
    a = ctx.analysis
    if a.family_pair is None:
        names = sorted(a.behaviors["family"].unique())
        sec.notes.append(f"Families in this store: {names or 'none'}; a comparison needs two.")
        return sec
    sec.notes += a.family_notes
    if a.family_differences is None or a.family_differences.is_empty():
        return sec
    diffs = a.family_differences
    shown = sorted(diffs["behavior"].unique())[:MAX_BEHAVIORS]
    fa, fb = a.family_pair
    sec.charts.append(("family_differences", family_charts.family_difference_chart(
        diffs.filter(pl.col("behavior").is_in(shown)))))
    sec.tables.append((f"Family at fixed ppl ({fb} term in value ~ log ppl + family; outcome "
                       "and decision interval as in the Findings)", a.family_test))
    sec.details.append((f"{fb} - {fa} at matched ppl (95% CI, descriptive: bootstrap over "
                        "models, t reference; none with fewer than 3 models per family)", diffs))
    return sec


def trajectories_section(ctx: Context) -> Section:
    sec = Section("Token trajectory classes (Xia et al. 2023)")
    if "token-loss" not in ctx.tables:
        sec.notes.append(_missing("token-loss"))
        return sec
    fracs = trajectories.class_fractions(ctx.store.scan("token-loss"))
    if fracs.is_empty():
        sec.notes.append("Too few checkpoints per model to classify token trajectories "
                         "(a window needs at least 3).")
        return sec
    sec.charts.append(("class_fractions_vs_ppl", charts.class_fractions_vs_ppl(fracs)))
    return sec


def sequences_section(ctx: Context) -> Section:
    sec = Section("Factual vs hallucinated sequences")
    if "sequences" not in ctx.tables:
        sec.notes.append(_missing("sequences"))
        return sec
    seqs = ctx.store.read("sequences")
    sec.charts.append(("set_logprob_vs_ppl",
                       charts.set_logprob_vs_ppl(ctx.with_ppl(hallucination.set_logprobs(seqs)))))
    if {"factual", "hallucinated"} <= set(seqs["set"].unique()):
        gap = ctx.with_ppl(hallucination.hallucination_gap(seqs))
        sec.charts.append(("hallucination_gap_vs_ppl", charts.gap_vs_ppl(gap)))
    else:
        sec.notes.append("The sequences table lacks a factual or a hallucinated set; "
                         "no hallucination gap.")
    return sec


def bigbench_section(ctx: Context) -> Section:
    sec = Section("BIG-bench multiple choice")
    if "bigbench-mc" not in ctx.tables:
        sec.notes.append(_missing("bigbench-mc"))
        return sec
    table = ctx.store.read("bigbench-mc")
    macro = ctx.with_ppl(bigbench.macro_accuracy(table))
    sec.charts.append(("bigbench_macro_vs_ppl", charts.bigbench_macro_vs_ppl(macro)))
    # Xia et al.'s figure: raw points, EMA line (0.5 macro, 0.8 per task), random baseline
    sec.charts.append(("bigbench_smoothed", xia_charts.bigbench_smoothed_panels(
        bigbench.smoothed_accuracy(macro, bigbench.EMA_MACRO))))
    sec.charts.append(("bigbench_tasks_vs_ppl", xia_charts.bigbench_task_smoothed(
        bigbench.smoothed_accuracy(ctx.with_ppl(bigbench.task_accuracy(table)),
                                   bigbench.EMA_TASK))))
    options = ctx.with_ppl(bigbench.option_ppl(table))
    for option in ("correct", "incorrect"):
        rows = options.filter(pl.col("option") == option)
        if not rows.is_empty():
            sec.charts.append((f"option_ppl_{option}", xia_charts.axis_panels(
                rows, "option_ppl", f"Perplexity of {option} options (token-weighted over tasks)",
                y_title="option perplexity", log_y=True)))
    return sec


def circuits_section(ctx: Context) -> Section:
    sec = Section("Circuits (Tigges et al. 2024)")
    if "circuit-summary" not in ctx.tables:
        sec.notes.append(_missing("circuit-summary"))
    else:
        summary = ctx.store.read("circuit-summary")
        sec.charts.append(("circuit_size", mechanism_charts.circuit_size_over_tokens(summary)))
        sec.notes.extend(mechanism_charts.not_performed_notes(circuits.not_performed(summary)))
    if "circuit-edges" not in ctx.tables:
        sec.notes.append(_missing("circuit-edges") + " No circuit similarity chart.")
        return sec
    edges = ctx.store.read("circuit-edges")
    keys = edges.select(KEYS).unique()
    sim = circuits.circuit_jaccard(edges, reference="final").join(
        keys, on=["family", "model", "step"], how="left")
    if sim.is_empty():
        sec.notes.append("No checkpoint has a circuit to compare with its model's final circuit.")
    else:
        sec.notes.append("Jaccard similarity of each checkpoint's circuit edge set with the "
                         "same model's final circuit (1 = identical edges).")
        sec.charts.append(("circuit_jaccard", mechanism_charts.jaccard_over_tokens(sim)))
    return sec


def components_section(ctx: Context) -> Section:
    sec = Section("Attention-head components")
    if "components" not in ctx.tables:
        sec.notes.append(_missing("components"))
        return sec
    comps = ctx.store.read("components")
    pairs = comps.select("model", "params", "kind").unique().sort("params", "model", "kind")
    if pairs.height > MAX_HEATMAPS:
        sec.notes.append(f"{pairs.height} model x score heatmaps; showing the first "
                         f"{MAX_HEATMAPS} (smallest models first).")
    for model, _, kind in pairs.head(MAX_HEATMAPS).iter_rows():
        heatmap = mechanism_charts.component_heatmap(comps, kind, model)
        sec.charts.append((f"heatmap_{_slug(f'{model}_{kind}')}", heatmap))
    return sec


def xia_section(ctx: Context) -> Section:
    """The paper's figures (Xia et al. 2023; issue #12) that the store's tables support."""
    sec = Section("Xia et al. 2023 figures: token sets, classes over training, generated sets")
    if "token-loss" in ctx.tables:
        scan = ctx.store.scan("token-loss")
        fracs = trajectories.fractions_by_start(scan)
        if not fracs.is_empty():
            sec.charts.append(("fractions_by_start", xia_charts.fractions_by_start_chart(fracs)))
            sec.notes.extend(xia_charts.unclassified_window_notes(fracs))
        labels = trajectories.classify_tokens(scan)
        if not labels.is_empty():
            largest = charts.model_order(labels)[-1]
            sets = trajectories.token_sets_by_trend(labels, largest)
            set_ppl = trajectories.token_set_ppl(scan, sets)
            sec.notes.append(f"Token sets are the tokens the largest model ({largest}) puts in "
                             "each trajectory class (the paper's rule), tracked in every model.")
            for name in sorted(set_ppl["token_set"].unique()):
                sec.charts.append((f"token_set_{_slug(name)}",
                                   xia_charts.token_set_ppl_panels(set_ppl, name)))
    else:
        sec.notes.append(_missing("token-loss"))
    if "sequences" in ctx.tables:
        set_ppl = ctx.with_ppl(hallucination.generated_set_ppl(ctx.store.scan("sequences")))
        for name in sorted(set_ppl["set"].unique())[:MAX_BEHAVIORS]:
            sec.charts.append((f"generated_{_slug(name)}",
                               xia_charts.generated_set_panels(set_ppl, name)))
        if set_ppl.is_empty():
            sec.notes.append("No generated sets (mixture sets written by evals.mixture) in the "
                             "sequences table.")
    return sec


def _slug(text: str) -> str:
    """A file-name stem for a chart (long names keep a prefix and a short hash)."""
    slug = "".join(c if c.isalnum() or c in "-." else "_" for c in text)
    if len(slug) <= 60:
        return slug
    return f"{slug[:50]}_{hashlib.sha1(text.encode()).hexdigest()[:8]}"


# Findings first, then the verdicts and the families at matched ppl, then charts.
SECTIONS = (findings_section, verdicts_section, families_section, ppl_section, behaviors_section,
            trajectories_section, sequences_section,
            xia_section, bigbench_section, circuits_section, components_section)


def _store_section(ctx: Context) -> Section:
    sec = Section("Store contents")
    counts = [(t, len(ctx.store.parts(t))) for t in sorted(ctx.tables)]
    sec.tables.append(("Tables (parquet parts = table x checkpoint)",
                       pl.DataFrame(counts, schema={"table": pl.String, "parts": pl.Int64},
                                    orient="row")))
    failures = ctx.store.failures()
    if not failures.is_empty():
        sec.tables.append(("Recorded failures", failures))
    return sec


def build_sections(store_dir: str | Path, strict: bool = False,
                   family_differences: pl.DataFrame | None = None,
                   failures: list[str] | None = None) -> list[Section]:
    """Every report section for a store (a failing section becomes a note unless `strict`).

    `family_differences` (families at matched ppl with CIs) feeds the findings;
    each failed section's name and error are appended to `failures` when given.
    """
    ctx = Context(Store(store_dir), family_differences)
    out = []
    for make in SECTIONS:
        try:
            out.append(make(ctx))
        except Exception as err:  # noqa: BLE001 - one broken section must not hide the rest
            if strict:
                raise
            # the traceback at INFO level (`dynamics -v report`); one line otherwise
            log.error("report section %s failed: %s: %s", make.__name__, type(err).__name__,
                      err, exc_info=log.isEnabledFor(logging.INFO))
            title = make.__name__.removesuffix("_section").replace("_", " ")
            if failures is not None:
                failures.append(f"{title!r} failed: {type(err).__name__}: {err}")
            out.append(Section(title, notes=[f"This section failed: {type(err).__name__}: "
                                             f"{err}"]))
    out.append(_store_section(ctx))
    return out


def build_report(store_dir: str | Path, out_dir: str | Path, *, images: bool = True,
                 strict: bool = False, failures: list[str] | None = None) -> Path:
    """Write the offline HTML report of a results store; return the path of index.html.

    Args:
        store_dir: the results store (the `output` of a batch).
        out_dir: where index.html, vega-bundle.js and the PNG/SVG files go.
        images: also write a PNG and an SVG of every chart.
        strict: raise when a section fails instead of reporting the error in the page.
        failures: when given, one line per failed section is appended (the CLI exits 1).

    Raises:
        FileNotFoundError: `store_dir` does not exist.
    """
    store_dir = Path(store_dir)
    if not store_dir.is_dir():
        raise FileNotFoundError(f"no results store at {store_dir}")
    sections = build_sections(store_dir, strict=strict, failures=failures)
    return write_html(sections, out_dir, title="Training dynamics report",
                      subtitle=f"store: {store_dir.resolve()}", images=images)
