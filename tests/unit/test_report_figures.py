"""Figures for papers and the HTML report (harness.report.figures), from synthetic run records."""

from __future__ import annotations

import copy
import json
import math
import re
import xml.etree.ElementTree as ET
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install 'matplotlib>=3.8')")

from matplotlib.collections import FillBetweenPolyCollection  # noqa: E402
from matplotlib.patches import Rectangle, StepPatch  # noqa: E402

from harness.errors import HarnessError  # noqa: E402
from harness.metrics.summary import KL_BIN_EDGES, log_histogram  # noqa: E402
from harness.report import figures as F  # noqa: E402
from harness.report.html import render_html  # noqa: E402
from harness.report.outputs import write_outputs  # noqa: E402
from harness.report.view import model_list  # noqa: E402
from harness.store.record import read_record  # noqa: E402
from tests.fake_record import HOSTILE, write_fake_record  # noqa: E402

IF_TYPES = (
    "change_case:english_lowercase",
    "detectable_format:json_format",
    "keywords:existence",
    "punctuation:no_comma",
)


def add_report_extras(
    run_dir: Path, *, subtasks: tuple[str, ...] = ("alpha", "beta"), hist: bool = True
) -> Path:
    """What the fake record lacks: IFEval per-type accuracy, a CoT group with subtasks (as BBH writes
    them: members named GROUP:SUB with "group" set) and KD histograms in the schema harness.kd writes."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    suites = metrics["suites"]
    models = list(suites["icl-arith"]["variants"]["k=0"])
    suites["if-basic"]["instruction_types"] = {
        kind: {m: {"n": 10 + i, "strict": (i + j) / 10, "loose": 1.0} for j, m in enumerate(models)}
        for i, kind in enumerate(IF_TYPES)
    }
    group = copy.deepcopy(suites["cot-arith"])
    group["members"] = [f"grp:{s}" for s in subtasks]
    suites["grp"] = group
    for j, sub in enumerate(subtasks):
        member = copy.deepcopy(suites["cot-arith"])
        member["group"] = "grp"
        member["chance"] = 0.25
        for per in member["variants"].values():
            for st in per.values():
                for key in ("score", "ci_low", "ci_high"):
                    st[key] = min(1.0, st[key] + 0.1 * (j + 1))
        suites[f"grp:{sub}"] = member
    if hist:
        rng = np.random.default_rng(3)
        for i, kd in enumerate(metrics["kd"].values()):
            for per in kd["temperatures"].values():
                values = rng.lognormal(np.log(0.05 * (i + 1)), 1.5, 2000)
                values[:100] = 0.0
                per["forward_kl"]["histogram"] = log_histogram(values, KL_BIN_EDGES)
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> Any:
    run = write_fake_record(tmp_path_factory.mktemp("figs") / "run", n_items=12)
    return read_record(add_report_extras(run))


def specs_by_stem(record: Any) -> dict[str, F.FigureSpec]:
    return {s.stem: s for s in F.record_figure_specs(record)}


def test_figures_of_a_record(record: Any, tmp_path: Path) -> None:
    specs = specs_by_stem(record)
    assert list(specs) == [
        "icl_sweep-icl-arith",
        "cot_vs_direct-cot-arith",
        "cot_vs_direct-grp",
        "ifeval_types-if-basic",
        "kd_histograms-T1",
        "kd_histograms-T2",
    ]
    assert specs["cot_vs_direct-grp"].wide and not specs["icl_sweep-icl-arith"].wide
    # the plain fake record: no instruction types, no histograms (another helper adds them), no group
    plain = read_record(write_fake_record(tmp_path / "plain", n_items=4))
    assert [s.kind for s in F.record_figure_specs(plain)] == ["icl_sweep", "cot_vs_direct"]
    assert F.kd_histogram_temperatures({"s": {"temperatures": {"1": {"forward_kl": {"mean": 1}}}}}) == {}


def test_icl_sweep_plots_each_models_scores_and_ci(record: Any) -> None:
    summary = record.metrics["suites"]["icl-arith"]
    models = model_list(record)
    with F.style():
        fig = F.icl_sweep_figure("icl-arith", summary, models)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2", "4"]
    lines = [line for line in ax.get_lines() if len(line.get_xdata()) == 4]
    assert len(lines) == 4  # teacher, base, student, student-topk; chance 0 draws no line
    for line, model in zip(lines, models, strict=True):
        expected = [
            100 * summary["variants"][v][model["label"]]["score"] for v in ("k=0", "k=1", "k=2", "k=4")
        ]
        assert np.allclose(line.get_ydata(), expected)
        assert line.get_color() == F.model_styles(models)[model["label"]].colour
    bands = [c for c in ax.collections if isinstance(c, FillBetweenPolyCollection)]
    assert len(bands) == 4
    teacher_hi = [100 * summary["variants"][v]["teacher"]["ci_high"] for v in ("k=0", "k=1", "k=2", "k=4")]
    assert np.isclose(bands[0].get_paths()[0].vertices[:, 1].max(), max(teacher_hi))
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["teacher", "base", "student", "student-topk (student)"]
    # chance above 0: a dashed line at that level, named in the legend
    with F.style():
        fig = F.icl_sweep_figure("x", {**summary, "chance": 0.25}, models)
    assert [t.get_text() for t in fig.legends[0].get_texts()][-1] == "chance"
    flat = [line for line in fig.axes[0].get_lines() if len(line.get_ydata()) == 2]
    assert len(flat) == 1 and np.allclose(flat[0].get_ydata(), [25, 25])


def test_model_styles_by_role() -> None:
    models = [
        {"label": "T", "role": "teacher"},
        {"label": "B", "role": "base"},
        {"label": "S1", "role": "student"},
        {"label": "S2", "role": "student"},
    ]
    styles = F.model_styles(models)
    assert styles["T"].colour == F.TEACHER and styles["B"].colour == F.BASE
    assert (styles["S1"].colour, styles["S2"].colour) == F.STUDENTS[:2]
    assert len({s.marker for s in styles.values()}) == 4


def test_cot_vs_direct_bars_match_scores(record: Any) -> None:
    suites = record.metrics["suites"]
    models = model_list(record)
    with F.style():
        fig = F.cot_direct_figure("cot-arith", suites["cot-arith"], models)
    ax = fig.axes[0]
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    # per model: direct (the baseline, lighter, first) then cot
    expected = [
        100 * suites["cot-arith"]["variants"][v][m["label"]]["score"]
        for m in models
        for v in ("direct", "cot")
    ]
    assert np.allclose([b.get_height() for b in bars], expected)
    assert [t.get_text() for t in ax.get_xticklabels()] == [m["label"] for m in models]
    teacher_direct, teacher_cot = bars[0], bars[1]
    assert teacher_cot.get_facecolor()[:3] == pytest.approx(
        tuple(int(F.TEACHER[i : i + 2], 16) / 255 for i in (1, 3, 5))
    )
    assert teacher_direct.get_facecolor() != teacher_cot.get_facecolor()
    # a group: the pooled panel, then one panel per subtask, all on 0-100
    members = [(m, suites[m]) for m in suites["grp"]["members"]]
    with F.style():
        fig = F.cot_direct_figure("grp", suites["grp"], models, members, width=F.DOUBLE)
    panels = [a for a in fig.axes if a.axison]
    assert [a.get_title(loc="left") for a in panels] == ["all subtasks (pooled)", "alpha", "beta"]
    assert all(a.get_ylim() == (0.0, 100.0) for a in panels)
    beta = [p for p in panels[2].patches if isinstance(p, Rectangle)]
    assert np.isclose(beta[1].get_height(), 100 * suites["grp:beta"]["variants"]["cot"]["teacher"]["score"])


def test_wilson_interval() -> None:
    lo, hi = F.wilson_interval(5, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)
    lo, hi = F.wilson_interval(0, 10)
    assert lo == 0.0 and round(hi, 4) == 0.2775  # z^2 / (n + z^2)
    assert all(math.isnan(x) for x in F.wilson_interval(0, 0))


def test_ifeval_bars_are_strict_accuracy(record: Any) -> None:
    summary = record.metrics["suites"]["if-basic"]
    models = model_list(record)
    with F.style():
        fig = F.ifeval_figure("if-basic", summary, models, width=F.DOUBLE)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        f"{kind} (n={10 + i})" for i, kind in enumerate(IF_TYPES)
    ]
    widths = [p.get_width() for p in ax.patches if isinstance(p, Rectangle)]
    # drawn model by model (teacher first), type by type; strict = (type index + j) / 10 with j the
    # model's index in metrics.json (sorted: base, student, student-topk, teacher)
    order = {"base": 0, "student": 1, "student-topk": 2, "teacher": 3}
    assert np.allclose(widths, [100 * (i + order[m["label"]]) / 10 for m in models for i in range(4)])
    assert ax.get_xlim() == (0.0, 100.0)


def test_kd_histograms_show_shares_per_student(record: Any) -> None:
    kd = record.metrics["kd"]
    models = model_list(record)
    with F.style():
        fig = F.kd_histogram_figure(kd, models, "1")
    ax = fig.axes[0]
    steps = [p for p in ax.patches if isinstance(p, StepPatch)]
    assert len(steps) == 3  # base, student, student-topk
    for step in steps:
        assert np.isclose(step.get_data().values.sum(), 1.0)
        edges = step.get_data().edges
        assert edges[0] == pytest.approx(1e-7) and edges[-1] == pytest.approx(100.0)  # 0 drawn one decade
    assert ax.get_xscale() == "log"
    assert ax.get_title(loc="left") == "forward KL"
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["base", "student", "student-topk (student, lower bound)"]
    low, high = ax.get_xlim()
    ticks = [F.decade_label(x) for x in ax.get_xticks() if low <= x <= high]
    assert ticks == ["10⁻⁶", "10⁻⁴", "10⁻²", "1", "10²"]
    # a malformed histogram (edges and counts of different lengths) is left out, not drawn wrong
    broken = copy.deepcopy(kd)
    broken["student"]["temperatures"]["1"]["forward_kl"]["histogram"]["counts"].pop()
    with F.style():
        fig = F.kd_histogram_figure(broken, models, "1")
    assert len([p for p in fig.axes[0].patches if isinstance(p, StepPatch)]) == 2


def test_decade_labels() -> None:
    assert [F.decade_label(x) for x in (1e-6, 0.01, 1.0, 10.0, 100.0, 3.0, 0.0)] == [
        "10⁻⁶",
        "10⁻²",
        "1",
        "10",
        "10²",
        "",
        "",
    ]


def test_renders_are_byte_identical_and_undated(record: Any) -> None:
    specs = F.record_figure_specs(record)
    first = [F.figure_bytes(F.draw(s), fmt) for s in specs for fmt in ("svg", "pdf")]
    second = [F.figure_bytes(F.draw(s), fmt) for s in specs for fmt in ("svg", "pdf")]
    assert first == second
    svg, pdf = first[0], first[1]
    assert b"<dc:date>" not in svg and b"/CreationDate" not in pdf and b"/ModDate" not in pdf
    assert pdf.startswith(b"%PDF-") and b"/FontFile2" in pdf  # TrueType (Type 42) embedded
    ET.fromstring(svg)  # well-formed
    assert b"font-family: 'DejaVu Sans'" in svg and b"<text" in svg  # text as text, one font


def test_write_figures_writes_svg_and_pdf(record: Any, tmp_path: Path) -> None:
    written = F.write_figures(record, tmp_path / "figures")
    stems = [s.stem for s in F.record_figure_specs(record)]
    assert [p.name for p in written] == [f"{s}.{x}" for s in stems for x in ("svg", "pdf")]
    assert all(p.stat().st_size > 5000 for p in written)
    (tmp_path / "file").write_text("")
    with pytest.raises(HarnessError, match="cannot write figures"):
        F.write_figures(record, tmp_path / "file" / "figures")


def test_write_outputs_figures(tmp_path: Path) -> None:
    run = add_report_extras(write_fake_record(tmp_path / "run", n_items=4))
    written = write_outputs(run, {"figures"})
    assert written == {"figures": run / "figures"}
    assert (run / "figures" / "icl_sweep-icl-arith.pdf").exists()
    assert not (run / "index.html").exists()


def test_untrusted_names_become_text_and_safe_file_names(tmp_path: Path) -> None:
    models = (("teacher", "teacher"), ("_x $a^2$ </text><script>", "student"))
    run = write_fake_record(tmp_path / "run", n_items=4, models=models)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["suites"]["../../evil name"] = metrics["suites"].pop("icl-arith")
    (run / "metrics.json").write_text(json.dumps(metrics))
    record = read_record(run)
    specs = F.record_figure_specs(record)
    assert specs[0].stem == "icl_sweep-evil-name"
    svg = F.figure_bytes(F.draw(specs[0]), "svg").decode()
    # the label is drawn literally (no math text, not hidden for its leading "_"), escaped in the XML
    assert "_x $a^2$ &lt;/text&gt;&lt;script&gt; (student)" in svg
    assert "<script" not in svg
    assert F.slug("../../etc/passwd") == "etc-passwd" and F.slug("...") == "x"


EVIL_SVG = b"""<?xml version="1.0"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="100pt" height="50pt"
     viewBox="0 0 100 50" onload="alert(1)">
 <metadata><x>rdf</x></metadata>
 <defs><style>*{fill: url(http://evil/x)}</style><path id="m1" d="M 0 0 L 1 1"/>
  <clipPath id="c1"><rect x="0" y="0" width="1" height="1"/></clipPath></defs>
 <script>alert(1)</script>
 <g id="figure_1" clip-path="url(#c1)" onclick="alert(2)">
  <use xlink:href="#m1" x="1" y="2" style="stroke: #000"/>
  <use xlink:href="http://evil.example/x.svg#m1"/>
  <path d="M 0 0" style="fill: url(http://evil/y)"/>
  <foreignObject><div xmlns="http://www.w3.org/1999/xhtml">hi</div></foreignObject>
  <a href="javascript:alert(3)"><text>link</text></a>
  <image href="data:image/png;base64,AAAA"/>
  <text x="1" y="2" style="font-size: 7px; font-family: 'DejaVu Sans'">a &lt;b&gt; &amp; c</text>
 </g>
</svg>"""


def test_inline_svg_keeps_only_safe_matplotlib_markup() -> None:
    out = F.inline_svg(EVIL_SVG, "f1-", label="ICL <sweep>")
    tags = set(re.findall(r"<(\w+)", out))
    assert tags == {"svg", "title", "defs", "path", "g", "use", "text"}
    for bad in ("onload", "onclick", "alert", "url(", "javascript", "evil", "clip-path", "metadata", "data:"):
        assert bad not in out, bad
    assert 'id="f1-m1"' in out and 'href="#f1-m1"' in out  # referenced id: prefixed, link follows it
    assert "figure_1" not in out and "c1" not in out  # unreferenced ids dropped
    assert "a &lt;b&gt; &amp; c" in out  # text stays escaped
    assert "<title>ICL &lt;sweep&gt;</title>" in out and 'aria-label="ICL &lt;sweep&gt;"' in out
    assert out.startswith('<svg viewBox="0 0 100 50"') and "width=" not in out.split(">")[0].replace(
        "max-width", ""
    )
    assert "'DejaVu Sans', Verdana" in out
    with pytest.raises(HarnessError, match="not well-formed"):
        F.inline_svg(b"<svg><g></svg>", "p", label="x")
    with pytest.raises(HarnessError, match="no <svg> root"):
        F.inline_svg(b"<html/>", "p", label="x")


class _Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.hrefs: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for key, value in attrs:
            if key == "id" and value:
                self.ids.append(value)
            if key == "href" and value:
                self.hrefs.append(value)


def test_html_report_embeds_sanitized_figures(tmp_path: Path) -> None:
    run = add_report_extras(write_fake_record(tmp_path / "run", n_items=6, hostile=True))
    html = render_html(read_record(run), tmp_path / "index.html").read_text()
    figures = re.findall(
        r'<svg viewBox="[^"]*" version="1.1" xmlns="[^"]*" class="figure".*?</svg>', html, re.S
    )
    assert len(figures) == 3  # ICL sweep, CoT vs direct, the group's panels; not IFEval or KD
    sections = re.split(r'<section id="', html)
    with_figures = sorted(s.split('"', 1)[0] for s in sections if 'class="figure"' in s)
    assert with_figures == ["suite-cot-arith", "suite-grp", "suite-icl-arith"]
    parsed = _Ids()
    parsed.feed(html)
    assert not [i for i, n in Counter(parsed.ids).items() if n > 1], "duplicate ids on the page"
    local = [h[1:] for h in parsed.hrefs if h.startswith("#")]
    assert set(local) <= set(parsed.ids)  # every marker reference resolves on the page
    assert parsed.tags.count("script") == 2 and "foreignobject" not in parsed.tags
    assert "url(" not in html and "default-src &#39;none&#39;" in html  # the CSP is unchanged
    hostile_label = "student-topk" + HOSTILE[1]
    escaped = hostile_label.replace("<", "&lt;").replace(">", "&gt;")
    assert any(escaped[: F.LABEL_CHARS - 1] in f for f in figures)  # the (shortened) label, as text
    assert "<img" not in html


def test_build_view_without_figures_draws_none(record: Any) -> None:
    from harness.report.build import build_view

    view = build_view(record, figures=False)
    assert all(s["figures"] == [] for s in view["suites"])
    drawn = {s["name"]: [f["title"] for f in s["figures"]] for s in build_view(record)["suites"]}
    assert drawn == {
        "icl-arith": ["ICL sweep: icl-arith"],
        "cot-arith": ["CoT vs direct: cot-arith"],
        "grp": ["CoT vs direct: grp"],
        "if-basic": [],
    }
