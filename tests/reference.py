"""A float64 numpy reference for the engine's statistics, and the tolerances of every comparison.

The reference is the definition written out, with none of the engine's machinery: upcast the
input to float64, drop rows that are non-finite or have norm zero, normalize, form the whole
n×n cosine matrix of the n valid rows, and read every statistic off it. Pair statistics use
the strict upper triangle (each unordered pair once); per-token and per-anchor statistics use
a row without its diagonal (every partner j != i). It costs n² float64 values, so it is only
for the small matrices of the tests.

The engine computes cosines in fp32, so its values differ from these by the fp32 rounding of
a dot product; ``TOLERANCE`` says by how much each comparison may differ, per input dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: Allowed differences from the float64 reference, keyed by the dtype of the input matrix.
#:
#: value: |engine - reference| for a cosine statistic (min, max, mean, std, per-token and
#:     per-anchor min/max/mean/median, nearest_cos).
#: moment: the closed-form mean and std, which the engine computes in float64 from fp32 rows.
#: quantile: exact quantiles (order statistics of the engine's fp32 cosines).
#: hist_quantile: histogram estimates; the engine documents half a 1e-4 bin, and the 1e-12
#:     covers float64 rounding of the bin midpoint (-1 + (b + 0.5) * 1e-4 is not exact).
#: sum_rtol: relative difference of float64 sums that reduce the same fp32 values in another
#:     order (tiles merged differently).
#:
#: bf16 and fp16 values are exactly representable in fp32, and the engine upcasts them before
#: normalizing, so they get the fp32 tolerances. float64 input is rounded to fp32 once (a
#: relative 6e-8 per element), which stays far inside them.
TOLERANCE = {
    dtype: {
        "value": 1e-5,
        "moment": 1e-6,
        "quantile": 1e-6,
        "hist_quantile": 5.1e-5,
        "sum_rtol": 1e-12,
    }
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16)
}

#: Counts (cos < 0 versus cos >= 0) are compared exactly only when no reference cosine lies
#: this close to zero: fp32 rounding cannot move a value across zero from further away.
COUNT_MARGIN = 1e-6


def sample(V: int, d: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(V, d) standard-normal rows from numpy's seeded generator, stable across versions."""
    A = np.random.default_rng(seed).standard_normal((V, d))
    return torch.from_numpy(A).to(dtype)


def as_float64(X) -> np.ndarray:
    """Any 2-D float tensor or array, upcast exactly to a float64 numpy array."""
    if isinstance(X, np.ndarray):
        return X.astype(np.float64)
    return X.detach().to(torch.float64).cpu().numpy()


