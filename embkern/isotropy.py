"""Isotropy measures of the rows of an embedding matrix, in O(n·d²) from streamed sums.

The rows x_1 … x_n ∈ R^d are the valid rows of X: a row holding a non-finite value or only
zeros is left out (the rule of :mod:`embkern.prepare`) and counted in ``excluded_rows``.
Everything is accumulated in float64, one chunk of rows at a time, so X is never copied whole
to float64 and no n×n matrix is formed. Notation: x̂_i = x_i/‖x_i‖ the unit rows,
μ = (1/n) Σ x_i the mean row, G = Σ x_i x_iᵀ = XᵀX the d×d Gram matrix of the raw rows with
eigenpairs (λ_k, u_k), S = Σ (x_i − μ)(x_i − μ)ᵀ the scatter matrix of the centered rows and
C = S/(n − 1) the sample covariance.

``average_cosine``
    The mean of cos(x_i, x_j) over all n(n−1)/2 pairs i < j, from the unit-row sum
    s = Σ x̂_i: (‖s‖² − Σ‖x̂_i‖²) / (n(n−1)), where Σ‖x̂_i‖² = n up to rounding. The same
    closed form as :func:`embkern.engine.closed_form_moments`.

``partition_isotropy``
    I(X) = min_c Z(c) / max_c Z(c) with Z(c) = Σ_i exp(cᵀx_i) (Arora, Li, Liang, Ma,
    Risteski 2016, "A Latent Variable Model Approach to PMI-based Word Embeddings", TACL 4,
    where Z(c) ≈ constant for every unit c is the isotropy assumption; Mu & Viswanath 2018,
    "All-but-the-Top: Simple and Effective Postprocessing for Word Representations", ICLR,
    eq. (2), who define the ratio over all unit vectors c and evaluate it over the
    eigenvectors of XᵀX). The raw rows are used, as in both papers: no centering, no
    normalization, so the value depends on the scale of the rows. The set of c is
    {±u_1, …, ±u_d}, both orientations of every eigenvector of G. An eigenvector's sign is
    arbitrary (eigh may return either), and the paper's min and max over all unit c
    contain both; taking one sign only makes the score depend on the solver's sign
    convention, and along a direction in which the rows have a non-zero mean, Z(u) and
    Z(−u) differ most. log Z(c) is a logsumexp over the rows, merged chunk by chunk, so no
    exp overflows; ``partition_log_ratio`` = min_c log Z(c) − max_c log Z(c) = log I(X) is
    reported too, since I(X) itself underflows to 0 for rows of large norm. 1 is
    isotropic; values near 0 mean one direction dominates.

``isoscore``
    IsoScore (Rudman, Gillman, Rayne, Eickhoff 2022, "IsoScore: Measuring the Uniformity of
    Embedding Space Utilization", Findings of ACL, Algorithm 1; checked against the authors'
    reference implementation, bcbi-edu/p_eickhoff_isoscore, IsoScore.py). With the d
    dimensions of the ambient space:
    (2) PCA reorientation of the rows; (3) the variance vector Σ_D, the variances of the
    rows along the principal axes, which are the eigenvalues of C (including the zero ones
    when n − 1 < d); (4) normalization Σ̂_D = √d · Σ_D / ‖Σ_D‖; (5) isotropy defect
    δ = ‖Σ̂_D − 1‖ / √(2(d − √d)), 1 the all-ones vector, δ ∈ [0, 1]; (6) fraction of
    dimensions used φ = (d − δ²(d − √d))² / d²; (7) IsoScore ι = (d·φ − 1) / (d − 1) ∈ [0, 1].
    The rows are centered by the PCA step, so the mean row does not enter. A cloud that uses
    k of the d dimensions with equal variance scores exactly (k − 1)/(d − 1) (the paper's
    Section 4 property); 1 is isotropic, 0 is all variance along one line. For d = 1 steps
    (5) and (7) divide 0 by 0; the one variance normalizes to (1), the isotropic diagonal
    itself, so ι = 1 there. NaN when all rows are equal (no variance).

``effective_rank``, ``effective_rank_centered``
    Effective rank (Roy & Vetterli 2007, "The effective rank: a measure of effective
    dimensionality", EUSIPCO, Definition 1): exp(H(p)), H(p) = −Σ_k p_k log p_k with the
    convention 0·log 0 = 0, p_k = σ_k / Σ_j σ_j, σ_k the singular values of the matrix.
    ``effective_rank`` is taken on the raw rows X (σ_k = √λ_k, the matrix as given, whose
    mean row shows up as a dominant singular value); ``effective_rank_centered`` on the
    centered rows X − 1μᵀ (σ_k = √ eigenvalues of S), the spread of the cloud without its
    offset. Both lie in [1, min(n, d)]; the centered one is NaN when all rows are equal.
    Singular values come from eigenvalues of d×d float64 matrices; eigenvalues below
    d·ε·λ_max (ε = 2⁻⁵², the rounding of those matrices) count as 0.

``top_pc_variance_fraction``
    λ_max(C) / tr(C): the share of the total variance along the first principal direction
    (Mu & Viswanath's "dominating directions"). NaN when all rows are equal.

``mean_norm_ratio``
    ‖μ‖ / ((1/n) Σ ‖x_i‖): the length of the mean row relative to the mean row length; 0
    when the rows cancel out, 1 when all rows are the same vector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import InputError
from .prepare import as_matrix


def _num(x: float) -> float | None:
    """JSON has no NaN or infinity: they become null."""
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass
class IsotropyResult:
    """Isotropy measures of the valid rows; the module docstring defines each field."""

    n_rows: int
    dim: int
    excluded_rows: int
    average_cosine: float
    partition_isotropy: float
    partition_log_ratio: float
    isoscore: float
    effective_rank: float
    effective_rank_centered: float
    top_pc_variance_fraction: float
    mean_norm_ratio: float

    def to_dict(self) -> dict:
        """Plain JSON-ready values; NaN becomes None."""
        return {
            "n_rows": self.n_rows,
            "dim": self.dim,
            "excluded_rows": self.excluded_rows,
            "average_cosine": _num(self.average_cosine),
            "partition_isotropy": _num(self.partition_isotropy),
            "partition_log_ratio": _num(self.partition_log_ratio),
            "isoscore": _num(self.isoscore),
            "effective_rank": _num(self.effective_rank),
            "effective_rank_centered": _num(self.effective_rank_centered),
            "top_pc_variance_fraction": _num(self.top_pc_variance_fraction),
            "mean_norm_ratio": _num(self.mean_norm_ratio),
        }


def _valid_chunks(X: torch.Tensor, chunk: int):
    """Yield float64 copies of the valid rows of X, ``chunk`` rows of X at a time."""
    for start in range(0, X.shape[0], chunk):
        rows = X[start : start + chunk].to(torch.float64)
        keep = torch.isfinite(rows).all(1) & (rows != 0).any(1)
        yield rows if bool(keep.all()) else rows[keep]


def _effective_rank(eigenvalues: torch.Tensor) -> float:
    """exp of the entropy of p_k = σ_k / Σσ, σ_k = √λ_k; NaN when every σ_k is 0.

    Eigenvalues below d·ε·λ_max (ε the float64 epsilon), within the rounding of the Gram
    matrix, count as 0, so an exactly rank-r matrix is not credited with noise directions.
    """
    floor = float(eigenvalues.max()) * eigenvalues.numel() * torch.finfo(torch.float64).eps
    sigma = torch.where(eigenvalues > floor, eigenvalues, 0.0).sqrt()
    total = float(sigma.sum())
    if total <= 0.0:
        return math.nan
    p = sigma / total
    p = p[p > 0]
    return math.exp(float(-(p * p.log()).sum()))


def _isoscore(variances: torch.Tensor) -> float:
    """Steps (4) to (7) of IsoScore from the variance vector Σ_D (length d)."""
    d = variances.numel()
    norm = float(torch.linalg.vector_norm(variances))
    if norm <= 0.0:
        return math.nan
    if d == 1:
        return 1.0
    normalized = variances * (math.sqrt(d) / norm)
    defect = float(torch.linalg.vector_norm(normalized - 1.0)) / math.sqrt(2.0 * (d - math.sqrt(d)))
    used = (d - defect**2 * (d - math.sqrt(d))) ** 2 / d**2
    return min(max((d * used - 1.0) / (d - 1.0), 0.0), 1.0)


def isotropy(X, *, chunk: int = 8192) -> IsotropyResult:
    """Isotropy measures of the valid rows of X; see the module docstring for definitions.

    Args:
        X: (V, d) float tensor of any float dtype, a numpy array, or a LoadedMatrix.
        chunk: rows converted to float64 at a time (memory O(chunk·d + d²)); the result does
            not depend on it beyond float64 rounding.

    Two passes over X: the first accumulates the unit-row sum, the row count, the sum of
    row norms and the shifted sum and Gram matrix; the second evaluates log Z(±u_k) for every
    eigenvector u_k of XᵀX. Both cost O(V·d²).
    """
    X = as_matrix(X)
    if not isinstance(chunk, int) or chunk < 1:
        raise InputError(f"chunk must be a positive number of rows, got {chunk!r}")
    V, d = X.shape
    f64 = {"dtype": torch.float64, "device": X.device}
    n = 0
    unit_sum = torch.zeros(d, **f64)
    unit_sq = 0.0
    norm_sum = 0.0
    shift: torch.Tensor | None = None
    shifted_sum = torch.zeros(d, **f64)
    shifted_gram = torch.zeros((d, d), **f64)
    for rows in _valid_chunks(X, chunk):
        if rows.shape[0] == 0:
            continue
        if shift is None:
            # Accumulating about a provisional mean keeps the centered scatter S free of the
            # cancellation that Σxxᵀ − nμμᵀ suffers when the mean row is long.
            shift = rows.mean(0)
        norms = torch.linalg.vector_norm(rows, dim=1)
        unit = rows / norms[:, None]
        unit_sum += unit.sum(0)
        unit_sq += float(unit.square().sum())
        norm_sum += float(norms.sum())
        dev = rows - shift
        shifted_sum += dev.sum(0)
        shifted_gram += dev.T @ dev
        n += rows.shape[0]
    if n < 2 or shift is None:
        raise InputError(
            f"only {n} of {V} rows are usable (finite and not all zero); at least 2 are needed"
        )

    average_cosine = (float(unit_sum @ unit_sum) - unit_sq) / (n * (n - 1))
    mean = shift + shifted_sum / n
    gram = (
        shifted_gram
        + torch.outer(shifted_sum, shift)
        + torch.outer(shift, shifted_sum)
        + n * torch.outer(shift, shift)
    )
    gram = (gram + gram.T) / 2
    scatter = shifted_gram - torch.outer(shifted_sum, shifted_sum) / n
    scatter = (scatter + scatter.T) / 2

    raw_eig, vectors = torch.linalg.eigh(gram)
    centered_eig = torch.linalg.eigvalsh(scatter).clamp(min=0.0)
    variances = centered_eig / (n - 1)
    total_var = float(variances.sum())

    log_z_pos = torch.full((d,), -math.inf, **f64)
    log_z_neg = torch.full((d,), -math.inf, **f64)
    for rows in _valid_chunks(X, chunk):
        if rows.shape[0] == 0:
            continue
        proj = rows @ vectors
        log_z_pos = torch.logaddexp(log_z_pos, torch.logsumexp(proj, 0))
        log_z_neg = torch.logaddexp(log_z_neg, torch.logsumexp(-proj, 0))
    log_z = torch.cat([log_z_pos, log_z_neg])
    log_ratio = float(log_z.min() - log_z.max())

    return IsotropyResult(
        n_rows=n,
        dim=d,
        excluded_rows=V - n,
        average_cosine=average_cosine,
        partition_isotropy=math.exp(log_ratio),
        partition_log_ratio=log_ratio,
        isoscore=_isoscore(variances),
        effective_rank=_effective_rank(raw_eig),
        effective_rank_centered=_effective_rank(centered_eig),
        top_pc_variance_fraction=(
            float(variances.max()) / total_var if total_var > 0 else math.nan
        ),
        mean_norm_ratio=float(torch.linalg.vector_norm(mean)) / (norm_sum / n),
    )
