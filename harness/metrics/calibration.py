"""Expected calibration error (ECE) of multiple-choice answers scored by log-likelihood.

Per item: p = softmax over the choices' log-likelihoods; the prediction is the argmax choice and its
confidence p_max; correct = the prediction is the gold choice. With M equal-width bins over [0, 1]
(bin m = (m/M, (m+1)/M], the first also holds 0), the standard definition (Guo et al., 2017) is

    ECE = sum_m |B_m| / n * |acc(B_m) - conf(B_m)|

where acc and conf are the mean correctness and mean confidence of the items in bin m. Also returned:
the reliability-diagram table (per bin: edges, count, mean confidence, accuracy) and the maximum
calibration error (MCE, the largest per-bin gap).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from harness.errors import HarnessError

DEFAULT_BINS = 15


def choice_confidence(option_logprobs: Sequence[float]) -> tuple[int, float]:
    """(argmax index, softmax probability of it) over one item's choice log-likelihoods.

    Ties go to the first choice, as lm-eval's argmax does. Needs at least one finite value.
    """
    lp = np.asarray(option_logprobs, dtype=np.float64)
    if lp.ndim != 1 or lp.size == 0 or np.isnan(lp).any() or not np.isfinite(lp.max()):
        raise HarnessError(
            f"choice log-likelihoods {list(option_logprobs)[:8]} need at least one finite value and no NaN"
        )
    best = int(np.argmax(lp))
    return best, float(1.0 / np.exp(lp - lp[best]).sum())


def _bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin m holds (m/M, (m+1)/M]; a confidence of exactly 0 goes to bin 0."""
    return np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)


def expected_calibration_error(
    confidence: Sequence[float] | np.ndarray,
    correct: Sequence[float] | np.ndarray,
    n_bins: int = DEFAULT_BINS,
) -> dict[str, Any]:
    """ECE with `n_bins` equal-width bins, and the reliability table.

    Returns {"ece", "mce", "n", "n_bins", "accuracy", "mean_confidence",
    "bins": [{"lo", "hi", "n", "confidence", "accuracy"}]} (confidence/accuracy None in empty bins;
    ece/mce/accuracy/mean_confidence None when there are no items).
    """
    if int(n_bins) != n_bins or n_bins < 1:
        raise HarnessError(f"n_bins={n_bins!r}: use a whole number of bins >= 1 (15 is the usual choice)")
    conf = np.asarray(confidence, dtype=np.float64).ravel()
    hit = np.asarray(correct, dtype=np.float64).ravel()
    if conf.shape != hit.shape:
        raise HarnessError(f"{conf.size} confidences but {hit.size} correctness values: pass one per item")
    if conf.size and (np.isnan(conf).any() or conf.min() < 0.0 or conf.max() > 1.0):
        raise HarnessError("confidences must be probabilities in [0, 1]")
    if hit.size and not np.isin(hit, (0.0, 1.0)).all():
        raise HarnessError("correctness values must be 0 or 1")
    index = _bin_index(conf, n_bins)
    counts = np.bincount(index, minlength=n_bins)
    conf_sum = np.bincount(index, weights=conf, minlength=n_bins)
    hit_sum = np.bincount(index, weights=hit, minlength=n_bins)
    bins, gaps = [], []
    for m in range(n_bins):
        k = int(counts[m])
        mean_conf = float(conf_sum[m] / k) if k else None
        accuracy = float(hit_sum[m] / k) if k else None
        if k:
            gaps.append((k, abs(float(hit_sum[m] / k) - float(conf_sum[m] / k))))
        bins.append(
            {"lo": m / n_bins, "hi": (m + 1) / n_bins, "n": k, "confidence": mean_conf, "accuracy": accuracy}
        )
    n = int(conf.size)
    return {
        "ece": float(sum(k * gap for k, gap in gaps) / n) if n else None,
        "mce": float(max(gap for _, gap in gaps)) if n else None,
        "n": n,
        "n_bins": int(n_bins),
        "accuracy": float(hit.mean()) if n else None,
        "mean_confidence": float(conf.mean()) if n else None,
        "bins": bins,
    }


def multiple_choice_calibration(
    option_logprobs: Sequence[Sequence[float]], gold_correct: Sequence[bool], n_bins: int = DEFAULT_BINS
) -> dict[str, Any]:
    """ECE of items given as (choice log-likelihoods, whether the argmax choice is the gold one)."""
    if len(option_logprobs) != len(gold_correct):
        raise HarnessError(
            f"{len(option_logprobs)} items of choice log-likelihoods but {len(gold_correct)} verdicts"
        )
    confidence = [choice_confidence(lp)[1] for lp in option_logprobs]
    return expected_calibration_error(confidence, [float(bool(c)) for c in gold_correct], n_bins)


def _is_correct(item: Any) -> bool:
    """lm-eval's "acc" (argmax of the raw log-likelihoods is a gold choice) when recorded, else the chosen
    option's text against the gold text(s)."""
    metrics = getattr(item, "metrics", None) or {}
    for key, value in metrics.items():
        if key.split(",", 1)[0] == "acc":
            return bool(value >= 0.5)
    return str(item.output) in str(item.target).split(" | ")


def suite_calibration(items: Sequence[Any], n_bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """ECE per suite, variant and model over multiple-choice items (ItemResult-like objects whose
    details hold "option_logprobs" with two or more choices).

    Returns {"method", "n_bins", "suites": {suite: {variant: {model: expected_calibration_error(...)}}},
    "skipped": str|None} ("skipped" says why when no suite is multiple choice).
    """
    groups: dict[str, dict[str, dict[str, tuple[list[list[float]], list[bool]]]]] = {}
    for item in items:
        options = (getattr(item, "details", None) or {}).get("option_logprobs")
        if not isinstance(options, list) or len(options) < 2:
            continue
        per_model = groups.setdefault(item.suite, {}).setdefault(item.variant, {})
        lps, hits = per_model.setdefault(item.model, ([], []))
        lps.append([float(v) for v in options])
        hits.append(_is_correct(item))
    suites = {
        suite: {
            variant: {
                model: multiple_choice_calibration(lps, hits, n_bins) for model, (lps, hits) in models.items()
            }
            for variant, models in variants.items()
        }
        for suite, variants in groups.items()
    }
    return {
        "method": "softmax over the choices' log-likelihoods; confidence of the argmax; equal-width bins",
        "n_bins": n_bins,
        "suites": suites,
        "skipped": None
        if suites
        else "no suite in this run is multiple choice (scored by log-likelihood over two or more choices)",
    }
