"""The gate itself: pair two runs' students and metrics, test each, Holm over the family, decide.

In the default non-inferiority mode a metric passes only when its Holm-adjusted p of H0 "drop >=
margin" is below alpha (the current run has shown that it is no worse than the margin allows);
in the regression mode a metric fails only when its Holm-adjusted p of H0 "drop <= margin" is below
alpha (the data show a drop beyond the margin). The gate fails (exit 1) when any metric fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness import stats
from harness.errors import HarnessError, InfrastructureError
from harness.store.record import RunRecord

from .margins import choose_margin
from .series import LOWER_IS_BETTER, Series, natural_key, record_series, students
from .tests import N_BOOT, TailTest, paired_binary_test, paired_bootstrap_test
from .verdict import (
    DEFAULT_TEST,
    NON_INFERIORITY,
    VERDICT_FILE,
    MetricResult,
    Verdict,
    check_test,
    format_verdict,
    write_verdict,
)

ALPHA = 0.05


def match_students(baseline: RunRecord, current: RunRecord) -> tuple[list[tuple[str, str]], list[str]]:
    """(baseline label, current label) pairs: equal labels, or the one student left on each side."""
    b, c = students(baseline), students(current)
    pairs = [(label, label) for label in c if label in b]
    rest_b, rest_c = [x for x in b if x not in c], [x for x in c if x not in b]
    notes = []
    if len(rest_b) == 1 and len(rest_c) == 1:
        pairs.append((rest_b[0], rest_c[0]))
        notes.append(f"student {rest_c[0]} is compared with the baseline's {rest_b[0]} (the only other one)")
    else:
        notes += [f"student {x} is not in the baseline run: not gated" for x in rest_c]
    return pairs, notes


def _paired_arrays(b: Series, c: Series) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Shared units, and per group (cluster or unit) (2, G) arrays of (sum, count) for each run."""
    shared = sorted(set(b.units) & set(c.units), key=natural_key)
    group_of = {u: b.clusters.get(u, u) for u in shared}
    groups = sorted(set(group_of.values()))
    index = {g: i for i, g in enumerate(groups)}
    arrays = []
    for series in (b, c):
        out = np.zeros((2, len(groups)))
        for u in shared:
            s, n = series.units[u]
            out[0, index[group_of[u]]] += s
            out[1, index[group_of[u]]] += n
        arrays.append(out)
    return shared, arrays[0], arrays[1]


_Tested = tuple[dict[str, Any], TailTest]  # MetricResult's descriptive fields, both tails


@dataclass(frozen=True)
class _Plan:
    """How every metric of one gate is tested: margins, the family size (for sizing), the bootstrap."""

    margins: dict[str, str]
    family: int
    alpha: float
    sized: bool
    n_boot: int
    seed: int


def _test_one(b: Series, c: Series, plan: _Plan) -> _Tested:
    """Both tails of one metric's test (on units both runs scored), with the result's descriptive fields."""
    shared, b_arr, c_arr = _paired_arrays(b, c)
    b_value, c_value = float(b_arr[0].sum() / b_arr[1].sum()), float(c_arr[0].sum() / c_arr[1].sum())
    higher = c.kind not in LOWER_IS_BETTER
    chosen = choose_margin(
        c, b_value, plan.margins, n_groups=b_arr.shape[1], family=plan.family, alpha=plan.alpha,
        sized=plan.sized,
    )  # fmt: skip
    margin, confidence = chosen.value, max(1.0 - plan.alpha, 0.5)
    if b.binary and c.binary:
        scores = [(b.units[u][0], c.units[u][0]) for u in shared]
        tested = paired_binary_test(
            [x for x, _ in scores], [y for _, y in scores], min(margin, 0.999), confidence=confidence
        )
        method = "paired proportions, Tango score test"
    else:
        tested = paired_bootstrap_test(
            b_arr, c_arr, margin, higher_is_better=higher, n_boot=plan.n_boot, seed=plan.seed,
            confidence=confidence,
        )  # fmt: skip
        method = f"paired bootstrap over {'clusters' if b.clusters else 'units'} ({b_arr.shape[1]} groups)"
    fields = dict(suite=c.suite, variant=c.variant, metric=c.metric, model=c.model, baseline=b_value,
                  current=c_value, diff=c_value - b_value, margin=margin, n=len(shared), method=method,
                  higher_is_better=higher, margin_source=chosen.source, margin_note=chosen.note)  # fmt: skip
    return fields, tested


