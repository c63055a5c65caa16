"""Fused CPU epilogue of the full pass, compiled with numba.

After the matmul of a tile of raw dot products C = X_I X_Jᵀ (bi × bj, fp32, C-contiguous),
one pass over C, while it is still in cache, scales each entry into a cosine with the fp32
inverse norms of its row and column (so no normalized copy of X is ever made) and reduces
everything the engine needs:

* per row i (token r0 + i): negative count, sum (fp32 within the tile row, float64 across
  tiles), min, max and argmax over its partners in the tile, merged straight into the
  global per-token arrays;
* per column j (token c0 + j): the same, in per-chunk partials merged after the parallel
  loop (columns are shared by all row chunks);
* the global negative count, sum, sum of squared deviations (merged row by row with Chan's
  formula, so a near-constant matrix loses no precision), min and max, and the fine histogram
  (and the high halves of the order keys for exact quantiles), in per-chunk partials that
  live for the whole pass and are summed once at the end.

A diagonal tile (r0 == c0) reduces only its strict upper triangle j > i: each pair counts
once globally, row i gets it as a row pair and token j as a column pair, and the self pair
never appears. So no tile is symmetrized or masked.

Rows are split into ``n_chunks`` contiguous chunks, one per thread (``numba.prange``); each
chunk writes only its own rows and its own partials, so there are no races and no atomics.
Ties of the argmax go to the smaller token id, as everywhere in embkern.

The torch twin of this file is ``embkern/backends/torch_tiled.py``.
"""

from __future__ import annotations

import numba
import numpy as np

from ..stats import FINE_BINS, RADIX_BINS

_INT32_MIN = -(1 << 31)


def new_partials(n_chunks: int, radix: bool) -> dict[str, np.ndarray]:
    """Per-chunk accumulators that live for a whole pass."""
    return {
        "neg": np.zeros(n_chunks, np.int64),
        "total": np.zeros(n_chunks, np.float64),
        "count": np.zeros(n_chunks, np.int64),
        "m2": np.zeros(n_chunks, np.float64),
        "min": np.full(n_chunks, np.inf),
        "max": np.full(n_chunks, -np.inf),
        "hist": np.zeros((n_chunks, FINE_BINS), np.int64),
        "radix_hi": np.zeros((n_chunks, RADIX_BINS if radix else 1), np.int64),
    }


@numba.njit(cache=True, inline="always")
def _order_key(bits):
    """Order-preserving key of an fp32 bit pattern given as int32 (see embkern.quantiles)."""
    b = np.int64(bits)
    return b ^ ((b >> 31) | _INT32_MIN)


_FAST = {"reassoc", "contract"}


@numba.njit(cache=True, nogil=True)
def _scale_row(row, inv_row, inv_cols):
    """Turn dot products into cosines in place: row[j] * inv_row * inv_cols[j] in fp32."""
    for j in range(row.shape[0]):
        row[j] = row[j] * inv_row * inv_cols[j]


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _row_stats(row):
    """Negative count, fp32 sum, min and max of a row.

    Each sweep below is a separate small function so that the compiler vectorizes it on its
    own; the row stays in L1 between sweeps. fp32 partial sums over at most one tile row or
    column are added into float64 by the caller.
    """
    neg = 0
    total = np.float32(0.0)
    low = np.float32(np.inf)
    high = np.float32(-np.inf)
    for j in range(row.shape[0]):
        c = row[j]
        neg += c < 0
        total += c
        low = min(low, c)
        high = max(high, c)
    return neg, total, low, high


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _row_m2(row, mean):
    """Sum of squared deviations of a row from ``mean`` (fp32; the row is short)."""
    m2 = np.float32(0.0)
    for j in range(row.shape[0]):
        d = row[j] - mean
        m2 += d * d
    return m2


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _fold_columns(row, i, neg, total, low, high, arg):
    """Fold row i of the tile into the running column statistics of one chunk."""
    for j in range(row.shape[0]):
        c = row[j]
        neg[j] += c < 0
        total[j] += c
        low[j] = min(low[j], c)
        better = c > high[j]
        high[j] = c if better else high[j]
        arg[j] = i if better else arg[j]


@numba.njit(cache=True, nogil=True)
def _fold_histogram(row, bins, hist):
    """Count a row into the fine histogram (bin index in fp32, as every backend does)."""
    one = np.float32(1.0)
    half = np.float32(FINE_BINS / 2)
    for j in range(row.shape[0]):
        # Truncation maps the rounding just below -1 to bin 0; min() catches c >= 1.
        bins[j] = min(np.int32((row[j] + one) * half), FINE_BINS - 1)
    for j in range(row.shape[0]):
        hist[bins[j]] += 1


