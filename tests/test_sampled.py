"""The sampled protocol (``embkern.sampled_stats``) against the float64 reference.

Each anchor is compared with every other valid row. Excluded rows sit before and between the
anchors so that a mix-up of valid-row indices and token ids shows up in ``token_id`` and in
``negative_ids``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference import COUNT_MARGIN, TOLERANCE, reference, sample

import embkern

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

AVERAGED = ("min", "max", "mean", "median", "nonneg", "neg", "frac_nonneg")


def _with_bad_rows(V: int, d: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    """Rows 0, 2, 5 (zero, NaN, inf) and 100, V - 1 (NaN, zero) are excluded."""
    X = sample(V, d, seed, dtype)
    X[0] = 0
    X[2, 1] = float("nan")
    X[5] = float("inf")
    X[100, 0] = float("nan")
    X[V - 1] = 0
    return X


# (V, d, seed, dtype): n - 1 = V - 6 partners per anchor, even for V = 212 and odd for 211.
CASES = [
    (212, 17, 0, torch.float32),
    (211, 17, 1, torch.float32),
    (211, 300, 0, torch.float32),
    (211, 3000, 1, torch.float32),
    (212, 300, 2, torch.bfloat16),
]
ANCHOR_IDS = [1, 3, 6, 50, 99, 101, 209, 4]


@pytest.mark.parametrize(("V", "d", "seed", "dtype"), CASES)
def test_per_anchor_matches_reference(V, d, seed, dtype):
    X = _with_bad_rows(V, d, seed, dtype)
    ref = reference(X)
    result = embkern.sampled_stats(X, anchor_ids=ANCHOR_IDS)
    tol = TOLERANCE[dtype]["value"]
    assert result.anchor_ids == ANCHOR_IDS and result.seed is None
    for a in result.anchors:
        exp = ref.anchor(a.token_id)
        assert exp["closest_to_zero"] > COUNT_MARGIN, "a partner is near zero: pick another seed"
        assert (a.neg, a.nonneg) == (exp["neg"], exp["nonneg"]), a.token_id
        assert a.neg + a.nonneg == ref.n - 1
        np.testing.assert_array_equal(a.negative_ids, exp["negative_ids"])
        for name in ("min", "max", "mean", "median"):
            assert abs(getattr(a, name) - exp[name]) <= tol, (a.token_id, name)
        assert a.frac_nonneg == a.nonneg / (ref.n - 1)


def test_negative_ids_are_token_ids():
    """Partners after excluded rows keep their own ids: no shift by the rows left out."""
    X = _with_bad_rows(211, 17, 1)
    a = embkern.sampled_stats(X, anchor_ids=[3]).anchors[0]
    assert a.token_id == 3
    assert not np.isin(a.negative_ids, [0, 2, 3, 5, 100, 210]).any()
    assert (np.diff(a.negative_ids) > 0).all()
    ref = reference(X)
    row = np.searchsorted(ref.ids, 3)
    cos = dict(zip(ref.ids.tolist(), ref.cos[row].tolist(), strict=True))
    assert all(cos[t] < 0 for t in a.negative_ids.tolist())


def _axis_rows(pattern: list[int], d: int = 3) -> torch.Tensor:
    """Rows ±e_k (k = |p| - 1, sign of p): every cosine is exactly -1, 0 or 1."""
    X = torch.zeros(len(pattern), d)
    for i, p in enumerate(pattern):
        X[i, abs(p) - 1] = 1.0 if p > 0 else -1.0
    return X


def test_median_is_the_lower_middle_value():
    """Partners of token 0: cosines 1, 1, -1, 0; sorted -1, 0, 1, 1. np.median would say 0.5."""
    X = _axis_rows([1, 1, 1, -1, 2])
    a = embkern.sampled_stats(X, anchor_ids=[0]).anchors[0]
    assert (a.min, a.max, a.mean, a.median) == (-1.0, 1.0, 0.25, 0.0)
    assert (a.neg, a.nonneg) == (1, 3)
    np.testing.assert_array_equal(a.negative_ids, [3])
    assert a.median == reference(X).anchor(0)["median"]


def test_drawn_anchors_reproducible_distinct_and_valid():
    X = _with_bad_rows(211, 17, 0)
    valid = reference(X).ids
    first = embkern.sampled_stats(X, anchors=50, seed=7)
    again = embkern.sampled_stats(X, anchors=50, seed=7)
    other = embkern.sampled_stats(X, anchors=50, seed=8)
    assert first.seed == 7
    assert first.anchor_ids == again.anchor_ids
    assert first.to_dict(negative_ids=True) == again.to_dict(negative_ids=True)
    assert other.anchor_ids != first.anchor_ids
    assert len(set(first.anchor_ids)) == 50
    assert np.isin(first.anchor_ids, valid).all()

    everyone = embkern.sampled_stats(X, anchors=valid.size, seed=0)
    assert sorted(everyone.anchor_ids) == valid.tolist()


def test_given_ids_equal_drawn_ones():
    X = _with_bad_rows(211, 17, 0)
    drawn = embkern.sampled_stats(X, anchors=10, seed=3)
    given = embkern.sampled_stats(X, anchor_ids=drawn.anchor_ids)
    for a, b in zip(drawn.anchors, given.anchors, strict=True):
        assert a.to_dict(negative_ids=True) == b.to_dict(negative_ids=True)


def test_averages_are_unrounded_means_over_anchors():
    X = _with_bad_rows(211, 300, 0)
    ref = reference(X)
    result = embkern.sampled_stats(X, anchors=25, seed=1)
    summary = result.to_dict()
    tol = TOLERANCE[torch.float32]["value"]
    expected = [ref.anchor(t) for t in result.anchor_ids]
    for name in AVERAGED:
        per_anchor = [getattr(a, name) for a in result.anchors]
        assert getattr(result, name) == np.mean(per_anchor) == summary[name], name
    for name in ("min", "max", "mean", "median"):
        assert abs(getattr(result, name) - np.mean([e[name] for e in expected])) <= tol, name
    assert result.neg == np.mean([e["neg"] for e in expected])
    assert summary["anchors"] == result.anchor_ids
    assert [p["token_id"] for p in summary["per_anchor"]] == result.anchor_ids


def test_agrees_with_full_pass_per_token():
    X = _with_bad_rows(211, 17, 1)
    anchors = embkern.sampled_stats(X, anchor_ids=ANCHOR_IDS).anchors
    pt = embkern.pair_stats(X, block=64).per_token
    tol = TOLERANCE[torch.float32]["quantile"]
    for a in anchors:
        t = a.token_id
        assert a.neg == pt.neg[t]
        assert abs(a.min - pt.min[t]) <= tol and abs(a.max - pt.max[t]) <= tol
        assert abs(a.mean - pt.mean[t]) <= tol


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"anchor_ids": [3, 211]}, "out of range"),
        ({"anchor_ids": [-1]}, "out of range"),
        ({"anchor_ids": [3, 2]}, "non-finite"),
        ({"anchor_ids": [0]}, "zero norm"),
        ({"anchor_ids": [210]}, "zero norm"),
        ({"anchor_ids": [4, 7, 4]}, "distinct"),
        ({"anchors": 207}, "206 usable rows"),
        ({"anchors": 0}, "at least 1"),
        ({"anchors": -3}, "at least 1"),
    ],
)
def test_bad_anchors(kwargs, match):
    X = _with_bad_rows(211, 17, 0)
    with pytest.raises(embkern.InputError, match=match):
        embkern.sampled_stats(X, **kwargs)


def test_empty_anchor_ids_rejected():
    """``anchor_ids=[]`` is an error, like ``anchors=0``, not a result of NaN averages."""
    with pytest.raises(embkern.InputError):
        embkern.sampled_stats(sample(13, 4, 0), anchor_ids=[])
