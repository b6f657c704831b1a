"""Linear CKA (centred kernel alignment) between two models' hidden states on the same tokens.

For features X (n, d1) and Y (n, d2) of the same n positions, centred column-wise (Xc, Yc):

    CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)
              = <Kc, Lc>_F / (||Kc||_F ||Lc||_F),   Kc = Xc Xc^T, Lc = Yc Yc^T   (Kornblith et al., 2019)

It compares representations of different widths, is invariant to orthogonal transforms and isotropic
scaling of either side, and lies in [0, 1]. Everything is computed in float64. A layer x layer matrix
uses whichever of the two equal formulas is cheaper: normalised Gram matrices (cost ~ L n^2 d, for
n < d or many layers) or feature-space cross products (cost ~ L1 L2 n d1 d2). A layer whose features
are constant over the positions has no centred variance: its CKA is undefined (NaN).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness.errors import HarnessError


def _features(name: str, x: np.ndarray) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2 or a.shape[0] < 2 or a.shape[1] < 1:
        raise HarnessError(f"{name} must be a 2-D (positions>=2, features>=1) array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise HarnessError(f"{name} holds NaN or infinite values: pass finite hidden states")
    return a


def center(x: np.ndarray) -> np.ndarray:
    """Column-centred float64 copy of (n, d) features."""
    a = np.asarray(x, dtype=np.float64)
    return a - a.mean(axis=0, keepdims=True)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of two (n, d) feature matrices over the same n positions (NaN if either is constant)."""
    xc, yc = center(_features("x", x)), center(_features("y", y))
    if xc.shape[0] != yc.shape[0]:
        raise HarnessError(f"x has {xc.shape[0]} positions and y {yc.shape[0]}: use the same positions")
    cross = float(np.sum((yc.T @ xc) ** 2))
    norm = float(np.linalg.norm(xc.T @ xc)) * float(np.linalg.norm(yc.T @ yc))
    return _ratio(cross, norm)


def _ratio(cross: float, norm: float) -> float:
    if not norm > 0.0:
        return float("nan")
    return float(min(max(cross / norm, 0.0), 1.0))  # rounding only: exact maths is in [0, 1]


def _unit_gram(x: np.ndarray) -> np.ndarray | None:
    """The centred Gram matrix Kc = Xc Xc^T scaled to unit Frobenius norm, flattened; None if Kc = 0."""
    xc = center(x)
    gram = xc @ xc.T
    norm = float(np.linalg.norm(gram))
    return (gram / norm).ravel() if norm > 0.0 else None


def _check_layers(name: str, layers: Sequence[np.ndarray]) -> list[np.ndarray]:
    if not len(layers):
        raise HarnessError(f"{name} has no layers: pass one (positions, features) array per layer")
    out = [_features(f"{name}[{i}]", layer) for i, layer in enumerate(layers)]
    if len({a.shape[0] for a in out}) != 1:
        raise HarnessError(f"{name}'s layers cover different numbers of positions: use the same positions")
    return out


def cka_matrix(a_layers: Sequence[np.ndarray], b_layers: Sequence[np.ndarray]) -> np.ndarray:
    """(len(a_layers), len(b_layers)) float64 matrix of linear CKA between every pair of layers.

    Each layer is an (n, d) array over the same n positions (widths may differ between a and b).
    Memory: one model's n x n Grams (Gram route) or its centred features (feature route).
    """
    a, b = _check_layers("a_layers", a_layers), _check_layers("b_layers", b_layers)
    n = a[0].shape[0]
    if b[0].shape[0] != n:
        raise HarnessError(
            f"a_layers cover {n} positions and b_layers {b[0].shape[0]}: use the same positions"
        )
    d_a, d_b = sum(x.shape[1] for x in a), sum(x.shape[1] for x in b)
    gram_cost = n * n * (d_a + d_b + len(a) * len(b))
    feature_cost = n * d_a * d_b + n * sum(x.shape[1] ** 2 for x in a + b)
    return _by_gram(a, b) if gram_cost < feature_cost else _by_features(a, b)


def _by_gram(a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    grams_a = [_unit_gram(x) for x in a]
    out = np.full((len(a), len(b)), np.nan)
    for j, y in enumerate(b):
        gram_b = _unit_gram(y)
        if gram_b is None:
            continue
        for i, gram_a in enumerate(grams_a):
            if gram_a is not None:
                out[i, j] = min(max(float(gram_a @ gram_b), 0.0), 1.0)
    return out


def _by_features(a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    centred_a = [center(x) for x in a]
    norms_a = [float(np.linalg.norm(x.T @ x)) for x in centred_a]
    out = np.empty((len(a), len(b)))
    for j, y in enumerate(b):
        yc = center(y)
        norm_b = float(np.linalg.norm(yc.T @ yc))
        for i, xc in enumerate(centred_a):
            out[i, j] = _ratio(float(np.sum((yc.T @ xc) ** 2)), norms_a[i] * norm_b)
    return out


def sample_positions(lengths: Sequence[int], n_max: int, seed: int) -> list[np.ndarray]:
    """Per sequence, the sorted positions kept: all of them when the total is <= n_max, else n_max
    drawn uniformly without replacement over all (sequence, position) pairs with a seeded generator."""
    if n_max < 1:
        raise HarnessError(f"n_max={n_max}: keep at least one position")
    sizes = np.asarray([max(0, int(n)) for n in lengths], dtype=np.int64)
    total = int(sizes.sum())
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    if total <= n_max:
        keep = np.arange(total)
    else:
        keep = np.sort(np.random.default_rng(seed).choice(total, size=n_max, replace=False))
    return [keep[(keep >= lo) & (keep < hi)] - lo for lo, hi in zip(offsets[:-1], offsets[1:], strict=True)]
