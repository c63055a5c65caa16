"""Under-trained rows: robust z-scores of log norm and log distance to the mean row."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embkern.untrained import MAD_CONSTANT, MEAN_AD_CONSTANT, robust_z, untrained_rows

D = 64


def _trained(n: int, seed: int = 0, mean_norm: float = 4.0) -> np.ndarray:
    """Rows sharing a common direction, as trained embeddings do, plus Gaussian spread."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(0, 1, D)
    mu *= mean_norm / np.linalg.norm(mu)
    return mu + rng.normal(0, 1, (n, D))


def _reference(X: np.ndarray, ids: np.ndarray, threshold: float):
    """The module's rule written out in numpy float64, one feature at a time."""
    rows = X[ids].astype(np.float64)
    mu = rows.mean(0)
    feats = [np.log(np.sqrt((rows**2).sum(1))), np.log(np.sqrt(((rows - mu) ** 2).sum(1)))]
    zs = []
    for f in feats:
        med = np.median(f)
        mad = np.median(np.abs(f - med))
        zs.append(MAD_CONSTANT * (f - med) / mad)
    flagged = ids[(zs[0] < -threshold) | (zs[1] < -threshold)]
    return feats, zs, flagged


def test_gaussian_rows_give_few_and_repeatable_false_positives():
    X = torch.from_numpy(_trained(5000, seed=1)).float()
    first = untrained_rows(X)
    again = untrained_rows(X.clone())
    assert first.valid_ids.size == 5000
    # Two one-sided tests at z < -3.5 each pass ~2.3e-4 of normal rows: about 2.3 of 5000.
    assert first.ids.size == 6
    np.testing.assert_array_equal(first.ids, again.ids)


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_short_and_near_mean_rows_are_flagged(seed):
    rng = np.random.default_rng(seed)
    # A mean row nearly as long as a typical row, so that rows at the mean have ordinary norms.
    X = _trained(3000, seed, mean_norm=20.0)
    mu = X.mean(0)
    short = np.array([5, 700, 2999])
    X[short] *= 0.02
    near = np.array([17, 18, 1500])
    X[near] = X.mean(0) + rng.normal(0, 0.01, (3, D))
    # Pointing against the mean with an ordinary norm: far from the mean, never flagged.
    against = 42
    X[against] = -mu / np.linalg.norm(mu) * np.median(np.linalg.norm(X, axis=1))
    result = untrained_rows(torch.from_numpy(X).float())
    planted = set(short.tolist()) | set(near.tolist())
    assert planted <= set(result.ids.tolist())
    # Ordinary rows beyond z = -3.5 by chance: about 1.4 expected of 3000, 7 at most seen.
    assert len(set(result.ids.tolist()) - planted) <= 8
    assert against not in result.ids.tolist()
    pos = np.searchsorted(result.valid_ids, [against])
    assert result.z_norm[pos] > -1 and result.z_dist[pos] > 0
    # The near-mean rows have ordinary norms: only the distance feature catches them.
    pos = np.searchsorted(result.valid_ids, near)
    assert np.all(result.z_norm[pos] > -result.threshold)
    assert np.all(result.z_dist[pos] < -result.threshold)


def test_all_negative_row_is_not_flagged():
    X = np.abs(_trained(2000, seed=3))
    X[7] = -np.abs(X[7])  # every entry negative, norm unchanged
    result = untrained_rows(torch.from_numpy(X))
    assert 7 not in result.ids.tolist()


