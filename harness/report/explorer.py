"""The per-item explorer: every model's output on an item, each compared word by word with the teacher's.

The items reach the page twice. All of them (up to a cap per suite and variant) go into one
`<script type="application/json">` block that the page's inline script (harness.report.interactive)
filters and renders page by page with textContent only; the first page is also rendered as HTML by
the template, for readers with scripts off. Outputs are untrusted text: Jinja escapes the HTML, and
`json_for_script` escapes <, > and & so no text can close the data block or open a comment in it.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

from markupsafe import Markup

from harness.report.view import fmt_num, item_anchor, natural_key, num, ordered_suites
from harness.store.record import RunRecord

PAGE_SIZE = 20
WORD = re.compile(r"\w+\s*|[^\w\s]\s*|\s+")  # a word or one punctuation mark, with its trailing space
MIN_COMMON = 0.25  # below this share of tokens in common a diff is noise: the output is shown plain
AUTOJUNK_ABOVE = 4000  # tokens; past this difflib's popular-token heuristic keeps long diffs fast
SAME, ONLY_STUDENT, ONLY_TEACHER = 0, 1, -1
LITTLE_IN_COMMON = "little in common with the teacher's output: differences not marked"


Run = tuple[int, int, int, str]  # (op, start, end, text); start:end in UTF-16 units of the teacher's text


def _utf16_offsets(tokens: list[str]) -> list[int]:
    """Offsets of each token boundary in UTF-16 code units (what JavaScript's String.slice counts)."""
    out, at = [0], 0
    for tok in tokens:
        at += len(tok) + (0 if tok.isascii() else sum(1 for c in tok if ord(c) > 0xFFFF))
        out.append(at)
    return out


def diff_runs(teacher: str, other: str) -> list[Run] | None:
    """`other` against `teacher` word by word (difflib): runs of (op, start, end, text) with op 0 = in
    both, 1 = only in `other`, -1 = only in the teacher's; start:end locate runs of the teacher's text
    (0, 0 for op 1). None when they share too little (MIN_COMMON) for marked differences to help."""
    a, b = WORD.findall(teacher), WORD.findall(other)
    if not a or not b:
        return None
    opcodes = _opcodes(a, b)
    common = sum(i2 - i1 for tag, i1, i2, _, _ in opcodes if tag == "equal")
    if 2 * common < MIN_COMMON * (len(a) + len(b)):
        return None
    at = _utf16_offsets(a)
    out: list[Run] = []
    for tag, i1, i2, j1, j2 in opcodes:
        if tag == "equal":
            out.append((SAME, at[i1], at[i2], "".join(a[i1:i2])))
            continue
        if i2 > i1:
            out.append((ONLY_TEACHER, at[i1], at[i2], "".join(a[i1:i2])))
        if j2 > j1:
            out.append((ONLY_STUDENT, 0, 0, "".join(b[j1:j2])))
    return out


def _opcodes(a: list[str], b: list[str]) -> list[tuple[str, int, int, int, int]]:
    """difflib's opcodes for a -> b, with the common head and tail set aside first (cheap, and common:
    a student often starts and ends like its teacher)."""
    n = min(len(a), len(b))
    head = next((k for k in range(n) if a[k] != b[k]), n)
    tail = next((k for k in range(n - head) if a[-1 - k] != b[-1 - k]), n - head)
    mid_a, mid_b = a[head : len(a) - tail], b[head : len(b) - tail]
    matcher = difflib.SequenceMatcher(None, mid_a, mid_b, autojunk=len(mid_a) + len(mid_b) > AUTOJUNK_ABOVE)
    ops: list[tuple[str, int, int, int, int]] = [
        (str(tag), i1 + head, i2 + head, j1 + head, j2 + head)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes()
        if not (tag == "equal" and i1 == i2)
    ]
    if head:
        ops.insert(0, ("equal", 0, head, 0, head))
    if tail:
        ops.append(("equal", len(a) - tail, len(a), len(b) - tail, len(b)))
    return _merge_equal(ops)


def _merge_equal(ops: list[tuple[str, int, int, int, int]]) -> list[tuple[str, int, int, int, int]]:
    out: list[tuple[str, int, int, int, int]] = []
    for op in ops:
        if out and op[0] == "equal" and out[-1][0] == "equal":
            out[-1] = ("equal", out[-1][1], op[2], out[-1][3], op[4])
        else:
            out.append(op)
    return out


def word_diff(teacher: str, other: str) -> list[tuple[int, str]] | None:
    """diff_runs as (op, text) pairs."""
    runs = diff_runs(teacher, other)
    return None if runs is None else [(op, text) for op, _, _, text in runs]


def pack_runs(runs: list[Run]) -> list[Any]:
    """The page's compact form: text in both -> [start, end], only the teacher's -> [start, end, -1]
    (both slices of the teacher's output, which the page holds anyway), only this output's -> "text"."""
    return [
        text if op == ONLY_STUDENT else [start, end] if op == SAME else [start, end, -1]
        for op, start, end, text in runs
    ]


def json_for_script(value: Any) -> Markup:
    """JSON safe inside <script type="application/json">: no "<", ">" or "&" survives as such, so the
    text can neither end the element (</script>) nor enter the parser's escaped states (<!--)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text)  # escaped above; only ever placed in a JSON data block


def _group_rows(record: RunRecord) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    """(suite, variant) -> item id -> {"first": the first row seen, "answers": {model: row}}."""
    groups: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for row in record.items:
        key = (str(row.get("suite", "")), str(row.get("variant", "")))
        entry = groups.setdefault(key, {}).setdefault(
            str(row.get("item_id", "")), {"first": row, "answers": {}}
        )
        entry["answers"][str(row.get("model", ""))] = row
    return groups


def _order(record: RunRecord, keys: list[tuple[str, str]]) -> list[tuple[str, str]]:
    rank = {name: i for i, (name, _) in enumerate(ordered_suites(record.metrics.get("suites")))}

    def key(k: tuple[str, str]) -> tuple[Any, ...]:
        group = k[0].split(":", 1)[0]
        return (rank.get(k[0], rank.get(group, len(rank))), k[0], natural_key(k[1]))

    return sorted(keys, key=key)


def _answer(row: dict[str, Any], model: int, teacher_output: str | None, prompt: str) -> dict[str, Any]:
    score = num(row.get("score"))
    output = str(row.get("output", ""))
    runs = diff_runs(teacher_output, output) if teacher_output is not None else None
    own_prompt = str(row.get("prompt", ""))
    extracted = row.get("extracted")
    return {
        "model": model,
        "score": score,
        "extracted": None if extracted is None else str(extracted),
        "truncated": bool(row.get("truncated")),
        "output": output,
        "runs": runs,
        "prompt": None if own_prompt == prompt else own_prompt,
        "little": runs is None and bool(teacher_output) and bool(output),
    }


def _pack_answer(a: dict[str, Any]) -> list[Any]:
    """[model, score, extracted, truncated, output or packed diff(, own prompt(, little in common))]."""
    out = [a["model"], a["score"], a["extracted"], int(a["truncated"])]
    out.append(a["output"] if a["runs"] is None else pack_runs(a["runs"]))
    if a["prompt"] is not None or a["little"]:
        out.append(a["prompt"])
    if a["little"]:
        out.append(1)
    return out


def _entry(entry: dict[str, Any], names: tuple[str, str], order: list[str], teacher: str) -> dict[str, Any]:
    first, answers = entry["first"], entry["answers"]
    item_id, prompt = str(first.get("item_id", "")), str(first.get("prompt", ""))
    t_row = answers.get(teacher)
    t_out = str(t_row.get("output", "")) if t_row is not None else None
    return {
        "id": item_id,
        "anchor": item_anchor(names[0], names[1], item_id),
        "target": str(first.get("target", "")),
        "prompt": prompt,
        "answers": [
            _answer(answers[label], i, None if label == teacher else t_out, prompt)
            for i, label in enumerate(order)
            if label in answers
        ],
    }


def _options(keys: list[tuple[str, str]], suites: list[str], variants: list[str]) -> list[dict[str, Any]]:
    """The suite filter's choices: everything, each group of subtasks (bbh), each suite, and each of
    those per variant. `key` is what the paired tables' cell links name ("suite" or "suite\\nvariant")."""
    options: list[dict[str, Any]] = [{"label": "all suites", "suites": [], "variant": -1, "key": ""}]
    done: set[str] = set()

    def add(name: str, label: str, members: list[int]) -> None:
        names = {suites[i] for i in members}
        options.append({"label": label, "suites": members, "variant": -1, "key": name})
        for v in sorted({v for s, v in keys if s in names}, key=natural_key):
            options.append(
                {
                    "label": f"{name} · {v}",
                    "suites": members,
                    "variant": variants.index(v),
                    "key": f"{name}\n{v}",
                }
            )

    for suite in dict.fromkeys(s for s, _ in keys):
        group = suite.split(":", 1)[0] if ":" in suite else ""
        if group and group not in done:
            done.add(group)
            add(
                group,
                f"{group} (every subtask)",
                [i for i, s in enumerate(suites) if s.startswith(group + ":")],
            )
        add(suite, suite, [suites.index(suite)])
    return options


def score_text(score: float | None) -> tuple[str, str]:
    """The score pill's text and class (the page's script has the same rule)."""
    if score is None:
        return "undefined", "undef"
    if score in (0.0, 1.0):
        return ("right", "good") if score else ("wrong", "bad")
    return fmt_num(score), "good" if score >= 1 else "bad" if score <= 0 else "fair"


def explorer_view(record: RunRecord, models: list[dict[str, str]], cap: int) -> dict[str, Any]:
    """The explorer's data (every item up to `cap` per suite and variant) and its first page as dicts."""
    groups = _group_rows(record)
    keys = _order(record, list(groups))
    order = [m["label"] for m in models]
    teacher = next((m["label"] for m in models if m["role"] == "teacher"), "")
    suites = list(dict.fromkeys(s for s, _ in keys))
    variants = sorted({v for _, v in keys}, key=natural_key)
    items: list[dict[str, Any]] = []
    packed: list[list[Any]] = []
    capped: list[dict[str, Any]] = []
    for suite, variant in keys:
        entries = list(groups[(suite, variant)].values())
        if len(entries) > cap:
            capped.append({"suite": suite, "variant": variant, "n": len(entries), "shown": cap})
        for raw in entries[:cap]:
            entry = _entry(raw, (suite, variant), order, teacher)
            pos = [suites.index(suite), variants.index(variant)]
            packed.append(
                [*pos, entry["id"], entry["anchor"], entry["target"], entry["prompt"]]
                + [[_pack_answer(a) for a in entry["answers"]]]
            )
            if len(items) < PAGE_SIZE:
                items.append(_item_view(entry, suite, variant, order))
    data = {
        "models": order,
        "roles": [m["role"] for m in models],
        "teacher": order.index(teacher) if teacher in order else -1,
        "suites": suites,
        "variants": variants,
        "options": _options(keys, suites, variants),
        "pageSize": PAGE_SIZE,
        "little": LITTLE_IN_COMMON,
        "items": packed,
    }
    return {
        "n_items": sum(len(g) for g in groups.values()),
        "n_embedded": len(packed),
        "capped": capped,
        "cap": cap,
        "page_size": PAGE_SIZE,
        "first_page": items,
        "teacher": teacher,
        "anchors": {it[3] for it in packed},
        "data_json": json_for_script(data),
    }


def _item_view(entry: dict[str, Any], suite: str, variant: str, order: list[str]) -> dict[str, Any]:
    """One item of the first page as named fields for the template (the script renders the same markup)."""
    answers = []
    for a in entry["answers"]:
        text, cls = score_text(a["score"])
        answers.append(
            {
                "model": order[a["model"]],
                "score": text,
                "cls": cls,
                "extracted": "(nothing extracted)" if a["extracted"] is None else a["extracted"],
                "truncated": a["truncated"],
                "plain": a["output"] if a["runs"] is None else "",
                "segments": [{"op": op, "text": t} for op, _, _, t in a["runs"] or []],
                "prompt": a["prompt"] or "",
                "note": LITTLE_IN_COMMON if a["little"] else "",
            }
        )
    return {
        **entry,
        "suite": suite,
        "variant": variant,
        "answers": answers,
        "differ": len({a["score"] for a in answers}) > 1,
    }
