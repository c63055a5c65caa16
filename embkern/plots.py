"""One figure that explains the positivity: cosine histograms, negative partners, token classes.

:func:`render` draws up to three panels, top to bottom, and leaves out those without input:

(a) the histogram of all-pair cosines over [−1, 1] as a density (count / (total · bin
    width)), one step line per (label, edges, counts) given, with a vertical line at 0 and,
    for ``random_dim=d``, the exact density of the cosine of two independent isotropic
    Gaussian vectors in d dimensions as a dashed reference (:func:`gaussian_cosine_density`);
(b) the per-token count of negative partners (cos < 0) against token id, excluded rows
    skipped, on a symmetric-log y axis (linear below 1, so zero counts stay on the plot);
    for more than 1024 tokens the id axis is linear up to 256 and logarithmic beyond, so a
    band of byte or ASCII tokens at the left edge is as wide as a decade of ids;
(c) the mean cosine of each token class as horizontal bars, labelled with the class size.

The density of t = cos(g, h) for independent g, h ~ N(0, I_d), d ≥ 2: t is distributed as
one coordinate of a uniform point on the sphere S^(d−1), whose density is
f_d(t) = Γ(d/2) / (√π Γ((d−1)/2)) · (1 − t²)^((d−3)/2) on (−1, 1) (the marginal of the
uniform distribution on the sphere, e.g. Fang, Kotz & Ng 1990, "Symmetric Multivariate and
Related Distributions", §2.2; (t + 1)/2 is Beta((d−1)/2, (d−1)/2)). The constant is computed
as exp(lgamma(d/2) − lgamma((d−1)/2)) / √π, which stays finite for any d. d = 2 gives the
arcsine density 1/(π√(1 − t²)), infinite at ±1; d = 3 the uniform density 1/2. For d = 1
the cosine is ±1 with probability 1/2 each: there is no density, and the panel says so.

matplotlib is optional (``pip install embkern[plot]``) and imported only here, through its
object-oriented API with the Agg canvas, so no global backend or pyplot state is touched.
The file is written through a temporary file in the same folder and ``os.replace``.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import InputError

#: Output formats by file suffix.
FORMATS = {".png": "png", ".svg": "svg"}

_PANEL_HEIGHT = 3.3
_WIDTH = 10.0
_DPI = 110
#: Panel (b) shows ids below this on a linear scale and the rest on a log scale.
_LINEAR_IDS = 256


def gaussian_cosine_density(t, d: int) -> np.ndarray:
    """Density at t of the cosine of two independent N(0, I_d) vectors (d ≥ 2).

    0 outside [−1, 1]; at t = ±1 it is 0 for d > 3, 1/2 for d = 3 and +inf for d = 2.
    """
    if not isinstance(d, (int, np.integer)) or d < 2:
        raise InputError(
            f"the cosine of two Gaussian vectors has a density only for d >= 2, got d={d!r}"
            " (for d = 1 it is +1 or -1 with probability 1/2 each)"
        )
    d = int(d)
    t = np.asarray(t, dtype=np.float64)
    log_c = math.lgamma(d / 2) - math.lgamma((d - 1) / 2) - 0.5 * math.log(math.pi)
    one_minus = np.clip(1.0 - t * t, 0.0, None)
    inside = np.abs(t) <= 1.0
    with np.errstate(divide="ignore"):
        if d == 3:
            body = np.ones_like(t)
        else:
            body = np.exp((d - 3) / 2 * np.log(one_minus))
    return np.where(inside, math.exp(log_c) * body, 0.0)


def _check_inputs(
    path: Path,
    histograms: list[tuple[str, np.ndarray, np.ndarray]],
    random_dim: int | None,
    per_token_neg: np.ndarray | None,
    valid: np.ndarray | None,
    class_means: list[tuple[str, float, int]] | None,
) -> str:
    """Refuse a bad request before any drawing; return the output format."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(
            f"plot path {str(path)!r} must end in .png or .svg (got suffix {path.suffix!r})"
        )
    if not path.parent.is_dir():
        raise InputError(f"plot path {str(path)!r}: folder {str(path.parent)!r} does not exist")
    for label, edges, counts in histograms:
        edges, counts = np.asarray(edges), np.asarray(counts)
        if edges.ndim != 1 or counts.ndim != 1 or edges.size != counts.size + 1:
            raise InputError(
                f"histogram {label!r}: edges must have one more entry than counts, got"
                f" {edges.shape} and {counts.shape}"
            )
        if counts.size == 0 or np.any(np.diff(edges) <= 0):
            raise InputError(f"histogram {label!r}: edges must be increasing and non-empty")
    if random_dim is not None and (not isinstance(random_dim, (int, np.integer)) or random_dim < 1):
        raise InputError(f"random_dim must be a positive dimension, got {random_dim!r}")
    if valid is not None and per_token_neg is None:
        raise InputError("valid was given without per_token_neg")
    if per_token_neg is not None:
        neg = np.asarray(per_token_neg)
        if neg.ndim != 1:
            raise InputError(f"per_token_neg must be 1-D (one count per token), got {neg.shape}")
        if valid is not None and np.asarray(valid).shape != neg.shape:
            raise InputError(
                f"valid has shape {np.asarray(valid).shape}, per_token_neg {neg.shape}"
            )
    if not histograms and random_dim is None and per_token_neg is None and not class_means:
        raise InputError("nothing to plot: give histograms, per_token_neg or class_means")
    return fmt


