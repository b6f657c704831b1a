"""Linear CKA against an independent float64 reference (HSIC with the centring matrix) and identities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.metrics.cka import cka_matrix, linear_cka, sample_positions


def reference_cka(x: np.ndarray, y: np.ndarray) -> float:
    """HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with K = X X^T, L = Y Y^T, HSIC = tr(K H L H)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T

    def hsic(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.trace(a @ h @ b @ h))

    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


def _random_orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


@pytest.mark.parametrize(("n", "d1", "d2"), [(40, 8, 24), (30, 50, 5), (12, 3, 3)])
def test_linear_cka_matches_the_hsic_reference(n: int, d1: int, d2: int) -> None:
    rng = np.random.default_rng(n + d1)
    x = rng.normal(size=(n, d1))
    y = np.tanh(x @ rng.normal(size=(d1, d2))) + 0.3 * rng.normal(size=(n, d2))
    assert linear_cka(x, y) == pytest.approx(reference_cka(x, y), rel=1e-10)
    assert linear_cka(x.astype(np.float32), y.astype(np.float32)) == pytest.approx(
        reference_cka(x, y), rel=1e-6
    )


def test_identities() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 16)) + 5.0  # an offset: centring must remove it
    y = rng.normal(size=(64, 16))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    q = _random_orthogonal(16, rng)
    assert linear_cka(x, 3.7 * x @ q) == pytest.approx(1.0, abs=1e-12)  # orthogonal + isotropic scaling
    assert linear_cka(x @ q * 0.01, y) == pytest.approx(linear_cka(x, y), rel=1e-10)
    assert linear_cka(x, y + 100.0) == pytest.approx(linear_cka(x, y), rel=1e-10)
    assert 0.0 <= linear_cka(x, y) < 0.5  # independent noise: far from 1
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x), rel=1e-12)
    # not invariant to a non-isotropic scaling (that is what separates linear CKA from CCA)
    scaled = x * np.linspace(0.1, 10.0, 16)
    assert abs(linear_cka(scaled, x) - 1.0) > 1e-3


def test_bounds_on_adversarial_inputs() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = int(rng.integers(3, 30))
        x = rng.normal(size=(n, int(rng.integers(1, 10)))) * 10.0 ** rng.integers(-6, 6)
        y = rng.normal(size=(n, int(rng.integers(1, 10)))) * 10.0 ** rng.integers(-6, 6)
        assert 0.0 <= linear_cka(x, y) <= 1.0
    constant = np.ones((10, 4))
    assert np.isnan(linear_cka(constant, rng.normal(size=(10, 3))))  # no centred variance: undefined


@pytest.mark.parametrize(
    ("n", "widths_a", "widths_b"), [(20, (4, 6, 5), (3, 8)), (6, (40, 30), (50, 20, 10))]
)
def test_cka_matrix_both_routes_match_the_reference(
    n: int, widths_a: tuple[int, ...], widths_b: tuple[int, ...]
) -> None:
    """Small n and wide layers take the Gram route; the other case the feature route: same values."""
    rng = np.random.default_rng(n)
    base = rng.normal(size=(n, 4))
    a = [base @ rng.normal(size=(4, d)) + 0.5 * rng.normal(size=(n, d)) for d in widths_a]
    b = [base @ rng.normal(size=(4, d)) + 0.5 * rng.normal(size=(n, d)) for d in widths_b]
    matrix = cka_matrix(a, b)
    assert matrix.shape == (len(a), len(b))
    expected = np.array([[reference_cka(x, y) for y in b] for x in a])
    np.testing.assert_allclose(matrix, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.diag(cka_matrix(a, a)), 1.0, atol=1e-12)


def test_cka_matrix_constant_layer_is_nan_and_bad_shapes_are_refused() -> None:
    rng = np.random.default_rng(2)
    a = [np.zeros((8, 3)), rng.normal(size=(8, 3))]
    matrix = cka_matrix(a, [rng.normal(size=(8, 2))])
    assert np.isnan(matrix[0, 0]) and 0.0 <= matrix[1, 0] <= 1.0
    with pytest.raises(HarnessError, match="same positions"):
        cka_matrix([rng.normal(size=(8, 3))], [rng.normal(size=(9, 3))])
    with pytest.raises(HarnessError, match="NaN"):
        linear_cka(np.full((4, 2), np.nan), rng.normal(size=(4, 2)))


