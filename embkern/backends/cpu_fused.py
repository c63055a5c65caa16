"""The CPU backend with a fused epilogue: torch (MKL) matmul per tile, then one numba pass.

Same tile schedule and results as :mod:`embkern.backends.torch_tiled`, but each tile's
statistics are reduced in a single compiled pass over the tile while it is in cache
(``embkern.kernels.cpu_epilogue``), instead of a dozen eager torch passes. The matmul takes X
as it is (row blocks of float16/bfloat16 are upcast to fp32 one block at a time) and the
epilogue scales each dot product by the two inverse norms, so beyond X the pass holds only the
tile buffer (allocated once, ``torch.matmul(..., out=)``) and O(V) per-token arrays.

Why numba: the epilogue needs a scatter (the histogram) and argmax bookkeeping in the same loop
as the sign counts and sums; numba compiles exactly that loop to native code with OpenMP-style
parallelism, caches it on disk, and needs no C compiler on the user's machine. torch.compile's
CPU path needs a C++ toolchain at run time and a long first compile, and its generated code
cannot fuse ``bincount``.

Limit: CPU only; the first call in a fresh environment compiles the kernels (a few seconds,
then cached next to the module).
"""

from __future__ import annotations

import numpy as np
import torch

from ..schedule import count_pass_tiles, tiles
from ..stats import NO_PARTNER, RADIX_BINS, PairStats, PerToken, merged_m2
from .base import Backend, PassOptions, Progress

DEFAULT_BLOCK = 2048


def available() -> bool:
    """True when numba imports (the fused CPU path can run)."""
    try:
        from ..kernels import cpu_epilogue  # noqa: F401
    except ImportError:
        return False
    return True


class CpuFusedBackend(Backend):
    """Tiled full pass with a fused numba epilogue; CPU only."""

    name = "cpu-fused"

    def __init__(self, device: torch.device):
        super().__init__(device)
        from ..kernels import cpu_epilogue

        self._k = cpu_epilogue
        self.n_chunks = max(1, torch.get_num_threads())

    def block(self, options: PassOptions) -> int:
        return options.block or DEFAULT_BLOCK

    def count_tiles(self, n: int, options: PassOptions) -> int:
        return count_pass_tiles(n, self.block(options), options.split)

    def _tiles(self, X: torch.Tensor, inv_norm: torch.Tensor, options: PassOptions):
        """Yield (tile, fp32 dot products, row inverse norms, column inverse norms)."""
        # A tile never needs to be larger than the matrix (a huge --block would allocate block²).
        block = min(self.block(options), X.shape[0])
        inv = inv_norm.numpy()
        buf = torch.empty(block * block, dtype=torch.float32)
        row_block, row_start = None, -1
        for tile in tiles(X.shape[0], block, options.split):
            if tile.r0 != row_start:
                row_block, row_start = X[tile.r0 : tile.r1].to(torch.float32), tile.r0
            rows, cols = tile.r1 - tile.r0, tile.c1 - tile.c0
            C = buf[: rows * cols].view(rows, cols)
            col_block = X[tile.c0 : tile.c1].to(torch.float32)
            torch.matmul(row_block, col_block.T, out=C)
            yield tile, C.numpy(), inv[tile.r0 : tile.r1], inv[tile.c0 : tile.c1]

    def pair_stats(
        self, X: torch.Tensor, inv_norm: torch.Tensor, options: PassOptions, progress: Progress
    ) -> PairStats:
        n = X.shape[0]
        part = self._k.new_partials(self.n_chunks, options.radix)
        t_neg = np.zeros(n, np.int64)
        t_total = np.zeros(n, np.float64)
        t_min = np.full(n, np.inf, np.float32)
        t_max = np.full(n, -np.inf, np.float32)
        t_nearest = np.full(n, NO_PARTNER, np.int64)
        for tile, C, inv_rows, inv_cols in self._tiles(X, inv_norm, options):
            self._k.reduce_tile(
                C, C.view(np.int32), inv_rows, inv_cols,
                tile.r0, tile.c0, tile.diagonal, options.radix,
                part["neg"], part["total"], part["count"], part["m2"], part["min"], part["max"],
                part["hist"], part["radix_hi"],
                t_neg, t_total, t_min, t_max, t_nearest,
            )  # fmt: skip
            progress(1)
        hist = part["hist"].sum(0)
        count, total, m2 = 0, 0.0, 0.0
        for k in range(self.n_chunks):
            chunk = (int(part["count"][k]), float(part["total"][k]), float(part["m2"][k]))
            m2 = merged_m2(count, total, m2, *chunk)
            count, total = count + chunk[0], total + chunk[1]
        return PairStats(
            n_rows=n,
            pairs=int(hist.sum()),
            neg=int(part["neg"].sum()),
            total=total,
            m2=m2,
            min=float(part["min"].min()),
            max=float(part["max"].max()),
            hist=hist,
            radix_hi=part["radix_hi"].sum(0) if options.radix else None,
            per_token=PerToken(
                neg=t_neg,
                total=t_total,
                min=t_min.astype(np.float64),
                max=t_max.astype(np.float64),
                nearest=t_nearest,
            )
            if options.per_token
            else None,
        )

    def radix_low(
        self,
        X: torch.Tensor,
        inv_norm: torch.Tensor,
        prefixes: list[int],
        options: PassOptions,
        progress: Progress,
    ) -> np.ndarray:
        lookup = np.full(RADIX_BINS, -1, np.int64)
        lookup[prefixes] = np.arange(len(prefixes))
        counts = np.zeros((self.n_chunks, len(prefixes), RADIX_BINS), np.int64)
        for tile, C, inv_rows, inv_cols in self._tiles(X, inv_norm, options):
            self._k.radix_low_tile(
                C, C.view(np.int32), inv_rows, inv_cols, tile.diagonal, lookup, counts
            )
            progress(1)
        return counts.sum(0)


__all__ = ["CpuFusedBackend", "available"]