def require_matplotlib() -> None:
    """Raise the clear InputError now when matplotlib is missing (before any long work)."""
    _import_matplotlib()


def _import_matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise InputError(
            "plots need matplotlib: pip install matplotlib (or embkern[plot])"
        ) from exc
    return Figure, FigureCanvasAgg


def _histogram_panel(ax, histograms, random_dim: int | None) -> None:
    for label, edges, counts in histograms:
        edges = np.asarray(edges, dtype=np.float64)
        counts = np.asarray(counts, dtype=np.float64)
        total = counts.sum()
        density = counts / (total * np.diff(edges)) if total > 0 else counts
        ax.stairs(density, edges, label=f"{label} ({int(total):,} pairs)", linewidth=1.4)
    if random_dim is not None:
        if random_dim >= 2:
            t = np.linspace(-1.0, 1.0, 8001)[1:-1]
            ax.plot(
                t,
                gaussian_cosine_density(t, int(random_dim)),
                "k--",
                linewidth=1.0,
                label=f"two independent N(0, I) vectors, d = {random_dim} (exact)",
            )
        else:
            ax.plot([], [], "k--", label="d = 1: a Gaussian cosine is ±1, no density")
    ax.axvline(0.0, color="0.4", linewidth=0.8)
    ax.set_xlim(-1.0, 1.0)
    ax.set_ylim(bottom=0.0)
    ax.set_xlabel("cosine similarity of a pair of rows")
    ax.set_ylabel("density")
    ax.set_title("(a) all-pair cosine distribution", loc="left", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)


def _negative_panel(ax, per_token_neg: np.ndarray, valid: np.ndarray | None) -> None:
    neg = np.asarray(per_token_neg)
    keep = neg >= 0 if valid is None else np.asarray(valid, dtype=bool) & (neg >= 0)
    ids = np.nonzero(keep)[0]
    counts = neg[keep].astype(np.float64)
    ax.plot(ids, counts, linestyle="none", marker=".", markersize=2, alpha=0.6, rasterized=True)
    if neg.size > 4 * _LINEAR_IDS:
        # Linear over the first ids (bytes, ASCII), logarithmic beyond: the low band stays
        # visible next to a vocabulary of 10^5 tokens.
        ax.set_xscale("symlog", linthresh=_LINEAR_IDS, linscale=1.0)
        ax.set_xlim(0, neg.size)
        ax.set_xlabel(f"token id (linear up to {_LINEAR_IDS}, logarithmic beyond)")
    else:
        ax.set_xlim(0, max(neg.size - 1, 1))
        ax.set_xlabel("token id")
    top = float(counts.max()) if counts.size else 0.0
    if top > 10:
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_ylim(bottom=0.0, top=top * 1.5)
    else:
        ax.set_ylim(bottom=0.0, top=max(top * 1.1, 1.0))
    ax.set_ylabel("negative partners (cos < 0)")
    skipped = neg.size - ids.size
    note = f", {skipped:,} excluded row{'s' * (skipped != 1)} skipped" if skipped else ""
    ax.set_title(
        f"(b) per-token count of partners with negative cosine{note}", loc="left", fontsize=10
    )
    ax.grid(alpha=0.3)


