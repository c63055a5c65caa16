"""Cross passes, centering / PC removal, the random baseline, exclusions by id, and the sampled
protocol's error against the exact result, each against an independent float64 computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from reference import COUNT_MARGIN, sample

from embkern import engine, sampled
from embkern.analysis import confidence_intervals, sampled_vs_exact
from embkern.backends import get_backend
from embkern.cross import cross_pass
from embkern.errors import InputError
from embkern.prepare import prepare
from embkern.schedule import count_pass_tiles, cross_tiles
from embkern.transform import center_and_project, random_baseline

CPU = torch.device("cpu")
BACKENDS = ["torch", "cpu-fused", "naive"]


def _unit(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Valid rows (finite, non-zero) normalized in float64, and their ids."""
    A = A.astype(np.float64)
    ok = np.isfinite(A).all(1)
    ok[ok] = np.linalg.norm(A[ok], axis=1) > 0
    ids = np.nonzero(ok)[0]
    U = A[ids] / np.linalg.norm(A[ids], axis=1, keepdims=True)
    return U, ids


@pytest.mark.parametrize("n, split, block", [(10, 3, 4), (37, 20, 8), (5, 4, 16), (64, 32, 32)])
def test_cross_tiles_cover_each_cell_once(n, split, block):
    seen = np.zeros((n, n), int)
    for t in cross_tiles(n, split, block):
        assert not t.diagonal
        seen[t.r0 : t.r1, t.c0 : t.c1] += 1
    expected = np.zeros((n, n), int)
    expected[:split, split:] = 1
    assert (seen == expected).all()
    assert count_pass_tiles(n, block, split) == len(list(cross_tiles(n, split, block)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cross_pass_matches_float64_reference(backend, dtype):
    A = sample(131, 17, 1, dtype) + 0.2
    B = sample(97, 17, 2, dtype)
    A[7] = 0.0
    B[3, 4] = float("nan")
    B[10] = A[10]  # a self pair of identical vectors
    a, b = prepare(A, CPU), prepare(B, CPU)
    r = cross_pass(a, b, get_backend(backend, CPU), block=32, exact_quantiles=True)
    Ua, ia = _unit(A.double().numpy())
    Ub, ib = _unit(B.double().numpy())
    S = Ua @ Ub.T
    f = r.pairs
    assert f.pairs == S.size == a.n * b.n
    assert f.min == pytest.approx(S.min(), abs=1e-5)
    assert f.max == pytest.approx(S.max(), abs=1e-5)
    assert f.mean == pytest.approx(S.mean(), abs=1e-6)
    assert f.std == pytest.approx(S.std(), abs=1e-6)
    assert f.closed_form["mean"] == pytest.approx(S.mean(), abs=1e-6)
    assert f.closed_form["std"] == pytest.approx(S.std(), abs=1e-6)
    if np.abs(S).min() > COUNT_MARGIN:
        assert f.neg == int((S < 0).sum())
    values = np.sort(S.ravel())
    k = math.ceil(0.5 * values.size) - 1
    assert f.quantiles[0.5] == pytest.approx(values[k], abs=1e-6)
    # Per-token: A's tokens against every row of B, and the other way round.
    pa, pb = r.per_token_a, r.per_token_b
    assert pa.valid.sum() == a.n and not pa.valid[7]
    np.testing.assert_allclose(pa.mean[ia], S.mean(1), atol=1e-6)
    np.testing.assert_allclose(pb.mean[ib], S.mean(0), atol=1e-6)
    np.testing.assert_allclose(pa.min[ia], S.min(1), atol=1e-5)
    np.testing.assert_allclose(pb.max[ib], S.max(0), atol=1e-5)
    assert (pa.neg[ia] == (S < 0).sum(1)).all()
    assert (pb.neg[ib] == (S < 0).sum(0)).all()
    # The nearest partner of A's token 10 is B's token 10 (the same vector).
    assert pa.nearest_id[10] == 10 and pa.nearest_cos[10] == pytest.approx(1.0, abs=1e-6)
    assert set(pb.nearest_id[ib]) <= set(ia)
    # Self-similarity over the ids valid in both.
    common = np.intersect1d(ia, ib)
    ss = r.self_similarity
    assert (ss.ids == common).all()
    Af, Bf = A.double().numpy(), B.double().numpy()
    expect = [Af[i] @ Bf[i] / np.linalg.norm(Af[i]) / np.linalg.norm(Bf[i]) for i in common]
    np.testing.assert_allclose(ss.cos, expect, atol=1e-12)
    assert ss.summary()["lowest"][0][0] == int(common[np.argmin(expect)])


def test_cross_pass_refuses_different_widths():
    a, b = prepare(sample(10, 4, 0), CPU), prepare(sample(10, 5, 0), CPU)
    with pytest.raises(InputError, match="different widths"):
        cross_pass(a, b, get_backend("torch", CPU))


def test_cross_pass_mixed_dtypes():
    A, B = sample(40, 9, 3, torch.float16), sample(30, 9, 4, torch.float32)
    r = cross_pass(prepare(A, CPU), prepare(B, CPU), get_backend("cpu-fused", CPU), block=16)
    Ua, _ = _unit(A.double().numpy())
    Ub, _ = _unit(B.double().numpy())
    assert r.pairs.mean == pytest.approx((Ua @ Ub.T).mean(), abs=1e-6)


def _numpy_centered(X: np.ndarray, keep: np.ndarray, k: int) -> tuple[np.ndarray, list[float]]:
    rows = X[keep].astype(np.float64)
    mu = rows.mean(0)
    C = rows - mu
    _, s, Vt = np.linalg.svd(C, full_matrices=False)
    out = np.zeros_like(X, dtype=np.float64)
    P = C - (C @ Vt[:k].T) @ Vt[:k] if k else C
    out[keep] = P
    shares = list((s[:k] ** 2) / (s**2).sum())
    return out, shares


@pytest.mark.parametrize("k", [0, 1, 3])
def test_center_and_project_matches_svd(k):
    X = sample(300, 12, 5) + torch.linspace(0, 3, 12)
    X[:, 0] *= 4.0  # a dominant direction
    keep = np.ones(300, bool)
    keep[[4, 9]] = False
    T, info = center_and_project(X.to(torch.bfloat16), keep, k)
    Xb = X.to(torch.bfloat16).double().numpy()
    expect, shares = _numpy_centered(Xb, keep, k)
    np.testing.assert_allclose(T.double().numpy(), expect, atol=2e-5)
    assert (T[~keep] == 0).all()
    mu = Xb[keep].mean(0)
    assert info.mean_norm == pytest.approx(np.linalg.norm(mu), rel=1e-12)
    share = keep.sum() * (mu @ mu) / (Xb[keep] ** 2).sum()
    assert info.mean_share == pytest.approx(share, rel=1e-10)
    assert info.pc_shares == pytest.approx(shares, rel=1e-9)
    assert info.name == ("centered" if k == 0 else f"centered, top-{k} PCs removed")


def test_remove_pcs_out_of_range():
    with pytest.raises(InputError, match="remove between 0 and 3"):
        center_and_project(sample(10, 4, 0), np.ones(10, bool), 4)


def test_centering_removes_the_shared_direction():
    """A common offset makes every cosine positive; centering brings the mean back near 0."""
    X = sample(400, 32, 6) * 0.3 + 1.0
    prep = prepare(X, CPU)
    raw = engine.full_pass(prep, get_backend("cpu-fused", CPU), per_token=False)
    T, _ = center_and_project(X, np.ones(400, bool))
    cen = engine.full_pass(prepare(T, CPU), get_backend("cpu-fused", CPU), per_token=False)
    assert raw.frac_nonneg == 1.0
    # Centered cosines average exactly -1/(n-1) for rows of equal norm; here close to 0.
    assert abs(cen.mean) < 0.01 and 0.4 < cen.frac_nonneg < 0.6


def test_random_baseline_is_seeded_and_gaussian():
    R = random_baseline(2000, 64, 7)
    assert torch.equal(R, random_baseline(2000, 64, 7))
    assert not torch.equal(R, random_baseline(2000, 64, 8))
    assert R.dtype == torch.float32 and R.shape == (2000, 64)
    assert abs(float(R.mean())) < 0.01 and abs(float(R.std()) - 1) < 0.01
    f = engine.full_pass(prepare(R, CPU), get_backend("cpu-fused", CPU), per_token=False)
    # Cosines of independent isotropic Gaussian rows: mean 0, variance 1/d.
    assert abs(f.mean) < 1e-3
    assert f.std == pytest.approx(1 / math.sqrt(64), rel=0.01)
    assert f.frac_nonneg == pytest.approx(0.5, abs=0.005)


def test_prepare_excludes_by_reason_first_reason_wins():
    X = sample(20, 3, 0)
    X[2] = 0.0
    X[5, 1] = float("inf")
    prep = prepare(X, CPU, {"special": [0, 1, 2], "untrained": [1, 7, 7]})
    ex = prep.excluded
    assert ex["special"] == [0, 1, 2]
    assert ex["untrained"] == [7]
    assert ex["zero_norm"] == [] and ex["non_finite"] == [5]
    assert list(prep.valid_ids) == [i for i in range(20) if i not in (0, 1, 2, 5, 7)]
    with pytest.raises(InputError, match=r"ids must be in \[0, 20\)"):
        prepare(X, CPU, {"special": [20]})
    with pytest.raises(InputError, match="1 special"):
        prepare(X[:3], CPU, {"special": [0]})


def test_sampled_with_every_row_equals_exact():
    X = sample(60, 8, 9) + 0.1
    prep = prepare(X, CPU)
    full = engine.full_pass(prep, get_backend("torch", CPU))
    s = sampled.sampled_stats(prep, sampled.draw_anchors(prep, prep.n, 0), seed=0)
    rows = {c.column: c for c in sampled_vs_exact(s, full, prep.n)}
    for col in ("min", "max", "mean", "nonneg", "neg", "frac_nonneg"):
        assert rows[col].exact == pytest.approx(rows[col].sampled, abs=1e-6)
        # All rows drawn: the finite-population correction makes the interval a point.
        assert rows[col].ci_high - rows[col].ci_low == pytest.approx(0.0, abs=1e-9)
    assert rows["median"].exact is None and rows["median"].covered is None
    # A zero-width interval still covers an exact value one fp32 rounding away.
    assert all(rows[col].covered for col in ("min", "max", "mean", "neg"))
    # The exact column values, recomputed from the definition.
    U, _ = _unit(X.double().numpy())
    S = U @ U.T
    np.fill_diagonal(S, np.nan)
    assert rows["mean"].exact == pytest.approx(np.nanmean(S), abs=1e-6)
    assert rows["min"].exact == pytest.approx(np.nanmin(S, 1).mean(), abs=1e-6)
    assert rows["neg"].exact == pytest.approx((S < 0).sum(1).mean(), abs=1e-12)


def test_confidence_interval_coverage():
    """Over many draws, the 95 % interval of the mean column covers the exact value ~95 %."""
    X = sample(400, 16, 10) + 0.15
    prep = prepare(X, CPU)
    full = engine.full_pass(prep, get_backend("cpu-fused", CPU))
    exact = float(full.per_token.mean[full.per_token.valid].mean())
    covered = 0
    trials = 200
    for seed in range(trials):
        s = sampled.sampled_stats(prep, sampled.draw_anchors(prep, 40, seed), seed=seed)
        _, lo, hi = confidence_intervals(s, prep.n)["mean"]
        covered += lo <= exact <= hi
    assert 0.88 <= covered / trials <= 0.995
