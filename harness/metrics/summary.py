"""Summaries of per-token values (divergences) gathered over many sequences.

Tokens of one sequence are correlated, so the confidence interval of the mean resamples whole SEQUENCES
(each resample's mean is token-weighted), not tokens. NaN values (e.g. a top-1 flag that could not be
computed) are ignored; +inf (an infinite KL) is kept and makes the mean infinite, which is the truth.
Undefined entries are None, so the dict can be written as JSON.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.stats import bootstrap_group_means, quantiles

_PERCENTILES = (("median", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99_9", 99.9))
# Fixed bins for KL-like values (KL, JS, TVD): [0, 1e-6), then 4 per decade up to 100. Fixed, so that
# histograms of different students, temperatures and runs line up bin for bin.
KL_BIN_EDGES: tuple[float, ...] = (0.0, *(float(10.0**e) for e in np.linspace(-6.0, 2.0, 33)))


def _number(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def _flatten(values: Any) -> np.ndarray:
    if isinstance(values, list | tuple):
        parts = [np.asarray(v, dtype=np.float64).ravel() for v in values]
        return np.concatenate(parts) if parts else np.empty(0)
    return np.asarray(values, dtype=np.float64).ravel()


def summarize(
    values_per_sequence: list[np.ndarray], seed: int = 0, n_boot: int = 1000, confidence: float = 0.95
) -> dict[str, Any]:
    """Mean (with a bootstrap CI over sequences), median, p90, p99, p99.9 and max of per-token values.

    Returns {"mean", "ci_low", "ci_high", "median", "p90", "p99", "p99_9", "max", "n_tokens",
    "n_sequences"}; counts exclude NaN values and sequences with none left. The CI is None with fewer
    than two sequences (a single sequence says nothing about sequence-to-sequence spread).
    """
    if not 0.0 < confidence < 1.0:
        raise HarnessError(f"confidence={confidence!r} is invalid: use a level in (0, 1), e.g. 0.95")
    arrays = [np.asarray(v, dtype=np.float64).ravel() for v in values_per_sequence]
    counts = np.array([np.count_nonzero(~np.isnan(a)) for a in arrays], dtype=np.float64)
    sums = np.array([np.nansum(a) for a in arrays], dtype=np.float64)
    used = counts > 0
    counts, sums = counts[used], sums[used]
    n_tokens = int(counts.sum())
    result: dict[str, Any] = {"n_tokens": n_tokens, "n_sequences": int(used.sum())}
    if n_tokens == 0:
        keys = ("mean", "ci_low", "ci_high", "max", *(name for name, _ in _PERCENTILES))
        return {**result, **dict.fromkeys(keys)}
    result["mean"] = float(sums.sum() / n_tokens)
    result["ci_low"] = result["ci_high"] = None
    if counts.size >= 2:
        replicates = bootstrap_group_means(sums[None, :], counts, n_boot=n_boot, seed=seed)[:, 0]
        alpha = 100.0 * (1.0 - confidence) / 2.0
        low, high = quantiles(replicates, [alpha, 100.0 - alpha])
        result["ci_low"], result["ci_high"] = _number(low), _number(high)
    flat = _flatten(arrays)
    flat = flat[~np.isnan(flat)]
    for (name, _), value in zip(_PERCENTILES, quantiles(flat, [q for _, q in _PERCENTILES]), strict=True):
        result[name] = _number(value)
    result["max"] = float(flat.max())
    return result


def histogram(values: Any, bins: int | np.ndarray | list[float] = 30) -> dict[str, Any]:
    """Counts of the finite values in `bins` (a number of equal bins over their range, or the edges).

    `values` is one array or a list of per-sequence arrays. NaN and infinite values are not binned;
    their number is returned as "n_nonfinite". Returns {"edges", "counts", "n_nonfinite"} as lists.
    """
    x = _flatten(values)
    finite = np.isfinite(x)
    if isinstance(bins, int | np.integer) and bins < 1:
        raise HarnessError(
            f"histogram bins={bins!r} is invalid: use a number of bins >= 1 or a list of edges"
        )
    try:
        counts, edges = np.histogram(x[finite], bins=bins)
    except ValueError as exc:
        raise HarnessError(f"histogram bins are invalid ({exc}): edges must increase monotonically") from exc
    return {
        "edges": [float(e) for e in edges],
        "counts": [int(c) for c in counts],
        "n_nonfinite": int((~finite).sum()),
    }


def log_histogram(values: Any, edges: tuple[float, ...] | list[float] = KL_BIN_EDGES) -> dict[str, Any]:
    """Counts of every non-NaN value in fixed bins [edges[i], edges[i+1]); the last bin is closed.

    Nothing is dropped: values below edges[0] fall in the first bin and values above edges[-1] (an
    infinite KL included) in the last, so the counts sum to the number of non-NaN values (for a
    divergence, the number of positions). How many were clamped is returned as "n_above"/"n_below",
    NaN values as "n_nan". Returns {"edges", "counts", "n_above", "n_below", "n_nan"}.
    """
    bounds = np.asarray(edges, dtype=np.float64)
    if (
        bounds.ndim != 1
        or bounds.size < 2
        or not np.all(np.diff(bounds) > 0)
        or not np.isfinite(bounds).all()
    ):
        raise HarnessError("histogram edges must be at least two finite, strictly increasing numbers")
    x = _flatten(values)
    nan = np.isnan(x)
    x = x[~nan]
    n_bins = bounds.size - 1
    index = np.clip(np.searchsorted(bounds, x, side="right") - 1, 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins)
    return {
        "edges": [float(e) for e in bounds],
        "counts": [int(c) for c in counts],
        "n_above": int(np.count_nonzero(x > bounds[-1])),
        "n_below": int(np.count_nonzero(x < bounds[0])),
        "n_nan": int(nan.sum()),
    }
