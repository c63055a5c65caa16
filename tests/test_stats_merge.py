"""The tile schedule and :class:`embkern.PairStats` merging.

A pass over a subset of the tiles is run by handing the torch backend a schedule that yields
only those tiles; each tile is then the same matmul as in the whole pass, so merged parts must
equal the whole exactly (counts, extremes, nearest) and up to float64 rounding (sums).
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
import torch
from reference import TOLERANCE, sample

from embkern import PairStats
from embkern.backends import PassOptions, torch_tiled
from embkern.prepare import prepare
from embkern.schedule import count_tiles, upper_tiles
from embkern.stats import NO_PARTNER, RADIX_BINS, PerToken

CPU = torch.device("cpu")
SUM_RTOL = TOLERANCE[torch.float32]["sum_rtol"]


# The schedule.


@pytest.mark.parametrize("n", [*range(1, 34), 64, 65, 211])
def test_upper_tiles_cover_each_pair_once(n):
    for block in sorted({1, 2, 3, 5, 7, 8, 16, 31, 32, 63, 64, 1000, n - 1, n, n + 1} - {0}):
        tiles = list(upper_tiles(n, block))
        nb = -(-n // block)
        assert len(tiles) == count_tiles(n, block) == nb * (nb + 1) // 2
        blocks = [(t.r0 // block, t.c0 // block) for t in tiles]
        assert sorted(blocks) == [(i, j) for i in range(nb) for j in range(i, nb)]

        covered = np.zeros((n, n), np.int64)
        for t in tiles:
            assert t.r0 % block == 0 and t.c0 % block == 0
            assert (t.r1, t.c1) == (min(t.r0 + block, n), min(t.c0 + block, n))
            assert t.diagonal == (t.r0 == t.c0)
            part = np.ones((t.r1 - t.r0, t.c1 - t.c0), np.int64)
            # A diagonal tile contributes its strict upper triangle, as the backends reduce it.
            covered[t.r0 : t.r1, t.c0 : t.c1] += np.triu(part, 1) if t.diagonal else part
        np.testing.assert_array_equal(covered, np.triu(np.ones((n, n), np.int64), 1))


@pytest.mark.parametrize("block", [0, -1])
def test_upper_tiles_rejects_empty_blocks(block):
    with pytest.raises(ValueError, match="block"):
        list(upper_tiles(10, block))


# Merging partial passes.


def assert_stats_equal(a: PairStats, b: PairStats, sum_rtol: float = 0.0) -> None:
    """Field by field: integers, extremes and nearest exactly, float64 sums within sum_rtol."""
    assert (a.n_rows, a.pairs, a.neg, a.nonneg) == (b.n_rows, b.pairs, b.neg, b.nonneg)
    assert (a.min, a.max) == (b.min, b.max)
    np.testing.assert_allclose([a.total, a.m2], [b.total, b.m2], rtol=sum_rtol)
    np.testing.assert_array_equal(a.hist, b.hist)
    if a.radix_hi is None or b.radix_hi is None:
        assert a.radix_hi is None and b.radix_hi is None
    else:
        np.testing.assert_array_equal(a.radix_hi, b.radix_hi)
    if a.per_token is None or b.per_token is None:
        assert a.per_token is None and b.per_token is None
        return
    p, q = a.per_token, b.per_token
    for name in ("neg", "min", "max", "nearest"):
        np.testing.assert_array_equal(getattr(p, name), getattr(q, name), err_msg=name)
    # A per-token total can be near zero: bound its error by its n - 1 terms of size <= 1.
    np.testing.assert_allclose(p.total, q.total, rtol=sum_rtol, atol=sum_rtol * a.n_rows)


@functools.cache
def _parts(n: int, d: int, block: int, groups: int, seed: int):
    """The whole pass and passes over ``groups`` disjoint random subsets of its tiles."""
    prep = prepare(sample(n, d, seed), CPU)
    backend = torch_tiled.TorchTiledBackend(CPU)
    options = PassOptions(per_token=True, radix=True, block=block)

    def run(schedule):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(torch_tiled, "tiles", schedule)
            return backend.pair_stats(prep.X, prep.inv_norm, options, lambda k: None)

    whole = run(lambda n, block, split=None: upper_tiles(n, block))
    tiles = list(upper_tiles(n, block))
    owner = np.random.default_rng(seed).permutation(np.arange(len(tiles)) % groups)
    parts = []
    for g in range(groups):
        mine = [t for t, o in zip(tiles, owner, strict=True) if o == g]
        parts.append(run(lambda n, block, split=None, mine=mine: iter(mine)))
    return whole, parts


@pytest.mark.parametrize(("n", "d", "block", "groups"), [(211, 17, 32, 3), (97, 300, 13, 5)])
def test_merged_tile_subsets_equal_the_whole(n, d, block, groups):
    whole, parts = _parts(n, d, block, groups, 0)
    assert sum(p.pairs for p in parts) == whole.pairs == n * (n - 1) // 2
    whole.check_complete()
    for order in (parts, parts[::-1], [parts[1], *parts[2:], parts[0]]):
        merged = functools.reduce(PairStats.merge, order)
        merged.check_complete()
        assert_stats_equal(merged, whole, SUM_RTOL)

    # A tree of merges, as several devices would combine them.
    half = len(parts) // 2
    tree = functools.reduce(PairStats.merge, parts[:half]).merge(
        functools.reduce(PairStats.merge, parts[half:])
    )
    assert_stats_equal(tree, whole, SUM_RTOL)


def test_merge_is_order_independent():
    _, parts = _parts(97, 300, 13, 5, 0)
    for a, b in itertools.combinations(parts, 2):
        assert_stats_equal(a.merge(b), b.merge(a))
    a, b, c = parts[:3]
    assert_stats_equal(a.merge(b).merge(c), a.merge(b.merge(c)), SUM_RTOL)


def test_partial_pass_is_incomplete():
    _, parts = _parts(97, 300, 13, 5, 0)
    with pytest.raises(RuntimeError, match="expected 4656"):
        parts[0].check_complete()


def _empty(n: int) -> PairStats:
    return PairStats(n_rows=n, radix_hi=np.zeros(RADIX_BINS, np.int64), per_token=PerToken.empty(n))


def test_empty_stats_are_neutral():
    whole, _ = _parts(97, 300, 13, 5, 0)
    assert_stats_equal(_empty(97).merge(whole), whole)
    assert_stats_equal(whole.merge(_empty(97)), whole)
    nothing = _empty(97).merge(_empty(97))
    assert (nothing.min, nothing.max) == (float("inf"), float("-inf"))
    assert (nothing.per_token.nearest == NO_PARTNER).all()


def _hand_built(maxima, nearest, n_rows=3) -> PairStats:
    stats = _empty(n_rows)
    stats.per_token.max = np.array(maxima, np.float64)
    stats.per_token.nearest = np.array(nearest, np.int64)
    return stats


def test_nearest_ties_go_to_the_smaller_index_in_either_order():
    a = _hand_built([0.5, 0.9, 0.7], [4, 2, 0])
    b = _hand_built([0.5, 0.8, 0.7], [1, 0, 5])
    for merged in (a.merge(b), b.merge(a)):
        np.testing.assert_array_equal(merged.per_token.max, [0.5, 0.9, 0.7])
        np.testing.assert_array_equal(merged.per_token.nearest, [1, 2, 0])


def test_merge_refuses_mismatched_stats():
    with pytest.raises(ValueError, match="3 and 4 rows"):
        _empty(3).merge(_empty(4))
    bare = PairStats(n_rows=3, per_token=PerToken.empty(3))
    with pytest.raises(ValueError, match="exact-quantile"):
        _empty(3).merge(bare)
    with pytest.raises(ValueError, match="per-token"):
        _empty(3).merge(PairStats(n_rows=3, radix_hi=np.zeros(RADIX_BINS, np.int64)))
