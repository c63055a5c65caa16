"""Rows of an embedding matrix that look under-trained: abnormally short, or abnormally close to
the mean row.

Tokens that (almost) never occur in the training data get (almost) no gradient: their rows stay
near a shared initialization or decay towards zero under weight decay, which makes them short,
or close to each other and hence to the mean of all rows (Land & Bartolo 2024, "Fishing for
Magikarp: Automatically Detecting Under-trained Tokens in Large Language Models"). The rule
below flags such rows by two one-sided robust outlier tests.

Rule. Let x_i be the valid rows (finite and not all zero, or the ``valid_ids`` given) and
μ = mean_i x_i. For each valid row take two features,

    a_i = log ‖x_i‖        and        b_i = log ‖x_i − μ‖   (−inf when x_i = μ).

For a feature f with median m over the valid rows, MAD = median_i |f_i − m| and the modified
z-score is z_i = 0.6745·(f_i − m) / MAD (Iglewicz & Hoaglin 1993, "How to Detect and Handle
Outliers"). When MAD is 0 the score is z_i = (f_i − m) / (1.253314·MeanAD) with MeanAD the mean
of |f_i − m| over the rows with finite f_i; when that is 0 too, or not finite, the feature flags
nothing. A row is flagged when z < −``threshold`` for either feature. Both tests are one-sided:
a long row, or a row far from the mean (one pointing against the mean direction included), is
never flagged. Norms and μ are computed in float64 over chunks of 8192 rows, so X is never
copied whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .prepare import as_matrix

_CHUNK = 1 << 13
#: Iglewicz & Hoaglin's constant: 0.6745 = Φ⁻¹(0.75), which makes MAD/0.6745 estimate σ.
MAD_CONSTANT = 0.6745
#: sqrt(π/2): makes the mean absolute deviation × this constant estimate σ of a normal sample.
MEAN_AD_CONSTANT = 1.253314

RULE = (
    "flagged when the modified z-score 0.6745*(f - median)/MAD of f = log||x|| or "
    "f = log||x - mean row|| over the valid rows is below -threshold "
    "(MAD = 0: (f - median)/(1.253314*mean absolute deviation); Iglewicz & Hoaglin 1993)"
)


@dataclass
class UntrainedResult:
    """Rows flagged as under-trained, with the features and cut-offs behind the decision.

    Attributes:
        ids: flagged token ids, ascending.
        valid_ids: (n,) ids of the rows that were scored, ascending; the arrays below follow it.
        log_norm: (n,) log ‖x_i‖.
        log_dist: (n,) log ‖x_i − μ‖.
        z_norm, z_dist: (n,) modified z-scores of the two features (0 where a feature flags
            nothing).
        threshold: the z-score cut-off used.
        norm_cutoff, dist_cutoff: the feature values the cut-off corresponds to (a row is
            flagged when its feature is below one of them); None where a feature flags nothing.
        rule: the rule in one line.
    """

    ids: np.ndarray
    valid_ids: np.ndarray
    log_norm: np.ndarray
    log_dist: np.ndarray
    z_norm: np.ndarray
    z_dist: np.ndarray
    threshold: float
    norm_cutoff: float | None
    dist_cutoff: float | None
    rule: str = RULE

    def to_dict(self) -> dict:
        return {
            "ids": self.ids.tolist(),
            "count": int(self.ids.size),
            "scored": int(self.valid_ids.size),
            "threshold": self.threshold,
            "log_norm_cutoff": self.norm_cutoff,
            "log_dist_cutoff": self.dist_cutoff,
            "rule": self.rule,
        }


def robust_z(f: np.ndarray) -> tuple[np.ndarray, float | None, float | None]:
    """Modified z-scores of a feature, following the module's rule.

    Returns:
        (z, median, scale) with z = (f − median) / scale; z is all zeros and median and scale
        are None when the feature flags nothing.
    """
    f = np.asarray(f, dtype=np.float64)
    finite = f[np.isfinite(f)]
    if finite.size == 0:
        return np.zeros_like(f), None, None
    med = float(np.median(f))
    mad = float(np.median(np.abs(f - med)))
    if mad > 0 and math.isfinite(mad):
        scale = mad / MAD_CONSTANT
    else:
        scale = MEAN_AD_CONSTANT * float(np.mean(np.abs(finite - med)))
    if not (scale > 0 and math.isfinite(scale)):
        return np.zeros_like(f), None, None
    with np.errstate(invalid="ignore"):
        z = (f - med) / scale
    return z, med, scale


def _valid_rows(X: torch.Tensor) -> np.ndarray:
    keep = []
    for start in range(0, X.shape[0], _CHUNK):
        chunk = X[start : start + _CHUNK].to(torch.float64)
        keep.append((torch.isfinite(chunk).all(1) & (chunk != 0).any(1)).numpy())
    return np.flatnonzero(np.concatenate(keep))


def _features(X: torch.Tensor, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log ‖x_i‖ and log ‖x_i − μ‖ of the rows ``ids``, in float64 chunks."""
    index = torch.from_numpy(ids)
    total = torch.zeros(X.shape[1], dtype=torch.float64)
    for start in range(0, ids.size, _CHUNK):
        total += X[index[start : start + _CHUNK]].to(torch.float64).sum(0)
    mu = total / ids.size
    norm = np.empty(ids.size)
    dist = np.empty(ids.size)
    for start in range(0, ids.size, _CHUNK):
        rows = X[index[start : start + _CHUNK]].to(torch.float64)
        stop = start + rows.shape[0]
        norm[start:stop] = torch.linalg.vector_norm(rows, dim=1).numpy()
        dist[start:stop] = torch.linalg.vector_norm(rows - mu, dim=1).numpy()
    with np.errstate(divide="ignore"):
        return np.log(norm), np.log(dist)


def untrained_rows(
    X: torch.Tensor,
    valid_ids: np.ndarray | None = None,
    *,
    threshold: float = 3.5,
) -> UntrainedResult:
    """Flag the rows of X that look under-trained (see the module's rule).

    Args:
        X: (V, d) float tensor or numpy array (or a LoadedMatrix), any float dtype.
        valid_ids: ids of the rows to score; None scores every finite, non-zero row. Other rows
            are never flagged (they are excluded from the statistics elsewhere).
        threshold: the modified z-score below whose negative a row is flagged (3.5 is
            Iglewicz & Hoaglin's recommendation).

    Returns:
        An :class:`UntrainedResult`.
    """
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    X = as_matrix(X)
    if valid_ids is None:
        ids = _valid_rows(X)
    else:
        ids = np.unique(np.asarray(valid_ids, dtype=np.int64))
        if ids.size and (ids[0] < 0 or ids[-1] >= X.shape[0]):
            raise ValueError(f"valid_ids must lie in [0, {X.shape[0]})")
    if ids.size == 0:
        empty = np.empty(0)
        return UntrainedResult(
            np.empty(0, np.int64), ids, empty, empty, empty, empty, threshold, None, None
        )
    log_norm, log_dist = _features(X, ids)
    z_norm, med_n, scale_n = robust_z(log_norm)
    z_dist, med_d, scale_d = robust_z(log_dist)
    flagged = (z_norm < -threshold) | (z_dist < -threshold)
    return UntrainedResult(
        ids=ids[flagged],
        valid_ids=ids,
        log_norm=log_norm,
        log_dist=log_dist,
        z_norm=z_norm,
        z_dist=z_dist,
        threshold=float(threshold),
        norm_cutoff=None if med_n is None else med_n - threshold * scale_n,
        dist_cutoff=None if med_d is None else med_d - threshold * scale_d,
    )
