"""The HTML report and terminal summary, rendered from synthetic run records (tests/fake_record.py)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import jinja2
import pytest
from rich.console import Console

from harness.errors import HarnessError
from harness.report import render_html, render_terminal_summary
from harness.report.build import build_view
from harness.report.html import environment
from harness.store.record import read_record, write_record
from tests.fake_record import HOSTILE, write_fake_record


class TagCollector(HTMLParser):
    """Every start tag with its attributes, and all text, as a browser's tokenizer would see them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> TagCollector:
    parser = TagCollector()
    parser.feed(html)
    parser.close()
    return parser


def render(tmp_path: Path, **kwargs) -> str:
    cap = kwargs.pop("max_items_per_variant", 200)
    run_dir = write_fake_record(tmp_path / "run", **kwargs)
    out = render_html(read_record(run_dir), tmp_path / "out" / "index.html", max_items_per_variant=cap)
    return out.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def fake_html(tmp_path_factory: pytest.TempPathFactory) -> str:
    return render(tmp_path_factory.mktemp("report"), n_items=10)


def test_sections_and_models_present(fake_html: str) -> None:
    ids = {dict(attrs).get("id") for _, attrs in parse(fake_html).tags}
    assert {"headline", "kd", "explorer", "provenance", "notes"} <= ids
    assert {"suite-icl-arith", "suite-cot-arith", "suite-if-basic"} <= ids
    for label in ("teacher", "base", "student", "student-topk"):
        assert f">{label}<" in fake_html
    # suites in ability order (ICL, CoT, IF), although metrics.json stores them sorted by name
    assert fake_html.index('id="suite-icl-arith"') < fake_html.index('id="suite-cot-arith"')
    assert "Synthetic record written by tests/fake_record.py." in fake_html  # notes
    assert "sha256:" in fake_html and "hf" in fake_html  # provenance


def test_page_is_self_contained(fake_html: str) -> None:
    tags = parse(fake_html).tags
    assert not [t for t, _ in tags if t in ("script", "link", "img", "iframe", "object", "embed")]
    csp = [
        dict(a)["content"]
        for t, a in tags
        if t == "meta" and dict(a).get("http-equiv") == "Content-Security-Policy"
    ]
    assert csp and "default-src 'none'" in csp[0]
    assert not re.search(r"\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//", fake_html)
    assert "url(" not in fake_html and "@import" not in fake_html
    assert "<svg" in fake_html  # the KD bar charts


def test_icl_variants_in_natural_order(tmp_path: Path) -> None:
    view = build_view(read_record(write_fake_record(tmp_path / "run", n_items=4)))
    icl = next(s for s in view["suites"] if s["name"] == "icl-arith")
    assert [r["variant"] for r in icl["rows"]] == ["k=0", "k=1", "k=2", "k=4"]
    assert [g["variant"] for g in icl["gain_rows"]] == ["k=1", "k=2", "k=4"]


def test_undefined_retention_is_shown_as_undefined_with_note(tmp_path: Path) -> None:
    html = render(tmp_path, n_items=6)
    # the teacher scores 0 on cot/direct, so every student's retention there is undefined
    cells = re.findall(r'<td class="num undef" title="([^"]*)">undefined', html)
    assert cells.count("teacher score is 0: retention undefined") == 3
    view = build_view(read_record(tmp_path / "run"))
    cot = next(s for s in view["suites"] if s["name"] == "cot-arith")
    direct = next(r for r in cot["rows"] if r["variant"] == "direct")
    assert [c["text"] for c in direct["retention"]] == ["undefined"] * 3
    assert all(c["cls"] == "undef" for c in direct["retention"])


def test_hostile_text_is_escaped(tmp_path: Path) -> None:
    html = render(tmp_path, n_items=10, hostile=True)
    parsed = parse(html)
    names = [t for t, _ in parsed.tags]
    assert "script" not in names and "img" not in names and "textarea" not in names
    assert not [(t, k) for t, attrs in parsed.tags for k, _ in attrs if k.startswith("on")]
    assert "<script>alert" not in html and "<img src=x" not in html and "</textarea>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    text = "".join(parsed.text)
    for payload in HOSTILE:  # every payload survives, as text
        assert payload in text
    assert "\\begin{document}" in html


