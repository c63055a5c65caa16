"""What every backend implements, and the exact-quantile pass they share.

A backend receives the valid rows of X (any float dtype, on its device) and their fp32
inverse norms, and returns a :class:`~embkern.stats.PairStats` over all pairs i < j. It may
normalize however it likes (the torch backend makes an fp32 copy; a fused kernel scales
inside the tile) but must reduce exactly the same set of pairs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .. import quantiles
from ..stats import PairStats

Progress = Callable[[int], None]


@dataclass(frozen=True)
class PassOptions:
    """What a full pass computes.

    Attributes:
        per_token: also reduce per-token statistics (costs O(V) memory and two reductions
            per tile).
        radix: also count the high halves of the fp32 order keys, the first pass of the exact
            quantiles.
        block: rows per tile side; None lets the backend choose.
        split: None for the symmetric pass over all pairs i < j. An integer s makes it a cross
            pass: X is two matrices stacked, A = X[:s] and B = X[s:], and the pass reduces
            every pair (a, b) with a in A and b in B (s·(n - s) pairs, no self pairs). The
            per-token statistics of A's rows are then over B's rows, and the other way round.
    """

    per_token: bool = True
    radix: bool = False
    block: int | None = None
    split: int | None = None


class Backend(ABC):
    """A way to run the full pass on one device."""

    name: str = ""

    def __init__(self, device: torch.device):
        self.device = device

    @abstractmethod
    def pair_stats(
        self, X: torch.Tensor, inv_norm: torch.Tensor, options: PassOptions, progress: Progress
    ) -> PairStats:
        """Reduce all pairs i < j of the rows of X.

        Args:
            X: (n, d) valid rows, float16/bfloat16/float32, on ``self.device``.
            inv_norm: (n,) float32, 1 / ||x_i||, on ``self.device``.
            options: what to compute.
            progress: called with the number of tiles finished since the last call.
        """

    def sign_band(self, X: torch.Tensor) -> float | None:
        """Half-width of the band |cos| < eps whose pairs ``PairStats.neg_uncertain`` counts.

        None for backends that do not count it.
        """
        return None

    @abstractmethod
    def count_tiles(self, n: int, options: PassOptions) -> int:
        """How many progress units :meth:`pair_stats` reports for n rows."""

    def radix_low(
        self,
        X: torch.Tensor,
        inv_norm: torch.Tensor,
        prefixes: list[int],
        options: PassOptions,
        progress: Progress,
    ) -> np.ndarray:
        """Second exact-quantile pass: low-half key counts, int64 (len(prefixes), 65536)."""
        raise NotImplementedError(f"backend {self.name!r} has no radix pass")

    def exact_quantiles(
        self,
        X: torch.Tensor,
        inv_norm: torch.Tensor,
        stats: PairStats,
        qs: tuple[float, ...],
        options: PassOptions,
        progress: Progress,
    ) -> dict[float, float]:
        """Exact order statistics through the second streaming pass (radix select)."""
        located = quantiles.locate_high(stats.radix_hi, qs)
        prefixes = sorted({p for p, _ in located.values()})
        radix_lo = self.radix_low(X, inv_norm, prefixes, options, progress)
        return quantiles.resolve_low(located, prefixes, radix_lo)
