"""What each model of a compare costs: memory measured at load, weights from the parameter count, and the
cost summary of metrics.json (throughput, retention per unit of cost)."""

from __future__ import annotations

from typing import Any

from harness.backends.base import ModelInfo

_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int8": 1}


def _weights_bytes(info: ModelInfo) -> int | None:
    if info.n_parameters is None:
        return None
    size = next((b for name, b in _DTYPE_BYTES.items() if name in str(info.dtype)), None)
    return info.n_parameters * size if size else None


def _rss_bytes() -> int | None:
    """This process's resident memory now (Linux), to measure what loading a model added."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    import os

    return pages * os.sysconf("SC_PAGE_SIZE")


def cost_summary(models: dict[str, dict[str, Any]], suites: dict[str, Any]) -> dict[str, Any]:
    """What each model costs, measured in this run on the same requests, and retention per unit of cost.

    Throughput is generated tokens per second of the suites phase; it is only comparable between
    models when both computed their requests (nothing from the cache), so it is None otherwise.
    Retention per cost: the mean headline retention over suites divided by the student's parameter
    fraction of the teacher (1.0 = as good per parameter as the teacher)."""
    teacher = next((label for label, m in models.items() if m["role"] == "teacher"), None)
    out: dict[str, Any] = {label: _cost_row(entry) for label, entry in models.items()}
    if teacher is None:
        return out
    t = out[teacher]
    for label, row in out.items():
        if label == teacher:
            continue
        _add_per_cost(row, t, _headline_retentions(suites, label))
    return out


def _cost_row(entry: dict[str, Any]) -> dict[str, Any]:
    """One model's measured cost: memory, load time, and the suites phase's throughput."""
    info, timing = entry["info"], entry["timings"].get("suites") or {}
    computed_all = timing.get("computed") == timing.get("total") and timing.get("seconds")
    return {
        "role": entry["role"],
        "parameters": info.get("n_parameters"),
        "weights_bytes": entry.get("memory", {}).get("weights_bytes"),
        "load_rss_delta_bytes": entry.get("memory", {}).get("load_rss_delta_bytes"),
        # None when the engine never started: every answer came from the cache
        "load_seconds": None
        if not entry["timings"].get("engine_started", True)
        else entry["timings"].get("load_seconds"),
        "suite_requests": timing.get("total"),
        "suite_seconds": timing.get("seconds"),
        "generated_tokens": timing.get("generated_tokens"),
        "tokens_per_second": timing["generated_tokens"] / timing["seconds"] if computed_all else None,
        "seconds_per_request": timing["seconds"] / timing["total"] if computed_all else None,
        "throughput_note": None if computed_all else "answers came from the cache: not timed",
    }


def _headline_retentions(suites: dict[str, Any], label: str) -> list[float]:
    """The model's finite headline retention of each top-level suite."""
    import numpy as np

    retentions: list[float] = []
    for summary in suites.values():
        if summary.get("group") is not None:
            continue
        per = summary.get("retention", {}).get(label, {})
        # the headline variant: the last one that is not the baseline (k=max, cot), as in the report
        others = [v for v in per if v != summary.get("baseline_variant")] or list(per)
        picked = per.get(others[-1]) if others else None
        value = picked.get("value") if isinstance(picked, dict) else None
        if isinstance(value, int | float) and np.isfinite(value):
            retentions.append(float(value))
    return retentions


def _add_per_cost(row: dict[str, Any], t: dict[str, Any], retentions: list[float]) -> None:
    """A student's parameter fraction, speedup and retention per parameter fraction of the teacher `t`."""
    import numpy as np

    param_fraction = row["parameters"] / t["parameters"] if row["parameters"] and t["parameters"] else None
    mean_retention = float(np.mean(retentions)) if retentions else None
    row["parameter_fraction"] = param_fraction
    row["speedup"] = (
        row["tokens_per_second"] / t["tokens_per_second"]
        if row["tokens_per_second"] and t["tokens_per_second"]
        else None
    )
    row["mean_retention"] = mean_retention
    row["retention_per_parameter_fraction"] = (
        mean_retention / param_fraction if mean_retention is not None and param_fraction else None
    )