def test_hostile_label_is_escaped_in_attributes_and_svg(tmp_path: Path) -> None:
    html = render(tmp_path, n_items=3, hostile=True)
    charts = re.findall(r"<svg class=\"chart\".*?</svg>", html, re.S)  # the KD charts, not the figures
    assert len(charts) == 2  # T = 1 and T = 2
    svg = "".join(charts)
    assert set(re.findall(r"<(\w+)", svg)) <= {"svg", "line", "text", "rect", "title"}
    assert "student-topk&lt;img src=x onerror=alert(1)&gt;" in svg  # the label, in the bar's <title>
    assert 'title="<' not in html


def test_kd_labels_lower_bound_and_skipped(tmp_path: Path) -> None:
    html = render(tmp_path / "a", n_items=3)
    assert "lower bound" in html and "≥ 0.350" in html  # student-topk at T=1 in the headline
    view = build_view(read_record(tmp_path / "a" / "run"))
    by_label = {s["label"]: s for s in view["kd"]["students"]}
    assert by_label["student-topk"]["lower_bound"] and not by_label["student"]["lower_bound"]
    rows = {r["metric"]: r for r in by_label["student-topk"]["temps"][0]["rows"]}
    assert (
        rows["forward_kl"]["bound"] == "≥ "
        and rows["ear"]["bound"] == "≤ "
        and rows["top1_agree"]["bound"] == ""
    )
    skipped = render(tmp_path / "b", n_items=3, kd_skipped="the student has a different tokenizer")
    assert "Token-level check skipped: the student has a different tokenizer" in skipped


def test_explorer_cap_and_side_by_side(tmp_path: Path) -> None:
    html = render(tmp_path, n_items=5, max_items_per_variant=2)
    assert html.count("Showing the first 2 of 5 items.") == 7  # 4 ICL + 2 CoT + 1 IF variants
    assert len(re.findall(r'<div class="item(?: differ)?" id="item-[^"]*">', html)) == 14
    assert html.count('<div class="answer">') == 14 * 4


def test_optional_parts_absent(tmp_path: Path) -> None:
    html = render(tmp_path / "a", n_items=3, with_kd=False)
    assert "This record has no KD check" in html
    html = render(tmp_path / "b", n_items=3, models=[("teacher", "teacher")])
    assert "This run has no student" in html and "Retention<br>" not in html


def test_minimal_and_partial_records_render(tmp_path: Path) -> None:
    write_record(tmp_path / "empty", {}, [], {})
    html = render_html(read_record(tmp_path / "empty"), tmp_path / "empty.html").read_text()
    assert "No suite results in this record." in html and "No per-item results" in html
    run = write_fake_record(tmp_path / "partial", n_items=3)
    metrics = json.loads((run / "metrics.json").read_text())
    for summary in metrics["suites"].values():
        for key in ("retention", "gain", "description", "chance", "baseline_variant"):
            summary.pop(key)
    metrics["kd"]["student"].pop("temperatures")
    metrics["kd"]["base"]["temperatures"]["1"]["forward_kl"] = None
    metrics.pop("notes")
    (run / "metrics.json").write_text(json.dumps(metrics))
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["models"]["base"] = {"role": "base"}
    for key in ("versions", "hardware", "seeds", "config"):
        manifest.pop(key)
    (run / "manifest.json").write_text(json.dumps(manifest))
    lines = (run / "items.jsonl").read_text().splitlines()
    (run / "items.jsonl").write_text("\n".join([json.dumps({"model": "teacher"}), *lines[1:]]) + "\n")
    html = render_html(read_record(run), tmp_path / "partial.html").read_text()
    assert "not computed" in html and "no temperatures recorded" in html


def test_gain_estimates_form(tmp_path: Path) -> None:
    html = render(tmp_path, n_items=6, gain_estimates=True)
    view = build_view(read_record(tmp_path / "run"))
    icl = next(s for s in view["suites"] if s["name"] == "icl-arith")
    assert icl["gain_has_ci"] and icl["gain_rows"][0]["gains"][0]["ci"].startswith("[")
    assert "a point estimate" not in html


