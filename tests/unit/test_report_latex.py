"""tables.tex (harness.report.latex): escaping, structure, bold-best; compiled where pdflatex exists."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.report.latex import Num, best_flags, escape_latex, label_key, render_latex
from harness.report.outputs import write_outputs
from harness.store.record import read_record
from tests.fake_record import HOSTILE, write_fake_record

PDFLATEX = shutil.which("pdflatex")
HOSTILE_TEX = [
    r"\input{/etc/passwd}",
    r"\write18{rm -rf /}",
    r"\immediate\write18{id}",
    r"\catcode`\@=11 \def\x{y}",
    "^^5cinput{/etc/passwd}",  # TeX reads ^^5c as a backslash
    "100% & $x_1^2$ #1 ~{}",
    "a\n\nb\r\tc\x00d",
    "[0pt] row",
    "\\",
    "unicode: é ü ≥ − … 中文 😀",
]
# what escape_latex may emit (besides letters, digits and harmless punctuation)
ESCAPES = (
    r"\textbackslash{}",
    r"\textasciitilde{}",
    r"\textasciicircum{}",
    r"\textless{}",
    r"\textgreater{}",
    r"\textbar{}",
    r"\ldots{}",
    r"\{",
    r"\}",
    r"\$",
    r"\&",
    r"\%",
    r"\#",
    r"\_",
    "{[}",
    "{]}",
    r"$\geq$",
    r"$\leq$",
    r"$\pm$",
    r"$\cdot$",
)
# control words tables.tex may contain: the table scaffolding and the escapes above
ALLOWED_COMMANDS = {
    "begin",
    "end",
    "centering",
    "small",
    "setlength",
    "tabcolsep",
    "caption",
    "label",
    "toprule",
    "midrule",
    "bottomrule",
    "cmidrule",
    "multicolumn",
    "emph",
    "textbf",
    "scriptsize",
    "textbackslash",
    "textasciitilde",
    "textasciicircum",
    "textless",
    "textgreater",
    "textbar",
    "ldots",
    "geq",
    "leq",
    "pm",
    "cdot",
}


def strip_escapes(text: str) -> str:
    """Remove every legitimate escape; what is left must hold no TeX special character."""
    for escape in sorted(ESCAPES, key=len, reverse=True):
        text = text.replace(escape, "")
    return text.replace("$-$", "")


@pytest.mark.parametrize("payload", HOSTILE_TEX + HOSTILE)
def test_escape_leaves_no_special_character(payload: str) -> None:
    out = escape_latex(payload)
    rest = strip_escapes(out)
    assert not re.search(r"[\\{}$&%#_^~<>|\[\]\"]", rest), (payload, out, rest)
    assert "\n" not in out and "\x00" not in out and "\t" not in out
    assert "  " not in out  # whitespace runs (a blank line = \par, fatal in a cell) are one space


def test_escape_values() -> None:
    assert escape_latex(r"\input{/etc/passwd}") == r"\textbackslash{}input\{/etc/passwd\}"
    assert escape_latex(r"\write18") == r"\textbackslash{}write18"
    assert escape_latex("^^5c") == r"\textasciicircum{}\textasciicircum{}5c"
    assert escape_latex("a_b & 50% #1 $x$ ~") == r"a\_b \& 50\% \#1 \$x\$ \textasciitilde{}"
    assert escape_latex("[x]") == "{[}x{]}"
    assert escape_latex("a\n\nb") == "a b"
    assert escape_latex("é ≥ 中😀") == r"é $\geq$ ??"
    assert escape_latex(3) == "3"


def test_num_formatting() -> None:
    assert Num(0.611, 0.45, 0.752).tex() == r"61.1 {\scriptsize [45.0, 75.2]}"
    assert Num(0.611, 0.45, 0.752).tex(bold=True) == r"\textbf{61.1} {\scriptsize [45.0, 75.2]}"
    assert Num(0.95, 0.881, 1.024, "ratio").tex() == r"0.95 {\scriptsize [0.88, 1.02]}"
    assert Num(-0.05, -0.1, 0.02, "pp").tex() == r"$-$5.0 {\scriptsize [$-$10.0, +2.0]}"
    assert Num(0.5).tex() == "50.0" and Num(None, 0.1, 0.2).tex() == "--"


def test_best_flags_and_ties() -> None:
    cells = [Num(0.5), Num(0.7), Num(0.7), Num(None)]
    assert best_flags(cells) == [False, True, True, False]  # a tie: both bold
    # values equal at the printed precision (66.6) tie too
    assert best_flags([Num(0.6661), Num(0.6664), Num(0.1)]) == [True, True, False]
    assert best_flags([Num(0.3), Num(0.3)]) == [False, False]  # all tie: nothing stands out
    assert best_flags([Num(0.3), Num(None)]) == [False, False]  # one defined value
    assert best_flags([Num(-0.05, kind="pp"), Num(-0.02, kind="pp")]) == [False, True]


def check_tex(tex: str) -> list[dict[str, object]]:
    """Structural checks of a tables.tex; returns one summary per tabular."""
    body = "\n".join(line for line in tex.splitlines() if not line.startswith("%"))
    # braces balance (escaped ones aside) and never close more than they opened
    depth = 0
    for token in re.findall(r"\\[{}]|[{}]", body):
        if token in ("{", "}"):
            depth += 1 if token == "{" else -1
            assert depth >= 0, "a } closes nothing"
    assert depth == 0, "unbalanced braces"
    # environments nest
    stack: list[str] = []
    for kind, env in re.findall(r"\\(begin|end)\{([^}]*)\}", body):
        if kind == "begin":
            stack.append(env)
        else:
            assert stack and stack.pop() == env, f"\\end{{{env}}} does not close the open environment"
    assert not stack, f"unclosed environments {stack}"
    # only the commands the writer uses: no \input, \write, \catcode, \def, \immediate ...
    commands = set(re.findall(r"\\([A-Za-z]+)", body))
    assert commands <= ALLOWED_COMMANDS, commands - ALLOWED_COMMANDS
    # no unescaped special character anywhere outside the scaffolding
    rest = strip_escapes(body)
    rest = re.sub(r"\\(?:[A-Za-z]+)", "", rest)  # the allowed commands
    rest = rest.replace("\\\\", "")  # row ends
    assert not re.search(r"[%#^~_$\\]", rest), re.search(r".{30}[%#^~_$\\].{30}", rest)
    tables = []
    for spec, inner in re.findall(r"\\begin\{tabular\}\{([^}]*)\}(.*?)\\end\{tabular\}", body, re.S):
        n_cols = len(spec)
        assert set(spec) <= set("lrc")
        for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
            assert rule in inner, f"{rule} missing"
        assert inner.strip().startswith(r"\toprule") and inner.strip().endswith(r"\bottomrule")
        rows = [r.strip() for r in inner.split("\\\\") if r.strip()]
        for row in rows:
            row = re.sub(r"^(\\(?:toprule|midrule|bottomrule)|\\cmidrule\(lr\)\{[^}]*\}|\s)+", "", row)
            if not row or row == r"\bottomrule":
                continue
            cells = re.split(r"(?<!\\)&", row)
            spans = sum(int(m) for m in re.findall(r"\\multicolumn\{(\d+)\}", row))
            width = len(cells) + spans - len(re.findall(r"\\multicolumn", row))
            assert width == n_cols, f"row has {width} columns, the tabular {n_cols}: {row[:120]}"
        tables.append({"columns": n_cols, "rows": rows})
    assert tables, "no tabular"
    return tables


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Model labels and suite names built from TeX attacks and every special character."""
    models = (
        ("teach&er_%1", "teacher"),
        ("base$^~#", "base"),
        (r"stud\input{/etc/passwd}", "student"),
        (r"s2\write18{id}{", "student"),
    )
    run = write_fake_record(tmp_path_factory.mktemp("tex") / "run", n_items=8, hostile=True, models=models)
    metrics = json.loads((run / "metrics.json").read_text())
    suites = metrics["suites"]
    suites[r"icl_{arith}\catcode`\@=11 %x"] = suites.pop("icl-arith")
    suites["[0pt] cot"] = suites.pop("cot-arith")
    suites["[0pt] cot"]["primary_metric"] = "exact_match,strict-match & 100%"
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_tables_structure_with_hostile_names(hostile_run: Path) -> None:
    tex = render_latex(read_record(hostile_run))
    tables = check_tex(tex)
    assert len(tables) == 4  # headline + one per suite
    # 2 label columns + 4 models + 3 retention columns in the headline; 1 + 4 + 3 per suite
    assert [t["columns"] for t in tables] == [9, 8, 8, 8]
    assert r"stud\textbackslash{}input\{/etc/passwd\}" in tex
    assert r"s2\textbackslash{}write18\{id\}\{" in tex
    assert r"teach\&er\_\%1" in tex and r"base\$\textasciicircum{}\textasciitilde{}\#" in tex
    assert "{[}0pt{]} cot" in tex
    assert r"\label{tab:dh-icl-arith-catcode-11-x}" in tex and r"\label{tab:dh-0pt-cot}" in tex
    assert len(set(re.findall(r"\\label\{([^}]*)\}", tex))) == 4


