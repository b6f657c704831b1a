"""Token-level divergences between a teacher's and a student's next-token distributions.

All functions are pure numpy and vectorised over positions. Inputs may be float32; every sum is
accumulated in float64. Conventions: natural logarithms; 0 * log 0 = 0; a category the teacher gives
mass and the student none makes forward KL infinite (and reverse KL likewise the other way round).

Two kinds of input:
- full vocabulary (`full_vocab_divergences`): exact values, at any temperature T;
- top-k plus a tail bucket (`truncated_divergences`, `student_full_vs_teacher_topk`): merging the
  vocabulary into k+1 categories can only shrink KL, JS and TVD (data-processing inequality), so these
  are LOWER BOUNDS of the full-vocabulary values, reported with the teacher's top-k mass coverage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.errors import HarnessError

METRIC_NAMES: tuple[str, ...] = (
    "forward_kl",
    "reverse_kl",
    "js",
    "tvd",
    "top1_agree",
    "teacher_top1_in_student_top5",
    "ear",
)
# Size of each (rows, V) float64 work buffer: full_vocab_divergences keeps five (~40 MB) whatever n is.
_TEMP_BYTES = 8 * 2**20
# Probabilities of a top-k set may exceed 1 by float32 rounding; more than this means unnormalised input.
_NORM_TOL = 1e-3
# Smallest tail bucket: below float32 rounding of a top-k sum (~1e-7), so it changes results negligibly.
_TAIL_FLOOR = 1e-10


@dataclass(frozen=True, eq=False)
class PositionDivergences:
    """Per-position values, each an (n,) float64 array (top-1 flags are 0.0/1.0, NaN when unknown).

    Whether they are exact or top-k lower bounds depends on the function that made them (the caller
    labels them); the top-k functions return the teacher's coverage alongside.
    """

    forward_kl: np.ndarray
    reverse_kl: np.ndarray
    js: np.ndarray
    tvd: np.ndarray
    top1_agree: np.ndarray
    teacher_top1_in_student_top5: np.ndarray
    ear: np.ndarray

    def __len__(self) -> int:
        return int(self.forward_kl.shape[0])

    def metrics(self) -> dict[str, np.ndarray]:
        """The seven per-position metrics by name."""
        return {name: getattr(self, name) for name in METRIC_NAMES}


def concat_divergences(parts: list[PositionDivergences]) -> PositionDivergences:
    """Join per-sequence results into one, positions in order."""
    if not parts:
        raise HarnessError("concat_divergences got no parts: score at least one sequence first")
    return PositionDivergences(
        **{name: np.concatenate([getattr(p, name) for p in parts]) for name in METRIC_NAMES}
    )


def _check_temperature(T: float) -> None:
    if not (np.isfinite(T) and T > 0):
        raise HarnessError(
            f"temperature T={T!r} is invalid: use a finite number > 0 (1.0 = the model as deployed)"
        )


def _log_softmax(
    x: np.ndarray,
    T: float,
    name: str = "logprobs",
    offset: int = 0,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(log p, p) of softmax(x / T) along the last axis, in float64 (one exp for both).

    `out` = two float64 buffers shaped like x to write into (reused across chunks: no page faults).
    Also the input check: a row's max is NaN if the row holds a NaN, +inf if it holds +inf, and -inf if
    every value is -inf; each is refused, naming the position.
    """
    z, p = out if out is not None else (np.empty(np.shape(x)), np.empty(np.shape(x)))
    np.multiply(x, 1.0 / T, out=z, dtype=np.float64)
    top = np.max(z, axis=-1, keepdims=True)
    if not np.all(np.isfinite(top)):
        bad = int(np.argmax(~np.isfinite(top.reshape(-1)))) + offset
        raise HarnessError(
            f"{name} at position {bad} is all -inf or holds NaN/+inf: pass finite log-probabilities or logits"
        )
    z -= top
    np.exp(z, out=p)
    total = np.sum(p, axis=-1, keepdims=True)
    z -= np.log(total)
    p /= total
    return z, p


def temper(logprobs: np.ndarray, T: float) -> np.ndarray:
    """log_softmax(logprobs / T) along the last axis, float64.

    Valid for full-vocabulary logprobs (or logits): log_softmax is shift invariant, so the log of
    the normaliser drops out and softmax(log p / T) = softmax(z / T). Not valid for a top-k subset.
    """
    _check_temperature(T)
    return _log_softmax(logprobs, T)[0]


