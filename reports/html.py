"""Offline HTML report assembly: sections of charts, tables and notes -> one index.html.

The page needs no internet: Vega, Vega-Lite and vega-embed are bundled by
vl-convert into `vega-bundle.js` beside index.html, and every chart spec is
inlined (data included) as a JSON script block. Every chart is also written
as `<name>.svg` and `<name>.png` (vl-convert), and tables as HTML.

Render status for browser checks: each chart div gets
`data-rendered="true"` once vega-embed resolved, or `"error"` (and a
console.error) when it failed; `<body data-views-rendered="N">` counts them.
"""

from __future__ import annotations

import functools
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import altair as alt
import polars as pl
import vl_convert as vlc

from stats import outcomes

BUNDLE_NAME = "vega-bundle.js"
VL_VERSION = alt.SCHEMA_VERSION.lstrip("v").rsplit(".", 1)[0]  # "6.4" for altair's v6.4.1

CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
.note{background:#fff7e0;border-left:4px solid #e0a800;padding:.4em .8em;margin:.5em 0}
.chart{margin:1em 0}.files{font-size:.85em;color:#666}
table.frame{border-collapse:collapse;font-size:.85em;margin:1em 0}
table.frame td,table.frame th{border:1px solid #ddd;padding:.2em .5em;text-align:right}
table.frame th{background:#f4f4f4}
table.findings{border-collapse:collapse;margin:1em 0;width:100%;table-layout:fixed}
table.findings td,table.findings th{border-bottom:1px solid #ddd;padding:.5em;text-align:left;
vertical-align:top;overflow-wrap:anywhere}
table.findings .src,table.findings .detail{font-size:.8em;color:#555}
table.findings th.claim{width:24%}table.findings th.vcol{width:16%}
table.findings th.value{width:14%}table.findings td.claim{font-weight:500}
.verdict{display:inline-block;padding:.15em .5em;border-radius:.8em;font-size:.85em}.v-supported{background:#d4edda;color:#155724}
.v-contradicted{background:#f8d7da;color:#721c24}.v-inconclusive{background:#fff3cd;color:#664d03}
.v-untestable{background:#e9ecef;color:#444}
details{margin:.5em 0}summary{cursor:pointer;color:#225}"""

EMBED_JS = """
(function () {
  const body = document.body;
  let rendered = 0;
  document.querySelectorAll("div.chart[data-spec]").forEach(function (el) {
    const spec = JSON.parse(document.getElementById(el.dataset.spec).textContent);
    vegaEmbed(el, spec, {renderer: "svg", actions: {export: true, source: false,
                         compiled: false, editor: false}})
      .then(function () {
        el.dataset.rendered = "true";
        rendered += 1;
        body.dataset.viewsRendered = String(rendered);
      })
      .catch(function (err) {
        el.dataset.rendered = "error";
        console.error("chart " + el.id + " failed: " + err);
      });
  });
})();
"""


@dataclass
class Section:
    """One part of the report.

    Attributes:
        title: the section heading.
        charts: (file stem, chart) pairs; the stem names the PNG/SVG files.
        tables: (caption, frame) pairs shown as HTML tables.
        notes: sentences shown above the charts (e.g. what is missing and why).
        html: trusted HTML blocks shown after the notes (e.g. findings_html output).
        details: (caption, frame) pairs shown folded in a <details> element after
            the tables (long per-checkpoint tables: not what a reader sees first).
        files: (file name, frame) pairs written beside index.html as CSV and linked
            (e.g. findings.csv, for scripts and the demo's summary).
    """

    title: str
    charts: list[tuple[str, alt.TopLevelMixin]] = field(default_factory=list)
    tables: list[tuple[str, pl.DataFrame]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    details: list[tuple[str, pl.DataFrame]] = field(default_factory=list)
    files: list[tuple[str, pl.DataFrame]] = field(default_factory=list)


@functools.cache
def vega_bundle() -> str:
    """The Vega + Vega-Lite + vega-embed JavaScript bundle (about 0.9 MB; built once)."""
    return vlc.javascript_bundle(vl_version=VL_VERSION)


def frame_to_html(frame: pl.DataFrame, max_rows: int = 200) -> str:
    """A polars frame as an escaped HTML table (floats to 4 significant digits)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    rows = []
    for row in frame.head(max_rows).iter_rows():
        cells = "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row)
        rows.append(f"<tr>{cells}</tr>")
    more = (f"<caption>first {max_rows} of {frame.height} rows</caption>"
            if frame.height > max_rows else "")
    return f'<table class="frame">{more}<tr>{head}</tr>{"".join(rows)}</table>'


VERDICT_CLASS = {outcomes.SUPPORTED: "v-supported", outcomes.CONTRADICTED: "v-contradicted",
                 outcomes.INCONCLUSIVE: "v-inconclusive", outcomes.NOT_TESTABLE: "v-untestable"}


def _interval(low, high) -> str:
    if low is None and high is None:
        return ""
    return f" [{_fmt(low) or '-'}, {_fmt(high) or '-'}]"


def findings_html(table: pl.DataFrame) -> str:
    """The findings frame (stats.outcomes.FINDINGS_SCHEMA) as a readable table: claim and
    source, a coloured verdict with its rule, the value with its interval, the interval's
    kind (and margin) and the statistic, the detail."""
    rows = []
    for r in table.iter_rows(named=True):
        value = "" if r["value"] is None else f"<b>{_fmt(r['value'])}</b>"
        value += html.escape(_interval(r["ci_low"], r["ci_high"]))
        if r.get("interval"):
            margin = "" if r.get("margin") is None else f", margin ±{_fmt(r['margin'])}"
            value += f'<div class="src">{html.escape(r["interval"] + margin)}</div>'
        badge = VERDICT_CLASS[outcomes.outcome(r["verdict"])]
        rows.append(
            f'<tr><td class="claim">{html.escape(r["claim"])}<div class="src">'
            f'{html.escape(r["source"])}</div></td><td><span class="verdict {badge}">'
            f'{html.escape(r["verdict"])}</span><div class="src">{html.escape(r.get("rule") or "")}'
            f'</div></td><td class="value">{value}<div class="src">'
            f'{html.escape(r["statistic"])}</div></td>'
            f'<td class="detail">{html.escape(r["detail"] or "")}</td></tr>')
    head = ('<tr><th class="claim">claim</th><th class="vcol">verdict</th>'
            '<th class="value">this run</th><th>detail</th></tr>')
    return f'<table class="findings" id="findings">{head}{"".join(rows)}</table>'


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _script_json(spec: dict) -> str:
    """JSON safe inside a <script> block (no '</' that would close it)."""
    return json.dumps(spec, separators=(",", ":")).replace("</", "<\\/")


def write_chart_files(name: str, spec: dict, out_dir: Path) -> list[str]:
    """Write `<name>.svg` and `<name>.png` (2x) of a Vega-Lite spec; return the file names."""
    svg = vlc.vegalite_to_svg(spec, vl_version=VL_VERSION)
    (out_dir / f"{name}.svg").write_text(svg)
    # rasterise the SVG (the same bytes as vegalite_to_png, which renders the chart again)
    (out_dir / f"{name}.png").write_bytes(vlc.svg_to_png(svg, scale=2))
    return [f"{name}.svg", f"{name}.png"]


def _chart_html(name: str, chart, out_dir: Path, images: bool) -> tuple[str, str]:
    """A chart's div (with PNG/SVG links when `images`) and its inline spec script."""
    spec = chart.to_dict()
    links = ""
    if images:
        files = write_chart_files(name, spec, out_dir)
        links = " ".join(f'<a href="{f}">{f.rsplit(".", 1)[1].upper()}</a>' for f in files)
    return (f'<div class="chart" id="chart-{name}" data-spec="spec-{name}"></div>'
            f'<div class="files">{links}</div>',
            f'<script type="application/json" id="spec-{name}">{_script_json(spec)}</script>')


def _section_html(section: Section, out_dir: Path, images: bool) -> tuple[str, list[str]]:
    anchor = "".join(c if c.isalnum() else "-" for c in section.title.lower())[:40]
    parts = [f'<h2 id="sec-{anchor}">{html.escape(section.title)}</h2>']
    parts += [f'<p class="note">{html.escape(n)}</p>' for n in section.notes]
    parts += section.html
    scripts = []
    for name, chart in section.charts:
        div, script = _chart_html(name, chart, out_dir, images)
        parts.append(div)
        scripts.append(script)
    for caption, frame in section.tables:
        parts.append(f"<h3>{html.escape(caption)}</h3>{frame_to_html(frame)}")
    for name, frame in section.files:
        frame.write_csv(out_dir / name)
        parts.append(f'<div class="files">data: <a href="{html.escape(name)}">'
                     f"{html.escape(name)}</a></div>")
    for caption, frame in section.details:
        parts.append(f"<details><summary>{html.escape(caption)} ({frame.height} rows)</summary>"
                     f"{frame_to_html(frame)}</details>")
    return "\n".join(parts), scripts


def write_html(sections: list[Section], out_dir: str | Path, title: str = "Training dynamics",
               subtitle: str = "", images: bool = True) -> Path:
    """Write index.html, vega-bundle.js and each chart's PNG/SVG under `out_dir`.

    Args:
        sections: the report's sections in order.
        out_dir: created if missing; existing files of the same names are replaced.
        title: page title and heading.
        subtitle: a line under the heading (e.g. the store path).
        images: also write PNG/SVG of every chart (vl-convert; about 1 s per chart).

    Returns:
        The path of index.html.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [n for s in sections for n, _ in s.charts]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"chart names must be unique; repeated: {dupes}")
    (out / BUNDLE_NAME).write_text(vega_bundle())
    bodies, scripts = [], []
    for section in sections:
        body, specs = _section_html(section, out, images)
        bodies.append(body)
        scripts += specs
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{CSS}</style><script src="{BUNDLE_NAME}"></script></head>
<body data-views-expected="{len(names)}" data-views-rendered="0">
<h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p>
{chr(10).join(bodies)}
{chr(10).join(scripts)}
<script>{EMBED_JS}</script>
</body></html>
"""
    path = out / "index.html"
    path.write_text(page)
    return path