def test_sample_positions_is_seeded_bounded_and_complete_when_small() -> None:
    lengths = [5, 0, 7, 3]
    everything = sample_positions(lengths, 100, seed=0)
    assert [list(p) for p in everything] == [list(range(5)), [], list(range(7)), list(range(3))]
    picked = sample_positions(lengths, 6, seed=3)
    assert sum(len(p) for p in picked) == 6
    assert all(
        np.all(np.diff(p) > 0) and (p.size == 0 or p.max() < n) for p, n in zip(picked, lengths, strict=True)
    )
    again = sample_positions(lengths, 6, seed=3)
    assert all(np.array_equal(p, q) for p, q in zip(picked, again, strict=True))


def test_report_heatmap_geometry_and_colours() -> None:
    from harness.report.figures_kd import HEAT_SIZE, cka_heatmap, cka_view, colour

    assert colour(0.0) == "#440154" and colour(1.0) == "#fde725" and colour(None) == "#d0d7de"
    assert colour(2.0) == colour(1.0) and colour(0.5) == "#21918c"
    cka = {"matrix": [[1.0, 0.5], [0.25, None], [0.0, 0.75]], "best_teacher_layer": [0, 2], "n_positions": 9}
    heat = cka_heatmap(cka)
    assert heat is not None and len(heat["cells"]) == 6
    first, missing = heat["cells"][0], heat["cells"][3]
    assert first["x"] == heat["x0"] and first["y"] == heat["y0"] and first["fill"] == "#fde725"
    assert missing["fill"] == "#d0d7de" and missing["title"].endswith("undefined")
    assert heat["cells"][5]["x"] == pytest.approx(heat["x0"] + HEAT_SIZE / 2)  # column 1 of 2
    assert heat["cells"][5]["y"] == pytest.approx(heat["y0"] + 2 * HEAT_SIZE / 3)  # row 2 of 3
    assert heat["best"] == "0, 2" and heat["n_positions"] == "9"
    assert heat["diagonal"] == "0.875"  # student 0 vs teacher 0 (1.0), student 1 vs teacher 2 (0.75)
    assert cka_view({"skipped": "no hidden states"}) == {
        "skipped": "no hidden states",
        "heatmap": None,
        "about": "",
    }
    assert cka_view(None) is None and cka_heatmap({"matrix": []}) is None


def test_cka_matrix_is_kept_beside_the_features_and_follows_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second entry on the same feature files reads the stored matrix; features written again (or a
    damaged stored file) compute it again; a folder that cannot be written still gives the matrix."""
    import os

    from harness import kd_cka

    rng = np.random.default_rng(0)
    teacher, student = tmp_path / "t.npy", tmp_path / "s.npy"
    np.save(teacher, rng.normal(size=(3, 40, 8)).astype(np.float32))
    np.save(student, rng.normal(size=(2, 40, 8)).astype(np.float32))
    calls: list[int] = []
    real = kd_cka.cka_matrix

    def counting(a: Any, b: Any) -> Any:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(kd_cka, "cka_matrix", counting)
    first = kd_cka.cka_entry(teacher, student, 4)["matrix"]
    assert kd_cka.cka_entry(teacher, student, 4)["matrix"] == first and len(calls) == 1
    np.save(student, rng.normal(size=(2, 40, 8)).astype(np.float32))
    os.utime(student, ns=(1, 1))
    assert kd_cka.cka_entry(teacher, student, 4)["matrix"] != first and len(calls) == 2
    for stored in tmp_path.glob("cka-*.npy"):
        stored.write_bytes(b"damaged")
    kd_cka.cka_entry(teacher, student, 4)
    assert len(calls) == 3

    def refuse(path: Path, write: Any) -> None:
        raise PermissionError(f"read-only: {path}")

    monkeypatch.setattr(kd_cka, "_atomic_write", refuse)
    alone = kd_cka.stored_cka_matrix(teacher, teacher, np.load(teacher), np.load(teacher))
    np.testing.assert_allclose(alone, real(list(np.load(teacher)), list(np.load(teacher))))