def test_headline_values_and_bold(tmp_path: Path) -> None:
    run = write_fake_record(tmp_path / "run", n_items=10)
    record = read_record(run)
    tex = render_latex(record)
    check_tex(tex)
    icl = record.metrics["suites"]["icl-arith"]
    row = next(line for line in tex.splitlines() if line.startswith("icl-arith & k=4 & "))
    cells = row.removesuffix(r" \\").split(" & ")
    scores = {m: icl["variants"]["k=4"][m] for m in ("teacher", "base", "student", "student-topk")}
    best = max(round(100 * s["score"], 1) for s in scores.values())
    for cell, stats in zip(cells[2:6], scores.values(), strict=True):
        value = f"{100 * stats['score']:.1f}"
        ci = rf"{{\scriptsize [{100 * stats['ci_low']:.1f}, {100 * stats['ci_high']:.1f}]}}"
        shown = rf"\textbf{{{value}}}" if round(100 * stats["score"], 1) == best else value
        assert cell == f"{shown} {ci}"
    retention = [icl["retention"][m]["k=4"]["value"] for m in ("base", "student", "student-topk")]
    assert cells[6].removeprefix(r"\textbf{").startswith(f"{retention[0]:.2f}")
    # the teacher scores 0 on cot/direct: retention is undefined there
    direct = next(line for line in tex.splitlines() if line.startswith(r"direct {\scriptsize (baseline)}"))
    assert direct.endswith(r"-- & -- & -- \\")
    assert r"\caption{Headline:" in tex and r"\label{tab:dh-headline}" in tex
    comments = [line for line in tex.splitlines() if line.startswith("%")]
    assert any("a tie at the printed precision" in line for line in comments)


