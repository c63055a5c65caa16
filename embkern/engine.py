"""The full-vocabulary pass: valid rows in, a :class:`~embkern.results.FullResult` out.

The engine owns what every backend shares: row exclusion, progress, the exact-quantile second
pass, the closed-form cross-check of the moments, and mapping per-token results from valid
rows back to token ids.

Closed forms (x̂_i the unit rows, n of them, s = Σ x̂_i, G = X̂ᵀX̂ the d×d Gram matrix):
Σ_{i<j} cos_ij = (‖s‖² − Σ‖x̂_i‖²) / 2 and Σ_{i<j} cos_ij² = (‖G‖_F² − Σ‖x̂_i‖⁴) / 2, both
in float64 in O(n·d²). They must agree with the streamed sums; a disagreement beyond
``CLOSED_FORM_TOLERANCE`` is a bug and is raised as a warning.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import torch

from . import quantiles
from .backends import Backend, PassOptions
from .errors import InputError
from .prepare import Prepared, normalized_chunks
from .results import FullResult, PerTokenResult
from .stats import FINE_BINS, PairStats, PerToken

CLOSED_FORM_TOLERANCE = 1e-5


def closed_form_moments(prep: Prepared) -> tuple[float, float]:
    """Mean and standard deviation of all pair cosines from the row sum and Gram matrix."""
    d = prep.X.shape[1]
    s = torch.zeros(d, dtype=torch.float64, device=prep.X.device)
    G = torch.zeros((d, d), dtype=torch.float64, device=prep.X.device)
    sq = sq2 = 0.0
    for _, rows in normalized_chunks(prep):
        rows = rows.double()
        s += rows.sum(0)
        G += rows.T @ rows
        r2 = rows.square().sum(1)
        sq += float(r2.sum())
        sq2 += float(r2.square().sum())
    pairs = prep.n * (prep.n - 1) / 2
    total = (float(s @ s) - sq) / 2
    total_sq = (float(G.square().sum()) - sq2) / 2
    mean = total / pairs
    return mean, math.sqrt(max(total_sq / pairs - mean * mean, 0.0))


def check_request(*, block: int | None, hist_bins: int, qs: tuple[float, ...]) -> None:
    """Refuse a bad request before any work is done."""
    if block is not None and (not isinstance(block, int) or block < 1):
        raise InputError(f"block must be a positive number of rows, got {block!r}")
    if hist_bins < 1 or FINE_BINS % hist_bins:
        raise InputError(
            f"hist_bins must divide {FINE_BINS} (e.g. 100, 200, 1000), got {hist_bins}"
        )
    for q in qs:
        if not 0.0 <= q <= 1.0:
            raise InputError(f"quantile level {q} is outside [0, 1]")


def histogram(hist: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Coarsen the fine histogram to ``bins`` equal bins over [-1, 1]."""
    if bins < 1 or FINE_BINS % bins:
        raise ValueError(f"histogram bins must divide {FINE_BINS}, got {bins}")
    return np.linspace(-1.0, 1.0, bins + 1), hist.reshape(bins, -1).sum(1)


def per_token_result(prep: Prepared, stats: PairStats) -> PerTokenResult:
    """Per-token arrays indexed by token id; excluded rows get -1 / NaN."""
    return token_arrays(prep.n_total, prep.valid_ids, stats.per_token, prep.n - 1, prep.valid_ids)


def token_arrays(
    n_total: int,
    ids: np.ndarray,
    pt: PerToken,
    partners: int,
    partner_ids: np.ndarray,
) -> PerTokenResult:
    """Spread per-row reductions of the valid rows ``ids`` over all ``n_total`` token ids.

    Args:
        pt: the reductions, one entry per valid row, in the order of ``ids``.
        partners: how many partners each row was reduced over (the mean's denominator).
        partner_ids: token id of each partner index that ``pt.nearest`` refers to.
    """
    nan = np.full(n_total, np.nan)
    out = PerTokenResult(
        valid=np.zeros(n_total, bool),
        neg=np.full(n_total, -1, np.int64),
        mean=nan.copy(),
        min=nan.copy(),
        max=nan.copy(),
        nearest_id=np.full(n_total, -1, np.int64),
        nearest_cos=nan.copy(),
    )
    out.valid[ids] = True
    out.neg[ids] = pt.neg
    out.mean[ids] = pt.total / partners
    out.min[ids] = pt.min
    out.max[ids] = pt.max
    out.nearest_id[ids] = partner_ids[pt.nearest]
    out.nearest_cos[ids] = pt.max
    return out


