"""`tables.tex` for papers: booktabs tables of the headline and of each suite, values with 95% CIs.

Every string from the record (model labels, suite, variant and metric names) is untrusted: it goes
through `escape_latex`, which leaves no character TeX treats specially, so `\\input{/etc/passwd}` or
`\\write18` in a label is printed, never run. The file is meant to be `\\input` into a paper that loads
`booktabs`; it compiles with pdflatex (non-ASCII characters it cannot typeset become "?").

Bold marks the best value of each row among the models (highest score or gain) and, separately, among
the other models (highest retention). Values are compared as printed, so a tie at the printed precision
bolds every tied value; a row where every defined value ties, or with fewer than two, has no bold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from harness.report.view import (
    as_dict,
    estimate,
    headline_variant,
    model_list,
    natural_key,
    num,
    ordered_suites,
)
from harness.store.record import RunRecord

UNDEFINED = "--"
_SPECIAL = {
    "\\": r"\textbackslash{}",
    "{": r"\{",
    "}": r"\}",
    "$": r"\$",
    "&": r"\&",
    "%": r"\%",
    "#": r"\#",
    "_": r"\_",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    "[": "{[}",  # "[" after \\ would be read as the row's optional spacing argument
    "]": "{]}",
    '"': "''",  # OT1 fonts print a bare " as a closing quote anyway
    "\u2212": "-",
    "\u2013": "--",
    "\u2014": "---",
    "\u2026": r"\ldots{}",
    "\u2265": r"$\geq$",
    "\u2264": r"$\leq$",
    "\u00b1": r"$\pm$",
    "\u00b7": r"$\cdot$",
    "\u2018": "`",
    "\u2019": "'",
    "\u201c": "``",
    "\u201d": "''",
}
# Latin-1 letters pdflatex's default utf8 input handles (À-ÿ, without × and ÷)
_LATIN_LETTERS = {chr(c) for c in range(0xC0, 0x100)} - {"\u00d7", "\u00f7"}


def escape_latex(text: Any) -> str:
    """`text` as TeX that prints it literally in a paragraph or table cell.

    Whitespace and control characters become single spaces (a blank line would end a table cell's
    paragraph), TeX's specials are escaped, and characters pdflatex cannot print become "?".
    """
    out = []
    for ch in re.sub(r"[\s\x00-\x1f\x7f]+", " ", str(text)):
        if ch in _SPECIAL:
            out.append(_SPECIAL[ch])
        elif " " <= ch <= "~" or ch in _LATIN_LETTERS:
            out.append(ch)
        else:
            out.append("?")
    return "".join(out)


def label_key(text: str) -> str:
    """A \\label key from a record string: [a-z0-9-] only."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "x"


@dataclass(frozen=True)
class Num:
    """A value with its CI, printed as a percentage, a ratio or a difference in points."""

    value: float | None
    low: float | None = None
    high: float | None = None
    kind: str = "pct"  # pct | ratio | pp

    def fmt(self, x: float) -> str:
        """Plain text: 61.1 (percent), 0.95 (ratio), +12.3 (points)."""
        if self.kind == "ratio":
            return f"{x:.2f}"
        return f"{100 * x:+.1f}" if self.kind == "pp" else f"{100 * x:.1f}"

    def printed(self) -> str | None:
        """The value as printed (what ties are judged on); None when undefined."""
        return None if self.value is None else self.fmt(self.value)

    def ci(self) -> tuple[str, str] | None:
        if self.value is None or self.low is None or self.high is None:
            return None
        return self.fmt(self.low), self.fmt(self.high)

    def tex(self, bold: bool = False) -> str:
        shown = self.printed()
        if shown is None:
            return UNDEFINED
        body = rf"\textbf{{{_tex_minus(shown)}}}" if bold else _tex_minus(shown)
        ci = self.ci()
        return body if ci is None else rf"{body} {{\scriptsize [{_tex_minus(ci[0])}, {_tex_minus(ci[1])}]}}"


