"""Chart builders and report assembly: assertions on chart specs (to_dict), not pixels."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from evals.schema import KEY_COLUMNS, table_schema
from evals.store import Store
from reports import charts, mechanism_charts, xia_charts
from reports import build
from reports.build import build_report
from reports import html as html_mod
from reports.html import Section, frame_to_html, write_html

KEYS = list(KEY_COLUMNS)
MODELS = (("toy-s", 1_000), ("toy-l", 8_000), ("toy-m", 3_000))
STEPS = (0, 10, 30, 100, 300)
MIX_SET = "mix a=1 b=-1 | small: toy/toy-s@step300 | large: toy/toy-l@step300"


def _key(model: str, params: int, step: int) -> dict:
    tokens = step * 512
    return {"family": "toy", "model": model, "params": params, "step": step,
            "tokens_seen": tokens, "flops": 6.0 * params * tokens}


def _part(table: str, key: dict, own: dict) -> pl.DataFrame:
    n = len(next(iter(own.values())))
    frame = pl.DataFrame({**{k: [v] * n for k, v in key.items()}, **own})
    return frame.cast(dict(table_schema(table))).select(list(table_schema(table)))


ALL_TABLES = ("token-loss", "sequences", "components", "circuit-summary", "circuit-edges",
              "bigbench-mc")


def synthetic_store(root: Path, tables=ALL_TABLES, seed: int = 0) -> Path:
    """A small store with every checkpoint of MODELS x STEPS: losses fall with step and size."""
    rng = np.random.default_rng(seed)
    store = Store(root)
    for model, params, in MODELS:
        for step in STEPS:
            key = _key(model, params, step)
            level = 5.0 / (1 + np.log1p(step) * np.log10(params) / 6)
            if "token-loss" in tables:
                loss = np.clip(level + rng.normal(0, 0.5, 60), 0.01, None)
                store.write("token-loss", _part("token-loss", key, {
                    "doc_id": [i // 20 for i in range(60)],
                    "token_index": [i % 20 for i in range(60)],
                    "token_id": list(range(60)), "loss_nats": loss.tolist()}))
            if "sequences" in tables:
                n = 6
                fact = (-level * 5 + rng.normal(0, 0.3, n)).tolist()
                hall = (-level * 5 - np.log1p(step) / 3 + rng.normal(0, 0.3, n)).tolist()
                mix = (-level * 4 + rng.normal(0, 0.3, n)).tolist()
                store.write("sequences", _part("sequences", key, {
                    "set": ["factual"] * n + ["hallucinated"] * n + [MIX_SET] * n,
                    "pair_id": [f"p{i}" for i in range(n)] * 3,
                    "logprob_nats": fact + hall + mix, "n_tokens": [5] * (3 * n)}))
            if "components" in tables:
                heads = [(a, b) for a in range(2) for b in range(4)]
                store.write("components", _part("components", key, {
                    "layer": [a for a, _ in heads], "head": [b for _, b in heads],
                    "kind": ["induction"] * len(heads),
                    "score": rng.uniform(0, 1, len(heads)).tolist()}))
            if "circuit-summary" in tables:
                store.write("circuit-summary", _part("circuit-summary", key, {
                    "task": ["ioi"], "metric_clean": [1.0], "metric_corrupted": [0.1],
                    "circuit_edges": [int(50 + step // 3)], "faithfulness": [0.8],
                    "reason": [None]}))
            if "bigbench-mc" in tables:
                n = 2 * 4 * 3  # 2 tasks x 4 examples x 3 choices, choice 0 is the target
                store.write("bigbench-mc", _part("bigbench-mc", key, {
                    "task": [("arith", "logic")[i // 12] for i in range(n)],
                    "example_id": [(i // 3) % 4 for i in range(n)],
                    "choice_index": [i % 3 for i in range(n)],
                    "logprob_nats": (-rng.uniform(1, 5, n) - level).tolist(),
                    "n_tokens": [2] * n, "is_target": [i % 3 == 0 for i in range(n)],
                    "target_score": [float(i % 3 == 0) for i in range(n)],
                    "truncated_tokens": [0] * n}))
            if "circuit-edges" in tables:
                edges = [f"a0.h{h}->m1" for h in range(4)] + [f"m0->a1.h{h}" for h in range(4)]
                store.write("circuit-edges", _part("circuit-edges", key, {
                    "task": ["ioi"] * 8, "edge": edges, "score": rng.normal(0, 1, 8).tolist(),
                    "in_circuit": (rng.uniform(0, 1, 8) < 0.6).tolist()}))
    return root


# -- chart specs ------------------------------------------------------------------


def _ppl_frame() -> pl.DataFrame:
    rows = [{**_key(m, p, s), "val_ppl": 100.0 / (1 + s) + 1000 / p}
            for m, p in MODELS for s in STEPS]
    return pl.DataFrame(rows)


def _dataset(spec: dict) -> list[dict]:
    """The inlined rows of a single-dataset spec."""
    (rows,) = spec["datasets"].values()
    return rows


def test_ppl_vs_tokens_log_axes_size_order_and_no_zero_tokens():
    spec = charts.ppl_vs_tokens(_ppl_frame()).to_dict()
    enc = spec["encoding"]
    assert enc["x"]["field"] == "tokens_seen" and enc["x"]["scale"]["type"] == "log"
    assert enc["y"]["field"] == "val_ppl" and enc["y"]["scale"]["type"] == "log"
    assert enc["color"]["sort"] == ["toy-s", "toy-m", "toy-l"]  # by params, not by name
    rows = _dataset(spec)
    assert all(r["tokens_seen"] > 0 for r in rows)  # step 0 cannot sit on a log axis
    assert len(rows) == len(MODELS) * (len(STEPS) - 1)
    assert spec["params"][0]["select"]["fields"] == ["model"]
    assert spec["params"][0]["bind"] == "legend"
    assert "val_ppl" in [t["field"] for t in enc["tooltip"]]
    assert enc["order"]["field"] == "step"  # lines follow training, not the x sort


def test_ppl_lines_follow_steps_even_when_ppl_goes_back_up():
    frame = _ppl_frame().with_columns(pl.lit("b").alias("behavior"), pl.lit(1.0).alias("value"))
    for chart in (charts.behavior_vs_axis(frame, "b").to_dict(),):
        assert chart["layer"][1]["encoding"]["order"]["field"] == "step"


def test_behavior_panels_ppl_axis_is_log_and_reversed_and_shares_y():
    frame = _ppl_frame().with_columns(pl.lit("acc").alias("behavior"),
                                      (1 / pl.col("val_ppl")).alias("value"))
    frame = pl.concat([frame, frame.with_columns(pl.lit("other").alias("behavior"))])
    spec = charts.behavior_panels(frame, "acc").to_dict()
    assert len(spec["hconcat"]) == 3
    xs = [p["layer"][0]["encoding"]["x"] for p in spec["hconcat"]]
    assert [x["field"] for x in xs] == ["val_ppl", "tokens_seen", "flops"]
    assert xs[0]["scale"]["type"] == "log" and xs[0]["scale"]["reverse"] is True
    assert all(x["scale"]["type"] == "log" and not x["scale"]["reverse"] for x in xs[1:])
    assert spec["resolve"]["scale"]["y"] == "shared"
    for rows in spec["datasets"].values():
        assert {r["behavior"] for r in rows} == {"acc"}


def test_behavior_vs_axis_draws_fitted_curves_dashed():
    frame = _ppl_frame().with_columns(pl.lit("acc").alias("behavior"),
                                      (1 / pl.col("val_ppl")).alias("value"))
    curves = pl.DataFrame({"model": ["toy-s"] * 3, "val_ppl": [50.0, 20.0, 5.0],
                           "fitted": [0.1, 0.2, 0.3]})
    spec = charts.behavior_vs_axis(frame, "acc", "val_ppl", curves).to_dict()
    fit = spec["layer"][1]
    assert fit["mark"]["strokeDash"] == [6, 3]
    assert fit["encoding"]["y"]["field"] == "fitted"
    assert len(spec["datasets"][fit["data"]["name"]]) == 3


def test_builders_name_missing_columns():
    with pytest.raises(charts.ChartDataError, match=r"lacks columns \['val_ppl'\]"):
        charts.ppl_vs_tokens(_ppl_frame().drop("val_ppl"))
    with pytest.raises(ValueError, match="fitted"):
        charts.behavior_vs_axis(_ppl_frame().with_columns(pl.lit("a").alias("behavior"),
                                                          pl.lit(1.0).alias("value")),
                                "a", curves=pl.DataFrame({"model": ["x"], "val_ppl": [1.0]}))


def test_class_fractions_facets_models_by_size():
    frame = _ppl_frame().join(pl.DataFrame({"trend": ["decreasing", "stagnant"],
                                            "fraction": [0.7, 0.3]}), how="cross")
    spec = charts.class_fractions_vs_ppl(frame).to_dict()
    assert spec["facet"]["field"] == "model"
    assert spec["facet"]["sort"] == ["toy-s", "toy-m", "toy-l"]
    enc = spec["spec"]["encoding"]
    assert enc["x"]["scale"]["reverse"] is True and enc["color"]["field"] == "trend"


def test_set_logprob_and_gap_charts(tmp_path):
    store = Store(synthetic_store(tmp_path, ("token-loss", "sequences")))
    seq = build.sequences_section(build.Context(store))
    specs = {name: c.to_dict() for name, c in seq.charts}
    lp = specs["set_logprob_vs_ppl"]
    assert lp["encoding"]["strokeDash"]["field"] == "set"
    assert {r["set"] for r in _dataset(lp)} == {"factual", "hallucinated", MIX_SET}
    gap = specs["hallucination_gap_vs_ppl"]
    band = gap["layer"][0]["encoding"]
    assert band["y"]["field"] == "ci_low" and band["y2"]["field"] == "ci_high"
    rows = gap["datasets"][gap["layer"][1]["data"]["name"]]
    assert len(rows) == len(MODELS) * len(STEPS)
    assert all(r["ci_low"] <= r["gap"] <= r["ci_high"] for r in rows)


def test_bigbench_charts():
    acc = _ppl_frame().join(pl.DataFrame({"task": ["a", "b"]}), how="cross").with_columns(
        pl.lit(0.5).alias("accuracy"), pl.lit(0.25).alias("random_baseline"))
    per_task = charts.bigbench_tasks_vs_ppl(acc).to_dict()
    assert per_task["facet"]["field"] == "task"
    rule = per_task["spec"]["layer"][1]
    assert rule["mark"]["type"] == "rule" and rule["encoding"]["y"]["field"] == "random_baseline"
    macro = charts.bigbench_macro_vs_ppl(acc.filter(pl.col("task") == "a")).to_dict()
    rule = macro["layer"][1]
    assert rule["mark"]["type"] == "rule"
    assert macro["datasets"][rule["data"]["name"]] == [{"y": 0.25}]


def test_mechanism_charts():
    comp = pl.concat([_ppl_frame().with_columns(pl.lit(a).alias("layer"), pl.lit(b).alias("head"))
                      for a in (1, 0) for b in (1, 0)]).with_columns(
        pl.lit("induction").alias("kind"), pl.lit(0.5).alias("score"))
    heat = mechanism_charts.component_heatmap(comp, "induction", "toy-m").to_dict()
    assert heat["mark"]["type"] == "rect"
    assert heat["encoding"]["y"]["sort"] == ["L0.H0", "L0.H1", "L1.H0", "L1.H1"]
    assert heat["encoding"]["x"]["field"] == "step"
    assert {r["model"] for r in _dataset(heat)} == {"toy-m"}
    summary = _ppl_frame().with_columns(pl.lit("ioi").alias("task"),
                                        pl.lit(40).alias("circuit_edges"))
    size = mechanism_charts.circuit_size_over_tokens(summary).to_dict()
    assert size["spec"]["encoding"]["x"]["scale"]["type"] == "log"
    sim = summary.with_columns(pl.lit(0.5).alias("jaccard"))
    jac = mechanism_charts.jaccard_over_tokens(sim).to_dict()
    assert jac["spec"]["encoding"]["y"]["scale"]["domain"] == [0, 1]
    points = pl.DataFrame({"model": ["a", "b"], "params": [1, 2], "behavior": ["x", "x"],
                           "tokens_seen": [1000, None]})
    em = mechanism_charts.emergence_points(points).to_dict()
    assert [r["model"] for r in _dataset(em)] == ["a"]  # never emerged: not drawn


# -- report assembly ---------------------------------------------------------------


def _spec_blocks(page: str) -> dict[str, dict]:
    blocks = re.findall(r'<script type="application/json" id="spec-([^"]+)">(.*?)</script>',
                        page, flags=re.S)
    return {name: json.loads(text) for name, text in blocks}


@pytest.fixture
def stub_bundle(monkeypatch):
    """Skip building the 0.9 MB Vega bundle (seconds) where a test only reads the specs."""
    monkeypatch.setattr(html_mod, "vega_bundle", lambda: "/* vega bundle stub */")


@pytest.mark.slow
def test_report_from_full_store_is_offline_and_has_every_chart(tmp_path):
    store = synthetic_store(tmp_path / "store")
    index = build_report(store, tmp_path / "out", images=False, strict=True)
    page = index.read_text()
    specs = _spec_blocks(page)
    assert {"ppl_vs_tokens", "class_fractions_vs_ppl", "set_logprob_vs_ppl",
            "hallucination_gap_vs_ppl", "circuit_size", "circuit_jaccard"} <= set(specs)
    assert sum(n.startswith("token_set_toy-l_") for n in specs) >= 2  # largest model's classes
    assert any(n.startswith("generated_mix_a_1_b_-1") for n in specs)
    assert "fractions_by_start" in specs
    assert {"bigbench_macro_vs_ppl", "bigbench_tasks_vs_ppl", "option_ppl_correct"} <= set(specs)
    jac = _dataset(specs["circuit_jaccard"])
    assert all(r["tokens_seen"] > 0 and 0 <= r["jaccard"] <= 1 for r in jac)
    assert any(n.startswith("heatmap_toy-s") or n.startswith("heatmap_toy_s") for n in specs)
    assert any(n.startswith("behavior_") for n in specs)
    assert f'data-views-expected="{len(specs)}"' in page
    assert not re.search(r'src="https?://', page)  # no CDN: the bundle ships beside the page
    assert (tmp_path / "out" / "vega-bundle.js").stat().st_size > 100_000
    assert max(len(json.dumps(s)) for s in specs.values()) < 200_000


def test_token_loss_only_store_report(tmp_path, stub_bundle):
    store = synthetic_store(tmp_path / "store", ("token-loss",))
    page = build_report(store, tmp_path / "out", images=False, strict=True).read_text()
    specs = _spec_blocks(page)
    assert {"ppl_vs_tokens", "class_fractions_vs_ppl"} <= set(specs)
    assert "behavior_frac_decreasing" in specs
    assert "No `sequences` table" in page and "No `components` table" in page
    ppl = _dataset(specs["ppl_vs_tokens"])
    assert {r["model"] for r in ppl} == {m for m, _ in MODELS}


def test_empty_store_report_says_what_is_missing(tmp_path, stub_bundle):
    (tmp_path / "store").mkdir()
    index = build_report(tmp_path / "store", tmp_path / "out", images=False, strict=True)
    page = index.read_text()
    for table in ("token-loss", "sequences", "bigbench-mc", "circuit-summary", "components"):
        assert f"No `{table}` table" in page
    assert 'data-views-expected="0"' in page


def test_missing_store_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results store"):
        build_report(tmp_path / "nope", tmp_path / "out")


def test_png_and_svg_written_per_chart(tmp_path, stub_bundle):
    chart = charts.ppl_vs_tokens(_ppl_frame())
    index = write_html([Section("ppl", charts=[("ppl", chart)])], tmp_path, images=True)
    assert (tmp_path / "ppl.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (tmp_path / "ppl.svg").read_text()
    assert svg.lstrip().startswith("<svg") and "toy-l" in svg
    assert 'href="ppl.png"' in index.read_text()


def test_duplicate_chart_names_rejected(tmp_path, stub_bundle):
    chart = charts.ppl_vs_tokens(_ppl_frame())
    with pytest.raises(ValueError, match=r"repeated: \['a'\]"):
        write_html([Section("x", charts=[("a", chart), ("a", chart)])], tmp_path, images=False)


def test_frame_to_html_escapes_and_truncates():
    frame = pl.DataFrame({"name": ["<b>", "x"], "v": [1.234567, None]})
    out = frame_to_html(frame, max_rows=1)
    assert "<td>&lt;b&gt;</td>" in out and "<td><b></td>" not in out
    assert "1.235" in out and "first 1 of 2 rows" in out


def test_xia_axis_panels_and_fractions_by_start():
    frame = _ppl_frame().with_columns(pl.lit("toy-l:increasing").alias("token_set"),
                                      (pl.col("val_ppl") * 2).alias("ppl"))
    spec = xia_charts.token_set_ppl_panels(frame, "toy-l:increasing").to_dict()
    xs = [p["encoding"]["x"] for p in spec["hconcat"]]
    assert [x["field"] for x in xs] == ["val_ppl", "tokens_seen", "flops"]
    assert xs[0]["scale"]["reverse"] is True
    assert all(p["encoding"]["y"]["scale"]["type"] == "log" for p in spec["hconcat"])
    assert spec["resolve"]["scale"]["y"] == "shared"
    assert len(spec["params"]) == 1  # one legend selection shared by the three panels
    with pytest.raises(ValueError, match="token_set"):
        xia_charts.token_set_ppl_panels(frame.drop("token_set"), "x")
    fr = pl.DataFrame({"model": ["a"] * 2, "params": [1, 1], "start_fraction": [0.1, 0.3],
                       "trend": ["decreasing"] * 2, "n_tokens": [3, 2], "fraction": [0.6, 0.4]})
    fspec = xia_charts.fractions_by_start_chart(fr).to_dict()
    assert fspec["spec"]["encoding"]["x"]["field"] == "start_fraction"
    assert fspec["facet"]["field"] == "model"


def test_bigbench_smoothed_figure_has_raw_points_ema_line_and_random_line(tmp_path):
    store = Store(synthetic_store(tmp_path, ("token-loss", "bigbench-mc")))
    sec = build.bigbench_section(build.Context(store))
    specs = {name: c.to_dict() for name, c in sec.charts}
    macro = specs["bigbench_smoothed"]
    assert [p["layer"][0]["encoding"]["x"]["field"] for p in macro["hconcat"]] == [
        "val_ppl", "tokens_seen", "flops"]
    points, line, rule = macro["hconcat"][0]["layer"]
    assert points["mark"]["type"] == "point" and points["encoding"]["y"]["field"] == "accuracy"
    assert line["mark"]["type"] == "line" and line["encoding"]["y"]["field"] == "accuracy_ema"
    assert rule["mark"]["type"] == "rule" and rule["mark"]["strokeDash"] == [4, 4]
    assert rule["encoding"]["y"] == {"aggregate": "mean", "field": "random_baseline",
                                     "type": "quantitative"}
    assert "EMA weight 0.5" in macro["title"]
    rows = [r for rows in macro["datasets"].values() for r in rows]
    assert rows and all(r["random_baseline"] == pytest.approx(1 / 3) for r in rows)
    tasks = specs["bigbench_tasks_vs_ppl"]
    assert tasks["facet"]["field"] == "task" and "EMA weight 0.8" in tasks["title"]
    assert [lay["mark"]["type"] for lay in tasks["spec"]["layer"]] == ["point", "line", "rule"]


def test_generated_set_panels_by_a_b(tmp_path):
    store = Store(synthetic_store(tmp_path, ("token-loss", "sequences")))
    sec = build.xia_section(build.Context(store))
    specs = {name: c.to_dict() for name, c in sec.charts}
    (name,) = [n for n in specs if n.startswith("generated_")]
    spec = specs[name]
    assert [p["encoding"]["x"]["field"] for p in spec["hconcat"]] == [
        "val_ppl", "tokens_seen", "flops"]
    assert "mix a=1 b=-1" in spec["title"]
    rows = next(iter(spec["datasets"].values()))
    assert {r["set"] for r in rows} == {MIX_SET} and all(r["ppl"] > 1 for r in rows)
    # issue 34: the set's generator models (toy-s small, toy-l large) are marked, dashed
    assert {r["model"]: r["generator"] for r in rows} == {"toy-s": "small", "toy-l": "large",
                                                          "toy-m": "no"}
    dash = spec["hconcat"][0]["encoding"]["strokeDash"]
    assert dash["field"] == "generator" and "dashed: the models that generated" in spec["title"]
    assert dict(zip(dash["scale"]["domain"], dash["scale"]["range"])) == {
        "large": [6, 3], "small": [6, 3], "no": [1, 0]}


# -- issue 19: findings first, families coloured, ppl rises marked ---------------------------


def test_report_opens_with_findings_then_verdicts_and_folds_long_tables(tmp_path, stub_bundle):
    store = synthetic_store(tmp_path / "store", ("token-loss", "sequences", "components"))
    page = build_report(store, tmp_path / "out", images=False, strict=True).read_text()
    order = [page.index(s) for s in ('id="sec-findings"', 'id="sec-perplexity-or-size',
                                     'id="sec-validation-perplexity"', 'class="chart"')]
    assert order == sorted(order), order
    findings = page[page.index('<table class="findings"'):]
    findings = findings[:findings.index("</table>")]
    assert findings.count("<tr>") == 1 + 6  # header + (a) induction, (b), (c1), (c2), (d), (e)
    assert 'class="verdict v-supported">supported<' in findings  # the gap grows (planted)
    assert "not testable: no recall-bigram results" in findings
    assert "not testable: one family" in findings
    # the 15-row per-checkpoint ppl table is folded, not on the first screen
    assert "<details><summary>Validation perplexity per checkpoint (15 rows)" in page
    assert "<h3>Validation perplexity per checkpoint" not in page


def test_two_families_get_a_hue_each_and_models_shades_by_size():
    one = _ppl_frame()
    two = pl.concat([one, one.with_columns(pl.lit("opt").alias("family"),
                                           ("opt-" + pl.col("model")).alias("model"))])
    assert charts.family_palette(one) is None
    models, colors = charts.family_palette(two)
    assert models == ["opt-toy-s", "opt-toy-m", "opt-toy-l", "toy-s", "toy-m", "toy-l"]
    assert set(colors[:3]) <= set(charts.FAMILY_SHADES[0])  # family "opt": blues
    assert set(colors[3:]) <= set(charts.FAMILY_SHADES[1])  # family "toy": oranges
    assert len(set(colors)) == 6
    enc = charts.ppl_vs_tokens(two).to_dict()["encoding"]["color"]
    assert enc["scale"] == {"domain": models, "range": colors}


def test_checkpoints_whose_ppl_rises_again_are_ringed():
    from stats.perplexity import flag_ppl_rises

    frame = _ppl_frame().with_columns(  # toy-s goes back up at its last step
        pl.when((pl.col("model") == "toy-s") & (pl.col("step") == 300))
        .then(pl.col("val_ppl") * 3).otherwise(pl.col("val_ppl")).alias("val_ppl"))
    spec = charts.ppl_vs_tokens(flag_ppl_rises(frame)).to_dict()
    ring = spec["layer"][1]
    assert ring["mark"]["filled"] is False
    rows = spec["datasets"][ring["data"]["name"]]
    assert [(r["model"], r["step"]) for r in rows] == [("toy-s", 300)]
    assert "layer" not in charts.ppl_vs_tokens(flag_ppl_rises(_ppl_frame())).to_dict()


def test_findings_summary_reads_the_reports_findings(tmp_path, stub_bundle):
    store = synthetic_store(tmp_path / "store", ("token-loss", "sequences"))
    index = build_report(store, tmp_path / "out", images=False, strict=True)
    text = build.findings_summary(index.parent)
    lines = text.splitlines()
    assert lines[0] == "findings:" and len(lines) == 1 + 6
    assert any(line.startswith("- [supported] The factual-minus-hallucinated gap grows")
               and "= -1 [-1, -1]" in line for line in lines)  # planted: gap grows every step
    assert 'href="findings.csv"' in index.read_text()
    assert "was not written" in build.findings_summary(tmp_path)


def test_ppl_section_notes_each_model_whose_ppl_rises(tmp_path, stub_bundle):
    store = synthetic_store(tmp_path / "store", ("token-loss",))
    ctx = build.Context(Store(store))
    ppl = ctx.ppl
    ctx.ppl = ppl.with_columns(  # toy-m's ppl goes back up at step 100 (not at 300)
        pl.when((pl.col("model") == "toy-m") & (pl.col("step") == 100)).then(True)
        .otherwise(False).alias("ppl_rises"))
    notes = build.ppl_section(ctx).notes
    assert notes == ["Validation ppl of toy-m rises again at step(s) 100 (ringed in the chart): "
                     "matched-ppl comparisons use its best ppl so far there."]
