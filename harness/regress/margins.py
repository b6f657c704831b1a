"""Margins: the drop each metric may show and still count as non-inferior (or not regressed).

A margin is absolute (0.02 = 2 points of a 0..1 score, or nats of KL) or relative to the baseline's
value (N%). The most specific setting wins: SUITE/METRIC, SUITE, METRIC (full name or the part before
its comma), the kind (score, inst_level_strict, forward_kl, top1_agree), then DEFAULT_MARGINS.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from harness.errors import HarnessError

from .series import Series

# "score" stands for every suite's primary metric; a value ending in % is relative to the baseline value.
DEFAULT_MARGINS: dict[str, str] = {
    "score": "0.02",
    "inst_level_strict": "0.02",
    "forward_kl": "10%",
    "top1_agree": "0.02",
}
# A default relative margin never goes below this (a student almost equal to its teacher would
# otherwise have a margin of ~0 nats, and any noise would count as a regression).
DEFAULT_FLOOR: dict[str, float] = {"forward_kl": 0.01}


def parse_margins(pairs: Iterable[str]) -> dict[str, str]:
    """--margin METRIC=VALUE: METRIC is score, a metric name, SUITE or SUITE/METRIC; VALUE a number or N%."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise HarnessError(f"--margin {pair!r}: write METRIC=VALUE, e.g. --margin score=0.03")
        margin_value(value, 1.0, f"--margin {pair}")
        out[key.strip()] = value.strip()
    return out


def margin_value(text: str, baseline: float, where: str) -> float:
    relative = text.strip().endswith("%")
    try:
        number = float(text.strip().rstrip("%"))
    except ValueError:
        raise HarnessError(f"{where}: the margin must be a number or a percentage like 10%") from None
    if not math.isfinite(number) or number < 0:
        raise HarnessError(f"{where}: the margin must be a finite number >= 0")
    return abs(baseline) * number / 100.0 if relative else number


def margin_for(series: Series, baseline_value: float, margins: dict[str, str]) -> float:
    """Most specific first: SUITE/METRIC, SUITE, METRIC (full name or before its comma), score, default
    (DEFAULT_MARGINS, with DEFAULT_FLOOR under a relative default)."""
    metric_short = series.metric.split(",", 1)[0]
    candidates = [f"{series.suite}/{series.metric}", f"{series.suite}/{metric_short}", series.suite]
    candidates += [series.metric, metric_short, series.kind]
    for key in candidates:
        if key in margins:
            return margin_value(margins[key], baseline_value, f"margin {key}={margins[key]}")
    default = margin_value(DEFAULT_MARGINS.get(series.kind, "0.02"), baseline_value, "default margin")
    return max(default, DEFAULT_FLOOR.get(series.kind, 0.0))