def _rowdot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot product with no temporary (einsum; np.vecdot went through BLAS and crawled here)."""
    return np.einsum("ij,ij->i", a, b)


def _zero_out_masked(
    lp: np.ndarray, p: np.ndarray, lq: np.ndarray, q: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For tokens with logprob -inf (masked): set that log to 0, so 0 * log 0 terms read 0 in dot products.

    Returns (rows where forward KL is infinite, rows where reverse KL is infinite): a token the student
    gives no probability (-inf) but the teacher some makes KL(teacher||student) infinite.
    """
    if not (np.isneginf(lp.min(initial=0.0)) or np.isneginf(lq.min(initial=0.0))):
        none = np.zeros(lp.shape[0], dtype=bool)
        return none, none
    zero_p, zero_q = np.isneginf(lp), np.isneginf(lq)
    forward_inf = np.asarray((zero_q & (p > 0)).any(axis=-1))
    reverse_inf = np.asarray((zero_p & (q > 0)).any(axis=-1))
    lp[zero_p] = 0.0
    lq[zero_q] = 0.0
    return forward_inf, reverse_inf


def _categorical(
    lp: np.ndarray, p: np.ndarray, lq: np.ndarray, q: np.ndarray, work: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """KL both ways, JS, TVD and EAR of row distributions given as (log prob, prob), float64.

    Row dot products (no per-element temporaries); overwrites lp, lq and work. Every log is finite once
    masked tokens are zeroed, so a probability that underflowed to 0 contributes 0 * finite = 0.
    JS = ln 2 + (p.log p + q.log q - s.log s) / 2 with s = p + q; it is exact to ~1e-15 (entropy
    rounding), while KL and TVD are exactly 0 for equal rows.
    """
    work = np.empty_like(p) if work is None else work
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        forward_inf, reverse_inf = _zero_out_masked(lp, p, lq, q)
        np.subtract(lp, lq, out=work)
        forward = _rowdot(p, work)
        reverse = -_rowdot(q, work)
        forward[forward_inf] = np.inf
        reverse[reverse_inf] = np.inf
        neg_entropies = _rowdot(p, lp) + _rowdot(q, lq)
        np.minimum(p, q, out=work)
        ear = work.sum(axis=-1)
        np.subtract(p, q, out=work)
        np.abs(work, out=work)
        tvd = 0.5 * work.sum(axis=-1)
        np.add(p, q, out=work)
        np.log(work, out=lp, where=work > 0)  # s = 0 (both 0): lp keeps a finite value and s log s reads 0
        js = np.log(2.0) + 0.5 * (neg_entropies - _rowdot(work, lp))
    return _clip_rounding(forward, reverse, js, tvd, ear)


def _clip_rounding(
    forward: np.ndarray, reverse: np.ndarray, js: np.ndarray, tvd: np.ndarray, ear: np.ndarray
) -> dict[str, np.ndarray]:
    # Exact maths gives >= 0 (and JS <= ln 2, TVD <= 1); clip only rounding noise at the bounds.
    return {
        "forward_kl": np.maximum(forward, 0.0),
        "reverse_kl": np.maximum(reverse, 0.0),
        "js": np.clip(js, 0.0, np.log(2.0)),
        "tvd": np.clip(tvd, 0.0, 1.0),
        "ear": np.clip(ear, 0.0, 1.0),
    }


def _as_2d(name: str, array: np.ndarray) -> np.ndarray:
    a = np.asarray(array)
    if a.ndim != 2 or a.shape[1] == 0:
        raise HarnessError(f"{name} must be a 2-D (positions, vocab>=1) array, got shape {a.shape}")
    return a


def _top1_flags(teacher_top1: np.ndarray, student: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(teacher argmax == student argmax, teacher argmax in student top-5) as float64 0/1.

    In the top-5 means fewer than 5 student values exceed the student's value on the teacher's token
    (ties count in its favour); a count is ~10x cheaper than argpartition over the vocabulary.
    """
    teacher_top1 = np.asarray(teacher_top1, dtype=np.intp)
    agree = (teacher_top1 == np.argmax(student, axis=-1)).astype(np.float64)
    on_teacher = np.take_along_axis(student, teacher_top1[:, None], axis=-1)
    above = np.count_nonzero(student > on_teacher, axis=-1)
    return agree, (above < 5).astype(np.float64)


def full_vocab_divergences(
    teacher_logprobs: np.ndarray, student_logprobs: np.ndarray, T: float = 1.0
) -> PositionDivergences:
    """Exact per-position divergences of softmax(teacher / T) from softmax(student / T).

    Inputs are (n, V) logprobs or logits (either works: both are re-normalised at T). Rows are
    processed in chunks through five reused float64 buffers of ~8 MB each, whatever n is.
    """
    _check_temperature(T)
    t = _as_2d("teacher_logprobs", teacher_logprobs)
    s = _as_2d("student_logprobs", student_logprobs)
    if t.shape != s.shape:
        raise HarnessError(
            f"teacher logprobs {t.shape} and student logprobs {s.shape} differ in shape: "
            "score the same tokens with one shared tokenizer"
        )
    n, vocab = t.shape
    out = {name: np.empty(n, dtype=np.float64) for name in METRIC_NAMES}
    rows = max(1, min(n, _TEMP_BYTES // (8 * vocab)))
    buffers = [np.empty((rows, vocab)) for _ in range(5)]
    for lo in range(0, n, rows):
        hi = min(n, lo + rows)
        lp, p, lq, q, work = (b[: hi - lo] for b in buffers)
        _log_softmax(t[lo:hi], T, "teacher_logprobs", lo, out=(lp, p))
        _log_softmax(s[lo:hi], T, "student_logprobs", lo, out=(lq, q))
        chunk = _categorical(lp, p, lq, q, work)
        for name, values in chunk.items():
            out[name][lo:hi] = values
        agree, in_top5 = _top1_flags(np.argmax(t[lo:hi], axis=-1), s[lo:hi])
        out["top1_agree"][lo:hi] = agree
        out["teacher_top1_in_student_top5"][lo:hi] = in_top5
    return PositionDivergences(**out)


def _with_tail(name: str, logprobs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log prob, prob) over k+1 categories: the k given logprobs plus a tail holding 1 - their sum."""
    if np.isnan(logprobs).any() or (logprobs > _NORM_TOL).any():
        raise HarnessError(f"{name} holds NaN or positive values: pass log-probabilities (<= 0)")
    probs = np.exp(np.minimum(logprobs, 0.0), dtype=np.float64)
    total = probs.sum(axis=-1)
    worst = int(np.argmax(total)) if total.size else 0
    if total.size and total[worst] > 1.0 + _NORM_TOL:
        raise HarnessError(
            f"{name} at position {worst} sum to probability {total[worst]:.6f} > 1: "
            "pass normalised log-probabilities (log_softmax), not logits"
        )
    # A top-k set holding (nearly) all the mass leaves a tail of rounding noise, possibly 0 or negative;
    # a floor keeps "teacher tail 1e-8, student tail 0" from reading as an infinite KL.
    tail = np.maximum(1.0 - total, _TAIL_FLOOR)
    cats = np.concatenate([probs, tail[:, None]], axis=-1) / (total + tail)[:, None]
    with np.errstate(divide="ignore"):
        return np.log(cats), cats


def _topk_plus_tail(
    ids: np.ndarray, t_lp: np.ndarray, s_lp: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """(divergences over the k+1 categories, teacher coverage, teacher top-1 id) per position."""
    if ids.ndim != 2 or ids.shape != t_lp.shape or ids.shape != s_lp.shape or ids.shape[1] == 0:
        raise HarnessError(
            f"top-k arrays must share one (positions, k>=1) shape: ids {ids.shape}, "
            f"teacher logprobs {t_lp.shape}, student logprobs {s_lp.shape}"
        )
    lp, p = _with_tail("teacher_topk_logprobs", t_lp)
    lq, q = _with_tail("student_logprobs_for_those_ids", s_lp)
    teacher_top1 = np.take_along_axis(ids, np.argmax(t_lp, axis=-1)[:, None], axis=-1)[:, 0]
    return _categorical(lp, p, lq, q), np.minimum(p[:, :-1].sum(axis=-1), 1.0), teacher_top1


def truncated_divergences(
    teacher_topk_ids: np.ndarray,
    teacher_topk_logprobs: np.ndarray,
    student_logprobs_for_those_ids: np.ndarray,
    student_top1_ids: np.ndarray | None = None,
    student_top5_ids: np.ndarray | None = None,
) -> tuple[PositionDivergences, np.ndarray]:
    """Divergences over k+1 categories (teacher's top-k tokens + tail), at T = 1 only.

    Returns (divergences, coverage), coverage = the teacher's top-k probability mass per position.
    KL, JS and TVD are LOWER BOUNDS of the full-vocabulary values (EAR an upper bound). The top-1
    flags need the student's own top-1 / top-5 ids (NaN when not given): the student's logprobs on
    the teacher's tokens cannot tell its argmax.
    """
    ids = np.asarray(teacher_topk_ids)
    out, coverage, teacher_top1 = _topk_plus_tail(
        ids, np.asarray(teacher_topk_logprobs), np.asarray(student_logprobs_for_those_ids)
    )
    n = ids.shape[0]
    out["top1_agree"] = np.full(n, np.nan)
    out["teacher_top1_in_student_top5"] = np.full(n, np.nan)
    if student_top1_ids is not None:
        top1 = np.asarray(student_top1_ids).reshape(-1)
        if top1.shape[0] != n:
            raise HarnessError(f"student_top1_ids has {top1.shape[0]} positions, expected {n}")
        out["top1_agree"] = (top1 == teacher_top1).astype(np.float64)
    if student_top5_ids is not None:
        top5 = np.asarray(student_top5_ids)
        if top5.ndim != 2 or top5.shape[0] != n or top5.shape[1] > 5:
            raise HarnessError(
                f"student_top5_ids must be (positions, <=5), got shape {top5.shape} for {n} positions"
            )
        out["teacher_top1_in_student_top5"] = (top5 == teacher_top1[:, None]).any(axis=-1).astype(np.float64)
    return PositionDivergences(**out), coverage


def student_full_vs_teacher_topk(
    teacher_topk_ids: np.ndarray, teacher_topk_logprobs: np.ndarray, student_logprobs: np.ndarray
) -> tuple[PositionDivergences, np.ndarray]:
    """Teacher top-k + tail against the student's FULL distribution collapsed onto the same k+1 bins.

    The tightest lower bound available when only the teacher's top-k was kept (one model in memory at
    a time). The student's top-1/top-5 come from its full distribution, so those flags are exact.
    `student_logprobs` (n, V) may be logprobs or logits (re-normalised here). Returns (divergences, coverage).
    """
    ids = np.asarray(teacher_topk_ids)
    t_lp = np.asarray(teacher_topk_logprobs)
    s = _as_2d("student_logprobs", student_logprobs)
    if ids.ndim != 2 or ids.shape[0] != s.shape[0]:
        raise HarnessError(
            f"teacher top-k ids {ids.shape} and student logprobs {s.shape} must cover the same positions"
        )
    if ids.size and (ids.min() < 0 or ids.max() >= s.shape[1]):
        raise HarnessError(f"teacher top-k ids fall outside the student's vocabulary of {s.shape[1]} tokens")
    n, vocab = s.shape
    gathered = np.empty(ids.shape, dtype=np.float64)
    rows = max(1, min(n, _TEMP_BYTES // (8 * vocab)))
    buffers = (np.empty((rows, vocab)), np.empty((rows, vocab)))
    for lo in range(0, n, rows):
        hi = min(n, lo + rows)
        lq = _log_softmax(
            s[lo:hi], 1.0, "student_logprobs", lo, out=(buffers[0][: hi - lo], buffers[1][: hi - lo])
        )[0]
        gathered[lo:hi] = np.take_along_axis(lq, ids[lo:hi], axis=-1)
    out, coverage, teacher_top1 = _topk_plus_tail(ids, t_lp, np.minimum(gathered, 0.0))
    out["top1_agree"] = np.empty(n)
    out["teacher_top1_in_student_top5"] = np.empty(n)
    for lo in range(0, n, rows):
        hi = min(n, lo + rows)
        flags = _top1_flags(teacher_top1[lo:hi], s[lo:hi])
        out["top1_agree"][lo:hi], out["teacher_top1_in_student_top5"][lo:hi] = flags
    return PositionDivergences(**out), coverage
