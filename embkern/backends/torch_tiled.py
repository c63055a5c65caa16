"""The pure-torch tiled backend: CPU, CUDA and MPS.

X is normalized once into an fp32 copy (n·d·4 bytes), then the pass walks the tiles J >= I of
the pair matrix, multiplies each tile with one matmul and reduces it with eager torch ops
before the next tile. Memory is O(n·d + block²), never n². Every tile's results go into
device-side accumulators (int64 counts, float64 sums), copied to the host once at the end.

Trade-off: each statistic is a separate eager pass over the tile, so on the CPU the
reductions cost several times the matmul; fusing them is the job of a compiled epilogue or
the Triton kernel.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import quantiles
from ..schedule import count_pass_tiles, tiles
from ..stats import FINE_BINS, NO_PARTNER, RADIX_BINS, PairStats, PerToken, merged_m2
from .base import Backend, PassOptions, Progress

_BLOCK = {"cpu": 1024, "cuda": 4096, "mps": 2048}


def normalize(X: torch.Tensor, inv_norm: torch.Tensor) -> torch.Tensor:
    """fp32 copy of X with unit rows: (n, d) any float dtype -> (n, d) float32."""
    return X.to(torch.float32) * inv_norm[:, None]


class _Accumulator:
    """Device-side running reductions of one pass."""

    def __init__(self, n: int, device: torch.device, per_token: bool, radix: bool):
        self.n = n
        z64 = {"dtype": torch.int64, "device": device}
        f64 = {"dtype": torch.float64, "device": device}
        self.pairs = 0
        self.neg = torch.zeros((), **z64)
        self.total = torch.zeros((), **f64)
        self.m2 = 0.0
        self.min = torch.full((), float("inf"), device=device)
        self.max = torch.full((), float("-inf"), device=device)
        self.hist = torch.zeros(FINE_BINS, **z64)
        self.radix_hi = torch.zeros(RADIX_BINS, **z64) if radix else None
        self.per_token = per_token
        if per_token:
            self.t_neg = torch.zeros(n, **z64)
            self.t_total = torch.zeros(n, **f64)
            self.t_min = torch.full((n,), float("inf"), device=device)
            self.t_max = torch.full((n,), float("-inf"), device=device)
            self.t_nearest = torch.full((n,), NO_PARTNER, **z64)

    def add_pairs(self, values: torch.Tensor) -> None:
        """Fold a tensor of pair cosines (each unordered pair once) into the global stats."""
        if values.numel() == 0:
            return
        n = values.numel()
        total = values.sum(dtype=torch.float64)
        m2 = float((values.double() - total / n).square().sum())
        self.m2 = merged_m2(self.pairs, float(self.total), self.m2, n, float(total), m2)
        self.pairs += n
        self.neg += (values < 0).sum()
        self.total += total
        self.min = torch.minimum(self.min, values.min())
        self.max = torch.maximum(self.max, values.max())
        flat = values.reshape(-1)
        self.hist += torch.bincount(quantiles.fine_bin_index(flat), minlength=FINE_BINS)
        if self.radix_hi is not None:
            high = quantiles.key_high(quantiles.order_key(flat))
            self.radix_hi += torch.bincount(high, minlength=RADIX_BINS)

    def add_rows(
        self, C: torch.Tensor, start: int, partner_start: int, dim: int, diagonal: bool = False
    ) -> None:
        """Fold reductions of tile C along ``dim`` into the per-token stats of rows start...

        Args:
            C: fp32 tile of cosines; the rows reduced are C's rows (dim=1) or columns (dim=0).
            start: valid-row index of the first row reduced.
            partner_start: valid-row index of the first partner (along ``dim``).
            dim: 1 to reduce the tile's rows, 0 to reduce its columns.
            diagonal: C is a symmetric diagonal tile whose diagonal (the self pairs) is 0.
                It is overwritten in place so that the self pairs never count.
        """
        rows = slice(start, start + C.shape[1 - dim])
        # On a diagonal tile the self pair is 0 here: neutral for the sign count and the sum.
        self.t_neg[rows] += (C < 0).sum(dim)
        self.t_total[rows] += C.sum(dim, dtype=torch.float64)
        if diagonal:
            C.fill_diagonal_(float("inf"))
        self.t_min[rows] = torch.minimum(self.t_min[rows], C.amin(dim))
        if diagonal:
            C.fill_diagonal_(float("-inf"))
        best, arg = C.max(dim)
        arg += partner_start
        cur_best, cur_arg = self.t_max[rows], self.t_nearest[rows]
        take = (best > cur_best) | ((best == cur_best) & (arg < cur_arg))
        self.t_max[rows] = torch.maximum(cur_best, best)
        self.t_nearest[rows] = torch.where(take, arg, cur_arg)

    def result(self) -> PairStats:
        per_token = None
        if self.per_token:
            per_token = PerToken(
                neg=self.t_neg.cpu().numpy(),
                total=self.t_total.cpu().numpy(),
                min=self.t_min.cpu().double().numpy(),
                max=self.t_max.cpu().double().numpy(),
                nearest=self.t_nearest.cpu().numpy(),
            )
        return PairStats(
            n_rows=self.n,
            pairs=self.pairs,
            neg=int(self.neg),
            total=float(self.total),
            m2=self.m2,
            min=float(self.min),
            max=float(self.max),
            hist=self.hist.cpu().numpy(),
            radix_hi=None if self.radix_hi is None else self.radix_hi.cpu().numpy(),
            per_token=per_token,
        )


def _symmetric_diagonal(C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Diagonal tile: (the tile mirrored from its strict upper triangle, that triangle's values).

    A matmul need not return an exactly symmetric product; mirroring makes row i and column i
    see the very same fp32 value for each pair, so per-token and global stats agree.
    """
    upper = torch.ones(C.shape, dtype=torch.bool, device=C.device).triu_(1)
    U = C.masked_fill(~upper, 0.0)
    return U + U.T, C[upper]


