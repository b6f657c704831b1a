"""Margins: the drop each metric may show and still count as non-inferior (or not regressed).

A margin is absolute (0.02 = 2 points of a 0..1 score, or nats of KL) or relative to the baseline's
value (N%). The most specific setting wins: SUITE/METRIC, SUITE, METRIC (full name or the part before
its comma), the kind (score, inst_level_strict, forward_kl, top1_agree), then DEFAULT_MARGINS.

Sized defaults (non-inferiority mode only): a suite's score (or IF instruction-level accuracy) with
no margin set gets the larger of its default and the smallest margin its item count can support,
`sized_margin`: the margin at which a student with no true drop that disagrees with the baseline on
PLANNING_DISCORDANCE of the items is shown non-inferior with PLANNING_POWER, at Holm's strictest
level alpha / (metrics gated). 2 points need ~4,000 such items over a family of 20 metrics; a
48-item suite can support about 23. Without it every small suite fails the gate whatever the student
does (an identical rerun included: 0 discordant items show a 2-point margin only from 133 items at
alpha 0.05). A margin set by the user is used as given, with a note when its suite is too small.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from harness.errors import HarnessError

from .series import Series
from .tests import ni_items_needed

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
# Kinds whose default margin is sized to the item count (0..1 accuracies over items or prompts).
SIZED_KINDS = frozenset({"score", "inst_level_strict"})
PLANNING_DISCORDANCE = 0.10  # a retrained student with no true drop disagrees on ~10% of items
PLANNING_POWER = 0.8
SIZED_CAP = 0.5  # beyond this a suite is too small to gate: the margin stops here, with a note


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
    key = _set_key(series, margins)
    if key is not None:
        return margin_value(margins[key], baseline_value, f"margin {key}={margins[key]}")
    default = margin_value(DEFAULT_MARGINS.get(series.kind, "0.02"), baseline_value, "default margin")
    return max(default, DEFAULT_FLOOR.get(series.kind, 0.0))


@dataclass(frozen=True)
class Margin:
    """A metric's margin and where it came from: "set" (--margin KEY or the run config), "default" or
    "sized" (a default widened to what the suite's item count can support)."""

    value: float
    source: str
    note: str = ""


def sized_margin(n_groups: int, family: int, alpha: float, floor: float = 0.02) -> float:
    """The smallest margin (in 0.01 steps, >= floor, <= SIZED_CAP) that n_groups items can support.

    Supported: ni_items_needed(PLANNING_DISCORDANCE, margin, alpha=alpha / family, power=PLANNING_POWER)
    <= n_groups. Clusters (prompts shared by items, IF prompts) count as one item each: conservative.
    """
    level = alpha / max(family, 1)
    steps = range(max(1, math.ceil(round(floor * 100, 9))), round(SIZED_CAP * 100) + 1)
    for step in steps:
        margin = step / 100
        if ni_items_needed(PLANNING_DISCORDANCE, margin, alpha=level, power=PLANNING_POWER) <= n_groups:
            return margin
    return SIZED_CAP


def choose_margin(
    series: Series,
    baseline_value: float,
    margins: dict[str, str],
    *,
    n_groups: int,
    family: int,
    alpha: float,
    sized: bool,
) -> Margin:
    """margin_for, with sizing of a default to the item count (`sized`: the non-inferiority mode)."""
    value = margin_for(series, baseline_value, margins)
    key = _set_key(series, margins)
    shown = None if key is None else f"{key}={margins[key]}"
    level = alpha / max(family, 1)
    where = f"{series.suite}/{series.metric.split(',', 1)[0]}"
    needed = _needed(value, level) if series.kind in SIZED_KINDS and value > 0 else 0
    if key is not None:
        note = ""
        if sized and needed > n_groups:
            note = (
                f"{where}: margin {value:g} (--margin {shown}) needs about {needed:,} items at "
                f"{PLANNING_DISCORDANCE:.0%} disagreement; this suite has {n_groups}, so a student "
                f"with no true drop will often not be shown non-inferior"
            )
        return Margin(value, "set", note)
    if not sized or series.kind not in SIZED_KINDS or needed <= n_groups:
        return Margin(value, "default")
    widened = sized_margin(n_groups, family, alpha, floor=value)
    note = (
        f"{where}: default margin {value:g} widened to {widened:g} for {n_groups} items "
        f"({value:g} needs about {needed:,} at {PLANNING_DISCORDANCE:.0%} disagreement and "
        f"{family} gated metric{'s' if family != 1 else ''}); set --margin {where}={value:g} to keep it"
    )
    if widened >= SIZED_CAP:
        note += f"; {n_groups} items are too few to gate this metric meaningfully"
    return Margin(widened, "sized", note)


def _needed(margin: float, level: float) -> int:
    if margin >= 1.0:
        return 0
    return ni_items_needed(PLANNING_DISCORDANCE, margin, alpha=level, power=PLANNING_POWER)


def _candidates(series: Series) -> list[str]:
    """Margin keys that may name this series, most specific first."""
    metric_short = series.metric.split(",", 1)[0]
    candidates = [f"{series.suite}/{series.metric}", f"{series.suite}/{metric_short}", series.suite]
    return candidates + [series.metric, metric_short, series.kind]


def _set_key(series: Series, margins: dict[str, str]) -> str | None:
    """The most specific key of `margins` that names this series, if any."""
    return next((k for k in _candidates(series) if k in margins), None)