def decide(tested: list[_Tested], alpha: float, test: str) -> tuple[MetricResult, ...]:
    """Holm over the family in both tails; the mode's adjusted p decides each metric."""
    ni_holm = stats.holm([t.p_noninferior for _, t in tested])
    worse_holm = stats.holm([t.p_worse for _, t in tested])
    out = []
    for (fields, t), p_ni, p_worse in zip(tested, ni_holm, worse_holm, strict=True):
        if test == NON_INFERIORITY:
            p_value, p_holm, failed = t.p_noninferior, p_ni, p_ni >= alpha
        else:
            p_value, p_holm, failed = t.p_worse, p_worse, p_worse < alpha
        out.append(
            MetricResult(
                **fields,
                p_value=p_value,
                p_holm=p_holm,
                regressed=failed,
                test=test,
                p_worse=t.p_worse,
                p_worse_holm=p_worse,
                worse=p_worse < alpha,
                drop_upper=t.drop_upper,
                confidence=t.confidence,
            )  # fmt: skip
        )
    return tuple(out)


def gate(
    baseline: RunRecord,
    current: RunRecord,
    *,
    margins: dict[str, str] | None = None,
    alpha: float = ALPHA,
    n_boot: int = N_BOOT,
    seed: int = 0,
    names: tuple[str, str] | None = None,
    test: str = DEFAULT_TEST,
) -> Verdict:
    """Test every metric both runs hold; Holm over the family; a Verdict (raises when nothing is shared)."""
    if not 0.0 < alpha < 1.0:
        raise HarnessError(f"--alpha {alpha}: use a level in (0, 1), e.g. 0.05")
    check_test(test)
    margins = dict(margins or {})
    pairs, notes = match_students(baseline, current)
    b_found, b_notes = record_series(baseline, [b for b, _ in pairs])
    c_found, c_notes = record_series(current, [c for _, c in pairs])
    notes += b_notes + c_notes
    rename = {b: c for b, c in pairs}
    candidates: list[tuple[Series, Series]] = []
    for (suite, variant, metric, model), b in b_found.items():
        c = c_found.get((suite, variant, metric, rename[model]))
        label = f"{suite} {variant} {metric} [{rename[model]}]"
        if c is None:
            notes.append(f"{label}: not in the current run: not gated")
        elif not set(b.units) & set(c.units):
            notes.append(f"{label}: no item scored in both runs: not gated")
        else:
            candidates.append((b, c))
    plan = _Plan(margins, len(candidates), alpha, test == NON_INFERIORITY, n_boot, seed)
    tested = [_test_one(b, c, plan) for b, c in candidates]
    notes += [fields["margin_note"] for fields, _ in tested if fields["margin_note"]]
    if not tested:
        raise HarnessError(
            "the two runs share no gated metric (no common student, suite or item): compare runs of "
            "the same suites with the same student labels"
        )
    b_name, c_name = names or (str(baseline.run_dir), str(current.run_dir))
    return Verdict(b_name, c_name, decide(tested, alpha, test), alpha, tuple(notes), test)


def load_for_gate(path: Path) -> RunRecord:
    """A record for the gate: a missing folder is a usage error (exit 2), an unreadable one exit 3."""
    from harness.store.record import read_record

    if not Path(path).is_dir():
        raise HarnessError(f"run {path} does not exist: give a run folder, a run id or a tag of the store")
    try:
        return read_record(path)
    except (HarnessError, OSError, ValueError) as exc:
        raise InfrastructureError(f"cannot read the run record {path}: {exc}") from exc


def run_gate(
    baseline_ref: str,
    current_ref: str,
    *,
    store: Path | None = None,
    margins: dict[str, str] | None = None,
    alpha: float = ALPHA,
    json_out: Path | None = None,
    test: str = DEFAULT_TEST,
) -> Verdict:
    """`harness regress`: resolve both runs (folder, id, tag), gate, write regress.json, print the verdict."""
    from harness.store.index import RunStore, default_store, resolve

    check_test(test)
    baseline, current = resolve(store, baseline_ref), resolve(store, current_ref)
    if baseline.resolve() == current.resolve():
        raise HarnessError(f"--baseline and --current are the same run ({baseline}): pick an earlier run")
    verdict = gate(
        load_for_gate(baseline),
        load_for_gate(current),
        margins=margins,
        alpha=alpha,
        names=(baseline_ref, current_ref),
        test=test,
    )
    try:
        write_verdict(verdict, current, json_out)
    except OSError as exc:
        raise InfrastructureError(f"cannot write {current / VERDICT_FILE}: {exc.strerror or exc}") from exc
    shown = [f for f, name in (("html", "index.html"), ("md", "summary.md")) if (current / name).exists()]
    if shown:  # the run's reports show the verdict: render them again
        from harness.api import report_formats

        report_formats(current, ",".join(shown))
    root = Path(store) if store is not None else default_store()
    if current.parent.resolve() == (root / "runs").resolve() and (root / "index.sqlite").exists():
        with RunStore(root) as opened:
            opened.set_verdict(current.name, verdict.verdict, baseline_ref)
    print(format_verdict(verdict))
    return verdict