def test_strict_undefined_catches_template_mistakes() -> None:
    env = environment()
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ v.missing }}").render(v={})
    assert env.from_string("{{ x }}").render(x="<b>") == "&lt;b&gt;"


def test_bad_cap_and_unwritable_path(tmp_path: Path) -> None:
    record = read_record(write_fake_record(tmp_path / "run", n_items=2))
    with pytest.raises(HarnessError, match="max_items_per_variant"):
        render_html(record, tmp_path / "x.html", max_items_per_variant=0)
    (tmp_path / "file").write_text("")
    with pytest.raises(HarnessError, match="cannot write the report"):
        render_html(record, tmp_path / "file" / "x.html")


def test_terminal_summary(tmp_path: Path) -> None:
    record = read_record(write_fake_record(tmp_path / "run", n_items=6))
    console = Console(record=True, width=220, color_system=None)
    render_terminal_summary(record, console)
    text = console.export_text()
    assert "icl-arith" in text and "k=4" in text and "undefined" in text
    assert text.index("icl-arith") < text.index("cot-arith")
    assert "KD student-topk: T=1: forward KL >= 0.350" in text and "lower bound" in text
    assert "KD base: T=1: forward KL 0.900" in text


def test_teacher_near_chance_is_flagged(tmp_path: Path) -> None:
    run = write_fake_record(tmp_path / "run", n_items=4)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["suites"]["if-basic"]["chance"] = 0.9
    (run / "metrics.json").write_text(json.dumps(metrics))
    suites = {s["name"]: s for s in build_view(read_record(run))["suites"]}
    assert "near chance" in suites["if-basic"]["warning"]
    assert suites["icl-arith"]["warning"] == ""


def test_paired_comparison_table(tmp_path: Path) -> None:
    html = render(tmp_path, n_items=8)
    assert html.count("Paired comparison with the teacher") == 3  # one per suite
    view = build_view(read_record(tmp_path / "run"))
    metrics = read_record(tmp_path / "run").metrics
    icl = next(s for s in view["suites"] if s["name"] == "icl-arith")
    # 4 variants x 3 non-teacher models, variants in natural order, models teacher-base-student order
    assert [(r["variant"], r["model"]) for r in icl["paired_rows"][:3]] == [
        ("k=0", "base"),
        ("k=0", "student"),
        ("k=0", "student-topk"),
    ]
    assert len(icl["paired_rows"]) == 12
    row = icl["paired_rows"][1]
    test = metrics["suites"]["icl-arith"]["paired"]["student"]["k=0"]["mcnemar"]
    keys = ("both_right", "teacher_only", "student_only", "neither")
    assert [c["text"] for c in row["mcnemar"]["cells"]] == [str(test[k]) for k in keys]
    assert [c["title"] for c in row["mcnemar"]["cells"]] == [", ".join(test["cells"][k]) for k in keys]
    assert sum(len(test["cells"][k]) for k in keys) == 8
    assert row["gap_closed"]["text"] != "—"  # a student, with a base in the run
    assert icl["paired_rows"][0]["gap_closed"]["text"] == "—"  # the base itself
    # the teacher scores 0 on cot/direct (chance 0): both corrected measures are undefined, with a note
    cot = next(s for s in view["suites"] if s["name"] == "cot-arith")
    direct = [r for r in cot["paired_rows"] if r["variant"] == "direct"]
    assert [r["chance_retention"]["text"] for r in direct] == ["undefined"] * 3
    assert all("not above chance" in r["chance_retention"]["note"] for r in direct)
    assert direct[1]["gap_closed"]["text"] == "undefined"
    assert "not better than the base" in direct[1]["gap_closed"]["note"]
    assert "teacher is not above chance</span>" in html


