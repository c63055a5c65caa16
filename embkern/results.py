"""Typed results of the sampled protocol and of the full-vocabulary pass.

``to_dict()`` returns plain JSON-ready values whose keys are the ones the CLI's ``--json``
writes; README.md defines each statistic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


def _num(x: float) -> float | None:
    """JSON has no NaN or infinity: they become null."""
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass
class AnchorStats:
    """One anchor against every other valid row (n - 1 partners).

    ``negative_ids`` are the true token ids (rows of the original matrix) of the partners with
    cosine < 0, ascending.
    """

    token_id: int
    min: float
    max: float
    mean: float
    median: float
    nonneg: int
    neg: int
    negative_ids: np.ndarray

    @property
    def frac_nonneg(self) -> float:
        return self.nonneg / (self.nonneg + self.neg)

    def to_dict(self, negative_ids: bool = False) -> dict:
        out = {
            "token_id": self.token_id,
            "min": self.min,
            "max": self.max,
            "mean": self.mean,
            "median": self.median,
            "nonneg": self.nonneg,
            "neg": self.neg,
            "frac_nonneg": self.frac_nonneg,
        }
        if negative_ids:
            out["negative_ids"] = self.negative_ids.tolist()
        return out


@dataclass
class SampledResult:
    """The seed note's protocol: per-anchor statistics averaged over the anchors.

    Each average is the plain mean over anchors of the unrounded per-anchor value; ``nonneg``
    and ``neg`` are therefore average counts (fractional).
    """

    anchors: list[AnchorStats]
    seed: int | None
    #: {"non_finite": [token ids], "zero_norm": [token ids]}: rows left out of every statistic.
    excluded_rows: dict[str, list[int]] = field(default_factory=dict)

    def _avg(self, attr: str) -> float:
        return float(np.mean([getattr(a, attr) for a in self.anchors]))

    @property
    def anchor_ids(self) -> list[int]:
        return [a.token_id for a in self.anchors]

    @property
    def min(self) -> float:
        return self._avg("min")

    @property
    def max(self) -> float:
        return self._avg("max")

    @property
    def mean(self) -> float:
        return self._avg("mean")

    @property
    def median(self) -> float:
        return self._avg("median")

    @property
    def nonneg(self) -> float:
        return self._avg("nonneg")

    @property
    def neg(self) -> float:
        return self._avg("neg")

    @property
    def frac_nonneg(self) -> float:
        return self._avg("frac_nonneg")

    def to_dict(self, negative_ids: bool = False) -> dict:
        return {
            "anchors": self.anchor_ids,
            "seed": self.seed,
            "min": self.min,
            "max": self.max,
            "mean": self.mean,
            "median": self.median,
            "nonneg": self.nonneg,
            "neg": self.neg,
            "frac_nonneg": self.frac_nonneg,
            "per_anchor": [a.to_dict(negative_ids) for a in self.anchors],
        }


@dataclass
class PerTokenResult:
    """Per-token statistics over all partners j != i, indexed by token id (all V rows).

    Excluded rows have ``valid`` False, ``neg`` and ``nearest_id`` -1, and NaN elsewhere.
    """

    valid: np.ndarray  # bool (V,)
    neg: np.ndarray  # int64 (V,)
    mean: np.ndarray  # float64 (V,)
    min: np.ndarray  # float64 (V,)
    max: np.ndarray  # float64 (V,)
    nearest_id: np.ndarray  # int64 (V,), a token id
    nearest_cos: np.ndarray  # float64 (V,), equal to max

    def __len__(self) -> int:
        return self.valid.size


@dataclass
class FullResult:
    """All unordered pairs i < j of valid rows.

    Attributes:
        quantiles: q -> value; exact order statistics when ``quantiles_exact``, else
            histogram estimates within ``quantile_error`` of them.
        histogram_edges, histogram_counts: the reported histogram over [-1, 1].
        closed_form: mean and std recomputed from X's row sum and Gram matrix, in float64.
    """

    pairs: int
    min: float
    max: float
    mean: float
    std: float
    neg: int
    nonneg: int
    quantiles: dict[float, float]
    quantiles_exact: bool
    quantile_error: float
    histogram_edges: np.ndarray
    histogram_counts: np.ndarray
    closed_form: dict[str, float]
    backend: str
    per_token: PerTokenResult | None = field(default=None, repr=False)
    #: {"non_finite": [token ids], "zero_norm": [token ids], ...}: rows left out of every
    #: statistic, by reason.
    excluded_rows: dict[str, list[int]] = field(default_factory=dict)
    #: Pairs whose computed cosine lies in the band |cos| < ``sign_band`` where the backend's
    #: arithmetic cannot guarantee the sign (an upper bound on miscounted signs); None when the
    #: backend does not count it (the fp32 CPU backends).
    neg_uncertain: int | None = None
    sign_band: float | None = None

    @property
    def frac_nonneg(self) -> float:
        return self.nonneg / self.pairs

    def to_dict(self) -> dict:
        return {
            "pairs": self.pairs,
            "min": self.min,
            "max": self.max,
            "mean": self.mean,
            "std": self.std,
            "neg": self.neg,
            "nonneg": self.nonneg,
            "frac_nonneg": self.frac_nonneg,
            "quantiles": {f"{q:g}": v for q, v in self.quantiles.items()},
            "quantiles_exact": self.quantiles_exact,
            "quantile_error_bound": self.quantile_error,
            "histogram": {
                "edges": [float(e) for e in self.histogram_edges],
                "counts": [int(c) for c in self.histogram_counts],
            },
            "closed_form": {k: _num(v) for k, v in self.closed_form.items()},
            "backend": self.backend,
            "neg_uncertain": self.neg_uncertain,
            "sign_band": self.sign_band,
        }
