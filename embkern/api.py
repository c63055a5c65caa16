"""The Python API for other tools: any 2-D tensor in, typed results out.

>>> import torch, embkern
>>> X = torch.randn(1000, 64)
>>> full = embkern.pair_stats(X)                    # every pair i < j
>>> sampled = embkern.sampled_stats(X, anchors=50)  # the seed note's protocol
>>> full.to_dict()["frac_nonneg"], sampled.to_dict()["median"]
>>> cross = embkern.cross_stats(X, torch.randn(800, 64))  # every row of A against B
>>> report = embkern.analyze(X, full=True, center=True, baseline="random")  # side by side
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch

from . import engine, quantiles, sampled
from .backends import get_backend, resolve_device
from .cross import CrossResult, cross_pass
from .prepare import as_matrix, prepare
from .progress import TileProgress
from .results import FullResult, SampledResult


def sampled_stats(
    X,
    *,
    anchors: int = 50,
    seed: int = 0,
    anchor_ids: Sequence[int] | None = None,
    device: str | torch.device | None = None,
) -> SampledResult:
    """The sampled protocol on the rows of X.

    Args:
        X: (V, d) float tensor or numpy array (or a LoadedMatrix); rows are the tokens.
        anchors: how many anchors to draw uniformly without replacement (ignored when
            ``anchor_ids`` is given).
        seed: seed of the draw.
        anchor_ids: explicit anchor token ids (row indices of X).
        device: where to compute; default CUDA, else MPS, else CPU.
    """
    prep = prepare(as_matrix(X), resolve_device(device))
    if anchor_ids is not None:
        idx = sampled.anchors_from_ids(prep, list(anchor_ids))
        return sampled.sampled_stats(prep, idx, seed=None)
    return sampled.sampled_stats(prep, sampled.draw_anchors(prep, anchors, seed), seed=seed)


def pair_stats(
    X,
    *,
    backend: str = "auto",
    device: str | torch.device | None = None,
    per_token: bool = True,
    exact_quantiles: bool = False,
    qs: Sequence[float] = quantiles.DEFAULT_QUANTILES,
    hist_bins: int = 200,
    block: int | None = None,
    precision: str = "ieee",
    progress=None,
) -> FullResult:
    """Statistics over every unordered pair i < j of the rows of X, streamed tile by tile.

    Args:
        X: (V, d) float tensor or numpy array (or a LoadedMatrix).
        backend: "auto" (cpu-fused on the CPU when numba imports, else torch), "cpu-fused",
            "torch", "naive" (materializes V×V; reference and baseline) or "triton".
        device: where to compute; default CUDA, else MPS, else CPU.
        per_token: also compute per-token statistics (``result.per_token``).
        exact_quantiles: exact order statistics through a second pass instead of histogram
            estimates (error <= 5.1e-5).
        qs: the quantile levels, each in [0, 1].
        hist_bins: bins of the reported histogram over [-1, 1]; must divide 20000.
        block: tile side in rows; None picks the backend's default.
        precision: input precision of fp32 dot products in the triton backend ("ieee",
            "tf32", "tf32x3"); the result's ``neg_uncertain`` counts the pairs whose sign
            that precision cannot guarantee.
        progress: None or False for no progress, True for a progress bar on stderr, or a
            factory ``progress(total_tiles, pass_number) -> tick(k)``.
    """
    qs = tuple(float(q) for q in qs)
    engine.check_request(block=block, hist_bins=hist_bins, qs=qs)
    dev = resolve_device(device)
    impl = get_backend(backend, dev, precision)
    prep = prepare(as_matrix(X), dev)
    with _progress(progress, "embkern") as factory:
        return engine.full_pass(
            prep,
            impl,
            per_token=per_token,
            exact_quantiles=exact_quantiles,
            qs=qs,
            hist_bins=hist_bins,
            block=block,
            progress=factory,
        )


def cross_stats(
    A,
    B,
    *,
    backend: str = "auto",
    device: str | torch.device | None = None,
    per_token: bool = True,
    exact_quantiles: bool = False,
    qs: Sequence[float] = quantiles.DEFAULT_QUANTILES,
    hist_bins: int = 200,
    block: int | None = None,
    precision: str = "ieee",
    progress=None,
) -> CrossResult:
    """Statistics of every pair (a, b), a a row of A and b a row of B, and cos(A_i, B_i).

    A and B need the same width; their row counts may differ (the self-similarity covers the
    ids below both). Arguments as :func:`pair_stats`; see :mod:`embkern.cross` for the
    definitions.
    """
    qs = tuple(float(q) for q in qs)
    engine.check_request(block=block, hist_bins=hist_bins, qs=qs)
    dev = resolve_device(device)
    impl = get_backend(backend, dev, precision)
    a = prepare(as_matrix(A, "A"), dev)
    b = prepare(as_matrix(B, "B"), dev)
    with _progress(progress, "embkern cross") as factory:
        return cross_pass(
            a,
            b,
            impl,
            per_token=per_token,
            exact_quantiles=exact_quantiles,
            qs=qs,
            hist_bins=hist_bins,
            block=block,
            progress=factory,
        )


@contextmanager
def _progress(progress, label: str):
    """The progress factory the API's ``progress`` argument asks for; bars closed at the end."""
    if progress is True:
        bars = TileProgress(True, label)
        try:
            yield bars
        finally:
            bars.close()
    else:
        yield progress or None