def _tex_minus(text: str) -> str:
    """A leading "-" as a math minus (a hyphen in text mode is too short)."""
    return "$-$" + text[1:] if text.startswith("-") else text


def score_num(stats: Any) -> Num:
    s = as_dict(stats)
    return Num(num(s.get("score")), num(s.get("ci_low")), num(s.get("ci_high")))


def estimate_num(value: Any, kind: str) -> Num:
    e = estimate(value)
    return Num(num(e.get("value")), num(e.get("ci_low")), num(e.get("ci_high")), kind)


def best_flags(cells: list[Num]) -> list[bool]:
    """Which cells are bold: the highest printed value(s) (see the module docstring for ties)."""
    defined = [c.value for c in cells if c.value is not None]
    if len(defined) < 2:
        return [False] * len(cells)
    top = Num(max(defined), kind=cells[0].kind).printed()
    if all(c.printed() == top for c in cells if c.value is not None):
        return [False] * len(cells)  # every value ties: nothing stands out
    return [c.printed() == top for c in cells]


def bold_best(cells: list[Num]) -> list[str]:
    """Each cell as TeX, the best in bold."""
    return [c.tex(bold=b) for c, b in zip(cells, best_flags(cells), strict=True)]


@dataclass
class Row:
    labels: list[str]  # TeX (escaped)
    models: list[Num]
    students: list[Num]

    def tex(self) -> str:
        return " & ".join(self.labels + bold_best(self.models) + bold_best(self.students)) + r" \\"


