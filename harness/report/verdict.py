"""The regression gate's verdict, when a run folder holds one: RUN_DIR/regress.json.

Written by the gate after comparing this run (current) with a baseline run:
{"baseline": str, "current": str, "verdict": "pass" | "regression",
 "metrics": [{"suite", "variant", "metric", "model", "baseline", "current", "diff", "margin",
              "p_value", "p_holm", "regressed": bool, and since the non-inferiority default:
              "test", "p_worse", "drop_upper", "status" (the gate's verdict on the metric in words)}]}
Read tolerantly like the rest of the record: a file that is not valid JSON gives a warning banner,
not a failed report; missing keys show as "?".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.report.view import as_dict, fmt_num, num

FILE_NAME = "regress.json"
VERDICTS = ("pass", "regression")


def _p(value: Any) -> str:
    x = num(value)
    return "—" if x is None else "< 0.001" if x < 0.001 else f"{x:.3f}"


def _row(entry: Any) -> dict[str, Any]:
    e = as_dict(entry)
    diff = num(e.get("diff"))
    return {
        "suite": str(e.get("suite", "?")),
        "variant": str(e.get("variant", "?")),
        "metric": str(e.get("metric", "?")),
        "model": str(e.get("model", "?")),
        "baseline": fmt_num(e.get("baseline")),
        "current": fmt_num(e.get("current")),
        "diff": "undefined" if diff is None else f"{diff:+.3f}",
        "margin": fmt_num(e.get("margin")),
        "margin_source": str(e.get("margin_source") or ""),
        "p_value": _p(e.get("p_value")),
        "p_holm": _p(e.get("p_holm")),
        "regressed": e.get("regressed") is True,
        "status": str(e.get("status") or ("regressed" if e.get("regressed") is True else "ok")),
        "drop_upper": fmt_num(e.get("drop_upper")),
    }


def verdict_view(run_dir: Path) -> dict[str, Any] | None:
    """The verdict section's display values, or None when the run has no regress.json."""
    path = Path(run_dir) / FILE_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return _broken(path, str(exc))
    if not isinstance(data, dict):
        return _broken(path, "the file does not hold a JSON object")
    rows = [_row(m) for m in data.get("metrics") or [] if isinstance(m, dict)]
    rows.sort(key=lambda r: not r["regressed"])  # regressions first, otherwise in the gate's order
    verdict = str(data.get("verdict", ""))
    tests = {str(m.get("test")) for m in data.get("metrics") or [] if isinstance(m, dict) and m.get("test")}
    return {
        "test": tests.pop() if len(tests) == 1 else "regression",
        "verdict": verdict if verdict in VERDICTS else "unknown",
        "verdict_text": verdict or "not given",
        "baseline": str(data.get("baseline", "?")),
        "current": str(data.get("current", "?")),
        "rows": rows,
        "n_regressed": sum(r["regressed"] for r in rows),
        "error": "",
    }


def _broken(path: Path, why: str) -> dict[str, Any]:
    return {
        "verdict": "unknown",
        "test": "regression",
        "verdict_text": "unreadable",
        "baseline": "?",
        "current": "?",
        "rows": [],
        "n_regressed": 0,
        "error": f"{path} could not be read ({why}); rerun the regression gate to rewrite it",
    }


def regressed_cells(view: dict[str, Any] | None) -> set[tuple[str, str, str, str]]:
    """(suite, variant, model, metric) of every regressed metric, to mark those score cells (a suite's
    primary metric; the gate's other metrics, e.g. KD or instruction-level, are in its own table)."""
    if not view:
        return set()
    return {(r["suite"], r["variant"], r["model"], r["metric"]) for r in view["rows"] if r["regressed"]}