def test_paired_comparison_absent_or_graded(tmp_path: Path) -> None:
    html = render(tmp_path / "a", n_items=4, paired=False)
    assert "Paired comparison" not in html
    run = write_fake_record(tmp_path / "b", n_items=4)
    metrics = json.loads((run / "metrics.json").read_text())
    entry = metrics["suites"]["if-basic"]["paired"]["student"]["default"]
    entry.pop("mcnemar")  # graded scores: aggregate writes no McNemar test
    entry.pop("gap_closed")
    (run / "metrics.json").write_text(json.dumps(metrics))
    view = build_view(read_record(run))
    if_rows = next(s for s in view["suites"] if s["name"] == "if-basic")["paired_rows"]
    student = next(r for r in if_rows if r["model"] == "student")
    assert not student["mcnemar"]["present"] and "no McNemar test" in student["mcnemar"]["note"]
    assert student["gap_closed"]["text"] == "—" and student["gap_closed"]["note"] == "not computed"
    html = render_html(read_record(run), tmp_path / "b.html").read_text()
    assert "not right/wrong scores: no McNemar test" in html


def test_paired_item_ids_are_escaped(tmp_path: Path) -> None:
    html = render(tmp_path, n_items=4, hostile=True)
    titles = [dict(a).get("title") or "" for _, a in parse(html).tags]
    assert any("icl-arith-0001<img src=x onerror=alert(1)>" in t for t in titles)  # decoded attribute
    assert 'title="<' not in html and "0001<img" not in html


def test_kd_on_policy_shown_next_to_off_policy(tmp_path: Path) -> None:
    html = render(tmp_path / "a", n_items=3, kd_on_policy=True)
    assert html.count("on-policy (student&#39;s own text)") >= 3
    view = build_view(read_record(tmp_path / "a" / "run"))
    student = next(s for s in view["kd"]["students"] if s["label"] == "student")
    compare = student["on_policy"]["compare"]
    assert [c["t"] for c in compare] == ["1", "2"]
    assert compare[0]["off"]["fkl"]["mean"] == "0.300" and compare[0]["on"]["fkl"]["mean"] == "0.450"
    assert student["on_policy"]["text"] == "student generations"
    record = read_record(tmp_path / "a" / "run")
    console = Console(record=True, width=220, color_system=None)
    render_terminal_summary(record, console)
    assert "KD student on-policy (own text): T=1: forward KL 0.450" in console.export_text()
    absent = render(tmp_path / "b", n_items=3)
    assert "own text" not in absent
    view = build_view(read_record(tmp_path / "b" / "run"))
    assert all(s["on_policy"] is None for s in view["kd"]["students"])


def test_pairwise_ranking_and_warnings_are_shown_and_escaped(tmp_path: Path) -> None:
    """Student-vs-student tests with Holm's p, the ranking and the suite's warnings reach the page."""
    run_dir = write_fake_record(tmp_path / "run", n_items=4)
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    name = next(iter(metrics["suites"]))
    suite = metrics["suites"][name]
    variant = next(iter(suite["variants"]))
    hostile = "<script>alert(1)</script>"
    suite["pairwise"] = {
        f"s1{hostile} vs s2": {
            variant: {
                "a": "s1",
                "b": "s2",
                "diff": {"value": 0.25, "ci_low": -0.1, "ci_high": 0.5, "note": None},
                "mcnemar": {
                    "both_right": 3,
                    "a_only": 2,
                    "b_only": 0,
                    "neither": 1,
                    "p_value": 0.5,
                    "p_holm": 1.0,
                },
            }
        }
    }
    suite["ranking"] = {
        "variant": variant,
        "metric": "exact_match",
        "models": [{"model": "s1", "score": 0.75, "ci_low": 0.5, "ci_high": 1.0, "rank": 1}],
    }
    suite["warnings"] = [f"only 4 items {hostile}: intervals are rough"]
    metrics_path.write_text(json.dumps(metrics), encoding="utf-8")
    html = render_html(read_record(run_dir), tmp_path / "index.html").read_text(encoding="utf-8")
    assert "Between students" in html and "0.500 (Holm 1.000)" in html and "+25.0" in html
    assert "1. s1 75.0%" in html
    assert "only 4 items &lt;script&gt;" in html and hostile not in html


def test_two_by_two_cells_link_to_their_items_in_the_explorer(fake_html: str) -> None:
    links = set(re.findall(r'href="#(item-[^"]+)"', fake_html))
    assert links, "the paired table links its cells' items"
    ids = set(re.findall(r'id="(item-[^"]+)"', fake_html))
    assert links <= ids
