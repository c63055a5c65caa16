"""The mergeable statistics object every backend returns.

A full-vocabulary pass is split into tiles (and, later, across devices and processes). Each
part produces a :class:`PairStats`; ``merge`` combines two of them. Counts are exact integers
(numpy int64), sums are float64, minima and maxima are exact, and the nearest-token argmax
breaks ties toward the smaller token id, so a merged result does not depend on the order in
which the parts are combined (float64 sums up to rounding at the 1e-16 level).

Indexing: all per-token arrays are indexed by *valid row* (the rows left after excluding
zero-norm and non-finite rows), not by token id; :mod:`embkern.engine` maps them back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Width of the fine histogram that backs the default quantiles: 20000 bins over [-1, 1].
FINE_BINS = 20000
#: The exact-quantile radix select splits an order-preserving 32-bit key of each fp32 cosine
#: into a high and a low 16-bit half (see :mod:`embkern.quantiles`).
RADIX_BINS = 1 << 16
#: Placeholder nearest-token index before any partner was seen; larger than any real index so
#: that the tie rule (smaller index wins) needs no special case.
NO_PARTNER = np.iinfo(np.int64).max


def merged_m2(n_a: int, total_a: float, m2_a: float, n_b: int, total_b: float, m2_b: float):
    """Sum of squared deviations of the union of two samples (Chan, Golub & LeVeque 1979)."""
    if n_a == 0 or n_b == 0:
        return m2_a + m2_b
    delta = total_b / n_b - total_a / n_a
    return m2_a + m2_b + delta * delta * (n_a * n_b / (n_a + n_b))


@dataclass
class PerToken:
    """Per-token reductions over all partners j != i, indexed by valid row.

    Attributes:
        neg: int64 (n,), count of partners with cosine < 0.
        total: float64 (n,), sum of cosines over partners.
        min: float64 (n,), smallest cosine (+inf before any partner is seen).
        max: float64 (n,), largest cosine (-inf before any partner is seen).
        nearest: int64 (n,), valid-row index of the partner reaching ``max``; ties go to the
            smaller index; NO_PARTNER before any partner is seen.
    """

    neg: np.ndarray
    total: np.ndarray
    min: np.ndarray
    max: np.ndarray
    nearest: np.ndarray

    @classmethod
    def empty(cls, n: int) -> PerToken:
        return cls(
            neg=np.zeros(n, np.int64),
            total=np.zeros(n, np.float64),
            min=np.full(n, np.inf),
            max=np.full(n, -np.inf),
            nearest=np.full(n, NO_PARTNER, np.int64),
        )

    def rows(self, part: slice) -> PerToken:
        """The reductions of the rows in ``part`` (views, not copies)."""
        return PerToken(
            neg=self.neg[part],
            total=self.total[part],
            min=self.min[part],
            max=self.max[part],
            nearest=self.nearest[part],
        )

    def merge(self, other: PerToken) -> PerToken:
        take = (other.max > self.max) | ((other.max == self.max) & (other.nearest < self.nearest))
        return PerToken(
            neg=self.neg + other.neg,
            total=self.total + other.total,
            min=np.minimum(self.min, other.min),
            max=np.maximum(self.max, other.max),
            nearest=np.where(take, other.nearest, self.nearest),
        )


@dataclass
class PairStats:
    """Statistics over a set of unordered pairs (i < j) of valid rows.

    Attributes:
        n_rows: number of valid rows of the matrix the pairs come from.
        pairs: number of pairs reduced so far (int).
        neg: pairs with cosine < 0 (int).
        total: float64 sum of the cosines.
        m2: float64 sum of squared deviations of the cosines from their mean, merged with
            Chan et al.'s pairwise formula, so the variance m2 / pairs has no cancellation
            even when every cosine is nearly the same.
        min, max: extreme cosines (+inf / -inf when no pair was seen).
        hist: int64 (FINE_BINS,), counts over [-1, 1]; bin b holds
            cos in [-1 + b*w, -1 + (b+1)*w) with w = 2 / FINE_BINS, values outside [-1, 1]
            (rounding) clamped into the edge bins, and cos = 1 in the last bin.
        radix_hi: int64 (RADIX_BINS,) counts of the high 16 bits of the order key, or None when
            exact quantiles were not requested.
        per_token: per-token reductions, or None when they were not requested.
        neg_uncertain: pairs whose computed cosine lies inside the sign band |cos| < eps of
            the backend's precision, where the sign is not guaranteed: ``neg`` is exact up to
            at most this many pairs. None when the backend does not count it.
    """

    n_rows: int
    pairs: int = 0
    neg: int = 0
    total: float = 0.0
    m2: float = 0.0
    min: float = float("inf")
    max: float = float("-inf")
    hist: np.ndarray = field(default_factory=lambda: np.zeros(FINE_BINS, np.int64))
    radix_hi: np.ndarray | None = None
    per_token: PerToken | None = None
    neg_uncertain: int | None = None

    @property
    def nonneg(self) -> int:
        return self.pairs - self.neg

    def merge(self, other: PairStats) -> PairStats:
        """Combine the statistics of two disjoint sets of pairs over the same matrix."""
        if other.n_rows != self.n_rows:
            raise ValueError(
                f"cannot merge statistics of matrices with {self.n_rows} and {other.n_rows} rows"
            )
        if (self.radix_hi is None) != (other.radix_hi is None):
            raise ValueError("cannot merge statistics with and without the exact-quantile pass")
        if (self.per_token is None) != (other.per_token is None):
            raise ValueError("cannot merge statistics with and without per-token reductions")
        return PairStats(
            n_rows=self.n_rows,
            pairs=self.pairs + other.pairs,
            neg=self.neg + other.neg,
            total=self.total + other.total,
            m2=merged_m2(self.pairs, self.total, self.m2, other.pairs, other.total, other.m2),
            min=min(self.min, other.min),
            max=max(self.max, other.max),
            hist=self.hist + other.hist,
            radix_hi=None if self.radix_hi is None else self.radix_hi + other.radix_hi,
            per_token=None if self.per_token is None else self.per_token.merge(other.per_token),
            neg_uncertain=None
            if self.neg_uncertain is None or other.neg_uncertain is None
            else self.neg_uncertain + other.neg_uncertain,
        )

    def check_complete(self, expected: int | None = None) -> None:
        """Raise if the pairs reduced are not exactly the pairs of the pass.

        Args:
            expected: the number of pairs of the pass; default all n(n-1)/2 pairs of the
                matrix.
        """
        if expected is None:
            expected = self.n_rows * (self.n_rows - 1) // 2
        if self.pairs != expected or int(self.hist.sum()) != expected:
            raise RuntimeError(
                f"internal error: reduced {self.pairs} pairs (histogram {int(self.hist.sum())}),"
                f" expected {expected}"
            )
