"""Statistics between two matrices of the same width, e.g. input vs output embedding.

Definitions (A and B with their own valid rows, n_A and n_B of them):

* **cross pairs**: cos(a, b) for every valid row a of A and every valid row b of B, n_A·n_B
  pairs (a token of A against the same token id of B included: it is a pair of two different
  vectors). The same statistics as the full pass are reduced over them, streamed: the rows of
  A and B are stacked into one matrix and the backend visits only the tiles of A's rows
  against B's rows (:func:`embkern.schedule.cross_tiles`).
* **per-token, A side**: for token i of A, its statistics over all of B's valid rows; the
  nearest partner is a token id of B. The B side is the same the other way round.
* **self-similarity**: s_i = cos(A_i, B_i) for every token id i < min(V_A, V_B) valid in both
  matrices, in float64.
* **closed form**: Σ cos = ŝ_A · ŝ_B and Σ cos² = ⟨Ĝ_A, Ĝ_B⟩_F (ŝ the unit-row sums, Ĝ the
  Gram matrices X̂ᵀX̂), in float64, checked against the streamed moments.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from . import engine, quantiles
from .backends import Backend, PassOptions
from .errors import InputError
from .prepare import Prepared, normalized_chunks
from .results import FullResult, PerTokenResult

_CHUNK = 1 << 13


@dataclass
class SelfSimilarity:
    """cos(A_i, B_i) for the token ids valid in both matrices."""

    ids: np.ndarray
    cos: np.ndarray

    def summary(self, lowest: int = 10) -> dict:
        c = self.cos
        if c.size == 0:
            return {"tokens": 0}
        order = np.argsort(c, kind="stable")[:lowest]
        return {
            "tokens": int(c.size),
            "mean": float(c.mean()),
            "std": float(c.std()),
            "min": float(c.min()),
            "median": float(np.median(c)),
            "max": float(c.max()),
            "neg": int((c < 0).sum()),
            "frac_neg": float((c < 0).mean()),
            "lowest": [[int(self.ids[k]), float(c[k])] for k in order],
        }


@dataclass
class CrossResult:
    """Statistics of every pair (a in A, b in B) and the per-token self-similarity."""

    pairs: FullResult
    self_similarity: SelfSimilarity
    per_token_a: PerTokenResult | None = field(default=None, repr=False)
    per_token_b: PerTokenResult | None = field(default=None, repr=False)
    #: Rows of A and of B left out, by reason (as ``FullResult.excluded_rows``).
    excluded_a: dict[str, list[int]] = field(default_factory=dict)
    excluded_b: dict[str, list[int]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "pairs": self.pairs.to_dict(),
            "self_similarity": self.self_similarity.summary(),
            "excluded_rows_a": self.excluded_a,
            "excluded_rows_b": self.excluded_b,
        }


def _moments(prep: Prepared) -> tuple[torch.Tensor, torch.Tensor]:
    d = prep.X.shape[1]
    s = torch.zeros(d, dtype=torch.float64, device=prep.X.device)
    G = torch.zeros((d, d), dtype=torch.float64, device=prep.X.device)
    for _, rows in normalized_chunks(prep):
        rows = rows.double()
        s += rows.sum(0)
        G += rows.T @ rows
    return s, G


def closed_form_cross(a: Prepared, b: Prepared) -> tuple[float, float]:
    """Mean and standard deviation of all cross cosines from sums and Gram matrices."""
    s_a, G_a = _moments(a)
    s_b, G_b = _moments(b)
    pairs = a.n * b.n
    mean = float(s_a @ s_b) / pairs
    mean_sq = float((G_a * G_b).sum()) / pairs
    return mean, math.sqrt(max(mean_sq - mean * mean, 0.0))


def self_similarity(a: Prepared, b: Prepared) -> SelfSimilarity:
    """cos(A_i, B_i) in float64 for the ids valid in both (ids below min(V_A, V_B))."""
    common, ia, ib = np.intersect1d(a.valid_ids, b.valid_ids, return_indices=True)
    out = np.empty(common.size)
    for start in range(0, common.size, _CHUNK):
        ra = torch.as_tensor(ia[start : start + _CHUNK], device=a.X.device)
        rb = torch.as_tensor(ib[start : start + _CHUNK], device=b.X.device)
        xa = a.X[ra].double()
        xb = b.X[rb].double().to(a.X.device)
        dot = (xa * xb).sum(1)
        out[start : start + ra.numel()] = (dot / (xa.norm(dim=1) * xb.norm(dim=1))).cpu().numpy()
    return SelfSimilarity(ids=common, cos=out)


def cross_pass(
    a: Prepared,
    b: Prepared,
    backend: Backend,
    *,
    per_token: bool = True,
    exact_quantiles: bool = False,
    qs: tuple[float, ...] = quantiles.DEFAULT_QUANTILES,
    hist_bins: int = 200,
    block: int | None = None,
    progress: Callable[[int, int], Callable[[int], None]] | None = None,
) -> CrossResult:
    """Reduce every pair (a, b) of valid rows of A and B; see the module docstring."""
    if a.X.shape[1] != b.X.shape[1]:
        raise InputError(
            f"the two matrices have different widths ({a.X.shape[1]} and {b.X.shape[1]});"
            " cross statistics need rows of the same dimension"
        )
    dtype = a.X.dtype if a.X.dtype == b.X.dtype else torch.float32
    X = torch.cat([a.X.to(dtype), b.X.to(a.X.device, dtype)])
    inv = torch.cat([a.inv_norm, b.inv_norm.to(a.X.device)])
    options = PassOptions(per_token=per_token, radix=exact_quantiles, block=block, split=a.n)
    stats, qvals = engine.run_pass(
        X, inv, backend, options, qs=qs, hist_bins=hist_bins, progress=progress
    )
    result = engine.summarize(stats, qvals, exact_quantiles, hist_bins, closed_form_cross(a, b))
    result.backend = backend.name
    result.sign_band = backend.sign_band(X)
    del X, inv
    result.excluded_rows = a.excluded
    out = CrossResult(
        pairs=result,
        self_similarity=self_similarity(a, b),
        excluded_a=a.excluded,
        excluded_b=b.excluded,
    )
    if per_token:
        pt = stats.per_token
        # Partner indices of A's rows point into the stacked matrix (B starts at a.n).
        stacked_ids = np.concatenate([a.valid_ids, b.valid_ids])
        out.per_token_a = engine.token_arrays(
            a.n_total, a.valid_ids, pt.rows(slice(0, a.n)), b.n, stacked_ids
        )
        out.per_token_b = engine.token_arrays(
            b.n_total, b.valid_ids, pt.rows(slice(a.n, None)), a.n, stacked_ids
        )
    return out