def _table(
    caption: str,
    label: str,
    label_heads: list[str],
    models: list[dict[str, str]],
    students: list[dict[str, str]],
    sections: list[tuple[str, list[Row]]],
) -> str:
    """A booktabs table. sections: (title, rows); a title, when given, is a full-width italic line above
    its rows (TeX already: it says what the columns hold for those rows)."""
    n_lab, n_mod, n_stu = len(label_heads), len(models), len(students)
    width = n_lab + n_mod + n_stu
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        r"\setlength{\tabcolsep}{4pt}",
        rf"\caption{{{caption}}}",
        rf"\label{{{label}}}",
        r"\begin{tabular}{" + "l" * n_lab + "r" * (n_mod + n_stu) + "}",
        r"\toprule",
    ]
    top = [""] * n_lab + [rf"\multicolumn{{{n_mod}}}{{c}}{{Models}}"]
    rules = [rf"\cmidrule(lr){{{n_lab + 1}-{n_lab + n_mod}}}"]
    if n_stu:
        top.append(rf"\multicolumn{{{n_stu}}}{{c}}{{Retention}}")
        rules.append(rf"\cmidrule(lr){{{n_lab + n_mod + 1}-{width}}}")
    lines += [" & ".join(top) + r" \\", " ".join(rules)]
    names = (
        label_heads
        + [escape_latex(m["label"]) for m in models]
        + [escape_latex(s["label"]) for s in students]
    )
    roles = [""] * n_lab + [_role(m) for m in models] + [""] * n_stu
    lines += [" & ".join(names) + r" \\", " & ".join(roles) + r" \\", r"\midrule"]
    for i, (title, rows) in enumerate(sections):
        if i:
            lines.append(r"\midrule")
        if title:
            lines.append(rf"\multicolumn{{{width}}}{{l}}{{\emph{{{title}}}}} \\")
        lines += [row.tex() for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def _role(model: dict[str, str]) -> str:
    """The model's role under its name, unless the name says it already."""
    return "" if model["role"] == model["label"] else rf"{{\scriptsize {escape_latex(model['role'])}}}"


def students_of(models: list[dict[str, str]]) -> list[dict[str, str]]:
    return [m for m in models if m["role"] != "teacher"]


def headline_data(
    suites: dict[str, Any], models: list[dict[str, str]]
) -> list[tuple[str, str, list[Num], list[Num]]]:
    """Per top-level suite: (suite, headline variant, score per model, retention per non-teacher model);
    record strings unescaped (the LaTeX and Markdown writers escape them their own way)."""
    students = students_of(models)
    out = []
    for name, summary in ordered_suites(suites):
        if summary.get("group"):
            continue
        per_variant = as_dict(summary.get("variants"))
        variant = headline_variant(summary, sorted(per_variant, key=natural_key))
        stats = as_dict(per_variant.get(variant))
        retention = as_dict(summary.get("retention"))
        out.append(
            (
                name,
                variant,
                [score_num(stats.get(m["label"])) for m in models],
                [estimate_num(as_dict(retention.get(s["label"])).get(variant), "ratio") for s in students],
            )
        )
    return out


def headline_table(suites: dict[str, Any], models: list[dict[str, str]]) -> str:
    students = students_of(models)
    rows = [
        Row([escape_latex(name), escape_latex(variant)], scores, retention)
        for name, variant, scores, retention in headline_data(suites, models)
    ]
    caption = (
        r"Headline: each suite's primary metric (\%) on its headline variant, with 95\% bootstrap CIs"
        + (r", and retention (student / teacher) with paired-bootstrap 95\% CIs" if students else "")
        + r". Bold: the best value per row among the models and among the retention columns (ties all bold); "
        + rf"{UNDEFINED}: undefined."
    )
    return _table(
        caption,
        "tab:dh-headline",
        ["Suite", "Variant"],
        models,
        students,
        [("", rows)],
    )


def _gain_retention(summary: dict[str, Any], teacher: str | None, student: str, variant: str) -> Num:
    """The record's gain retention (with CI) or, in records without it, a point estimate."""
    recorded = summary.get("gain_retention")
    if isinstance(recorded, dict):
        return estimate_num(as_dict(recorded.get(student)).get(variant), "ratio")
    gains = as_dict(summary.get("gain"))
    t = num(estimate(as_dict(gains.get(teacher)).get(variant)).get("value")) if teacher else None
    s = num(estimate(as_dict(gains.get(student)).get(variant)).get("value"))
    return Num(s / t if t is not None and s is not None and t > 0 else None, kind="ratio")


def suite_table(name: str, summary: dict[str, Any], models: list[dict[str, str]], key: str) -> str:
    """Scores per variant (and retention), then gains over the baseline variant (and gain retention)."""
    students = students_of(models)
    teacher = next((m["label"] for m in models if m["role"] == "teacher"), None)
    per_variant = as_dict(summary.get("variants"))
    variants = sorted(per_variant, key=natural_key)
    baseline = str(summary.get("baseline_variant") or "")
    retention = as_dict(summary.get("retention"))
    scores = [
        Row(
            [escape_latex(v) + (r" {\scriptsize (baseline)}" if v == baseline else "")],
            [score_num(as_dict(per_variant[v]).get(m["label"])) for m in models],
            [estimate_num(as_dict(retention.get(s["label"])).get(v), "ratio") for s in students],
        )
        for v in variants
    ]
    metric = escape_latex(summary.get("primary_metric") or "score")
    sections = [(rf"{metric} (\%)" if len(variants) > 1 else "", scores)]
    gains = as_dict(summary.get("gain"))
    gain_rows = [
        Row(
            [escape_latex(v)],
            [estimate_num(as_dict(gains.get(m["label"])).get(v), "pp") for m in models],
            [_gain_retention(summary, teacher, s["label"], v) for s in students],
        )
        for v in variants
        if v != baseline and baseline and any(v in as_dict(gains.get(m["label"])) for m in models)
    ]
    if gain_rows:
        tail = "; retention columns: gain retention" if students else ""
        sections.append((rf"gain over {escape_latex(baseline)} (points){tail}", gain_rows))
    caption = (
        rf"Suite {escape_latex(name)}: {metric} (\%) per variant with 95\% bootstrap CIs"
        + (", retention with paired-bootstrap 95\\% CIs" if students else "")
        + (
            rf"; gains over {escape_latex(baseline)} in points (paired), gain retention = student gain /"
            " teacher gain"
            if gain_rows
            else ""
        )
        + rf". Bold: best per row (ties all bold); {UNDEFINED}: undefined."
    )
    return _table(caption, f"tab:dh-{key}", ["Variant"], models, students, sections)


def subtask_table(
    name: str,
    summary: dict[str, Any],
    members: list[tuple[str, dict[str, Any]]],
    models: list[dict[str, str]],
    key: str,
) -> str:
    """A group's subtasks: the headline variant's score (and retention), then the gain over the baseline
    (and gain retention), one row per subtask."""
    students = students_of(models)
    teacher = next((m["label"] for m in models if m["role"] == "teacher"), None)
    variant = headline_variant(summary, sorted(as_dict(summary.get("variants")), key=natural_key))
    baseline = str(summary.get("baseline_variant") or "")
    score_rows, gain_rows = [], []
    for member, sub in members:
        label = [escape_latex(member.split(":", 1)[-1])]
        stats = as_dict(as_dict(sub.get("variants")).get(variant))
        retention = as_dict(sub.get("retention"))
        score_rows.append(
            Row(
                label,
                [score_num(stats.get(m["label"])) for m in models],
                [estimate_num(as_dict(retention.get(s["label"])).get(variant), "ratio") for s in students],
            )
        )
        gains = as_dict(sub.get("gain"))
        if baseline and variant != baseline:
            gain_rows.append(
                Row(
                    label,
                    [estimate_num(as_dict(gains.get(m["label"])).get(variant), "pp") for m in models],
                    [_gain_retention(sub, teacher, s["label"], variant) for s in students],
                )
            )
    v, b = escape_latex(variant), escape_latex(baseline)
    sections = [(rf"score on {v} (\%)", score_rows)]
    if gain_rows:
        tail = "; retention columns: gain retention" if students else ""
        sections.append((rf"gain of {v} over {b} (points){tail}", gain_rows))
    caption = (
        rf"Subtasks of {escape_latex(name)}: score on {v} (\%) with 95\% CIs"
        + (rf" and the gain over {b} in points" if gain_rows else "")
        + rf". Bold: best per row (ties all bold); {UNDEFINED}: undefined."
    )
    return _table(caption, f"tab:dh-{key}-subtasks", ["Subtask"], models, students, sections)


HEADER = r"""%% tables.tex: written by distill-harness from the run record %(run)s.
%% \input{tables} in a document that loads booktabs (\usepackage{booktabs}); pdflatex, xelatex or lualatex.
%% Many models make wide tables: in a two-column paper use table* (or \resizebox from graphicx).
%% Scores in %%, 95%% bootstrap CIs in brackets; retention = student / teacher (paired bootstrap).
%% Bold: the best value of each row among the models (highest score or gain) and, separately, among
%% the other models (highest retention). Values are compared as printed: a tie at the printed precision
%% bolds every tied value; a row where all defined values tie, or with fewer than two, has no bold.
%% -- : undefined (e.g. retention when the teacher scores 0; the HTML report says why).
"""


def render_latex(record: RunRecord) -> str:
    """The whole tables.tex: the headline table, then one table per suite (and its subtasks)."""
    models = model_list(record)
    suites = as_dict(record.metrics.get("suites"))
    parts = [HEADER % {"run": escape_latex(str(record.run_dir))}]
    if not any(not s.get("group") for _, s in ordered_suites(suites)):
        parts.append("% This record has no suite results.\n")
        return "\n".join(parts)
    parts.append(headline_table(suites, models))
    keys: set[str] = {"headline"}
    for name, summary in ordered_suites(suites):
        if summary.get("group"):
            continue
        key = _unique(label_key(name), keys)
        parts.append(suite_table(name, summary, models, key))
        members = [(str(m), as_dict(suites[m])) for m in summary.get("members") or [] if m in suites]
        if members:
            parts.append(subtask_table(name, summary, members, models, key))
    return "\n".join(parts)


def _unique(key: str, taken: set[str]) -> str:
    candidate, i = key, 2
    while candidate in taken:
        candidate, i = f"{key}-{i}", i + 1
    taken.add(candidate)
    return candidate
