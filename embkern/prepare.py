"""From a user's matrix to the valid rows a backend reduces.

A row is excluded when it holds a non-finite value (NaN or ±inf), when all its entries are
zero, or when the caller excludes it by id with a reason (``special``, ``padding``,
``untrained``, ...). Norms are taken in float64, scaled by the row's largest entry so that
they neither overflow nor underflow. Excluded rows are counted and listed by token id and never
reach a backend, so no statistic is silently NaN.

Backends multiply in fp32, where dot products of rows with norms far from 1 would overflow or
underflow. A row whose norm is outside [2^-30, 2^31) is therefore multiplied by a power of two
(exactly, which changes no cosine) in a float64 copy, and float64 input is rounded to fp32
after that scaling, so a finite float64 row is never lost to the fp32 range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import InputError

_NORM_CHUNK = 1 << 13
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
#: Rows whose norm has a binary exponent beyond this are rescaled by a power of two.
_MAX_EXPONENT = 30


@dataclass
class Prepared:
    """The valid rows of a matrix and what was left out.

    Attributes:
        X: (n, d) valid rows in the stored dtype (float64 input becomes float32), on device.
        inv_norm: (n,) float32 inverse norms, on device.
        valid_ids: (n,) int64 token id of each valid row.
        n_total: V, the rows of the original matrix.
        excluded: reason -> ascending token ids: "non_finite", "zero_norm", then the caller's
            reasons. A row is listed once, under the first reason that applies (the caller's
            reasons first, in their order).
    """

    X: torch.Tensor
    inv_norm: torch.Tensor
    valid_ids: np.ndarray
    n_total: int
    excluded: dict[str, list[int]]

    @property
    def n(self) -> int:
        return self.X.shape[0]


def as_matrix(X, name: str = "X") -> torch.Tensor:
    """Accept a torch tensor, a numpy array or anything with ``.matrix``; check it is 2-D float."""
    if hasattr(X, "matrix"):
        X = X.matrix
    if isinstance(X, torch.Tensor):
        X = X.detach()
    if isinstance(X, np.ndarray):
        X = torch.from_numpy(X)
    if not isinstance(X, torch.Tensor):
        raise InputError(
            f"{name} must be a 2-D torch tensor or numpy array, got {type(X).__name__}"
        )
    if X.ndim != 2:
        raise InputError(
            f"{name} must be 2-D (V rows x d columns), got shape {tuple(X.shape)};"
            " reshape it, e.g. hidden states (batch, seq, d) -> (batch*seq, d)"
        )
    if X.dtype not in _FLOAT_DTYPES:
        raise InputError(
            f"{name} has dtype {X.dtype}; cosine statistics need floating-point rows"
            " (float16, bfloat16, float32 or float64): convert it with .float()"
        )
    if X.shape[0] < 2 or X.shape[1] < 1:
        raise InputError(
            f"{name} has shape {tuple(X.shape)}; at least 2 rows and 1 column are needed"
        )
    return X


def prepare(
    X: torch.Tensor, device: torch.device, exclude: dict[str, list[int]] | None = None
) -> Prepared:
    """Find the valid rows of X (V, d), move them to ``device`` and compute inverse norms.

    Args:
        exclude: rows to leave out by id, under a reason each (``{"special": [0, 1]}``).
    """
    X = as_matrix(X)
    V = X.shape[0]
    chosen = torch.zeros(V, dtype=torch.bool)
    by_reason: dict[str, list[int]] = {}
    for reason, ids in (exclude or {}).items():
        idx = torch.as_tensor(sorted({int(i) for i in ids}), dtype=torch.int64)
        if idx.numel() and (int(idx[0]) < 0 or int(idx[-1]) >= V):
            raise InputError(
                f"cannot exclude {reason} rows: ids must be in [0, {V}), got {int(idx[0])}"
                f"..{int(idx[-1])}"
            )
        idx = idx[~chosen[idx]]
        chosen[idx] = True
        by_reason[reason] = idx.tolist()
    finite = torch.empty(V, dtype=torch.bool)
    norm = torch.empty(V, dtype=torch.float64)
    for start in range(0, V, _NORM_CHUNK):
        chunk = X[start : start + _NORM_CHUNK].to(torch.float64)
        rows = slice(start, start + chunk.shape[0])
        finite[rows] = torch.isfinite(chunk).all(1)
        peak = chunk.abs().amax(1)
        unit = torch.where(peak > 0, peak, 1.0)
        norm[rows] = peak * torch.linalg.vector_norm(chunk / unit[:, None], dim=1)
    zero = finite & (norm == 0)
    valid = finite & ~zero & ~chosen
    excluded = {
        "non_finite": torch.nonzero(~finite & ~chosen).flatten().tolist(),
        "zero_norm": torch.nonzero(zero & ~chosen).flatten().tolist(),
    }
    for reason, ids in by_reason.items():
        excluded[reason] = sorted(excluded.get(reason, []) + ids)
    valid_ids = torch.nonzero(valid).flatten()
    if valid_ids.numel() < 2:
        counts = ", ".join(f"{len(ids)} {why.replace('_', '-')}" for why, ids in excluded.items())
        raise InputError(
            f"only {valid_ids.numel()} of {V} rows are usable ({counts}); at least 2 are needed"
        )
    rows = X if valid_ids.numel() == V else X[valid_ids]
    rows, norm_valid = _into_fp32_range(rows, norm[valid_ids])
    inv_norm = (1.0 / norm_valid).to(torch.float32)
    return Prepared(
        X=rows.to(device),
        inv_norm=inv_norm.to(device),
        valid_ids=valid_ids.numpy(),
        n_total=V,
        excluded=excluded,
    )


def _into_fp32_range(rows: torch.Tensor, norm: torch.Tensor):
    """Rescale rows with extreme norms by powers of two; round float64 input to fp32."""
    exponent = torch.floor(torch.log2(norm))
    extreme = (exponent > _MAX_EXPONENT) | (exponent < -_MAX_EXPONENT)
    if rows.dtype != torch.float64 and not bool(extreme.any()):
        return rows, norm
    rows = rows.to(torch.float64, copy=True)
    norm = norm.clone()
    if bool(extreme.any()):
        factor = torch.exp2(-exponent[extreme])
        rows[extreme] *= factor[:, None]
        norm[extreme] *= factor
    return rows.to(torch.float32), norm


def normalized_chunks(prep: Prepared, chunk: int = 8192):
    """Yield (start, fp32 unit rows) over the valid rows without a full normalized copy."""
    for start in range(0, prep.n, chunk):
        rows = prep.X[start : start + chunk].to(torch.float32)
        yield start, rows * prep.inv_norm[start : start + chunk, None]
