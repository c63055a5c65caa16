"""Quantiles of all pair cosines without holding the pairs.

Definitions: for q in [0, 1] and n pairs sorted ascending as c_0 <= ... <= c_{n-1}, the
q-quantile is c_k with k = floor(q * (n - 1)) (numpy's ``method="lower"``).

Two ways to get it:

* **From the fine histogram** (default, free): the estimate is the midpoint of the histogram
  bin holding c_k, clamped to [min, max]. Bins are 1e-4 wide and the bin index is formed in
  fp32, so the error is at most 5.1e-5.
* **Exact** (``exact_quantiles``): a radix select on the fp32 bit pattern. Each fp32 cosine
  maps to a 32-bit key whose unsigned order is the float order (positive floats get the sign
  bit set, negative floats have every bit flipped). The first pass counts the high 16 bits of
  the key (65536 bins); that picks, for each q, the high half and the rank left inside it. A
  second pass counts the low 16 bits of only the keys with that high half, which pins c_k
  down to the bit. Two passes, O(65536) memory, ties and duplicates handled by counting.
"""

from __future__ import annotations

import numpy as np
import torch

from .stats import FINE_BINS

DEFAULT_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
#: Half the 1e-4 bin width, plus at most 2.2e-7 from forming the bin index in fp32 (every
#: backend bins in fp32 so that all of them put a value on a bin edge in the same bin).
HIST_QUANTILE_ERROR = 5.1e-5


def order_rank(q: float, n: int) -> int:
    """The 0-based rank k = floor(q * (n - 1)) of the q-quantile among n sorted values."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is outside [0, 1]")
    return int(np.floor(q * (n - 1)))


def fine_bin_index(cos: torch.Tensor) -> torch.Tensor:
    """Map fp32 cosines to int64 fine-histogram bins in [0, FINE_BINS): floor((c + 1) * 10000)
    computed in fp32, clamped to the edge bins."""
    idx = ((cos + 1.0) * (FINE_BINS / 2)).to(torch.int64)
    return idx.clamp_(0, FINE_BINS - 1)


def order_key(cos: torch.Tensor) -> torch.Tensor:
    """Order-preserving int32 key (read as unsigned) of contiguous fp32 values.

    Positive floats get the sign bit set; negative floats get all bits flipped.
    """
    bits = cos.contiguous().view(torch.int32)
    flip = (bits >> 31) | torch.iinfo(torch.int32).min
    return bits ^ flip


def key_high(key: torch.Tensor) -> torch.Tensor:
    """High 16 bits of an order key as int64 in [0, 65536)."""
    return ((key >> 16) & 0xFFFF).to(torch.int64)


def key_low(key: torch.Tensor) -> torch.Tensor:
    """Low 16 bits of an order key as int64 in [0, 65536)."""
    return (key & 0xFFFF).to(torch.int64)


def key_to_float(key: int) -> float:
    """Invert :func:`order_key` for one unsigned 32-bit key."""
    bits = key ^ 0x80000000 if key & 0x80000000 else key ^ 0xFFFFFFFF
    return float(np.array([bits], dtype=np.uint32).view(np.float32)[0])


def from_histogram(
    hist: np.ndarray, qs: tuple[float, ...], lo: float, hi: float
) -> dict[float, float]:
    """Quantile estimates from the fine histogram, each within 5.1e-5 of the exact value."""
    n = int(hist.sum())
    cum = np.cumsum(hist)
    width = 2.0 / FINE_BINS
    out = {}
    for q in qs:
        b = int(np.searchsorted(cum, order_rank(q, n), side="right"))
        out[q] = float(np.clip(-1.0 + (b + 0.5) * width, lo, hi))
    return out


def locate_high(radix_hi: np.ndarray, qs: tuple[float, ...]) -> dict[float, tuple[int, int]]:
    """For each q, the high key half holding c_k and the rank of c_k inside that half."""
    n = int(radix_hi.sum())
    cum = np.cumsum(radix_hi)
    out = {}
    for q in qs:
        k = order_rank(q, n)
        p = int(np.searchsorted(cum, k, side="right"))
        below = int(cum[p - 1]) if p > 0 else 0
        out[q] = (p, k - below)
    return out


def resolve_low(
    located: dict[float, tuple[int, int]], prefixes: list[int], radix_lo: np.ndarray
) -> dict[float, float]:
    """Exact quantiles from the second pass's low-half counts (one row per prefix)."""
    out = {}
    for q, (p, rank) in located.items():
        cum = np.cumsum(radix_lo[prefixes.index(p)])
        low = int(np.searchsorted(cum, rank, side="right"))
        out[q] = key_to_float((p << 16) | low)
    return out
