"""The naive backend: normalize, materialize the whole n×n cosine matrix, reduce it.

It is what people do today, kept as the independent reference and the benchmark baseline.
It holds the fp32 matrix and its fp32 upper triangle (6·n² bytes) and reduces in chunks; its
measured peak is about 10·n² bytes (9.2 GB for MiniLM's 30522 rows), so it refuses sizes
whose 10·n² bytes exceed 80 % of the device's free memory, instead of swapping or being
killed.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from .. import quantiles
from ..errors import BackendError
from ..stats import FINE_BINS, RADIX_BINS, PairStats, PerToken
from .base import Backend, PassOptions, Progress

_BYTES_PER_PAIR_CELL = 10
_FREE_FRACTION = 0.8
_ROWS = 1024
_CHUNK = 1 << 24


def available_bytes(device: torch.device) -> int | None:
    """Free memory on ``device`` in bytes, or None when it cannot be told."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory())
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


class NaiveBackend(Backend):
    """Whole-matrix reference: one matmul, then torch reductions over n² values."""

    name = "naive"

    def count_tiles(self, n: int, options: PassOptions) -> int:
        return 1

    def _cosines(self, X: torch.Tensor, inv_norm: torch.Tensor, split: int | None):
        """The n×n cosine matrix, or the split×(n - split) block of a cross pass."""
        n = X.shape[0]
        cells = n * n if split is None else split * (n - split)
        need = _BYTES_PER_PAIR_CELL * cells
        free = available_bytes(self.device)
        if free is not None and need > _FREE_FRACTION * free:
            raise BackendError(
                f"the naive backend materializes the {n}x{n} cosine matrix and needs about"
                f" {need / 1e9:.1f} GB, but {free / 1e9:.1f} GB is free on {self.device};"
                " use --backend torch, which streams tiles in O(V*d) memory"
            )
        Xn = X.to(torch.float32) * inv_norm[:, None]
        if split is None:
            return Xn @ Xn.T
        return Xn[:split] @ Xn[split:].T

    def _values(self, S: torch.Tensor, split: int | None) -> torch.Tensor:
        return self._upper(S) if split is None else S.reshape(-1)

    @staticmethod
    def _upper(S: torch.Tensor) -> torch.Tensor:
        """The strict upper triangle, row by row (a boolean mask would index with int64)."""
        n = S.shape[0]
        values = torch.empty(n * (n - 1) // 2, dtype=S.dtype, device=S.device)
        offset = 0
        for i in range(n - 1):
            values[offset : offset + n - 1 - i] = S[i, i + 1 :]
            offset += n - 1 - i
        return values

    def pair_stats(
        self, X: torch.Tensor, inv_norm: torch.Tensor, options: PassOptions, progress: Progress
    ) -> PairStats:
        S = self._cosines(X, inv_norm, options.split)
        values = self._values(S, options.split)
        hist = torch.zeros(FINE_BINS, dtype=torch.int64, device=S.device)
        radix_hi = torch.zeros(RADIX_BINS, dtype=torch.int64, device=S.device)
        total = values.sum(dtype=torch.float64)
        mean = total / values.numel()
        m2 = torch.zeros((), dtype=torch.float64, device=S.device)
        for chunk in values.split(_CHUNK):
            m2 += (chunk.double() - mean).square().sum()
            hist += torch.bincount(quantiles.fine_bin_index(chunk), minlength=FINE_BINS)
            if options.radix:
                high = quantiles.key_high(quantiles.order_key(chunk))
                radix_hi += torch.bincount(high, minlength=RADIX_BINS)
        stats = PairStats(
            n_rows=X.shape[0],
            pairs=values.numel(),
            neg=int((values < 0).sum()),
            total=float(total),
            m2=float(m2),
            min=float(values.min()),
            max=float(values.max()),
            hist=hist.cpu().numpy(),
            radix_hi=radix_hi.cpu().numpy() if options.radix else None,
        )
        del values
        if options.per_token:
            if options.split is None:
                stats.per_token = self._per_token(S)
            else:
                stats.per_token = self._per_token_cross(S, options.split)
        progress(1)
        return stats

    @staticmethod
    def _per_token(S: torch.Tensor) -> PerToken:
        """Row reductions of S with the self pair left out, in row blocks (no n² temporary)."""
        n = S.shape[0]
        out = PerToken.empty(n)
        for r0 in range(0, n, _ROWS):
            rows = S[r0 : r0 + _ROWS]
            self_pairs = rows[:, r0 : r0 + _ROWS].diagonal()
            sl = slice(r0, r0 + rows.shape[0])
            out.neg[sl] = (rows < 0).sum(1).cpu().numpy()  # the self pair is ~1, never < 0
            total = rows.sum(1, dtype=torch.float64) - self_pairs.double()
            out.total[sl] = total.cpu().numpy()
            self_pairs.fill_(float("inf"))
            out.min[sl] = rows.amin(1).double().cpu().numpy()
            self_pairs.fill_(float("-inf"))
            best, nearest = rows.max(1)
            out.max[sl] = best.double().cpu().numpy()
            out.nearest[sl] = nearest.cpu().numpy()
        return out

    @staticmethod
    def _per_token_cross(S: torch.Tensor, split: int) -> PerToken:
        """Rows of a cross block: A's rows against B, then B's rows (S's columns) against A."""
        out = PerToken.empty(split + S.shape[1])
        for block, offset, partner_offset in ((S, 0, split), (S.T, split, 0)):
            rows = slice(offset, offset + block.shape[0])
            out.neg[rows] = (block < 0).sum(1).cpu().numpy()
            out.total[rows] = block.sum(1, dtype=torch.float64).cpu().numpy()
            out.min[rows] = block.amin(1).double().cpu().numpy()
            best, nearest = block.max(1)
            out.max[rows] = best.double().cpu().numpy()
            out.nearest[rows] = nearest.cpu().numpy() + partner_offset
        return out

    def exact_quantiles(
        self,
        X: torch.Tensor,
        inv_norm: torch.Tensor,
        stats: PairStats,
        qs: tuple[float, ...],
        options: PassOptions,
        progress: Progress,
    ) -> dict[float, float]:
        S = self._cosines(X, inv_norm, options.split)
        values = self._values(S, options.split).cpu().numpy()
        ranks = [quantiles.order_rank(q, values.size) for q in qs]
        part = np.partition(values, sorted(set(ranks)))
        progress(1)
        return {q: float(part[k]) for q, k in zip(qs, ranks, strict=True)}