def test_labels_are_unique_and_safe() -> None:
    assert label_key("a.b") == label_key("a-b") == "a-b"
    assert label_key(r"\input{x}#") == "input-x"
    assert label_key("!!!") == "x"


def test_empty_record(tmp_path: Path) -> None:
    from harness.store.record import write_record

    write_record(tmp_path / "empty", {}, [], {})
    tex = render_latex(read_record(tmp_path / "empty"))
    assert "no suite results" in tex and r"\begin" not in tex


def test_write_outputs_latex(tmp_path: Path) -> None:
    run = write_fake_record(tmp_path / "run", n_items=4)
    written = write_outputs(run, {"latex"})
    assert written == {"latex": run / "tables.tex"}
    check_tex(written["latex"].read_text())


@pytest.mark.skipif(
    PDFLATEX is None, reason="pdflatex not installed (apt-get install texlive-latex-recommended)"
)
def test_tables_compile_with_pdflatex(hostile_run: Path, tmp_path: Path) -> None:
    (tmp_path / "tables.tex").write_text(render_latex(read_record(hostile_run)), encoding="utf-8")
    (tmp_path / "doc.tex").write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage[margin=1cm,landscape]{geometry}\n"
        "\\begin{document}\n\\input{tables}\n\\end{document}\n"
    )
    done = subprocess.run(
        [str(PDFLATEX), "-no-shell-escape", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    log = (tmp_path / "doc.log").read_text(errors="replace")
    assert done.returncode == 0, log[-3000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000
    assert "/etc/passwd)" not in log and "(/etc/passwd" not in log  # the \input was never run
    assert not re.search(r"^! ", log, re.M)
    pdftotext = shutil.which("pdftotext")
    if pdftotext:  # the attack is printed as text
        subprocess.run([pdftotext, "-layout", "doc.pdf", "doc.txt"], cwd=tmp_path, check=True, timeout=60)
        text = (tmp_path / "doc.txt").read_text()
        assert r"stud\input{/etc/passwd}" in text and r"s2\write18{id}{" in text
        assert "teach&er" in text and "%1" in text  # pdftotext reads OT1's \_ as a space
