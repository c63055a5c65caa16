"""Isotropy measures against independent float64 numpy computations on small matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from embkern.errors import InputError
from embkern.isotropy import IsotropyResult, isotropy


def ref_average_cosine(X: np.ndarray) -> float:
    """Mean cosine over all pairs i < j, by an explicit double loop."""
    n = X.shape[0]
    total = 0.0
    for i in range(n):
        for j in range(i + 1, n):
            total += X[i] @ X[j] / (np.linalg.norm(X[i]) * np.linalg.norm(X[j]))
    return total / (n * (n - 1) / 2)


def ref_partition(X: np.ndarray) -> float:
    """min/max of Z(c) = Σ exp(cᵀx_i), c over ±eigenvectors of XᵀX, summed explicitly."""
    _, U = np.linalg.eigh(X.T @ X)
    z = []
    for k in range(U.shape[1]):
        for sign in (1.0, -1.0):
            z.append(sum(math.exp(sign * float(x @ U[:, k])) for x in X))
    return min(z) / max(z)


def ref_isoscore(X: np.ndarray) -> float:
    """Rudman et al. 2022, Algorithm 1, step by step, with PCA through an SVD."""
    d = X.shape[1]
    centered = X - X.mean(0)
    _, _, vt = np.linalg.svd(centered, full_matrices=True)
    reoriented = centered @ vt.T  # step 2: PCA reorientation (all d axes)
    var = reoriented.var(0, ddof=1)  # step 3: variance vector
    var = var * np.sqrt(d) / np.linalg.norm(var)  # step 4: norm √d
    defect = np.linalg.norm(var - np.ones(d)) / np.sqrt(2 * (d - np.sqrt(d)))  # step 5
    used = (d - defect**2 * (d - np.sqrt(d))) ** 2 / d**2  # step 6
    return (d * used - 1) / (d - 1)  # step 7


def ref_effective_rank(M: np.ndarray) -> float:
    """Roy & Vetterli 2007 from np.linalg.svd of the whole matrix."""
    s = np.linalg.svd(M, compute_uv=False)
    s = s[s > s.max() * max(M.shape) * 1e-12]
    p = s / s.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def ref_top_pc(X: np.ndarray) -> float:
    s = np.linalg.svd(X - X.mean(0), compute_uv=False)
    return float(s[0] ** 2 / (s**2).sum())


def ref_mean_norm_ratio(X: np.ndarray) -> float:
    return float(np.linalg.norm(X.mean(0)) / np.linalg.norm(X, axis=1).mean())


def small_matrix(seed: int, n: int = 40, d: int = 7, offset: float = 0.8) -> np.ndarray:
    """Gaussian rows with unequal scales and a shared offset (an anisotropic cloud)."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * rng.uniform(0.2, 1.5, size=d) + offset * rng.normal(size=d)


def assert_matches_reference(r: IsotropyResult, X: np.ndarray, rel: float = 1e-9) -> None:
    assert r.n_rows == X.shape[0] and r.dim == X.shape[1]
    assert r.average_cosine == pytest.approx(ref_average_cosine(X), rel=rel, abs=1e-12)
    assert r.partition_isotropy == pytest.approx(ref_partition(X), rel=rel)
    assert r.partition_log_ratio == pytest.approx(math.log(ref_partition(X)), rel=rel, abs=1e-12)
    assert r.isoscore == pytest.approx(ref_isoscore(X), rel=1e-7, abs=1e-9)
    assert r.effective_rank == pytest.approx(ref_effective_rank(X), rel=1e-7)
    assert r.effective_rank_centered == pytest.approx(ref_effective_rank(X - X.mean(0)), rel=1e-7)
    assert r.top_pc_variance_fraction == pytest.approx(ref_top_pc(X), rel=1e-9)
    assert r.mean_norm_ratio == pytest.approx(ref_mean_norm_ratio(X), rel=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_independent_reference(seed):
    X = small_matrix(seed)
    assert_matches_reference(isotropy(torch.from_numpy(X)), X)


def test_numpy_float32_input_matches_reference():
    X = small_matrix(5, n=33, d=5).astype(np.float32)
    assert_matches_reference(isotropy(X), X.astype(np.float64), rel=1e-7)


def test_fewer_rows_than_dimensions():
    X = small_matrix(3, n=6, d=9)
    r = isotropy(torch.from_numpy(X))
    assert_matches_reference(r, X)
    assert r.effective_rank_centered <= 5 + 1e-9  # rank of 6 centered rows


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 39, 40, 41, 8192])
def test_independent_of_chunk_size(chunk):
    X = torch.from_numpy(small_matrix(4))
    a, b = isotropy(X, chunk=chunk).to_dict(), isotropy(X).to_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=1e-10, abs=1e-13), k


