"""Centering and removal of dominant directions, applied to the rows before the cosine.

Is the positivity one shared direction? Two transforms answer it, each a new matrix measured
by the same protocol and shown next to the raw result:

* **centered**: x_i − μ, with μ the mean of the rows that are measured (valid and not
  excluded);
* **centered, top-K PCs removed**: (x_i − μ) − U_K U_Kᵀ (x_i − μ), with U_K the K leading
  eigenvectors of the covariance C = Σ_i (x_i − μ)(x_i − μ)ᵀ / n of those rows ("all but the
  top", Mu & Viswanath 2018).

What the removed parts carried, reported with the result:

* ``mean_share`` = n‖μ‖² / Σ_i ‖x_i‖²: the share of the rows' total squared norm that lies in
  the mean (Σ‖x_i‖² = n‖μ‖² + Σ‖x_i − μ‖², so the rest is the centered variance);
* ``pc_shares``: λ_k / tr C for each removed eigenvalue λ_k (share of the centered variance).

Everything is accumulated in float64 chunk by chunk (O(V·d²) work, O(d²) extra memory); the
transformed matrix is float32 (V·d·4 bytes). Excluded rows are left out of μ and C and are
zero in the output (the caller excludes them again by id).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import InputError

_CHUNK = 1 << 13
_EPS64 = 2.0**-52


@dataclass
class TransformInfo:
    """What a transform removed.

    Attributes:
        name: "centered" or "centered, top-K PCs removed".
        remove_pcs: K, the principal directions projected out (0 for centering only).
        mean_norm: ‖μ‖.
        mean_share: n‖μ‖² / Σ‖x_i‖², the share of the squared norm in the mean.
        pc_shares: λ_k / tr C for the removed directions, largest first.
        zero_rows: ids of rows the transform made exactly zero (a row equal to the mean): left
            out of this variant's statistics.
    """

    name: str
    remove_pcs: int
    mean_norm: float
    mean_share: float
    pc_shares: list[float] = field(default_factory=list)
    zero_rows: list[int] = field(default_factory=list)

    @property
    def pc_share(self) -> float:
        """Share of the centered variance carried by all removed directions together."""
        return float(sum(self.pc_shares))

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "remove_pcs": self.remove_pcs,
            "mean_norm": self.mean_norm,
            "mean_share": self.mean_share,
            "pc_shares": list(self.pc_shares),
            "pc_share": self.pc_share,
            "zero_rows": list(self.zero_rows),
        }


def variant_name(remove_pcs: int) -> str:
    return "centered" if remove_pcs == 0 else f"centered, top-{remove_pcs} PCs removed"


def _chunks(X: torch.Tensor, keep: torch.Tensor):
    for start in range(0, X.shape[0], _CHUNK):
        rows = X[start : start + _CHUNK].to(torch.float64)
        yield start, rows, keep[start : start + rows.shape[0]]


def center_and_project(
    X: torch.Tensor, keep: np.ndarray, remove_pcs: int = 0
) -> tuple[torch.Tensor, TransformInfo]:
    """The centered (and optionally PC-projected) float32 copy of X.

    Args:
        X: (V, d) rows on the CPU, any float dtype.
        keep: bool (V,), the rows that are measured; the others are zero in the output.
        remove_pcs: K leading principal directions to project out after centering, 0 <= K < d.
    """
    V, d = X.shape
    if not 0 <= remove_pcs < d:
        raise InputError(
            f"--remove-pcs {remove_pcs}: the rows have {d} dimensions; remove between 0 and"
            f" {d - 1} principal directions"
        )
    keep_t = torch.as_tensor(keep, dtype=torch.bool)
    n = int(keep_t.sum())
    if n < 2:
        raise InputError(f"centering needs at least 2 usable rows, got {n}")
    total = torch.zeros(d, dtype=torch.float64)
    sq = 0.0
    for _, rows, k in _chunks(X, keep_t):
        rows = rows[k]
        total += rows.sum(0)
        sq += float(rows.square().sum())
    mu = total / n
    info = TransformInfo(
        name=variant_name(remove_pcs),
        remove_pcs=remove_pcs,
        mean_norm=float(mu.norm()),
        mean_share=n * float(mu @ mu) / sq if sq > 0 else 0.0,
    )
    U = None
    if remove_pcs:
        C = torch.zeros((d, d), dtype=torch.float64)
        for _, rows, k in _chunks(X, keep_t):
            centered = rows[k] - mu
            C += centered.T @ centered
        C /= n
        eigvals, eigvecs = torch.linalg.eigh(C)
        # Eigenvalues at the rounding level of C are not directions the rows use.
        rank = int((eigvals > d * _EPS64 * float(eigvals.max().clamp(min=0))).sum())
        if remove_pcs >= rank:
            raise InputError(
                f"--remove-pcs {remove_pcs}: the centered rows span only {rank} directions, so"
                f" removing {remove_pcs} leaves only rounding noise; remove fewer than {rank}"
            )
        order = torch.argsort(eigvals, descending=True)[:remove_pcs]
        U = eigvecs[:, order]
        trace = float(eigvals.clamp(min=0).sum())
        info.pc_shares = [float(v) / trace if trace > 0 else 0.0 for v in eigvals[order]]
    out = torch.zeros((V, d), dtype=torch.float32)
    for start, rows, k in _chunks(X, keep_t):
        centered = rows - mu
        if U is not None:
            centered -= (centered @ U) @ U.T
        centered[~k] = 0.0
        out[start : start + rows.shape[0]] = centered.to(torch.float32)
    return out, info


def random_baseline(n: int, d: int, seed: int) -> torch.Tensor:
    """An (n, d) float32 matrix drawn N(0, 1) as ``torch.nn.Embedding`` initializes its weight.

    Seeded with its own generator, so the baseline does not depend on the global RNG state.
    """
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((n, d), generator=gen, dtype=torch.float32)
