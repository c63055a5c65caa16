"""The full pass (``embkern.pair_stats``) against the float64 reference.

Sizes are deliberately awkward: prime V, d in {1, 17, 300, 3000}, V not a multiple of the
tile side, tiles of 1, 7, 64 and 1000 rows. Every case checks that counts are exact, that
cosine statistics are within ``TOLERANCE`` of the reference, and that no RuntimeWarning (the
engine's closed-form disagreement, or a NaN from numpy) is raised.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import torch
from reference import COUNT_MARGIN, TOLERANCE, Reference, reference, sample

import embkern
from embkern.backends import naive
from embkern.prepare import prepare

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

CPU = torch.device("cpu")
HIST_BINS = 200


def assert_counts_exact(result, ref: Reference) -> None:
    """neg/nonneg equal the reference's; refuses to pass when a pair is too close to zero."""
    assert ref.closest_to_zero > COUNT_MARGIN, "a pair is near zero: pick a seed where it is not"
    assert result.pairs == ref.n * (ref.n - 1) // 2
    assert (result.neg, result.nonneg) == (ref.neg, ref.nonneg)


def assert_histogram(result, ref: Reference, bins: int = HIST_BINS) -> None:
    """Histogram counts equal the reference's except for values within COUNT_MARGIN of an edge."""
    counts = np.asarray(result.histogram_counts)
    assert counts.sum() == result.pairs
    np.testing.assert_allclose(result.histogram_edges, np.linspace(-1.0, 1.0, bins + 1))
    moved = np.abs(counts - ref.histogram(bins)).sum()
    assert moved <= 2 * ref.near_bin_edges(bins, COUNT_MARGIN)


def assert_per_token(pt, ref: Reference, tol: dict) -> None:
    """Every per-token array against the reference (counts exact, floats within tolerance)."""
    exp = ref.per_token()
    assert len(pt) == ref.V
    np.testing.assert_array_equal(pt.valid, exp["valid"])
    np.testing.assert_array_equal(pt.neg, exp["neg"])
    for name in ("mean", "min", "max", "nearest_cos"):
        got = getattr(pt, name)
        assert np.isnan(got[~exp["valid"]]).all(), name
        assert np.isfinite(got[exp["valid"]]).all(), name
        np.testing.assert_allclose(got, exp[name], rtol=0, atol=tol["value"], err_msg=name)
    np.testing.assert_array_equal(pt.nearest_cos, pt.max)

    nearest = pt.nearest_id[ref.ids]
    assert (pt.nearest_id[~exp["valid"]] == -1).all()
    assert (nearest != ref.ids).all() and pt.valid[nearest].all()
    rows = np.searchsorted(ref.ids, nearest)
    picked = ref.cos[np.arange(ref.n), rows]
    np.testing.assert_allclose(picked, exp["max"][ref.ids], rtol=0, atol=2 * tol["value"])
    # Where the best partner wins by more than fp32 rounding can blur, it must be the same id.
    clear = ref.nearest_margin() > 2 * tol["value"]
    np.testing.assert_array_equal(nearest[clear], exp["nearest_id"][ref.ids][clear])


def assert_matches_reference(result, ref: Reference, dtype: torch.dtype) -> None:
    """All of a FullResult against the reference, with the tolerances of the input dtype."""
    tol = TOLERANCE[dtype]
    assert_counts_exact(result, ref)
    for name in ("min", "max", "mean", "std"):
        assert abs(getattr(result, name) - getattr(ref, name)) <= tol["value"], name
    assert abs(result.closed_form["mean"] - ref.mean) <= tol["moment"]
    assert abs(result.closed_form["std"] - ref.std) <= tol["moment"]
    assert_histogram(result, ref)
    assert_per_token(result.per_token, ref, tol)


BACKENDS = ["torch", "cpu-fused", "naive"]

