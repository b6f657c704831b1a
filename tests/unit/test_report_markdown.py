"""summary.md (harness.report.markdown) and the format switch (harness.report.outputs)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.report.markdown import escape_md, render_markdown
from harness.report.outputs import FORMATS, parse_formats, write_outputs
from harness.store.record import read_record, write_record
from tests.fake_record import HOSTILE, write_fake_record

markdown_it = pytest.importorskip("markdown_it", reason="markdown-it-py (a dependency of rich) is missing")


def to_html(text: str) -> str:
    """CommonMark with GFM tables; raw HTML is passed through, as many renderers do."""
    return markdown_it.MarkdownIt("commonmark").enable("table").enable("strikethrough").render(text)


class Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.rows: list[list[str]] = []
        self.items: list[str] = []
        self._cell: list[str] | None = None
        self._item: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "li":
            self._item = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None
        elif tag == "li" and self._item is not None:
            self.items.append("".join(self._item))
            self._item = None

    def handle_data(self, data: str) -> None:
        for buffer in (self._cell, self._item):
            if buffer is not None:
                buffer.append(data)


def parse(html: str) -> Cells:
    cells = Cells()
    cells.feed(html)
    return cells


@pytest.mark.parametrize(
    "text",
    [
        *HOSTILE,
        "a | b",
        "line1\nline2\r\n\nline3",
        "*bold* _em_ `code` ~~strike~~ $x$",
        "[link](javascript:alert(1)) ![img](x)",
        "&lt;script&gt; &amp;",
        "1. not a list",
        "- not a list",
        "> not a quote",
        "# not a heading",
        "back\\slash \\| \\*",
    ],
)
def test_escaped_text_renders_literally(text: str) -> None:
    cell = escape_md(text)
    item = escape_md(text, line_start=True)
    literal = re.sub(r"\s+", " ", text).strip()
    table = parse(to_html(f"| h |\n| -- |\n| {cell} |\n"))
    assert table.rows == [["h"], [literal]]
    listing = parse(to_html(f"- {item}\n"))
    assert listing.items == [literal]
    assert set(listing.tags) == {"ul", "li"} and set(table.tags) <= {
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
    }
    assert "\n" not in cell


def test_escape_md_values() -> None:
    assert escape_md("a|b") == r"a\|b"
    assert escape_md("<script>") == r"\<script\>"
    assert escape_md("x\ny") == "x y"
    assert escape_md("0.1.0") == "0.1.0"  # mid-line: a number is not a list marker
    assert escape_md("1. x", line_start=True) == r"1\. x"


@pytest.fixture(scope="module")
def hostile_md(tmp_path_factory: pytest.TempPathFactory) -> str:
    models = (("teacher", "teacher"), ("base|pipe", "base"), ("stu*dent*", "student"))
    run = write_fake_record(tmp_path_factory.mktemp("md") / "run", n_items=8, hostile=True, models=models)
    return render_markdown(read_record(run))


def test_summary_sections_and_values(tmp_path: Path) -> None:
    run = write_fake_record(tmp_path / "run", n_items=10)
    record = read_record(run)
    text = render_markdown(record)
    rendered = parse(to_html(text))
    head, *rows = rendered.rows
    assert head == [
        "Suite",
        "Variant",
        "teacher",
        "base",
        "student",
        "student-topk (student)",
        "Retention base",
        "Retention student",
        "Retention student-topk",
    ]
    assert [r[:2] for r in rows] == [["icl-arith", "k=4"], ["cot-arith", "cot"], ["if-basic", "default"]]
    icl = record.metrics["suites"]["icl-arith"]["variants"]["k=4"]["teacher"]
    assert rows[0][2] == f"{100 * icl['score']:.1f} [{100 * icl['ci_low']:.1f}, {100 * icl['ci_high']:.1f}]"
    retention = record.metrics["suites"]["icl-arith"]["retention"]["student"]["k=4"]
    assert rows[0][7].startswith(f"{retention['value']:.2f} [")
    for heading in ("## Headline", "## KD check (token level)", "## Notes"):
        assert heading in text
    assert "- KD student-topk: T=1: forward KL \\>= 0.350" in text  # the terminal's KD line, escaped
    assert "Synthetic record written by tests/fake\\_record.py." in text
    # the best score of each row is bold in the Markdown source
    line = next(x for x in text.splitlines() if x.startswith("| icl-arith"))
    cells = [c.strip() for c in line.strip("|").split(" | ")]
    scores = [float(c.split()[0].strip("*")) for c in cells[2:6]]
    assert [c.startswith("**") for c in cells[2:6]] == [s == max(scores) for s in scores]


def test_hostile_summary_is_plain_text(hostile_md: str) -> None:
    rendered = parse(to_html(hostile_md))
    assert not {"script", "img", "textarea", "a", "em", "code"} & set(rendered.tags)  # bold is ours
    head = rendered.rows[0]
    assert head[3] == "base|pipe (base)" and head[4] == f"stu*dent*{HOSTILE[1]} (student)"
    assert all(len(r) == len(head) for r in rendered.rows)  # no pipe split a row
    for payload in HOSTILE:
        assert f"hostile note {payload}" in rendered.items


def test_empty_record(tmp_path: Path) -> None:
    write_record(tmp_path / "empty", {}, [], {})
    text = render_markdown(read_record(tmp_path / "empty"))
    assert "No suite results in this record." in text and "No notes were recorded." in text


def test_parse_formats() -> None:
    assert parse_formats("html,latex") == {"html", "latex"}
    assert parse_formats(" MD , figures ") == {"md", "figures"}
    assert parse_formats("all") == set(FORMATS)
    with pytest.raises(HarnessError, match="unknown format pdf"):
        parse_formats("html,pdf")
    with pytest.raises(HarnessError, match="none given"):
        parse_formats(",")


def test_write_outputs_text_formats(tmp_path: Path) -> None:
    run = write_fake_record(tmp_path / "run", n_items=4)
    written = write_outputs(run, {"md", "latex"})
    assert written == {"md": run / "summary.md", "latex": run / "tables.tex"}
    assert written["md"].read_text().startswith("# distill-harness: teacher vs base, student, student-topk")
    assert not (run / "index.html").exists() and not (run / "figures").exists()
    with pytest.raises(HarnessError, match="unknown: svg"):
        write_outputs(run, {"svg"})
    html = write_outputs(run, {"html"}, html_out=tmp_path / "out" / "r.html")
    assert html == {"html": tmp_path / "out" / "r.html"} and html["html"].read_text().startswith("<!DOCTYPE")
    with pytest.raises(HarnessError, match="does not exist"):
        write_outputs(tmp_path / "missing", {"md"})


# -- the gate's verdict (regress.json written by the real gate) ---------------------------------------------
def _gated(
    tmp_path: Path, current: list[int], *, student: str = "student", names: tuple[str, str] = ("b", "c")
):
    """A baseline and a current record (two suites of 200 items: arith and logic, logic unchanged), gated
    with the defaults; the verdict is written into the current run folder as `harness regress` does."""
    from harness.regress import gate, write_verdict
    from tests.unit.test_regress import make_record

    logic = {"logic": {"teacher": [1] * 200, student: [1, 0] * 100}}
    base = make_record(
        tmp_path / "a", {"teacher": [1] * 200, student: [1] * 180 + [0] * 20}, extra_suites=logic
    )
    cur = make_record(tmp_path / "b", {"teacher": [1] * 200, student: current}, extra_suites=logic)
    verdict = gate(read_record(base), read_record(cur), names=names)
    write_verdict(verdict, cur)
    return cur, verdict


def test_summary_shows_a_regression_verdict_first(tmp_path: Path) -> None:
    run, verdict = _gated(tmp_path, [1] * 60 + [0] * 140, names=("nightly-0101", "nightly-0102"))
    assert verdict.verdict == "regression" and [m.regressed for m in verdict.metrics] == [True, False]
    failed = verdict.metrics[0]
    text = render_markdown(read_record(run))
    assert text.index("## Regression gate: regression") < text.index("## Headline")
    assert (
        "**1 of 2 metrics failed** against the baseline nightly-0101 (this run: nightly-0102); 1 passed."
        in text
    )
    rendered = parse(to_html(text))
    assert rendered.rows[:2] == [
        ["Suite", "Variant", "Metric", "Model", "Baseline → current", "Margin", "Status"],
        [
            "arith",
            "k=2",
            "exact_match,first-word",
            "student",
            "0.900 → 0.300 (-0.600)",
            f"{failed.margin:.3f} (sized)",
            failed.status(),
        ],
    ]
    assert failed.margin_source == "sized" and failed.status().startswith("regressed (worse than the margin")
    assert rendered.rows[2][0] == "Suite" and rendered.rows[2][2] == "teacher"  # the headline table follows


def test_summary_of_a_passing_run_says_how_many_passed(tmp_path: Path) -> None:
    run, verdict = _gated(tmp_path, [1] * 180 + [0] * 20)
    assert verdict.verdict == "pass" and len(verdict.metrics) == 2
    text = render_markdown(read_record(run))
    line = "All 2 metrics passed against the baseline b (this run: c): shown non-inferior."
    assert f"## Regression gate: pass\n\n{line}\n" in text
    assert "Baseline → current" not in text
    (run / "regress.json").unlink()  # not gated: no section
    assert "Regression gate" not in render_markdown(read_record(run))


def test_summary_verdict_escapes_the_gates_text(tmp_path: Path) -> None:
    hostile = "stu|dent*<b>x</b>"
    run, verdict = _gated(tmp_path, [0] * 200, student=hostile, names=(HOSTILE[0], "[c](javascript:x)"))
    assert verdict.verdict == "regression"
    text = render_markdown(read_record(run))
    rendered = parse(to_html(text))
    assert not {"script", "a", "b", "em"} & set(rendered.tags)
    assert rendered.rows[1][3] == hostile and all(len(r) == 7 for r in rendered.rows[:2])
    assert f"the baseline {escape_md(HOSTILE[0])} (this run: {escape_md('[c](javascript:x)')})" in text
    (run / "regress.json").write_text("{not json")
    broken = render_markdown(read_record(run))
    assert "## Regression gate: verdict unreadable" in broken
    assert "could not be read" in broken and "rerun the regression gate to rewrite it" in broken


def test_regress_renders_an_existing_summary_again(tmp_path: Path) -> None:
    from harness.cli import main
    from tests.unit.test_regress import make_record

    base = make_record(tmp_path / "a", {"teacher": [1] * 30, "student": [1] * 30})
    bad = make_record(tmp_path / "b", {"teacher": [1] * 30, "student": [0] * 15 + [1] * 15})
    write_outputs(bad, {"md"})
    assert "Regression gate" not in (bad / "summary.md").read_text()
    assert main(["regress", "--baseline", str(base), "--current", str(bad)]) == 1
    assert "## Regression gate: regression" in (bad / "summary.md").read_text()
    assert not (bad / "index.html").exists()  # only the reports that were there are rendered again
