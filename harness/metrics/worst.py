"""Where does the student disagree most? The worst sequences and positions by a per-token value.

Pure numpy over per-sequence arrays (one array of per-position values per sequence). NaN values are
ignored; +inf (an infinite KL) ranks above every finite value. Ties are broken by order (earlier
sequence, then earlier position first), so a list is the same on every run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from harness.errors import HarnessError

TOKEN_FIELDS: tuple[str, ...] = (
    "token_id",
    "teacher_logprob",
    "student_logprob",
    "teacher_top1_id",
    "teacher_top1_logprob",
    "student_top1_id",
    "student_top1_logprob",
)


@dataclass(frozen=True, eq=False)
class PositionTokens:
    """Per scored position of one sequence, at T = 1: the text's token and what each model made of it.

    Logprobs are natural logs (float64; NaN when unknown); ids are int64. `student_logprob` is the
    student's log-probability of the text's token, so -student_logprob is its per-token NLL.
    """

    token_id: np.ndarray
    teacher_logprob: np.ndarray
    student_logprob: np.ndarray
    teacher_top1_id: np.ndarray
    teacher_top1_logprob: np.ndarray
    student_top1_id: np.ndarray
    student_top1_logprob: np.ndarray

    def __len__(self) -> int:
        return int(self.token_id.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        """The fields by name (for the cache)."""
        return {name: getattr(self, name) for name in TOKEN_FIELDS}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> PositionTokens:
        """Build from named arrays, normalising dtypes (ids int64, logprobs float64)."""
        return cls(
            **{
                name: np.asarray(arrays[name], dtype=np.int64 if name.endswith("_id") else np.float64)
                for name in TOKEN_FIELDS
            }
        )


def _check_n(n: int) -> None:
    if n < 0:
        raise HarnessError(f"asked for the worst {n} entries: use a count >= 0")


def _sequence_means(values: Sequence[np.ndarray]) -> np.ndarray:
    means = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        x = np.asarray(v, dtype=np.float64).ravel()
        x = x[~np.isnan(x)]
        if x.size:
            means[i] = np.inf if np.isposinf(x).any() else float(x.sum() / x.size)
    return means


def top_sequences(values: Sequence[np.ndarray], n: int) -> list[tuple[int, float]]:
    """(sequence index, mean value) of the n sequences with the largest mean, largest first."""
    _check_n(n)
    means = _sequence_means(values)
    kept = np.flatnonzero(~np.isnan(means))
    order = kept[np.lexsort((kept, -means[kept]))]
    return [(int(i), float(means[i])) for i in order[:n]]


def top_positions(values: Sequence[np.ndarray], n: int) -> list[tuple[int, int, float]]:
    """(sequence index, position in it, value) of the n largest values over all sequences, largest first.

    Selection is O(total positions): everything at or above the n-th largest value is a candidate,
    and only the candidates are sorted.
    """
    _check_n(n)
    arrays = [np.asarray(v, dtype=np.float64).ravel() for v in values]
    if n == 0 or not arrays:
        return []
    flat = np.concatenate(arrays)
    seq = np.repeat(np.arange(len(arrays)), [a.size for a in arrays])
    pos = np.concatenate([np.arange(a.size) for a in arrays])
    valid = np.flatnonzero(~np.isnan(flat))
    if valid.size == 0:
        return []
    if valid.size > n:
        # n-th largest: argpartition on negated values puts it at index n - 1 (-inf sorts first there)
        kth = -np.partition(-flat[valid], n - 1)[n - 1]
        valid = valid[flat[valid] >= kth]
    order = valid[np.lexsort((valid, -flat[valid]))][:n]
    return [(int(seq[i]), int(pos[i]), float(flat[i])) for i in order]