def test_bf16_equals_the_same_values_in_float32():
    X = torch.from_numpy(small_matrix(6, n=64, d=12)).to(torch.bfloat16)
    a, b = isotropy(X), isotropy(X.float())
    for k, v in a.to_dict().items():
        assert v == pytest.approx(b.to_dict()[k], rel=1e-12, abs=1e-14), k
    assert_matches_reference(a, X.double().numpy())


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_other_dtypes(dtype):
    X = torch.from_numpy(small_matrix(7, n=30, d=4)).to(dtype)
    assert_matches_reference(isotropy(X), X.double().numpy(), rel=1e-8)


def test_isotropic_gaussian():
    d = 8
    X = torch.randn(200_000, d, generator=torch.Generator().manual_seed(0))
    r = isotropy(X, chunk=30_000)
    assert abs(r.average_cosine) < 1e-3
    assert r.isoscore > 0.99
    assert r.partition_isotropy > 0.95
    assert r.effective_rank > 0.999 * d
    assert r.effective_rank_centered > 0.999 * d
    assert r.top_pc_variance_fraction == pytest.approx(1 / d, rel=0.05)
    assert r.mean_norm_ratio < 0.01


def test_partition_isotropy_grows_towards_one_with_n():
    g = torch.Generator().manual_seed(1)
    small = isotropy(torch.randn(500, 6, generator=g)).partition_isotropy
    large = isotropy(torch.randn(500_000, 6, generator=g)).partition_isotropy
    assert small < large < 1.0 and large > 0.98


@pytest.mark.parametrize("positive", [True, False])
def test_all_rows_along_one_direction(positive):
    rng = np.random.default_rng(2)
    u = rng.normal(size=9)
    a = rng.uniform(0.5, 2.0, size=50)
    if not positive:
        a[::3] *= -1
    X = a[:, None] * u[None, :]
    r = isotropy(torch.from_numpy(X))
    assert r.isoscore == pytest.approx(0.0, abs=1e-9)
    assert r.effective_rank == pytest.approx(1.0, abs=1e-12)
    assert r.effective_rank_centered == pytest.approx(1.0, abs=1e-12)
    assert r.top_pc_variance_fraction == pytest.approx(1.0, abs=1e-12)
    assert r.average_cosine == pytest.approx(ref_average_cosine(X), abs=1e-12)
    if positive:
        assert r.average_cosine == pytest.approx(1.0, abs=1e-12)
    assert r.partition_isotropy == pytest.approx(ref_partition(X), rel=1e-9)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 10])
def test_isoscore_of_k_equal_dimensions_is_k_minus_1_over_d_minus_1(k):
    """The paper's property: k dimensions used with equal variance give (k − 1)/(d − 1)."""
    d = 10
    rng = np.random.default_rng(k)
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    E = np.eye(d)[:k]
    X = np.concatenate([E, -E]) @ Q.T + 3.0 * rng.normal(size=d)  # rotated and offset
    r = isotropy(torch.from_numpy(X))
    assert r.isoscore == pytest.approx((k - 1) / (d - 1), abs=1e-9)
    assert r.effective_rank_centered == pytest.approx(k, rel=1e-9)


