"""The cost side: what each model costs in the run, and retention per unit of cost."""

from __future__ import annotations

import pytest

from harness.compare import cost_summary


def _model(role: str, params: int, tokens: int, seconds: float, cached: int = 0) -> dict[str, object]:
    return {
        "role": role,
        "info": {"n_parameters": params},
        "timings": {
            "load_seconds": 1.0,
            "suites": {
                "total": 10,
                "computed": 10 - cached,
                "from_cache": cached,
                "seconds": seconds,
                "generated_tokens": tokens,
            },
        },
        "memory": {"weights_bytes": params * 4, "load_rss_delta_bytes": None},
    }


def test_cost_summary_relates_retention_to_size_and_speed() -> None:
    models = {
        "t": _model("teacher", 1000, 400, 4.0),
        "s": _model("student", 250, 400, 1.0),
        "c": _model("student", 500, 400, 2.0, cached=3),
    }
    suites = {
        "cot": {
            "baseline_variant": "direct",
            "group": None,
            "retention": {"s": {"cot": {"value": 0.6}, "direct": {"value": 0.9}}},
        },
        "icl": {
            "baseline_variant": "k=0",
            "group": None,
            "retention": {"s": {"k=0": {"value": 0.1}, "k=4": {"value": 0.8}}},
        },
        "bbh:x": {"baseline_variant": "direct", "group": "bbh", "retention": {"s": {"cot": {"value": 0.0}}}},
    }
    cost = cost_summary(models, suites)
    assert cost["t"]["tokens_per_second"] == 100.0 and cost["t"]["seconds_per_request"] == 0.4
    s = cost["s"]
    assert s["parameter_fraction"] == 0.25 and s["speedup"] == 4.0
    # headline variants (cot, k=4), subtasks left to their group: mean 0.7; per parameter fraction 2.8
    assert s["mean_retention"] == pytest.approx(0.7)
    assert s["retention_per_parameter_fraction"] == pytest.approx(2.8)
    # partly cached: throughput is not comparable, so it is not reported
    assert cost["c"]["tokens_per_second"] is None and cost["c"]["speedup"] is None
    assert cost["c"]["throughput_note"] and cost["c"]["mean_retention"] is None