def lower_median(values: np.ndarray) -> float:
    """The lower middle value, as ``torch.median`` returns it.

    ``np.median`` averages the two middle values of an even count; the engine does not.
    """
    return float(np.sort(values)[(values.size - 1) // 2])


@dataclass
class Reference:
    """Every statistic of the engine, computed from the full float64 cosine matrix.

    Attributes:
        V: rows of the input matrix.
        valid: bool (V,), rows that are finite with a nonzero norm.
        ids: int64 (n,), token ids of the valid rows, ascending.
        cos: float64 (n, n), cosines of the valid rows (diagonal included, about 1).
        pairs: float64 (n(n-1)/2,), the strict upper triangle of ``cos``.
    """

    V: int
    valid: np.ndarray
    ids: np.ndarray
    cos: np.ndarray
    pairs: np.ndarray

    @property
    def n(self) -> int:
        return self.ids.size

    @property
    def min(self) -> float:
        return float(self.pairs.min())

    @property
    def max(self) -> float:
        return float(self.pairs.max())

    @property
    def mean(self) -> float:
        return float(self.pairs.mean())

    @property
    def std(self) -> float:
        return float(self.pairs.std())

    @property
    def neg(self) -> int:
        return int((self.pairs < 0).sum())

    @property
    def nonneg(self) -> int:
        return int((self.pairs >= 0).sum())

    @property
    def closest_to_zero(self) -> float:
        """Smallest |cos| over all pairs: counts are exact only when it exceeds COUNT_MARGIN."""
        return float(np.abs(self.pairs).min())

    def quantile(self, q: float) -> float:
        """The q-quantile of the pair cosines, numpy's ``method="lower"``."""
        return float(np.quantile(self.pairs, q, method="lower"))

    def histogram(self, bins: int) -> np.ndarray:
        """int64 (bins,) counts of the pair cosines over [-1, 1], values outside clamped in."""
        clipped = np.clip(self.pairs, -1.0, 1.0)
        return np.histogram(clipped, bins=bins, range=(-1.0, 1.0))[0]

    def near_bin_edges(self, bins: int, margin: float) -> int:
        """How many pair cosines lie within ``margin`` of an inner edge of a ``bins`` histogram.

        Only these may land in a neighbouring bin when the engine rounds in fp32.
        """
        edges = np.linspace(-1.0, 1.0, bins + 1)[1:-1]
        pos = np.searchsorted(edges, self.pairs)
        below = np.abs(self.pairs - edges[np.clip(pos - 1, 0, edges.size - 1)])
        above = np.abs(self.pairs - edges[np.clip(pos, 0, edges.size - 1)])
        return int((np.minimum(below, above) < margin).sum())

    def _partners(self) -> np.ndarray:
        """(n, n) cosines with the diagonal masked out (each row: its n - 1 partners)."""
        return np.ma.masked_array(self.cos, mask=np.eye(self.n, dtype=bool))

    def per_token(self) -> dict[str, np.ndarray]:
        """Per-token arrays over all V token ids; excluded rows get -1 (ints) or NaN (floats).

        ``nearest_id`` is the partner with the largest cosine, the smaller token id on a tie.
        """
        P = self._partners()
        out = {
            "valid": self.valid.copy(),
            "neg": np.full(self.V, -1, np.int64),
            "mean": np.full(self.V, np.nan),
            "min": np.full(self.V, np.nan),
            "max": np.full(self.V, np.nan),
            "nearest_id": np.full(self.V, -1, np.int64),
            "nearest_cos": np.full(self.V, np.nan),
        }
        out["neg"][self.ids] = (P < 0).sum(1).filled(0)
        out["mean"][self.ids] = P.mean(1).filled(np.nan)
        out["min"][self.ids] = P.min(1).filled(np.nan)
        out["max"][self.ids] = P.max(1).filled(np.nan)
        # argmax returns the first maximum, and ids ascend: ties go to the smaller id.
        out["nearest_id"][self.ids] = self.ids[P.filled(-np.inf).argmax(1)]
        out["nearest_cos"][self.ids] = out["max"][self.ids]
        return out

    def nearest_margin(self) -> np.ndarray:
        """float64 (n,), gap between each row's best and second-best partner cosine.

        Where it is below the value tolerance, fp32 rounding may pick either partner.
        """
        top2 = np.sort(self._partners().filled(-np.inf), axis=1)[:, -2:]
        return top2[:, 1] - top2[:, 0]

    def anchor(self, token_id: int) -> dict:
        """Statistics of one anchor against its n - 1 partners (the sampled protocol)."""
        row = int(np.searchsorted(self.ids, token_id))
        if row >= self.n or self.ids[row] != token_id:
            raise KeyError(f"token {token_id} is not a valid row")
        others = np.arange(self.n) != row
        values = self.cos[row, others]
        negative = values < 0
        return {
            "token_id": token_id,
            "min": float(values.min()),
            "max": float(values.max()),
            "mean": float(values.mean()),
            "median": lower_median(values),
            "neg": int(negative.sum()),
            "nonneg": int((~negative).sum()),
            "negative_ids": self.ids[others][negative],
            "closest_to_zero": float(np.abs(values).min()),
        }


def reference(X) -> Reference:
    """The float64 reference of a (V, d) tensor or array (any float dtype)."""
    A = as_float64(X)
    finite = np.isfinite(A).all(axis=1)
    norm = np.zeros(A.shape[0])
    norm[finite] = np.sqrt((A[finite] ** 2).sum(axis=1))
    valid = finite & (norm > 0)
    ids = np.flatnonzero(valid).astype(np.int64)
    unit = A[valid] / norm[valid, None]
    cos = unit @ unit.T
    return Reference(
        V=A.shape[0],
        valid=valid,
        ids=ids,
        cos=cos,
        pairs=cos[np.triu_indices(ids.size, k=1)],
    )