class TorchTiledBackend(Backend):
    """Tiled full pass with eager torch reductions; works on any torch device."""

    name = "torch"

    def block(self, options: PassOptions) -> int:
        return options.block or _BLOCK.get(self.device.type, 1024)

    def count_tiles(self, n: int, options: PassOptions) -> int:
        return count_pass_tiles(n, self.block(options), options.split)

    def _tiles(self, Xn: torch.Tensor, options: PassOptions):
        for tile in tiles(Xn.shape[0], self.block(options), options.split):
            yield tile, Xn[tile.r0 : tile.r1] @ Xn[tile.c0 : tile.c1].T

    def pair_stats(
        self, X: torch.Tensor, inv_norm: torch.Tensor, options: PassOptions, progress: Progress
    ) -> PairStats:
        Xn = normalize(X, inv_norm)
        acc = _Accumulator(Xn.shape[0], Xn.device, options.per_token, options.radix)
        for tile, C in self._tiles(Xn, options):
            if tile.diagonal:
                S, values = _symmetric_diagonal(C)
                acc.add_pairs(values)
                if acc.per_token:
                    acc.add_rows(S, tile.r0, tile.c0, dim=1, diagonal=True)
            else:
                acc.add_pairs(C)
                if acc.per_token:
                    acc.add_rows(C, tile.r0, tile.c0, dim=1)
                    acc.add_rows(C, tile.c0, tile.r0, dim=0)
            progress(1)
        return acc.result()

    def radix_low(
        self,
        X: torch.Tensor,
        inv_norm: torch.Tensor,
        prefixes: list[int],
        options: PassOptions,
        progress: Progress,
    ) -> np.ndarray:
        Xn = normalize(X, inv_norm)
        counts = torch.zeros((len(prefixes), RADIX_BINS), dtype=torch.int64, device=Xn.device)
        for tile, C in self._tiles(Xn, options):
            values = _symmetric_diagonal(C)[1] if tile.diagonal else C.reshape(-1)
            key = quantiles.order_key(values)
            high = quantiles.key_high(key)
            for i, prefix in enumerate(prefixes):
                low = quantiles.key_low(key[high == prefix])
                counts[i] += torch.bincount(low, minlength=RADIX_BINS)
            progress(1)
        return counts.cpu().numpy()
