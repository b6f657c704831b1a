"""The HTML report and terminal summary, rendered from synthetic run records (tests/fake_record.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import jinja2
import numpy as np
import pytest
from rich.console import Console

from harness.errors import HarnessError
from harness.report import render_html, render_terminal_summary
from harness.report.build import build_view
from harness.report.explorer import LITTLE_IN_COMMON, diff_runs, json_for_script, pack_runs, word_diff
from harness.report.html import environment
from harness.report.interactive import script_text
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


def scripts(html: str) -> list[tuple[dict[str, str | None], str]]:
    """Every <script> element: its attributes and its text."""
    return [
        (dict(parse(f"<script{attrs}>").tags[0][1]), body)
        for attrs, body in re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    ]


def page_csp(html: str) -> str:
    tags = parse(html).tags
    found = [
        dict(a)["content"]
        for t, a in tags
        if t == "meta" and dict(a).get("http-equiv") == "Content-Security-Policy"
    ]
    assert len(found) == 1
    return str(found[0])


def test_page_is_self_contained(fake_html: str) -> None:
    tags = parse(fake_html).tags
    assert not [t for t, _ in tags if t in ("link", "img", "iframe", "object", "embed")]
    csp = page_csp(fake_html)
    assert "default-src 'none'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert not re.search(r"\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//", fake_html)
    assert "url(" not in fake_html and "@import" not in fake_html
    assert "<svg" in fake_html  # the KD bar charts
    # exactly two script elements: the explorer's JSON data (never run) and the page's own script,
    # which the CSP allows by the hash of its exact text, and nothing else
    found = scripts(fake_html)
    assert [a for a, _ in found] == [
        {"type": "application/json", "id": "explorer-data"},
        {"id": "report-script"},
    ]
    body = found[1][1]
    digest = base64.b64encode(hashlib.sha256(body.encode("utf-8")).digest()).decode()
    assert re.search(r"script-src 'sha256-([^']+)';", csp).group(1) == digest  # type: ignore[union-attr]
    assert body == script_text() and "innerHTML" not in body and "eval(" not in body


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
    assert names.count("script") == 2 and not {"img", "textarea", "iframe"} & set(names)
    assert not [(t, k) for t, attrs in parsed.tags for k, _ in attrs if k.startswith("on")]
    markup = re.sub(r"<script id=\"report-script\">.*?</script>", "", html, flags=re.S)
    assert "<script>" not in markup and "<img src=x" not in markup and "</textarea>" not in markup
    assert "<svg onload" not in markup and "<!--" not in markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    text = "".join(parsed.text)
    for payload in HOSTILE:  # every payload survives, as text
        assert payload in text
    assert "\\begin{document}" in html
    # the explorer's data block: no "<" at all, and it decodes back to the payloads
    (data_attrs, data), _ = scripts(html)
    assert "<" not in data and ">" not in data and "&" not in data
    decoded = json.dumps(json.loads(data), ensure_ascii=False)
    for payload in HOSTILE:
        assert json.dumps(payload, ensure_ascii=False)[1:-1] in decoded


def test_json_for_script_cannot_end_its_element() -> None:
    text = str(json_for_script({"a": "</script><!--<script>&amp;", "b": ["\u2028"]}))
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"a": "</script><!--<script>&amp;", "b": ["\u2028"]}


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


def explorer_data(html: str) -> dict:
    found = [body for attrs, body in scripts(html) if attrs.get("id") == "explorer-data"]
    assert len(found) == 1
    return json.loads(found[0])


def test_explorer_cap_first_page_and_data(tmp_path: Path) -> None:
    html = render(tmp_path, n_items=5, max_items_per_variant=2)
    assert html.count("the first 2 of 5 items.") == 7  # 4 ICL + 2 CoT + 1 IF variants
    data = explorer_data(html)
    assert len(data["items"]) == 14 and data["models"] == ["teacher", "base", "student", "student-topk"]
    assert data["suites"] == ["icl-arith", "cot-arith", "if-basic"]  # ability order
    assert [len(it[6]) for it in data["items"]] == [4] * 14  # every model on every item
    # the first page is also HTML, for readers without scripts
    first = re.findall(r'<article class="item(?: differ)?" id="(item-[^"]*)">', html)
    assert first == [it[3] for it in data["items"][:14]]
    assert html.count('<div class="answer">') == 14 * 4
    assert "Scripts are off: this is the first page only (14 of" in html
    # 20 per page at most
    big = render(tmp_path / "big", n_items=6)
    assert len(explorer_data(big)["items"]) == 42
    assert len(re.findall(r'<article class="item', big)) == 20


def test_explorer_filter_options_cover_groups_and_variants(tmp_path: Path) -> None:
    run = write_fake_record(tmp_path / "run", n_items=3)
    lines = [json.loads(x) for x in (run / "items.jsonl").read_text().splitlines()]
    for row in lines:  # make if-basic two subtasks of a group "bbh"
        if row["suite"] == "if-basic":
            row["suite"] = "bbh:" + ("nav" if row["item_id"].endswith("0") else "date")
    (run / "items.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    data = build_view(read_record(run), figures=False)["explorer"]["data_json"]
    options = json.loads(str(data))["options"]
    keys = [o["key"] for o in options]
    assert keys[0] == "" and options[0]["suites"] == []
    assert "icl-arith" in keys and "icl-arith\nk=4" in keys and "bbh" in keys and "bbh\ndefault" in keys
    suites = json.loads(str(data))["suites"]
    group = next(o for o in options if o["key"] == "bbh")
    assert sorted(suites[i] for i in group["suites"]) == ["bbh:date", "bbh:nav"]


def test_word_diff_marks_changed_words() -> None:
    teacher = "First add 4 and 6. The answer is 10."
    student = "First add 4 and 5. The answer is 9."
    assert word_diff(teacher, student) == [
        (0, "First add 4 and "),
        (-1, "6"),
        (1, "5"),
        (0, ". The answer is "),
        (-1, "10"),
        (1, "9"),
        (0, "."),
    ]
    assert word_diff(teacher, teacher) == [(0, teacher)]
    assert word_diff(teacher, "Completely unrelated words here!") is None  # too little in common
    assert word_diff("", "x") is None and word_diff("x", "") is None


def test_packed_diff_slices_the_teacher_text_in_utf16_units() -> None:
    teacher = "😀 emoji first, then 10 apples."
    student = "😀 emoji first, then 12 apples."
    runs = diff_runs(teacher, student)
    assert runs is not None
    packed = pack_runs(runs)
    utf16 = teacher.encode("utf-16-le")

    def js_slice(a: int, b: int) -> str:  # what String.prototype.slice returns in the page
        return utf16[2 * a : 2 * b].decode("utf-16-le")

    rebuilt = "".join(
        p if isinstance(p, str) else js_slice(p[0], p[1]) for p in packed if len(p) == 2 or isinstance(p, str)
    )
    assert rebuilt == student
    removed = [js_slice(p[0], p[1]) for p in packed if not isinstance(p, str) and len(p) == 3]
    assert removed == ["10 "]


def test_explorer_first_page_shows_the_diff_escaped(tmp_path: Path) -> None:
    run = write_fake_record(tmp_path / "run", n_items=2)
    lines = [json.loads(x) for x in (run / "items.jsonl").read_text().splitlines()]
    lines[0]["output"] = "Adding <b>4</b> and 6 gives 10."
    lines[1]["output"] = "Adding <b>4</b> and 6 gives <script>9</script>."
    lines[2]["output"] = "Nothing shared"
    (run / "items.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    html = render_html(read_record(run), tmp_path / "index.html").read_text()
    assert (
        "Adding &lt;b&gt;4&lt;/b&gt; and 6 gives <del>10</del><ins>&lt;script&gt;9&lt;/script&gt;</ins>."
        in html
    )
    assert LITTLE_IN_COMMON.replace("'", "&#39;") in html
    first = explorer_data(html)["items"][0][6]
    assert first[0][4] == "Adding <b>4</b> and 6 gives 10."  # the teacher's text, plain
    assert first[1][4][0] == [0, 28] and first[1][4][1] == [28, 30, -1]
    assert first[2][-1] == 1  # little in common: flagged, shown plain


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
    assert links <= ids  # every link resolves without scripts: to an item on the first page
    further = set(re.findall(r'href="#explorer" class="mono xi" data-item="(item-[^"]+)"', fake_html))
    anchors = {it[3] for it in explorer_data(fake_html)["items"]}  # the script pages to any of these
    assert further and further <= anchors and not further & ids
    # and each 2x2 count filters the explorer to its cell (suite, variant, pair)
    filters = re.findall(
        r'<a class="xf" href="#explorer" data-suite="([^"]*)" data-variant="([^"]*)" '
        r'data-model="([^"]*)" data-cell="([^"]*)">(\d+)</a>',
        fake_html,
    )
    assert {("icl-arith", "k=0", "student"), ("cot-arith", "direct", "base")} <= {f[:3] for f in filters}
    assert {f[3] for f in filters} == {"both_right", "teacher_only", "student_only", "neither"}


def _regress(run: Path, verdict: str, regressed: bool, note: str = "") -> None:
    metrics = [
        {
            "suite": "icl-arith",
            "variant": "k=4",
            "metric": "exact_match",
            "model": "student",
            "baseline": 0.75,
            "current": 0.5,
            "diff": -0.25,
            "margin": 0.02,
            "p_value": 0.0004,
            "p_holm": 0.0008,
            "regressed": regressed,
        },
        {
            "suite": "if-basic",
            "variant": "default",
            "metric": "exact_match" + note,
            "model": "student-topk",
            "baseline": 0.6,
            "current": 0.61,
            "diff": 0.01,
            "margin": 0.02,
            "p_value": 0.9,
            "p_holm": 1.0,
            "regressed": False,
        },
    ]
    doc = {"baseline": "runs/before" + note, "current": "runs/after", "verdict": verdict, "metrics": metrics}
    (run / "regress.json").write_text(json.dumps(doc))


def test_regression_verdict_banner_and_marked_rows(tmp_path: Path) -> None:
    run = write_fake_record(tmp_path / "run", n_items=4)
    plain = render_html(read_record(run), tmp_path / "plain.html").read_text()
    assert 'id="verdict"' not in plain and "▼ regressed" not in plain
    _regress(run, "regression", True, note=HOSTILE[0])
    html = render_html(read_record(run), tmp_path / "index.html").read_text()
    assert html.index('id="verdict"') < html.index('id="headline"')  # at the top
    assert '<section id="verdict" class="verdict verdict-regression">' in html
    assert "Regression gate: regression</h2>" in html and "1 of 2 metrics regressed" in html
    rows = re.findall(r"<tr( class=\"regressed\")?><td>([^<]*)</td>", html[html.index('id="verdict"') :])
    assert rows[:2] == [(' class="regressed"', "icl-arith"), ("", "if-basic")]
    assert "-0.250" in html and "&lt; 0.001" in html and "runs/before&lt;script&gt;" in html
    # the student's k=4 score is marked in the icl-arith table, and nothing else is
    suite = html[html.index('id="suite-icl-arith"') : html.index('id="suite-cot-arith"')]
    k4 = suite[suite.index('<td class="mono">k=4') :].split("</tr>")[0]
    cells = re.findall(r'<td class="num([^"]*)">', k4)
    assert cells[1:5] == ["", "", " regressed", ""]  # n, teacher, base, student, student-topk
    assert html.count("▼ regressed") == 2  # there and in the headline (its variant is k=4)
    # a regressed metric that is not the suite's primary one is listed, but marks no score cell
    doc = json.loads((run / "regress.json").read_text())
    doc["metrics"][0].update(metric="inst_level_strict")
    (run / "regress.json").write_text(json.dumps(doc))
    other = render_html(read_record(run), tmp_path / "other.html").read_text()
    assert "1 of 2 metrics regressed" in other and "▼ regressed" not in other
    _regress(run, "pass", False)
    passed = render_html(read_record(run), tmp_path / "pass.html").read_text()
    assert 'class="verdict verdict-pass"' in passed and "none of 2 metrics regressed" in passed
    assert "▼ regressed" not in passed


def test_unreadable_regress_json_is_a_warning(tmp_path: Path) -> None:
    run = write_fake_record(tmp_path / "run", n_items=2)
    (run / "regress.json").write_text("{not json")
    html = render_html(read_record(run), tmp_path / "index.html").read_text()
    assert "verdict-unknown" in html and "regress.json could not be read" in html


def test_diff_runs_rebuild_both_texts() -> None:
    """Property check on random word soups: the runs give back both outputs, and their offsets point
    at the teacher's text."""
    rng = np.random.default_rng(0)
    words = ["a ", "b ", "the ", "c.", " ", "d,", "é ", "😀 ", "\n"]
    for _ in range(400):
        teacher = "".join(rng.choice(words, rng.integers(1, 14)))
        other = "".join(rng.choice(words, rng.integers(1, 14)))
        runs = diff_runs(teacher, other)
        if runs is None:
            continue
        assert "".join(t for op, _, _, t in runs if op >= 0) == other
        assert "".join(t for op, _, _, t in runs if op <= 0) == teacher
        utf16 = teacher.encode("utf-16-le")
        assert all(utf16[2 * s : 2 * e].decode("utf-16-le") == t for op, s, e, t in runs if op <= 0)