@numba.njit(parallel=True, cache=True, nogil=True)
def reduce_tile(
    C,
    C_bits,
    inv_rows,
    inv_cols,
    r0,
    c0,
    diagonal,
    radix,
    part_neg,
    part_total,
    part_count,
    part_m2,
    part_min,
    part_max,
    part_hist,
    part_radix,
    t_neg,
    t_total,
    t_min,
    t_max,
    t_nearest,
):
    """Fold one tile into the pass accumulators (see the module docstring).

    Args:
        C: float32 (bi, bj) dot products of rows r0.. against columns c0.. (valid-row
            indices); overwritten with the cosines.
        C_bits: C viewed as int32 (the same memory), for the order keys.
        inv_rows, inv_cols: float32 (bi,), (bj,) inverse norms of the tile's rows and columns.
        diagonal: r0 == c0; only j > i is reduced.
        radix: also count the high halves of the order keys into ``part_radix``.
        part_*: per-chunk pass accumulators from :func:`new_partials`; their first dimension
            is the number of chunks.
        t_*: per-token arrays over all valid rows: int64 neg, float64 total, float32 min,
            float32 max, int64 nearest.
    """
    bi, bj = C.shape
    n_chunks = part_neg.shape[0]
    step = (bi + n_chunks - 1) // n_chunks
    col_neg = np.zeros((n_chunks, bj), np.int32)
    col_total = np.zeros((n_chunks, bj), np.float32)
    col_min = np.full((n_chunks, bj), np.inf, np.float32)
    col_max = np.full((n_chunks, bj), -np.inf, np.float32)
    col_arg = np.full((n_chunks, bj), -1, np.int64)
    bins = np.empty((n_chunks, bj), np.int32)
    for t in numba.prange(n_chunks):
        cn, cs, cmin, cmax, carg = col_neg[t], col_total[t], col_min[t], col_max[t], col_arg[t]
        hist, tbins = part_hist[t], bins[t]
        g_neg = 0
        g_total = part_total[t]
        g_count = part_count[t]
        g_m2 = part_m2[t]
        g_min = np.inf
        g_max = -np.inf
        for i in range(t * step, min(bi, (t + 1) * step)):
            j0 = i + 1 if diagonal else 0
            if j0 >= bj:
                continue
            # Every sweep starts at 0 of a sliced row: a loop from a run-time offset is not
            # vectorized, and costs about three times as much.
            row = C[i, j0:]
            _scale_row(row, inv_rows[i], inv_cols[j0:])
            r_neg, r_total, r_min, r_max = _row_stats(row)
            r_count = bj - j0
            r_mean = np.float64(r_total) / r_count
            r_m2 = _row_m2(row, np.float32(r_mean))
            if g_count > 0:
                delta = r_mean - g_total / g_count
                g_m2 += delta * delta * (g_count * r_count / (g_count + r_count))
            g_m2 += r_m2
            g_count += r_count
            _fold_columns(row, i, cn[j0:], cs[j0:], cmin[j0:], cmax[j0:], carg[j0:])
            _fold_histogram(row, tbins, hist)
            if radix:
                for j in range(j0, bj):
                    part_radix[t, (_order_key(C_bits[i, j]) >> 16) & 0xFFFF] += 1
            g_neg += r_neg
            g_total += r_total
            g_min = min(g_min, r_min)
            g_max = max(g_max, r_max)
            token = r0 + i
            t_neg[token] += r_neg
            t_total[token] += r_total
            t_min[token] = min(t_min[token], r_min)
            # The argmax is searched only when this tile can change the nearest token.
            if r_max >= t_max[token]:
                j = 0
                while row[j] != r_max:
                    j += 1
                arg = c0 + j0 + j
                if r_max > t_max[token] or arg < t_nearest[token]:
                    t_max[token] = r_max
                    t_nearest[token] = arg
        part_neg[t] += g_neg
        part_total[t] = g_total
        part_count[t] = g_count
        part_m2[t] = g_m2
        part_min[t] = min(part_min[t], g_min)
        part_max[t] = max(part_max[t], g_max)
    # Columns: chunks hold ascending rows, so a strict > keeps the smaller row on ties.
    for j in range(bj):
        best = np.float32(-np.inf)
        best_arg = -1
        neg = 0
        total = 0.0
        low = np.float32(np.inf)
        for t in range(n_chunks):
            neg += col_neg[t, j]
            total += col_total[t, j]
            low = min(low, col_min[t, j])
            if col_arg[t, j] >= 0 and col_max[t, j] > best:
                best = col_max[t, j]
                best_arg = col_arg[t, j]
        col = c0 + j
        t_neg[col] += neg
        t_total[col] += total
        t_min[col] = min(t_min[col], low)
        if best_arg >= 0:
            arg = r0 + best_arg
            if best > t_max[col] or (best == t_max[col] and arg < t_nearest[col]):
                t_max[col] = best
                t_nearest[col] = arg


@numba.njit(parallel=True, cache=True, nogil=True)
def radix_low_tile(C, C_bits, inv_rows, inv_cols, diagonal, lookup, part_counts):
    """Second exact-quantile pass over one tile: count low key halves of selected prefixes.

    Args:
        C, C_bits, inv_rows, inv_cols: as for :func:`reduce_tile`; on a diagonal tile only
            j > i counts.
        lookup: int64 (65536,), row of ``part_counts`` for each high half, or -1 to skip.
        part_counts: int64 (n_chunks, n_prefixes, 65536) per-chunk counts for the pass.
    """
    bi, bj = C_bits.shape
    n_chunks = part_counts.shape[0]
    step = (bi + n_chunks - 1) // n_chunks
    for t in numba.prange(n_chunks):
        for i in range(t * step, min(bi, (t + 1) * step)):
            j0 = i + 1 if diagonal else 0
            if j0 >= bj:
                continue
            _scale_row(C[i, j0:], inv_rows[i], inv_cols[j0:])
            for j in range(j0, bj):
                key = _order_key(C_bits[i, j])
                p = lookup[(key >> 16) & 0xFFFF]
                if p >= 0:
                    part_counts[t, p, key & 0xFFFF] += 1
