"""Quantiles: the radix select and the histogram estimate, alone and through the full pass.

The q-quantile of n values is the order statistic c_k, k = floor(q (n - 1)): numpy's
``method="lower"``. Exact quantiles are order statistics of the engine's own fp32 cosines, so
they are compared with the float64 reference up to fp32 rounding, and with the naive backend's
``np.partition`` of its fp32 cosines; histogram estimates must be within half a 1e-4 bin.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference import TOLERANCE, reference, sample

import embkern
from embkern import quantiles
from embkern.stats import FINE_BINS, RADIX_BINS

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

TOL = TOLERANCE[torch.float32]
QS = (0.0, 1e-9, 0.01, 0.25, 1 / 3, 0.5, 0.75, 0.99, 1 - 1e-9, 1.0)


def _keys(values: np.ndarray) -> np.ndarray:
    """uint32 order keys of fp32 values, as the engine computes them."""
    return quantiles.order_key(torch.from_numpy(values)).numpy().view(np.uint32)


def _radix_select(values: np.ndarray, qs) -> dict[float, float]:
    """Run both radix passes over ``values`` with counts built here in numpy."""
    keys = _keys(values)
    radix_hi = np.bincount(keys >> 16, minlength=RADIX_BINS)
    located = quantiles.locate_high(radix_hi, qs)
    prefixes = sorted({p for p, _ in located.values()})
    radix_lo = np.stack(
        [np.bincount(keys[keys >> 16 == p] & 0xFFFF, minlength=RADIX_BINS) for p in prefixes]
    )
    return quantiles.resolve_low(located, prefixes, radix_lo)


def _histogram_estimates(values: np.ndarray, qs) -> dict[float, float]:
    idx = quantiles.fine_bin_index(torch.from_numpy(values)).numpy()
    hist = np.bincount(idx, minlength=FINE_BINS)
    return quantiles.from_histogram(hist, qs, float(values.min()), float(values.max()))


# The algorithms on plain arrays.


@pytest.mark.parametrize("n", [1, 2, 3, 10, 211, 22155, 508536])
def test_order_rank_is_numpy_lower(n):
    ranks = np.arange(n)
    for q in QS + (0.1, 0.7, 0.999):
        assert quantiles.order_rank(q, n) == np.quantile(ranks, q, method="lower"), q


@pytest.mark.parametrize("q", [-1e-12, 1.0000001, float("nan"), -1.0, 2.0])
def test_order_rank_rejects_levels_outside_unit_interval(q):
    with pytest.raises(ValueError, match="outside"):
        quantiles.order_rank(q, 10)


def test_order_key_is_monotone_and_invertible():
    f32 = np.finfo(np.float32)
    special = np.array(
        [
            -np.inf,
            f32.min,
            -1.0,
            -f32.tiny,
            -1e-45,
            -0.0,
            0.0,
            1e-45,
            f32.tiny,
            1.0,
            f32.max,
            np.inf,
        ],
        dtype=np.float32,
    )
    keys = _keys(special)
    assert (np.diff(keys.astype(np.int64)) > 0).all()
    back = np.array([quantiles.key_to_float(int(k)) for k in keys], dtype=np.float32)
    np.testing.assert_array_equal(back.view(np.uint32), special.view(np.uint32))

    values = np.random.default_rng(0).standard_normal(100_000).astype(np.float32)
    order = np.argsort(_keys(values), kind="stable")
    np.testing.assert_array_equal(values[order], np.sort(values))


@pytest.mark.parametrize(
    "kind", ["normal", "ties", "one-value", "signed-ones", "two-values", "subnormal"]
)
def test_radix_select_is_exact(kind):
    rng = np.random.default_rng(1)
    values = {
        "normal": rng.uniform(-1, 1, 50_001),
        "ties": rng.integers(-3, 4, 40_000) / 7,
        "one-value": np.full(1000, 0.3),
        "signed-ones": rng.choice([-1.0, 1.0], 9999),
        "two-values": np.r_[np.full(3, -0.25), np.full(5, 0.5)],
        "subnormal": rng.choice([-1e-40, 0.0, 1e-40, 1e-30], 5000),
    }[kind].astype(np.float32)
    got = _radix_select(values, QS)
    for q in QS:
        expected = np.quantile(values, q, method="lower")
        assert np.float32(got[q]) == expected, (q, got[q], expected)


@pytest.mark.parametrize("kind", ["uniform", "ties", "extremes"])
def test_histogram_estimate_within_bound(kind):
    rng = np.random.default_rng(2)
    values = {
        "uniform": rng.uniform(-1, 1, 100_000),
        "ties": np.r_[-1.0, 1.0, rng.integers(-6, 7, 10_000) / 7],
        "extremes": np.r_[-1.0, 1.0, rng.uniform(-0.01, 0.01, 1000)],
    }[kind].astype(np.float32)
    got = _histogram_estimates(values, QS)
    for q in QS:
        exact = float(np.quantile(values, q, method="lower"))
        assert abs(got[q] - exact) <= TOL["hist_quantile"], (q, got[q], exact)


def test_histogram_estimate_bound_at_fp32_bin_edges():
    """The stated bound (half a bin plus fp32 rounding of the bin index) holds at bin edges.

    ``fine_bin_index`` forms (cos + 1) * 10000 in fp32, which can round up across the edge: the
    fp32 value of -0.4 (-0.40000001) lands in bin 6000 and is estimated as -0.39995, 5.0006e-5
    away; 0.74999994 (one ulp below 0.75) is estimated as 0.75005, 5.006e-5 away.
    """
    errors = {}
    for v in (np.float32(-0.4), np.nextafter(np.float32(0.75), np.float32(0)), np.float32(0.3)):
        values = np.array([-1.0, v, 1.0], dtype=np.float32)
        errors[float(v)] = abs(_histogram_estimates(values, (0.5,))[0.5] - float(v))
    assert max(errors.values()) <= TOL["hist_quantile"], errors


# Through the full pass.

# (V, d, seed); quantiles need no seed free of near-zero pairs.
MATRICES = [(211, 17, 0), (97, 3000, 1), (1009, 17, 5)]


@pytest.mark.parametrize(("V", "d", "seed"), MATRICES)
@pytest.mark.parametrize("block", [64, None])
def test_exact_quantiles_match_reference_and_naive(V, d, seed, block):
    X = sample(V, d, seed)
    ref = reference(X)
    result = embkern.pair_stats(X, block=block, exact_quantiles=True, qs=QS, per_token=False)
    naive = embkern.pair_stats(X, backend="naive", exact_quantiles=True, qs=QS, per_token=False)
    assert result.quantiles_exact and result.quantile_error == 0.0
    assert list(result.quantiles) == list(QS)
    assert result.quantiles[0.0] == result.min and result.quantiles[1.0] == result.max
    assert naive.quantiles[0.0] == naive.min and naive.quantiles[1.0] == naive.max
    for q in QS:
        assert abs(result.quantiles[q] - ref.quantile(q)) <= TOL["quantile"], q
        assert abs(result.quantiles[q] - naive.quantiles[q]) <= TOL["quantile"], q
        assert np.float32(result.quantiles[q]) == result.quantiles[q], "not an fp32 value"


@pytest.mark.parametrize(("V", "d", "seed"), MATRICES)
@pytest.mark.parametrize("backend", ["torch", "naive"])
def test_histogram_quantiles_within_bound(V, d, seed, backend):
    X = sample(V, d, seed)
    ref = reference(X)
    est = embkern.pair_stats(X, backend=backend, qs=QS, per_token=False)
    exact = embkern.pair_stats(X, backend=backend, qs=QS, per_token=False, exact_quantiles=True)
    assert not est.quantiles_exact and est.quantile_error == TOL["hist_quantile"]
    for q in QS:
        assert abs(est.quantiles[q] - exact.quantiles[q]) <= TOL["hist_quantile"], q
        assert abs(est.quantiles[q] - ref.quantile(q)) <= TOL["hist_quantile"] + TOL["quantile"]
        assert ref.min - TOL["quantile"] <= est.quantiles[q] <= ref.max + TOL["quantile"]


def _axis_rows(pattern: list[int], d: int = 3) -> torch.Tensor:
    """Rows ±e_k (k = |p| - 1, sign of p): every cosine is exactly -1, 0 or 1."""
    X = torch.zeros(len(pattern), d)
    for i, p in enumerate(pattern):
        X[i, abs(p) - 1] = 1.0 if p > 0 else -1.0
    return X


@pytest.mark.parametrize("backend", ["torch", "naive"])
@pytest.mark.parametrize("block", [5, None])
def test_quantiles_of_exact_ties(backend, block):
    """Cosines in {-1, 0, 1} only, each many times: exact quantiles equal numpy's bitwise."""
    X = _axis_rows([1, 2, 3, -1, -2, 1, 1, 2, -3, 3, 3, -1, 1, 2, -2, 3, 1])
    ref = reference(X)
    exact = embkern.pair_stats(X, backend=backend, block=block, exact_quantiles=True, qs=QS)
    est = embkern.pair_stats(X, backend=backend, block=block, qs=QS)
    assert set(np.unique(ref.pairs)) == {-1.0, 0.0, 1.0}
    assert (exact.neg, exact.nonneg) == (ref.neg, ref.nonneg)
    for q in QS:
        assert exact.quantiles[q] == ref.quantile(q), q
        assert abs(est.quantiles[q] - ref.quantile(q)) <= TOL["hist_quantile"], q