# (backend, V, d, block, seed): seeds are ones where no reference pair is within 1e-6 of 0.
TILED_CASES = [
    ("torch", 211, 17, None, 0),
    ("torch", 101, 17, 7, 1),
    ("torch", 211, 300, 64, 0),
    ("torch", 1009, 17, 64, 5),
    ("torch", 1009, 17, 1000, 14),
    ("torch", 1009, 300, None, 359),
    ("torch", 97, 3000, 16, 1),
    ("torch", 97, 3000, None, 2),
    ("torch", 13, 17, 1, 0),
]
CASES = [
    *TILED_CASES,
    *[("cpu-fused", *case[1:]) for case in TILED_CASES],
    ("naive", 211, 17, None, 0),
    ("naive", 1009, 300, None, 359),
    ("naive", 97, 3000, None, 1),
    ("naive", 13, 17, None, 2),
]


@pytest.mark.parametrize(("backend", "V", "d", "block", "seed"), CASES)
def test_matches_reference(backend, V, d, block, seed):
    X = sample(V, d, seed)
    result = embkern.pair_stats(X, backend=backend, block=block)
    assert result.backend == backend
    ref = reference(X)
    assert_matches_reference(result, ref, torch.float32)
    # Random rows rarely tie, so the nearest-id comparison above covers almost every row.
    assert (ref.nearest_margin() > 2 * TOLERANCE[torch.float32]["value"]).mean() > 0.9


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_token_agrees_with_global(backend):
    """Within one pass a pair has one fp32 value, seen by both its rows and by the totals."""
    result = embkern.pair_stats(sample(211, 17, 0), backend=backend, block=64)
    pt = result.per_token
    assert pt.neg.sum() == 2 * result.neg
    assert pt.max.max() == result.max and pt.min.min() == result.min
    np.testing.assert_allclose(pt.mean.sum() * (211 - 1) / 2, result.mean * result.pairs)


def test_per_token_off_leaves_global_stats_unchanged():
    X = sample(211, 17, 0)
    full = embkern.pair_stats(X, block=64)
    bare = embkern.pair_stats(X, block=64, per_token=False)
    assert bare.per_token is None
    assert bare.to_dict() == full.to_dict()


# Tile size.

TILE_CASES = [(101, 300, 0, (7, 64, 1000, None)), (1009, 17, 5, (64, 1000, None))]


@functools.cache
def _tile_results(V, d, seed, blocks):
    """The reference and one exact-quantile pass per tile side, shared by the tests below."""
    X = sample(V, d, seed)
    return reference(X), {b: embkern.pair_stats(X, block=b, exact_quantiles=True) for b in blocks}


@pytest.mark.parametrize(("V", "d", "seed", "blocks"), TILE_CASES)
def test_tile_size_keeps_counts_and_nearest(V, d, seed, blocks):
    """What must not move with the tile side: counts, the histogram and the nearest token.

    The fp32 value of one pair does move by a few ulps, because the matmul library rounds a
    7×7 product differently from a 64×64 one (up to 4.8e-7 seen), so these are exact only
    where no reference cosine is within 1e-6 of zero, of a bin edge or of a tie; the float
    statistics agree within the quantile tolerance.
    """
    ref, results = _tile_results(V, d, seed, blocks)
    assert ref.closest_to_zero > COUNT_MARGIN
    near_edges = ref.near_bin_edges(HIST_BINS, COUNT_MARGIN)
    clear = np.ones(V, bool)
    clear[ref.ids] = ref.nearest_margin() > COUNT_MARGIN
    tol = TOLERANCE[torch.float32]["quantile"]
    base = results[blocks[0]]
    for block, r in results.items():
        assert (r.pairs, r.neg, r.nonneg) == (base.pairs, base.neg, base.nonneg), block
        np.testing.assert_array_equal(r.per_token.neg, base.per_token.neg)
        np.testing.assert_array_equal(
            r.per_token.nearest_id[clear], base.per_token.nearest_id[clear]
        )
        assert np.abs(r.histogram_counts - base.histogram_counts).sum() <= 2 * near_edges
        for name in ("min", "max", "mean", "std"):
            assert abs(getattr(r, name) - getattr(base, name)) <= tol, (block, name)
        for name in ("min", "max", "mean"):
            a, b = getattr(r.per_token, name), getattr(base.per_token, name)
            np.testing.assert_allclose(a, b, rtol=0, atol=tol, err_msg=name)


