"""A run record as pandas DataFrames, for notebooks: `harness.load_run(RUN_DIR)`.

pandas is optional (not needed to run or report a comparison); load_run says how to get it.
Frames are built from the record tolerantly, like the report: keys a record lacks (older runs) give
missing values, never an error.

- items:   one row per item result: suite, variant, item_id, model, role, score, extracted, truncated,
           target, output, and every per-item metric as its own column.
- metrics: one row per suite / variant / model: score with its CI and n, the headline rank, and the
           estimates against the teacher (retention, gain, gain retention, chance-corrected retention,
           gap closed, difference) as VALUE, VALUE_ci_low, VALUE_ci_high, VALUE_note columns.
- kd:      one row per student / text (off- or on-policy) / temperature / metric with its summary stats.
- paired:  one row per comparison (teacher vs model, model vs model) per suite and variant: the
           difference a - b with its CI, the McNemar 2x2 counts, p and Holm-adjusted p_holm.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError
from harness.store.record import RunRecord, read_record

if TYPE_CHECKING:
    import pandas as pd

ITEM_COLUMNS = (
    "suite",
    "variant",
    "item_id",
    "model",
    "role",
    "score",
    "extracted",
    "truncated",
    "target",
    "output",
)
ROW_KEYS = {"score", "ci_low", "ci_high", "n", "truncated"}
METRIC_COLUMNS = ("suite", "variant", "model", "role", "score", "ci_low", "ci_high", "n")
KD_COLUMNS = ("student", "text", "semantics", "top_k", "temperature", "metric", "mean", "ci_low", "ci_high")
PAIRED_COLUMNS = (
    "suite",
    "variant",
    "kind",
    "a",
    "b",
    "diff",
    "diff_ci_low",
    "diff_ci_high",
    "n",
    "p",
    "p_holm",
)
ESTIMATES = ("retention", "gain", "gain_retention", "chance_retention", "gap_closed", "diff_vs_teacher")


@dataclass(frozen=True)
class RunFrames:
    """The DataFrames of one run (see the module doc), and the record they came from."""

    items: pd.DataFrame
    metrics: pd.DataFrame
    kd: pd.DataFrame
    paired: pd.DataFrame
    record: RunRecord


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as exc:
        raise HarnessError(
            "harness.load_run needs pandas, which is optional: pip install pandas "
            "(or install distill-harness with its notebook extra)"
        ) from exc
    return pandas


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _estimate(prefix: str, value: Any) -> dict[str, Any]:
    """An estimate dict (or a bare number, as old records hold gains) as four flat columns."""
    est = value if isinstance(value, dict) else {"value": value}
    return {
        prefix: est.get("value"),
        f"{prefix}_ci_low": est.get("ci_low"),
        f"{prefix}_ci_high": est.get("ci_high"),
        f"{prefix}_note": est.get("note"),
    }


def _roles(record: RunRecord) -> dict[str, str]:
    return {
        label: str(_dict(entry).get("role", "model"))
        for label, entry in _dict(record.manifest.get("models")).items()
    }


def item_rows(record: RunRecord, roles: dict[str, str]) -> list[dict[str, Any]]:
    rows = []
    for item in record.items:
        row = {key: item.get(key) for key in ITEM_COLUMNS if key != "role"}
        row["role"] = roles.get(str(item.get("model")), "model")
        for name, value in _dict(item.get("metrics")).items():
            row[name if name not in ITEM_COLUMNS else f"metric:{name}"] = value
        rows.append(row)
    return rows


def metric_rows(record: RunRecord, roles: dict[str, str]) -> list[dict[str, Any]]:
    rows = []
    for suite, summary in _dict(record.metrics.get("suites")).items():
        summary = _dict(summary)
        headline = summary.get("headline_variant")
        ranks = {
            e.get("model"): e.get("rank")
            for e in _dict(summary.get("ranking")).get("models") or []
            if isinstance(e, dict)
        }
        for variant, per_model in _dict(summary.get("variants")).items():
            for model, stats in _dict(per_model).items():
                stats = _dict(stats)
                row: dict[str, Any] = {
                    "suite": suite,
                    "group": summary.get("group"),
                    "ability": summary.get("ability"),
                    "variant": variant,
                    "is_baseline": variant == summary.get("baseline_variant"),
                    "is_headline": variant == headline,
                    "model": model,
                    "role": roles.get(model, "model"),
                    "primary_metric": summary.get("primary_metric"),
                    **{key: stats.get(key) for key in ("score", "ci_low", "ci_high", "n", "truncated")},
                    "rank": ranks.get(model) if variant == headline else None,
                }
                paired = _dict(_dict(_dict(summary.get("paired")).get(model)).get(variant))
                sources = {
                    "retention": _dict(summary.get("retention")),
                    "gain": _dict(summary.get("gain")),
                    "gain_retention": _dict(summary.get("gain_retention")),
                }
                for name in ESTIMATES:
                    if name in sources:
                        value = _dict(sources[name].get(model)).get(variant)
                    else:
                        value = paired.get("diff" if name == "diff_vs_teacher" else name)
                    row.update(_estimate(name, value))
                for key, value in stats.items():
                    if key in ROW_KEYS:
                        continue
                    if (
                        isinstance(value, dict) and "value" in value
                    ):  # clustered (instruction-level) estimates
                        row.update(_estimate(key, value))
                    elif isinstance(value, int | float) and not isinstance(value, bool):
                        row[key] = value
                rows.append(row)
    return rows


def kd_rows(record: RunRecord) -> list[dict[str, Any]]:
    rows = []
    for student, entry in _dict(record.metrics.get("kd")).items():
        entry = _dict(entry)
        for text, block in (("off_policy", entry), ("on_policy", _dict(entry.get("on_policy")))):
            for temperature, per_metric in _dict(block.get("temperatures")).items():
                for metric, summary in _dict(per_metric).items():
                    rows.append(
                        {
                            "student": student,
                            "text": text,
                            "semantics": block.get("semantics"),
                            "top_k": block.get("top_k"),
                            "temperature": float(temperature),
                            "metric": metric,
                            **_dict(summary),
                        }
                    )
    return rows


def _comparison(
    suite: str, variant: str, kind: str, a: str, b: str, entry: dict[str, Any], family: Any
) -> dict[str, Any]:
    test = _dict(entry.get("mcnemar"))
    a_only, b_only = ("student_only", "teacher_only") if kind == "teacher" else ("a_only", "b_only")
    diff = _dict(entry.get("diff"))
    return {
        "suite": suite,
        "variant": variant,
        "kind": kind,
        "a": a,
        "b": b,
        "diff": diff.get("value"),
        "diff_ci_low": diff.get("ci_low"),
        "diff_ci_high": diff.get("ci_high"),
        "n": diff.get("n", test.get("n")),
        "both_right": test.get("both_right"),
        "a_only": test.get(a_only),
        "b_only": test.get(b_only),
        "neither": test.get("neither"),
        "p": test.get("p_value"),
        "p_holm": test.get("p_holm"),
        "holm_family_size": family,
    }


def paired_rows(record: RunRecord, roles: dict[str, str]) -> list[dict[str, Any]]:
    """Teacher vs model rows have a = the model, b = the teacher (diff = model - teacher)."""
    rows = []
    teacher = next((label for label, role in roles.items() if role == "teacher"), "teacher")
    for suite, summary in _dict(record.metrics.get("suites")).items():
        summary = _dict(summary)
        family = _dict(summary.get("multiple_comparisons")).get("family_size")
        for model, per_variant in _dict(summary.get("paired")).items():
            for variant, entry in _dict(per_variant).items():
                rows.append(_comparison(suite, variant, "teacher", model, teacher, _dict(entry), family))
        for pair, per_variant in _dict(summary.get("pairwise")).items():
            for variant, entry in _dict(per_variant).items():
                entry = _dict(entry)
                a, _, b = pair.partition(" vs ")
                rows.append(
                    _comparison(
                        suite, variant, "pairwise", entry.get("a", a), entry.get("b", b), entry, family
                    )
                )
    return rows


def load_run(path: Path | str) -> RunFrames:
    """Read a finished run folder (the --out of a compare) into DataFrames."""
    pandas = _pandas()
    record = read_record(path)
    roles = _roles(record)

    def frame(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> pd.DataFrame:
        return pandas.DataFrame(rows) if rows else pandas.DataFrame(columns=list(columns))

    return RunFrames(
        items=frame(item_rows(record, roles), ITEM_COLUMNS),
        metrics=frame(metric_rows(record, roles), METRIC_COLUMNS),
        kd=frame(kd_rows(record), KD_COLUMNS),
        paired=frame(paired_rows(record, roles), PAIRED_COLUMNS),
        record=record,
    )