def test_matches_numpy_float64_reference():
    X = _trained(4000, seed=4)
    X[::97] *= 0.05
    Xt = torch.from_numpy(X).float()
    ids = np.arange(4000)
    (a, b), (za, zb), flagged = _reference(Xt.double().numpy(), ids, 3.5)
    result = untrained_rows(Xt)
    np.testing.assert_allclose(result.log_norm, a, rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.log_dist, b, rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.z_norm, za, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(result.z_dist, zb, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(result.ids, flagged)
    assert set(range(0, 4000, 97)) <= set(result.ids.tolist())
    med = np.median(a)
    cutoff = med - 3.5 * np.median(np.abs(a - med)) / MAD_CONSTANT
    assert result.norm_cutoff == pytest.approx(cutoff, rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    X = _trained(3000, seed=5)
    X[[3, 30, 300]] *= 0.02
    Xh = torch.from_numpy(X).to(dtype)
    result = untrained_rows(Xh)
    ids = np.arange(3000)
    (a, b), _, flagged = _reference(Xh.double().numpy(), ids, 3.5)
    np.testing.assert_allclose(result.log_norm, a, rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.log_dist, b, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(result.ids, flagged)
    assert {3, 30, 300} <= set(result.ids.tolist())


def test_chunks_do_not_change_the_result():
    X = torch.from_numpy(_trained(20000, seed=6)).float()
    X[[0, 8191, 8192, 16384, 19999]] *= 0.01
    result = untrained_rows(X)
    (a, b), _, flagged = _reference(X.double().numpy(), np.arange(20000), 3.5)
    np.testing.assert_allclose(result.log_dist, b, rtol=0, atol=1e-11)
    np.testing.assert_array_equal(result.ids, flagged)
    assert {0, 8191, 8192, 16384, 19999} <= set(result.ids.tolist())


def test_invalid_rows_are_skipped():
    X = _trained(1000, seed=7)
    X[10] = 0.0
    X[11, 3] = np.nan
    X[12, 0] = np.inf
    result = untrained_rows(torch.from_numpy(X))
    assert result.valid_ids.size == 997
    assert not {10, 11, 12} & set(result.valid_ids.tolist())
    assert not {10, 11, 12} & set(result.ids.tolist())
    assert np.all(np.isfinite(result.log_norm))


def test_given_valid_ids_restrict_the_rows_scored():
    X = _trained(1000, seed=8)
    X[[5, 6]] *= 0.01
    ids = np.arange(0, 1000, 2)
    result = untrained_rows(X, ids)
    np.testing.assert_array_equal(result.valid_ids, ids)
    assert 6 in result.ids.tolist() and 5 not in result.ids.tolist()
    assert set(result.ids.tolist()) <= set(ids.tolist())
    _, _, flagged = _reference(X, ids, 3.5)
    np.testing.assert_array_equal(result.ids, flagged)
    with pytest.raises(ValueError):
        untrained_rows(X, np.array([1000]))


def test_threshold():
    X = _trained(2000, seed=9)
    X[:20] *= np.linspace(0.2, 0.9, 20)[:, None]
    loose = untrained_rows(X, threshold=2.0)
    strict = untrained_rows(X, threshold=6.0)
    assert set(strict.ids.tolist()) <= set(loose.ids.tolist())
    assert strict.ids.size < loose.ids.size
    with pytest.raises(ValueError):
        untrained_rows(X, threshold=0)


def test_zero_mad_falls_back_to_mean_absolute_deviation():
    # Unit rows: every log norm is 0, so MAD is 0; three short rows stand out.
    rng = np.random.default_rng(10)
    X = rng.normal(0, 1, (100, D))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    X[[1, 2, 3]] *= 1e-3
    result = untrained_rows(X)
    f = result.log_norm
    med = np.median(f)
    assert med == pytest.approx(0.0, abs=1e-12)
    scale = MEAN_AD_CONSTANT * np.mean(np.abs(f - med))
    np.testing.assert_allclose(result.z_norm, (f - med) / scale)
    assert result.ids.tolist() == [1, 2, 3]


def test_constant_feature_flags_nothing():
    z, med, scale = robust_z(np.zeros(10))
    assert med is None and scale is None and not z.any()
    # Identical rows: every distance to the mean is 0 (log = -inf), nothing to compare against.
    result = untrained_rows(np.ones((50, 4), np.float32))
    assert result.ids.size == 0
    assert result.norm_cutoff is None and result.dist_cutoff is None


def test_row_equal_to_the_mean_is_flagged():
    X = _trained(500, seed=11)
    X[0] = X[1:].mean(0)  # then the mean of all rows is X[0] exactly (up to rounding)
    result = untrained_rows(X)
    assert 0 in result.ids.tolist()


def test_to_dict():
    X = _trained(500, seed=12)
    X[9] *= 0.01
    out = untrained_rows(X).to_dict()
    assert out["ids"] == [9] and out["count"] == 1 and out["scored"] == 500
    assert out["threshold"] == 3.5 and "Iglewicz" in out["rule"]
    assert isinstance(out["log_norm_cutoff"], float)
