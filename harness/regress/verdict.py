"""The gate's result: one MetricResult per gated metric, a Verdict over all, their text and JSON.

regress.json (read by the HTML report and the history page) holds, per metric, exactly "suite",
"variant", "metric", "model", "baseline", "current", "diff", "margin", "p_value", "p_holm",
"regressed" (the metric failed the gate), and since the non-inferiority default "test" (the mode),
"p_worse" (the unadjusted p of H1: drop > margin) and "drop_upper" (the one-sided upper confidence
bound of the drop at 1 - alpha, 95% by default; null when undefined), "status" (in words) and
"margin_source" ("default", "sized": a default widened to the suite's item count, or "set").
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

NON_INFERIORITY, REGRESSION = "non-inferiority", "regression"
TESTS = (NON_INFERIORITY, REGRESSION)
DEFAULT_TEST = NON_INFERIORITY
VERDICT_FILE = "regress.json"
EXIT_PASS, EXIT_REGRESSION = 0, 1


def check_test(test: str) -> str:
    if test not in TESTS:
        raise HarnessError(f"--test {test!r}: use {' or '.join(TESTS)}")
    return test


@dataclass(frozen=True)
class MetricResult:
    suite: str
    variant: str
    metric: str
    model: str
    baseline: float
    current: float
    diff: float  # current - baseline on the shared units
    margin: float
    p_value: float  # the mode's null: drop >= margin (non-inferiority) or drop <= margin (regression)
    p_holm: float  # p_value Holm-adjusted over the gate's metrics
    regressed: bool  # failed the gate
    n: int
    method: str  # "paired proportions, Tango score test" or the bootstrap's description
    higher_is_better: bool
    test: str = DEFAULT_TEST
    p_worse: float = 1.0  # H0: drop <= margin vs H1: drop > margin, unadjusted
    p_worse_holm: float = 1.0
    worse: bool = False  # the drop is shown to exceed the margin (p_worse_holm < alpha)
    drop_upper: float = math.nan  # one-sided upper confidence bound of the drop
    confidence: float = 0.95
    margin_source: str = "default"  # "default", "sized" (widened to the item count) or "set" (--margin)
    margin_note: str = ""

    def as_dict(self) -> dict[str, Any]:
        keys = ("suite", "variant", "metric", "model", "baseline", "current", "diff", "margin")
        out = {k: getattr(self, k) for k in keys}
        out.update(p_value=self.p_value, p_holm=self.p_holm, regressed=self.regressed, test=self.test)
        upper = self.drop_upper if math.isfinite(self.drop_upper) else None
        out.update(p_worse=self.p_worse, drop_upper=upper, status=self.status())
        out.update(margin_source=self.margin_source)
        return out

    def status(self) -> str:
        """Why the metric passed or failed, in words."""
        bound = f"{self.confidence:.0%} upper bound of the drop {_fmt(self.drop_upper)}"
        if self.regressed and self.worse:
            return f"regressed (worse than the margin, p={self.p_worse_holm:.3g} after Holm)"
        if self.regressed and self.drop_upper >= self.margin:
            return f"not shown non-inferior (n={self.n}, the CI of the drop reaches past the margin: {bound})"
        if self.regressed:
            return (
                f"not shown non-inferior (n={self.n}, {bound} is within the margin, "
                f"but not after Holm's correction)"
            )
        if self.test == NON_INFERIORITY:
            return f"non-inferior ({bound} < margin)"
        return "no drop beyond the margin shown"


@dataclass(frozen=True)
class Verdict:
    baseline: str
    current: str
    metrics: tuple[MetricResult, ...]
    alpha: float
    notes: tuple[str, ...] = ()
    test: str = DEFAULT_TEST

    @property
    def regressed(self) -> list[MetricResult]:
        return [m for m in self.metrics if m.regressed]

    @property
    def verdict(self) -> str:
        return "regression" if self.regressed else "pass"

    @property
    def exit_code(self) -> int:
        return EXIT_REGRESSION if self.regressed else EXIT_PASS

    def as_dict(self) -> dict[str, Any]:
        """The regress.json shape (read by the HTML report)."""
        return {
            "baseline": self.baseline,
            "current": self.current,
            "verdict": self.verdict,
            "metrics": [m.as_dict() for m in self.metrics],
        }

    def details(self) -> dict[str, Any]:
        """as_dict plus what a CI bot may want: the test, alpha, per-metric n and method, notes, exit code."""
        out = self.as_dict()
        out.update(test=self.test, alpha=self.alpha, exit_code=self.exit_code, notes=list(self.notes))
        for row, m in zip(out["metrics"], self.metrics, strict=True):
            row.update(n=m.n, method=m.method, higher_is_better=m.higher_is_better)
            row.update(p_worse_holm=m.p_worse_holm, worse=m.worse, status=m.status())
        return out


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return "undefined"
    return f"{x:.4g}" if abs(x) < 1000 else f"{x:.3e}"


def _header(verdict: Verdict) -> str:
    if verdict.test == NON_INFERIORITY:
        kind = "non-inferiority tests (H0: drop >= margin; a metric passes when H0 is rejected)"
    else:
        kind = "regression tests (H0: drop <= margin; a metric fails when H0 is rejected)"
    count = len(verdict.metrics)
    return f"  {count} metrics, one-sided paired {kind}, Holm-adjusted, alpha {verdict.alpha:g}"


def format_verdict(verdict: Verdict) -> str:
    """A few plain lines: the header, one line per metric, the notes, the verdict."""
    lines = [f"regression gate: {verdict.current} vs baseline {verdict.baseline}", _header(verdict)]
    for m in verdict.metrics:
        lines.append(
            f"  {'FAIL' if m.regressed else 'ok':4s} {m.suite} {m.variant} {m.metric} [{m.model}]: "
            f"{_fmt(m.baseline)} -> {_fmt(m.current)} (diff {_fmt(m.diff)}, margin {_fmt(m.margin)}"
            f"{' sized' if m.margin_source == 'sized' else ''}, "
            f"n {m.n}) p {m.p_value:.3g}, Holm {m.p_holm:.3g}: {m.status()}"
        )
    lines += [f"  note: {note}" for note in verdict.notes]
    failed = verdict.regressed
    if failed:
        named = ", ".join(f"{m.suite}/{m.metric} [{m.model}]" for m in failed)
        line = f"verdict: REGRESSION in {len(failed)} metric(s): {named}"
        if verdict.test == NON_INFERIORITY:
            worse = sum(m.worse for m in failed)
            line += f" ({worse} worse than the margin, {len(failed) - worse} not shown non-inferior)"
        lines.append(line)
    elif verdict.test == NON_INFERIORITY:
        lines.append("verdict: pass (every metric shown non-inferior: its drop is below the margin)")
    else:
        lines.append("verdict: pass (no metric dropped beyond its margin)")
    return "\n".join(lines)


def write_verdict(verdict: Verdict, run_dir: Path, extra: Path | None = None) -> Path:
    """regress.json (the exact shape the report reads) into the current run folder; the details to `extra`."""
    from harness.store.record import atomic_write

    target = Path(run_dir) / VERDICT_FILE
    atomic_write(target, json.dumps(verdict.as_dict(), indent=2))
    if extra is not None:
        atomic_write(Path(extra), json.dumps(verdict.details(), indent=2))
    return target
