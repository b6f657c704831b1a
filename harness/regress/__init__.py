"""The regression gate: is the current run's student still within a margin of the baseline run's?

Metrics gated, per student present in both runs (matched by label; a single student on each side is
paired whatever its label): every top-level suite's primary metric at its headline variant (IF suites
also their instruction-level strict accuracy, clustered by prompt), and the KD check's forward KL and
top-1 agreement (teacher text, T = 1, clustered by sequence).

Each metric gets a one-sided paired test on the items (or sequences) both runs scored. With `drop` =
how much worse the current run is (baseline - current for a higher-is-better metric, current -
baseline for KL) and `margin` >= 0 the drop tolerated (DEFAULT_MARGINS, or --margin):

- `non-inferiority` (the default; the burden of proof is on the current run):
      H0: drop >= margin (inferior)    vs    H1: drop < margin (non-inferior)
  a metric passes only when H0 is rejected: its Holm-adjusted p is below alpha. A metric fails either
  because the data show it worse than the margin (the other tail's Holm-adjusted p, `p_worse`, is
  below alpha: "regressed") or because there are too few items to show that it is within the margin
  ("not shown non-inferior": the drop's upper confidence bound reaches past the margin).
- `regression` (the earlier behaviour; the burden of proof is on the data):
      H0: drop <= margin               vs    H1: drop > margin (a regression)
  a metric fails only when H0 is rejected: its Holm-adjusted p is below alpha.

The tests (harness.regress.tests): Tango's score test for paired 0/1 scores, a paired (clustered)
bootstrap otherwise; both report both tails and the one-sided (1 - alpha) upper bound of the drop.
The p-values of all the gate's metrics are Holm-adjusted as one family, in either mode; the gate
fails (exit 1) when any metric fails. How many items a margin needs: `ni_items_needed` (README); in
the non-inferiority mode a default margin is widened to what the suite's item count supports
(`sized_margin`, with a note in the verdict).

Modules: tests (the statistics), series (per-unit values out of a record), margins, verdict (the
result, its text and regress.json), gate (pairing, testing, deciding, `harness regress`).
"""

from .gate import ALPHA, decide, gate, load_for_gate, match_students, run_gate
from .margins import (
    DEFAULT_FLOOR,
    DEFAULT_MARGINS,
    Margin,
    choose_margin,
    margin_for,
    parse_margins,
    sized_margin,
)
from .series import (
    KD_METRICS,
    KD_TEMPERATURE,
    LOWER_IS_BETTER,
    Series,
    headline_variant,
    kd_per_sequence,
    kd_series,
    suite_series,
)
from .tests import (
    N_BOOT,
    TailTest,
    binary_noninferiority_p,
    binary_regression_p,
    bootstrap_noninferiority_p,
    bootstrap_regression_p,
    ni_items_needed,
    paired_binary_test,
    paired_bootstrap_test,
    tango_z,
)
from .verdict import (
    DEFAULT_TEST,
    EXIT_PASS,
    EXIT_REGRESSION,
    NON_INFERIORITY,
    REGRESSION,
    TESTS,
    VERDICT_FILE,
    MetricResult,
    Verdict,
    format_verdict,
    write_verdict,
)

__all__ = [
    "ALPHA",
    "DEFAULT_FLOOR",
    "DEFAULT_MARGINS",
    "DEFAULT_TEST",
    "EXIT_PASS",
    "EXIT_REGRESSION",
    "KD_METRICS",
    "KD_TEMPERATURE",
    "LOWER_IS_BETTER",
    "N_BOOT",
    "NON_INFERIORITY",
    "REGRESSION",
    "TESTS",
    "VERDICT_FILE",
    "MetricResult",
    "Series",
    "TailTest",
    "Verdict",
    "binary_noninferiority_p",
    "binary_regression_p",
    "bootstrap_noninferiority_p",
    "bootstrap_regression_p",
    "decide",
    "format_verdict",
    "gate",
    "headline_variant",
    "kd_per_sequence",
    "kd_series",
    "load_for_gate",
    "margin_for",
    "Margin",
    "choose_margin",
    "sized_margin",
    "match_students",
    "ni_items_needed",
    "paired_binary_test",
    "paired_bootstrap_test",
    "parse_margins",
    "run_gate",
    "suite_series",
    "tango_z",
    "write_verdict",
]