def test_isoscore_of_a_gaussian_in_a_subspace():
    d, k = 12, 4
    g = torch.Generator().manual_seed(3)
    basis = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64))[0]
    X = torch.randn(100_000, k, generator=g, dtype=torch.float64) @ basis.T
    r = isotropy(X)
    assert r.isoscore == pytest.approx((k - 1) / (d - 1), abs=0.01)
    assert r.effective_rank == pytest.approx(k, rel=0.01)


def test_one_dimension():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(25, 1)) + 0.3
    r = isotropy(torch.from_numpy(X))
    assert r.dim == 1
    assert r.average_cosine == pytest.approx(ref_average_cosine(X), abs=1e-12)
    x = X[:, 0]
    zp, zn = np.exp(x).sum(), np.exp(-x).sum()
    assert r.partition_isotropy == pytest.approx(min(zp, zn) / max(zp, zn), rel=1e-12)
    assert r.isoscore == 1.0
    assert r.effective_rank == pytest.approx(1.0)
    assert r.effective_rank_centered == pytest.approx(1.0)
    assert r.top_pc_variance_fraction == pytest.approx(1.0)


def test_large_norms_do_not_overflow():
    X = small_matrix(8, n=20, d=5) * 1e4
    r = isotropy(torch.from_numpy(X))
    assert r.partition_isotropy == 0.0  # exp of a ratio far below float64's range
    assert math.isfinite(r.partition_log_ratio) and r.partition_log_ratio < -1000
    # log Z(c) is, to rounding, max_i cᵀx_i here: compare the log ratio with that.
    _, U = np.linalg.eigh(X.T @ X)
    P = X @ U
    m = np.concatenate([P.max(0), (-P).max(0)])
    assert r.partition_log_ratio == pytest.approx(m.min() - m.max(), rel=1e-6)
    assert math.isfinite(r.isoscore) and math.isfinite(r.effective_rank)


def test_invalid_rows_are_left_out():
    X = small_matrix(9, n=20, d=4)
    bad = X.copy()
    bad[3] = np.nan
    bad[7] = 0.0
    bad[12, 2] = np.inf
    r = isotropy(torch.from_numpy(bad), chunk=5)
    keep = np.ones(20, bool)
    keep[[3, 7, 12]] = False
    assert r.excluded_rows == 3
    assert_matches_reference(r, X[keep])


def test_identical_rows_give_nan_for_spread_measures():
    X = torch.ones(10, 3)
    r = isotropy(X)
    assert r.average_cosine == pytest.approx(1.0)
    assert r.mean_norm_ratio == pytest.approx(1.0)
    assert r.effective_rank == pytest.approx(1.0)
    assert math.isnan(r.isoscore) and math.isnan(r.effective_rank_centered)
    assert math.isnan(r.top_pc_variance_fraction)
    d = r.to_dict()
    assert d["isoscore"] is None and d["effective_rank_centered"] is None


def test_to_dict_is_json_ready():
    import json

    d = isotropy(torch.randn(50, 6)).to_dict()
    assert set(d) == {
        "n_rows",
        "dim",
        "excluded_rows",
        "average_cosine",
        "partition_isotropy",
        "partition_log_ratio",
        "isoscore",
        "effective_rank",
        "effective_rank_centered",
        "top_pc_variance_fraction",
        "mean_norm_ratio",
    }
    json.dumps(d, allow_nan=False)


def test_average_cosine_matches_the_pair_engine():
    import embkern

    X = torch.from_numpy(small_matrix(10, n=300, d=16)).float()
    assert isotropy(X).average_cosine == pytest.approx(
        embkern.pair_stats(X, per_token=False).mean, abs=1e-6
    )


def test_refuses_bad_input():
    with pytest.raises(InputError):
        isotropy(torch.zeros(5, 3))
    with pytest.raises(InputError):
        isotropy(torch.randn(1, 3))
    with pytest.raises(InputError):
        isotropy(torch.randn(5, 3), chunk=0)
    with pytest.raises(InputError):
        isotropy(torch.arange(6).reshape(3, 2))