@pytest.mark.parametrize("backend", ["torch", "naive"])
def test_quantiles_d1(backend):
    """d = 1: every cosine is ±1 up to fp32 rounding, half a million ties at each."""
    X = sample(1009, 1, 0)
    ref = reference(X)
    exact = embkern.pair_stats(X, backend=backend, exact_quantiles=True, qs=QS, per_token=False)
    for q in QS:
        assert abs(exact.quantiles[q] - ref.quantile(q)) <= TOL["quantile"], q


def test_bad_quantile_levels_and_bins():
    X = sample(13, 4, 0)
    for qs in ([-0.1], [0.5, 1.5], [float("nan")]):
        with pytest.raises(ValueError, match="outside"):
            embkern.pair_stats(X, qs=qs)
    with pytest.raises(ValueError, match="divide"):
        embkern.pair_stats(X, hist_bins=3)


def test_histogram_bins_coarsen_the_same_counts():
    X = sample(211, 17, 0)
    fine = embkern.pair_stats(X, hist_bins=20000, per_token=False)
    for bins in (1, 2, 200, 2000):
        coarse = embkern.pair_stats(X, hist_bins=bins, per_token=False)
        assert coarse.histogram_counts.size == bins and coarse.histogram_edges.size == bins + 1
        expected = fine.histogram_counts.reshape(bins, -1).sum(1)
        np.testing.assert_array_equal(coarse.histogram_counts, expected)