# Hostile input.


def _with_bad_rows(V: int, d: int, seed: int) -> tuple[torch.Tensor, dict[str, list[int]]]:
    X = sample(V, d, seed)
    X[0] = 0.0
    X[5] = float("nan")
    X[6] = float("inf")
    X[7, 3] = float("-inf")
    X[100] = 0.0
    X[V - 1, d - 1] = float("nan")
    return X, {"non_finite": [5, 6, 7, V - 1], "zero_norm": [0, 100]}


@pytest.mark.parametrize("backend", BACKENDS)
def test_excluded_rows(backend):
    X, excluded = _with_bad_rows(211, 17, 0)
    assert prepare(X, CPU).excluded == excluded
    result = embkern.pair_stats(X, backend=backend, block=16)
    ref = reference(X)
    assert ref.n == 211 - 6
    assert_matches_reference(result, ref, torch.float32)
    pt = result.per_token
    bad = excluded["non_finite"] + excluded["zero_norm"]
    assert not pt.valid[bad].any() and pt.valid.sum() == 211 - 6
    assert (pt.neg[bad] == -1).all() and (pt.nearest_id[bad] == -1).all()
    assert np.isnan(pt.mean[bad]).all() and np.isnan(pt.max[bad]).all()
    assert not np.isin(pt.nearest_id, bad).any()


def test_tiny_and_huge_rows():
    """Rows scaled by 1e-30 or 1e30 (norms overflow fp32 squares) and a subnormal row (1e-41,
    no fp32 inverse norm) are rescaled by powers of two and keep their cosines."""
    X = sample(53, 17, 0)
    Y = X.clone()
    Y[3] *= 1e-30
    Y[4] *= 1e30
    Y[9] = 1e-41
    assert prepare(Y, CPU).excluded == {"non_finite": [], "zero_norm": []}
    scaled = embkern.pair_stats(Y)
    assert_matches_reference(scaled, reference(Y.double()), torch.float32)


def test_duplicate_rows():
    X = sample(211, 17, 0)
    X[150] = X[3]
    X[90] = X[20]
    X[180] = X[20]
    result = embkern.pair_stats(X, block=64)
    tol = TOLERANCE[torch.float32]["value"]
    pt = result.per_token
    assert abs(result.max - 1.0) <= tol
    assert (pt.nearest_id[3], pt.nearest_id[150]) == (150, 3)
    assert pt.nearest_id[20] in (90, 180) and pt.nearest_id[90] in (20, 180)
    np.testing.assert_allclose(pt.max[[3, 150, 20, 90, 180]], 1.0, rtol=0, atol=tol)
    assert_matches_reference(result, reference(X), torch.float32)


