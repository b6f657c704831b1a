"""A student's KD details: the worst sequences and tokens (with context), the tokenizer verdict,
NLL / perplexity on the scored text, and top-k coverage."""

from __future__ import annotations

from typing import Any

from harness.report.kd_format import ci3
from harness.report.view import as_dict, fmt_count, fmt_num, fmt_pct, num

CONTEXT_CHARS = 120  # characters of context shown on each side of a worst token


def _visible(token: str) -> str:
    """A single token's text with its whitespace made visible (a leading space matters)."""
    return token.replace(" ", "␣").replace("\n", "⏎").replace("\t", "⇥") if token else "∅"


def _prob(value: Any) -> str:
    x = num(value)
    return "?" if x is None else (f"{100 * x:.1f}%" if x >= 0.001 else f"{x:.1e}")


def _tok_view(entry: Any, key: str = "prob") -> dict[str, str]:
    entry = as_dict(entry)
    return {
        "text": _visible(str(entry.get("text", ""))),
        "id": str(entry.get("id", "?")),
        "p": _prob(entry.get(key)),
    }


def worst_view(worst: dict[str, Any], lower_bound: bool) -> dict[str, Any] | None:
    seqs, toks = worst.get("sequences"), worst.get("tokens")
    if not isinstance(seqs, list) or not isinstance(toks, list):
        return None
    bound = "≥ " if lower_bound else ""
    return {
        "t": str(worst.get("t", "1")),
        "sequences": [
            {
                "seq_id": str(row.get("seq_id", "")),
                "mean": bound + fmt_num(row.get("mean")),
                "max": bound + fmt_num(row.get("max")),
                "n_tokens": fmt_count(row.get("n_tokens")),
                "prompt_tail": str(row.get("prompt_tail", ""))[-CONTEXT_CHARS:],
                "text": str(row.get("text", "")),
            }
            for row in map(as_dict, seqs)
        ],
        "tokens": [
            {
                "seq_id": str(row.get("seq_id", "")),
                "position": str(row.get("position", "")),
                "value": bound + fmt_num(row.get("value")),
                "before": str(row.get("before", ""))[-CONTEXT_CHARS:],
                "after": str(row.get("after", ""))[:CONTEXT_CHARS],
                "token": {
                    **_tok_view(row.get("token"), "teacher_prob"),
                    "p_student": _prob(as_dict(row.get("token")).get("student_prob")),
                },
                "teacher_top1": _tok_view(row.get("teacher_top1")),
                "student_top1": _tok_view(row.get("student_top1")),
            }
            for row in map(as_dict, toks)
        ],
    }


def tokenizer_view(verdict: dict[str, Any]) -> dict[str, str] | None:
    if not verdict:
        return None
    sizes = ""
    if num(verdict.get("teacher_size")) is not None:
        sizes = (
            f"teacher {fmt_count(verdict.get('teacher_size'))} tokens, student "
            f"{fmt_count(verdict.get('student_size'))}, {fmt_count(verdict.get('shared_tokens'))} shared, "
            f"{fmt_count(verdict.get('shared_same_id'))} with the same id"
        )
    special = as_dict(verdict.get("special_differences"))
    return {
        "verdict": str(verdict.get("verdict", "")),
        "identical": "yes" if verdict.get("identical") else "no",
        "sizes": sizes,
        "compared": str(verdict.get("compared", "")),
        "special": "; ".join(f"{role}: {pair}" for role, pair in special.items()),
    }


def _nll_line(stats: dict[str, Any]) -> dict[str, str] | None:
    if num(stats.get("nll_per_token")) is None:
        return None
    ci = ci3(stats.get("ci_low"), stats.get("ci_high"))
    ppl_lo, ppl_hi = num(stats.get("perplexity_ci_low")), num(stats.get("perplexity_ci_high"))
    return {
        "nll": fmt_num(stats.get("nll_per_token")),
        "ci": ci,
        "ppl": fmt_num(stats.get("perplexity")),
        "ppl_ci": "" if ppl_lo is None or ppl_hi is None else f"[{fmt_num(ppl_lo)}, {fmt_num(ppl_hi)}]",
        "bpb": fmt_num(stats.get("bits_per_byte")),
        "n_tokens": fmt_count(stats.get("n_tokens")),
    }


def nll_view(nll: dict[str, Any]) -> dict[str, Any] | None:
    rows = []
    for who in ("student", "teacher"):
        line = _nll_line(as_dict(nll.get(who)))
        if line:
            rows.append({"who": who, **line})
    if not rows:
        return None
    return {"text": str(nll.get("text", "")), "tokenization": str(nll.get("tokenization", "")), "rows": rows}


def coverage_view(coverage: dict[str, Any]) -> str:
    if num(coverage.get("mean")) is None:
        return ""
    return ", ".join(f"{k} {fmt_pct(coverage.get(k))}" for k in ("median", "p10", "p1", "min"))
