"""The sampled protocol of the seed note: K anchors, each against every other row.

Anchors are drawn uniformly without replacement among the valid rows with a seeded torch
generator (``torch.randperm``), or given as token ids. For each anchor the cosines with the
n - 1 other valid rows give min, max, mean, median (the lower middle value for an even
count, as ``torch.median``), the non-negative (cos >= 0) and negative (cos < 0) counts.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import InputError
from .prepare import Prepared, normalized_chunks
from .results import AnchorStats, SampledResult

_ANCHOR_CHUNK = 256
_WHY = {"non_finite": "non-finite values", "zero_norm": "zero norm"}


def draw_anchors(prep: Prepared, k: int, seed: int) -> np.ndarray:
    """Valid-row indices of k anchors drawn without replacement with ``seed``."""
    if k < 1:
        raise InputError(f"the number of anchors must be at least 1, got {k}")
    if k > prep.n:
        raise InputError(
            f"{k} anchors is more than the {prep.n} usable rows; ask for at most {prep.n}"
        )
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(prep.n, generator=gen)[:k].numpy()


def anchors_from_ids(prep: Prepared, token_ids: list[int]) -> np.ndarray:
    """Valid-row indices of the given token ids, with a clear error for unusable ids."""
    if len(token_ids) == 0:
        raise InputError("no anchor ids given; pass at least one id, or draw anchors instead")
    position = {int(t): i for i, t in enumerate(prep.valid_ids)}
    out = []
    for t in token_ids:
        if not 0 <= t < prep.n_total:
            raise InputError(f"anchor id {t} is out of range: the matrix has {prep.n_total} rows")
        if t not in position:
            reason = next(r for r, ids in prep.excluded.items() if t in ids)
            why = _WHY.get(reason, f"{reason} row")
            raise InputError(f"anchor id {t} is an excluded row ({why}); pick another id")
        out.append(position[t])
    if len(set(out)) != len(out):
        raise InputError("anchor ids must be distinct")
    return np.asarray(out, dtype=np.int64)


def _anchor_rows(prep: Prepared, anchors: np.ndarray) -> torch.Tensor:
    idx = torch.as_tensor(anchors, device=prep.X.device)
    return prep.X[idx].to(torch.float32) * prep.inv_norm[idx, None]


def sampled_stats(prep: Prepared, anchors: np.ndarray, seed: int | None) -> SampledResult:
    """Per-anchor statistics for the given valid-row anchors."""
    out = []
    for start in range(0, len(anchors), _ANCHOR_CHUNK):
        part = anchors[start : start + _ANCHOR_CHUNK]
        A = _anchor_rows(prep, part)
        cos = torch.cat([A @ rows.T for _, rows in normalized_chunks(prep)], dim=1)
        for row, a in zip(cos, part, strict=True):
            out.append(_one_anchor(prep, row, int(a)))
    return SampledResult(anchors=out, seed=seed, excluded_rows=prep.excluded)


def _one_anchor(prep: Prepared, row: torch.Tensor, a: int) -> AnchorStats:
    others = torch.ones(prep.n, dtype=torch.bool, device=row.device)
    others[a] = False
    values = row[others]
    negative = values < 0
    neg = int(negative.sum())
    partner_ids = prep.valid_ids[others.cpu().numpy()]
    return AnchorStats(
        token_id=int(prep.valid_ids[a]),
        min=float(values.min()),
        max=float(values.max()),
        mean=float(values.sum(dtype=torch.float64)) / values.numel(),
        median=float(values.median()),
        nonneg=values.numel() - neg,
        neg=neg,
        negative_ids=partner_ids[negative.cpu().numpy()],
    )