def _class_panel(ax, class_means: list[tuple[str, float, int]]) -> None:
    labels = [f"{name} (n={count:,})" for name, _, count in class_means]
    values = np.array([float(mean) for _, mean, _ in class_means], dtype=np.float64)
    y = np.arange(len(class_means))
    shown = np.where(np.isfinite(values), values, 0.0)
    colors = ["tab:red" if v < 0 else "tab:blue" for v in shown]
    ax.barh(y, shown, color=colors, height=0.7)
    for yi, v in zip(y, values, strict=True):
        if not np.isfinite(v):
            ax.text(0.0, yi, " n/a", va="center", fontsize=8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0.0, color="0.4", linewidth=0.8)
    span = float(np.abs(shown).max()) if shown.size else 0.0
    span = max(span * 1.15, 0.05)
    ax.set_xlim(-span if np.any(shown < 0) else -0.1 * span, span)
    ax.set_xlabel("mean cosine to all other tokens")
    ax.set_title("(c) mean cosine by token class", loc="left", fontsize=10)
    ax.grid(axis="x", alpha=0.3)


def _save_atomic(fig, path: Path, fmt: str) -> None:
    """Save through a temporary file in the same folder, then os.replace."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format=fmt, dpi=_DPI)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render(
    path,
    *,
    title: str,
    histograms: list[tuple[str, np.ndarray, np.ndarray]],
    random_dim: int | None = None,
    per_token_neg: np.ndarray | None = None,
    valid: np.ndarray | None = None,
    class_means: list[tuple[str, float, int]] | None = None,
) -> None:
    """Write one PNG or SVG figure (chosen by the path's suffix) with up to three panels.

    Args:
        path: output file, ending in .png or .svg.
        title: the figure title; put the model name in it.
        histograms: (label, edges, counts) per curve of panel (a): counts over the bins
            [edges[k], edges[k+1]) of [−1, 1], e.g. "raw", "centered", "random N(0,1)".
        random_dim: d, to overlay the exact cosine density of two Gaussian vectors in R^d.
        per_token_neg: (V,) negative-partner count per token id for panel (b); entries < 0
            (the engine's mark of an excluded row) are skipped.
        valid: (V,) bool; rows that are False are skipped in panel (b).
        class_means: (class name, mean cosine, token count) per bar of panel (c).

    Panel (a) is drawn when ``histograms`` or ``random_dim`` is given, (b) with
    ``per_token_neg``, (c) with a non-empty ``class_means``.
    """
    path = Path(path)
    fmt = _check_inputs(path, histograms, random_dim, per_token_neg, valid, class_means)
    Figure, FigureCanvasAgg = _import_matplotlib()

    panels = []
    if histograms or random_dim is not None:
        panels.append(("a", 1.0))
    if per_token_neg is not None:
        panels.append(("b", 1.0))
    if class_means:
        panels.append(("c", max(0.6, 0.25 * len(class_means) / _PANEL_HEIGHT + 0.4)))
    ratios = [r for _, r in panels]
    fig = Figure(figsize=(_WIDTH, _PANEL_HEIGHT * sum(ratios) + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, squeeze=False, height_ratios=ratios)[:, 0]
    for (kind, _), ax in zip(panels, axes, strict=True):
        if kind == "a":
            _histogram_panel(ax, histograms, random_dim)
        elif kind == "b":
            _negative_panel(ax, per_token_neg, valid)
        else:
            _class_panel(ax, class_means)
    fig.suptitle(title, fontsize=12, fontweight="bold")
    _save_atomic(fig, path, fmt)
