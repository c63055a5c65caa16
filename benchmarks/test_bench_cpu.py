"""CPU benchmarks of the full pass, run with ``pytest benchmarks/ --benchmark-only``.

Three cases on the same synthetic matrix, in one run, so their ratios mean something:
the raw fp32 matmul of the half problem (the roofline: the tiles J >= I with no statistics),
the tiled torch full pass, and the naive path (normalize, V×V matmul, torch reductions).
Not part of the test suite (``testpaths = tests``): timings are never assertions.
"""

from __future__ import annotations

import pytest
import torch

import embkern
from embkern.backends.torch_tiled import normalize
from embkern.schedule import upper_tiles

SHAPES = {"small-8192x384": (8192, 384)}


@pytest.fixture(scope="module", params=list(SHAPES))
def matrix(request):
    V, d = SHAPES[request.param]
    gen = torch.Generator().manual_seed(0)
    return torch.randn(V, d, generator=gen)


def _half_matmul(X: torch.Tensor, block: int = 1024) -> None:
    Xn = normalize(X, 1.0 / X.norm(dim=1))
    for tile in upper_tiles(Xn.shape[0], block):
        Xn[tile.r0 : tile.r1] @ Xn[tile.c0 : tile.c1].T


def test_half_matmul(benchmark, matrix):
    benchmark.group = f"full pass {tuple(matrix.shape)}"
    benchmark(_half_matmul, matrix)


def test_full_pass_torch(benchmark, matrix):
    benchmark.group = f"full pass {tuple(matrix.shape)}"
    benchmark(embkern.pair_stats, matrix, backend="torch", device="cpu")


def test_full_pass_naive(benchmark, matrix):
    benchmark.group = f"full pass {tuple(matrix.shape)}"
    benchmark(embkern.pair_stats, matrix, backend="naive", device="cpu")