def _axis_rows(pattern: list[int], d: int = 4) -> torch.Tensor:
    """Rows ±e_k (k = |p| - 1, sign of p): every cosine is exactly -1, 0 or 1 in fp32 too."""
    X = torch.zeros(len(pattern), d)
    for i, p in enumerate(pattern):
        X[i, abs(p) - 1] = 1.0 if p > 0 else -1.0
    return X


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("block", [1, 2, 7, None])
def test_exact_ties_go_to_the_smaller_id(backend, block):
    """Exact duplicates and exact zeros: the tie rule is visible, across tile borders too."""
    X = _axis_rows([1, 2, 1, 1, -1, 3, 2, 1, -1, 3, 1])
    pt = embkern.pair_stats(X, backend=backend, block=block).per_token
    # Token 1 (e_2) ties with 6 at cos 1; token 5 (e_3) with 9; -e_1 rows pair with each other.
    expected = [2, 6, 0, 0, 8, 9, 1, 0, 4, 5, 0]
    np.testing.assert_array_equal(pt.nearest_id, expected)
    np.testing.assert_array_equal(pt.max, 1.0)
    ref = reference(X).per_token()
    np.testing.assert_array_equal(pt.nearest_id, ref["nearest_id"])
    np.testing.assert_array_equal(pt.neg, ref["neg"])
    np.testing.assert_array_equal(pt.min, ref["min"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_rows_identical(backend):
    X = sample(1, 300, 0).repeat(50, 1)
    result = embkern.pair_stats(X, backend=backend, block=7, exact_quantiles=True)
    tol = TOLERANCE[torch.float32]["value"]
    assert (result.neg, result.nonneg) == (0, 50 * 49 // 2)
    assert abs(result.min - 1) <= tol and abs(result.max - 1) <= tol and result.std <= tol
    assert all(abs(v - 1) <= tol for v in result.quantiles.values())
    assert result.histogram_counts[-1] == result.pairs
    np.testing.assert_allclose(result.per_token.max, 1.0, atol=tol)


def test_all_rows_identical_exactly():
    """Bitwise-equal unit rows with cosine exactly 1: nearest is the smallest other id."""
    pt = embkern.pair_stats(_axis_rows([-2] * 30), block=7).per_token
    np.testing.assert_array_equal(pt.nearest_id, [1] + [0] * 29)
    np.testing.assert_array_equal(pt.min, 1.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_d1(backend):
    """d = 1: every cosine is ±1 up to fp32 rounding of the normalization, so counts are exact."""
    X = sample(211, 1, 0)
    ref = reference(X)
    assert set(np.unique(ref.pairs)) == {-1.0, 1.0}
    result = embkern.pair_stats(X, backend=backend, block=64)
    assert_matches_reference(result, ref, torch.float32)
    counts = result.histogram_counts
    assert counts[0] + counts[-1] == result.pairs and counts[0] == ref.neg


@pytest.mark.parametrize(
    ("dtype", "seed"),
    [(torch.float32, 0), (torch.float64, 0), (torch.float16, 0), (torch.bfloat16, 0)],
)
def test_input_dtypes(dtype, seed):
    """bf16/fp16 values are exact in fp32, so the reference of the same values holds them to
    the fp32 tolerances; float64 input is rounded to fp32 once."""
    X = sample(211, 300, seed, dtype)
    result = embkern.pair_stats(X, block=64)
    assert_matches_reference(result, reference(X), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_numpy_input(dtype):
    A = sample(211, 17, 0, dtype).numpy()
    from_numpy = embkern.pair_stats(A)
    from_torch = embkern.pair_stats(torch.from_numpy(A))
    assert from_numpy.to_dict() == from_torch.to_dict()
    assert_matches_reference(from_numpy, reference(A), dtype)


@pytest.mark.parametrize(
    "X",
    [
        torch.zeros(5, 3),
        torch.tensor([[1.0, 2.0], [0.0, 0.0], [float("nan"), 1.0]]),
        torch.tensor([[1.0, 2.0], [float("inf"), 1.0]]),
        torch.ones(1, 8),
        torch.ones(4, 0),
    ],
    ids=["all-zero", "one-valid", "inf", "one-row", "no-columns"],
)
def test_fewer_than_two_usable_rows(X):
    with pytest.raises(embkern.InputError):
        embkern.pair_stats(X)
    with pytest.raises(embkern.InputError):
        embkern.sampled_stats(X, anchors=1)


@pytest.mark.parametrize(
    "X",
    [
        torch.ones(8),
        torch.ones(2, 3, 4),
        torch.ones(4, 3, dtype=torch.int32),
        torch.ones(4, 3, dtype=torch.int64),
        torch.ones(4, 3, dtype=torch.bool),
        np.ones((4, 3), dtype=np.int16),
        [[1.0, 2.0], [3.0, 4.0]],
    ],
    ids=["1-D", "3-D", "int32", "int64", "bool", "numpy-int", "list"],
)
def test_bad_tensors(X):
    with pytest.raises(embkern.InputError):
        embkern.pair_stats(X)
    with pytest.raises(embkern.InputError):
        embkern.sampled_stats(X, anchors=1)


# Closed form, warnings, progress, backends.


@pytest.mark.parametrize(("V", "d", "seed"), [(211, 17, 0), (97, 3000, 1), (211, 1, 0)])
def test_closed_form_without_warnings(V, d, seed):
    X = sample(V, d, seed)
    X[2] = float("nan")
    X[3] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = embkern.pair_stats(X, block=32)
    ref = reference(X)
    tol = TOLERANCE[torch.float32]["moment"]
    assert abs(result.closed_form["mean"] - ref.mean) <= tol
    assert abs(result.closed_form["std"] - ref.std) <= tol
    assert abs(result.closed_form["mean"] - result.mean) <= tol


@pytest.mark.parametrize(
    ("backend", "expected_tiles"),
    [("torch", 16 * 17 // 2), ("cpu-fused", 16 * 17 // 2), ("naive", 1)],
)
def test_progress_ticks_every_tile_of_each_pass(backend, expected_tiles):
    seen: dict[int, list[int]] = {}

    def progress(total, pass_number):
        seen[pass_number] = [total, 0]

        def tick(k):
            seen[pass_number][1] += k

        return tick

    embkern.pair_stats(
        sample(211, 17, 0), backend=backend, block=14, progress=progress, exact_quantiles=True
    )
    assert seen == {1: [expected_tiles, expected_tiles], 2: [expected_tiles, expected_tiles]}


def test_naive_refuses_what_does_not_fit(monkeypatch):
    monkeypatch.setattr(naive, "available_bytes", lambda device: 10_000)
    X = sample(211, 17, 0)
    with pytest.raises(embkern.BackendError, match="--backend torch"):
        embkern.pair_stats(X, backend="naive")
    assert embkern.pair_stats(X, backend="torch").pairs == 211 * 210 // 2

    monkeypatch.setattr(naive, "available_bytes", lambda device: None)
    assert embkern.pair_stats(X, backend="naive").pairs == 211 * 210 // 2


def test_backends_agree():
    X = sample(211, 300, 0)
    a = embkern.pair_stats(X, backend="torch", exact_quantiles=True)
    b = embkern.pair_stats(X, backend="naive", exact_quantiles=True)
    tol = TOLERANCE[torch.float32]
    assert (a.pairs, a.neg) == (b.pairs, b.neg)
    for name in ("min", "max", "mean", "std"):
        assert abs(getattr(a, name) - getattr(b, name)) <= tol["quantile"], name
    for q in a.quantiles:
        assert abs(a.quantiles[q] - b.quantiles[q]) <= tol["quantile"], q


@pytest.mark.parametrize("backend", BACKENDS)
def test_extreme_norms_keep_their_cosines(backend):
    """Rows far outside fp32's comfortable range are rescaled, not lost or turned into NaN."""
    X = sample(40, 9, 3).double()
    Y = X.clone()
    Y[0] *= 1e300
    Y[1] *= 1e-300
    Y[2] *= 1e30
    ref = embkern.pair_stats(X, backend=backend)
    got = embkern.pair_stats(Y, backend=backend)
    assert got.excluded_rows == {"non_finite": [], "zero_norm": []}
    assert got.neg == ref.neg
    assert abs(got.max - ref.max) <= 1e-6 and abs(got.min - ref.min) <= 1e-6
    np.testing.assert_allclose(got.per_token.mean, ref.per_token.mean, atol=1e-6)


def test_input_requiring_grad_is_detached():
    X = sample(30, 5, 0).requires_grad_(True)
    assert embkern.pair_stats(X).pairs == 30 * 29 // 2
    assert len(embkern.sampled_stats(X, anchors=3).anchors) == 3
