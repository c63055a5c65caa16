"""Fused Triton kernels of the full pass: one tile of cosines, reduced in registers.

Each program takes one tile from a table of tile origins (r0, c0): rows [r0, r0 + BLOCK)
against columns [c0, c0 + BLOCK) of the valid-row matrix X. It forms the dot products with
``tl.dot`` straight from the stored dtype (bf16/fp16 to the tensor cores, fp32 with the chosen
input precision), accumulating in fp32, scales them by the precomputed fp32 inverse norms of
the row and of the column (``(dot * inv_row) * inv_col``; no normalized copy of X exists) and
reduces the tile before the next one:

* per tile, into buffers indexed by tile: negative count, pair count, fp32 sum, fp32 sum of
  squared deviations from the tile mean, min, max, and the count of pairs inside the sign band
  |cos| < eps; the launcher merges them in float64 (Chan's decomposition, so no cancellation);
* the fine histogram (and, for exact quantiles, the high halves of the order keys) with
  ``tl.atomic_add`` into global int64 counters, so every count is an exact integer;
* per row and per column: negative count (int32 atomics), sum (fp32 within the tile, float64
  atomics across tiles), min (atomic min of an int32 order key) and max with argmax together,
  as one int64 atomic max of ``key << 32 | (2^32 - 1 - partner)``: the larger cosine wins and,
  on a tie, the smaller partner index, whatever order the tiles finish in.

A pair counts only where ``row < col`` (and both are inside the matrix). On a tile of the
block diagonal that keeps the strict upper triangle: each pair is computed once, and that one
fp32 value feeds the global statistics, its row's reduction and its column's reduction, so row
i and column i always see the same value. The tiles of a cross pass (rows of A against the
columns of B, which all come after A's rows) satisfy ``row < col`` everywhere, so the same
kernel runs them unmasked. Offsets are int64 throughout; any row stride and any d work (the
last K step is masked).

The order key of a cosine is its fp32 bit pattern made order-preserving as a signed int32
(negative floats get their 31 low bits flipped); XOR with the sign bit gives the unsigned key
of :mod:`embkern.quantiles`, whose high and low 16-bit halves drive the radix select.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

from ..stats import FINE_BINS, RADIX_BINS

#: True when this module was imported under TRITON_INTERPRET=1 (the kernels then run on CPU
#: tensors through Triton's numpy interpreter, and only there).
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0").strip().lower() not in ("", "0", "false")

_FINE_BINS = tl.constexpr(FINE_BINS)
_HALF_BINS = tl.constexpr(FINE_BINS // 2)
_RADIX_BINS = tl.constexpr(RADIX_BINS)


@triton.jit
def _tile_cosines(
    X,
    inv_norm,
    r0,
    c0,
    r_end,
    c_end,
    D,
    stride_r,
    stride_c,
    BLOCK: tl.constexpr,
    BLOCK_K: tl.constexpr,
    IS_FP32: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """Cosines of one tile, the mask of the pairs it owns, and its row and column indices.

    UPCAST feeds 16-bit inputs to ``tl.dot`` as fp32: Triton's interpreter multiplies bf16
    (which it stores as raw uint16) wrongly, so the launcher sets it there for bf16.
    """
    rows = r0 + tl.arange(0, BLOCK).to(tl.int64)
    cols = c0 + tl.arange(0, BLOCK).to(tl.int64)
    ks = tl.arange(0, BLOCK_K).to(tl.int64)
    row_in = rows < r_end
    col_in = cols < c_end
    a_ptr = X + rows[:, None] * stride_r + ks[None, :] * stride_c
    b_ptr = X + cols[None, :] * stride_r + ks[:, None] * stride_c
    acc = tl.zeros((BLOCK, BLOCK), dtype=tl.float32)
    for k in range(0, D, BLOCK_K):
        k_in = ks + k < D
        a = tl.load(a_ptr, mask=row_in[:, None] & k_in[None, :], other=0.0)
        b = tl.load(b_ptr, mask=k_in[:, None] & col_in[None, :], other=0.0)
        if IS_FP32:
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
        elif UPCAST:
            # bf16 -> fp32 is exact, so an fp32 product of the upcast values is the same dot.
            acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc)
        else:
            acc = tl.dot(a, b, acc)
        a_ptr += BLOCK_K * stride_c
        b_ptr += BLOCK_K * stride_c
    inv_r = tl.load(inv_norm + rows, mask=row_in, other=0.0)
    inv_c = tl.load(inv_norm + cols, mask=col_in, other=0.0)
    cos = acc * inv_r[:, None] * inv_c[None, :]
    # -0.0 becomes +0.0 so that equal cosines always have equal order keys.
    cos = tl.where(cos == 0.0, 0.0, cos)
    owned = row_in[:, None] & col_in[None, :] & (cols[None, :] > rows[:, None])
    return cos, owned, rows, cols


@triton.jit
def _signed_key(cos):
    """Order-preserving int32 key of fp32 values (signed comparison = float comparison)."""
    bits = cos.to(tl.int32, bitcast=True)
    return tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


@triton.jit
def _best_key(value, partner):
    """int64 key whose maximum is the largest value, then the smallest partner index."""
    return (_signed_key(value).to(tl.int64) << 32) + (4294967295 - partner)


@triton.jit
def pair_stats_kernel(
    X,
    inv_norm,
    tile_r0,
    tile_c0,
    tile_base,
    r_end,
    c_end,
    D,
    stride_r,
    stride_c,
    eps,
    part_neg,
    part_count,
    part_sum,
    part_m2,
    part_min,
    part_max,
    part_uncertain,
    hist,
    radix_hi,
    tok_neg,
    tok_total,
    tok_min,
    tok_best,
    BLOCK: tl.constexpr,
    BLOCK_K: tl.constexpr,
    IS_FP32: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    PER_TOKEN: tl.constexpr,
    RADIX: tl.constexpr,
):
    """Reduce tile ``tile_base + program_id`` of the tile table (see the module docstring).

    Args:
        X: (n, d) valid rows, any row and column stride; inv_norm: (n,) fp32.
        tile_r0, tile_c0: int32 tile origins (valid-row indices).
        r_end, c_end: rows count only below r_end, columns only below c_end.
        eps: half-width of the sign band; pairs with |cos| < eps are counted as uncertain.
        part_*: per-tile buffers, indexed by tile: int32 neg, count, uncertain; fp32 sum, m2,
            min, max.
        hist: int64 (FINE_BINS,); radix_hi: int64 (RADIX_BINS,), used when RADIX.
        tok_neg: int32 (n,); tok_total: float64 (n,); tok_min: int32 (n,) order keys;
            tok_best: int64 (n,) max/argmax keys; used when PER_TOKEN.
    """
    t = tile_base + tl.program_id(0).to(tl.int64)
    r0 = tl.load(tile_r0 + t).to(tl.int64)
    c0 = tl.load(tile_c0 + t).to(tl.int64)
    cos, owned, rows, cols = _tile_cosines(
        X, inv_norm, r0, c0, r_end, c_end, D, stride_r, stride_c, BLOCK, BLOCK_K, IS_FP32,
        PRECISION, UPCAST,
    )  # fmt: skip
    neg = owned & (cos < 0.0)
    value = tl.where(owned, cos, 0.0)
    count = tl.sum(owned.to(tl.int32))
    total = tl.sum(value)
    mean = total / tl.maximum(count, 1).to(tl.float32)
    dev = tl.where(owned, cos - mean, 0.0)
    tl.store(part_neg + t, tl.sum(neg.to(tl.int32)))
    tl.store(part_count + t, count)
    tl.store(part_sum + t, total)
    tl.store(part_m2 + t, tl.sum(dev * dev))
    tl.store(part_min + t, tl.min(tl.where(owned, cos, float("inf"))))
    tl.store(part_max + t, tl.max(tl.where(owned, cos, float("-inf"))))
    uncertain = owned & (tl.abs(cos) < eps)
    tl.store(part_uncertain + t, tl.sum(uncertain.to(tl.int32)))

    ones = tl.full((BLOCK, BLOCK), 1, tl.int64)
    # The bin index is formed in fp32 exactly as embkern.quantiles.fine_bin_index does.
    bins = ((cos + 1.0) * _HALF_BINS).to(tl.int32)
    bins = tl.minimum(tl.maximum(bins, 0), _FINE_BINS - 1)
    tl.atomic_add(hist + bins, ones, mask=owned, sem="relaxed")
    key = _signed_key(cos)
    if RADIX:
        high = ((key >> 16) & 0xFFFF) ^ 0x8000
        tl.atomic_add(radix_hi + high, ones, mask=owned, sem="relaxed")

    if PER_TOKEN:
        # Argmax positions are found as int32 offsets inside the tile (fewer registers).
        local = tl.arange(0, BLOCK)
        # Rows: each against its partners in this tile's columns.
        row_any = tl.max(owned.to(tl.int32), axis=1) > 0
        row_max = tl.max(tl.where(owned, cos, float("-inf")), axis=1)
        at_max = owned & (cos == row_max[:, None])
        row_arg = c0 + tl.min(tl.where(at_max, local[None, :], BLOCK), axis=1).to(tl.int64)
        row_min = tl.min(tl.where(owned, cos, float("inf")), axis=1)
        tl.atomic_add(tok_neg + rows, tl.sum(neg.to(tl.int32), axis=1), mask=row_any)
        tl.atomic_add(tok_total + rows, tl.sum(value, axis=1).to(tl.float64), mask=row_any)
        tl.atomic_min(tok_min + rows, _signed_key(row_min), mask=row_any)
        tl.atomic_max(tok_best + rows, _best_key(row_max, row_arg), mask=row_any)
        # Columns: each against its partners in this tile's rows.
        col_any = tl.max(owned.to(tl.int32), axis=0) > 0
        col_max = tl.max(tl.where(owned, cos, float("-inf")), axis=0)
        at_max = owned & (cos == col_max[None, :])
        col_arg = r0 + tl.min(tl.where(at_max, local[:, None], BLOCK), axis=0).to(tl.int64)
        col_min = tl.min(tl.where(owned, cos, float("inf")), axis=0)
        tl.atomic_add(tok_neg + cols, tl.sum(neg.to(tl.int32), axis=0), mask=col_any)
        tl.atomic_add(tok_total + cols, tl.sum(value, axis=0).to(tl.float64), mask=col_any)
        tl.atomic_min(tok_min + cols, _signed_key(col_min), mask=col_any)
        tl.atomic_max(tok_best + cols, _best_key(col_max, col_arg), mask=col_any)


@triton.jit
def radix_low_kernel(
    X,
    inv_norm,
    tile_r0,
    tile_c0,
    tile_base,
    r_end,
    c_end,
    D,
    stride_r,
    stride_c,
    lookup,
    counts,
    BLOCK: tl.constexpr,
    BLOCK_K: tl.constexpr,
    IS_FP32: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """Second exact-quantile pass over one tile: count the low key halves of chosen prefixes.

    The cosines are formed by the same code with the same tile and K steps as in
    :func:`pair_stats_kernel`, so each pair has the same fp32 value in both passes.

    Args:
        lookup: int32 (RADIX_BINS,), row of ``counts`` for each high half, or -1 to skip it.
        counts: int64 (n_prefixes, RADIX_BINS).
    """
    t = tile_base + tl.program_id(0).to(tl.int64)
    r0 = tl.load(tile_r0 + t).to(tl.int64)
    c0 = tl.load(tile_c0 + t).to(tl.int64)
    cos, owned, rows, cols = _tile_cosines(
        X, inv_norm, r0, c0, r_end, c_end, D, stride_r, stride_c, BLOCK, BLOCK_K, IS_FP32,
        PRECISION, UPCAST,
    )  # fmt: skip
    key = _signed_key(cos)
    high = ((key >> 16) & 0xFFFF) ^ 0x8000
    slot = tl.load(lookup + high, mask=owned, other=-1).to(tl.int64)
    take = owned & (slot >= 0)
    ones = tl.full((BLOCK, BLOCK), 1, tl.int64)
    tl.atomic_add(counts + slot * _RADIX_BINS + (key & 0xFFFF), ones, mask=take, sem="relaxed")


__all__ = ["INTERPRETED", "pair_stats_kernel", "radix_low_kernel"]