def _no_progress(tiles: int) -> None:
    """The tick used when no progress was asked for."""


def full_pass(
    prep: Prepared,
    backend: Backend,
    *,
    per_token: bool = True,
    exact_quantiles: bool = False,
    qs: tuple[float, ...] = quantiles.DEFAULT_QUANTILES,
    hist_bins: int = 200,
    block: int | None = None,
    progress: Callable[[int, int], Callable[[int], None]] | None = None,
) -> FullResult:
    """Reduce every pair i < j of the valid rows with ``backend``.

    Args:
        progress: factory called as ``progress(total_units, pass_number)`` that returns the
            per-tile callback; None for no progress.
    """
    stats, qvals = run_pass(
        prep.X,
        prep.inv_norm,
        backend,
        PassOptions(per_token=per_token, radix=exact_quantiles, block=block),
        qs=qs,
        hist_bins=hist_bins,
        progress=progress,
    )
    result = summarize(stats, qvals, exact_quantiles, hist_bins, closed_form_moments(prep))
    result.backend = backend.name
    result.sign_band = backend.sign_band(prep.X)
    result.excluded_rows = prep.excluded
    if per_token:
        result.per_token = per_token_result(prep, stats)
    return result


def run_pass(
    X: torch.Tensor,
    inv_norm: torch.Tensor,
    backend: Backend,
    options: PassOptions,
    *,
    qs: tuple[float, ...],
    hist_bins: int,
    progress: Callable[[int, int], Callable[[int], None]] | None,
) -> tuple[PairStats, dict[float, float]]:
    """One streamed pass (two with exact quantiles): the statistics and the quantile values."""
    check_request(block=options.block, hist_bins=hist_bins, qs=qs)
    total = backend.count_tiles(X.shape[0], options)
    tick = progress(total, 1) if progress else _no_progress
    stats = backend.pair_stats(X, inv_norm, options, tick)
    n, split = X.shape[0], options.split
    stats.check_complete(None if split is None else split * (n - split))
    if options.radix:
        tick = progress(total, 2) if progress else _no_progress
        qvals = backend.exact_quantiles(X, inv_norm, stats, qs, options, tick)
    else:
        qvals = quantiles.from_histogram(stats.hist, qs, stats.min, stats.max)
    return stats, qvals


def summarize(
    stats: PairStats,
    qvals: dict[float, float],
    exact_quantiles: bool,
    hist_bins: int,
    closed_form: tuple[float, float],
) -> FullResult:
    """The global part of a :class:`FullResult`, checked against the closed-form moments."""
    mean = stats.total / stats.pairs
    std = math.sqrt(stats.m2 / stats.pairs)
    cf_mean, cf_std = closed_form
    if abs(cf_mean - mean) > CLOSED_FORM_TOLERANCE or abs(cf_std - std) > CLOSED_FORM_TOLERANCE:
        warnings.warn(
            f"streamed moments (mean {mean:.8f}, std {std:.8f}) disagree with the closed form"
            f" (mean {cf_mean:.8f}, std {cf_std:.8f}); please report this",
            RuntimeWarning,
            stacklevel=3,
        )
    edges, counts = histogram(stats.hist, hist_bins)
    return FullResult(
        pairs=stats.pairs,
        min=stats.min,
        max=stats.max,
        mean=mean,
        std=std,
        neg=stats.neg,
        nonneg=stats.nonneg,
        quantiles=qvals,
        quantiles_exact=exact_quantiles,
        quantile_error=0.0 if exact_quantiles else quantiles.HIST_QUANTILE_ERROR,
        histogram_edges=edges,
        histogram_counts=counts,
        closed_form={"mean": cf_mean, "std": cf_std},
        backend="",
        neg_uncertain=stats.neg_uncertain,
    )
