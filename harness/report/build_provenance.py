"""The provenance and cost sections of the report's display model: where, how and with what the run
ran (models, versions, hardware, seeds, config, timings), and each model's size and measured speed."""

from __future__ import annotations

import json
from typing import Any

from harness.report.view import as_dict, fmt_count, fmt_num, num
from harness.store.record import RunRecord


def _kv(value: Any) -> list[dict[str, str]]:
    """A mapping as key/value strings; nested values as compact JSON."""
    if not isinstance(value, dict):
        return [] if value is None else [{"key": "value", "value": _text(value)}]
    return [{"key": str(k), "value": _text(v)} for k, v in value.items()]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _timings(timings: dict[str, Any]) -> str:
    """{"load_seconds": 2.5, "suites": {"seconds": 3, "computed": 12, "from_cache": 0}}
    -> "load 2.5 s, suites 3.0 s (12 computed, 0 from cache)"."""
    parts = []
    for key, value in timings.items():
        name = key.removesuffix("_seconds").removesuffix("_s").replace("_", " ")
        detail = as_dict(value)
        x = num(detail.get("seconds") if detail else value)
        text = f"{name} {x:.1f} s" if x is not None else f"{name} {_text(value)}"
        counts = [f"{detail[k]} {k.replace('_', ' ')}" for k in ("computed", "from_cache") if k in detail]
        parts.append(text + (f" ({', '.join(counts)})" if counts else ""))
    return ", ".join(parts)


def _model_rows(entries: dict[str, Any], models: list[dict[str, str]]) -> list[dict[str, str]]:
    """One provenance row per model; `spec` may be "backend:path" or a dict."""
    rows = []
    for model in models:
        entry = as_dict(entries.get(model["label"]))
        info, spec = as_dict(entry.get("info")), entry.get("spec")
        spec_d = as_dict(spec)
        rows.append(
            {
                "label": model["label"],
                "role": model["role"],
                "backend": str(info.get("backend") or spec_d.get("backend") or "?"),
                "path": str(
                    spec_d.get("path") or info.get("model_id") or (spec if isinstance(spec, str) else "?")
                ),
                "fingerprint": str(info.get("fingerprint", "?")),
                "tokenizer_id": str(info.get("tokenizer_id", "?")),
                "parameters": fmt_count(info.get("n_parameters")),
                "dtype": str(info.get("dtype", "?")),
                "vocab_size": fmt_count(info.get("vocab_size")),
                "max_context": str(info.get("max_context", "?")),
                "timings": _timings(as_dict(entry.get("timings"))),
            }
        )
    return rows


def provenance_view(record: RunRecord, models: list[dict[str, str]]) -> dict[str, Any]:
    manifest = record.manifest
    known = {
        "models",
        "versions",
        "hardware",
        "config",
        "seeds",
        "logprob_semantics",
        "schema_version",
        "harness_version",
        "created",
        "wall_seconds",
    }
    other = {k: v for k, v in manifest.items() if k not in known}
    return {
        "models": _model_rows(as_dict(manifest.get("models")), models),
        "run": _kv(
            {
                "run folder": str(record.run_dir),
                "created": manifest.get("created", "?"),
                "harness version": manifest.get("harness_version", "?"),
                "wall time": _timings({"": manifest.get("wall_seconds", "?")}).strip(),
                "schema version": record.schema_version,
            }
        ),
        "versions": _kv(manifest.get("versions")),
        "hardware": _kv(manifest.get("hardware")),
        "seeds": _kv(manifest.get("seeds")),
        "semantics": _kv(manifest.get("logprob_semantics")),
        "config": json.dumps(manifest.get("config", {}), indent=2, sort_keys=True, default=str),
        "other": _kv(other),
    }


def cost_view(cost: dict[str, Any], models: list[dict[str, str]]) -> list[dict[str, str]]:
    """One row per model: size, memory, measured speed, and (students) retention per unit of cost."""
    rows = []
    for m in models:
        c = as_dict(cost.get(m["label"]))
        if not c:
            continue
        tps = num(c.get("tokens_per_second"))
        mem = num(c.get("weights_bytes"))
        rss = num(c.get("load_rss_delta_bytes"))
        rows.append(
            {
                "label": m["label"],
                "role": m["role"],
                "parameters": fmt_count(c.get("parameters")),
                "weights": f"{mem / 2**20:,.0f} MiB" if mem is not None else "?",
                "rss": f"{rss / 2**20:,.0f} MiB" if rss is not None else "?",
                "tokens_per_second": f"{tps:,.1f}" if tps is not None else "not timed",
                "throughput_note": str(c.get("throughput_note") or ""),
                "seconds_per_request": fmt_num(c.get("seconds_per_request")),
                "parameter_fraction": fmt_num(c.get("parameter_fraction"))
                if "parameter_fraction" in c
                else "",
                "speedup": fmt_num(c.get("speedup")) if "speedup" in c else "",
                "mean_retention": fmt_num(c.get("mean_retention")) if "mean_retention" in c else "",
                "per_cost": fmt_num(c.get("retention_per_parameter_fraction"))
                if "retention_per_parameter_fraction" in c
                else "",
            }
        )
    return rows
