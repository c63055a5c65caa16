"""CPU benchmarks of the full pass, run with ``pytest benchmarks/ --benchmark-only``.

For each case, three benchmarks on the same matrix in one session, so their ratios mean
something: the raw fp32 matmul of the half problem (the roofline: the tiles J >= I with no
statistics), the full pass of the default CPU backend, and the naive path (normalize, V×V
matmul, torch reductions) where it fits. Timings are never assertions; ``embkern bench``
prints the same comparison as one table with peak memory.

Cases: MiniLM (30522×384) and SmolLM2 (49152×576) when their packages are installed, and a
synthetic 262144×640 (Gemma 3 270M's shape; one round, about 10 minutes on 2 cores; the naive
path would need 480 GB and is skipped).
"""

from __future__ import annotations

import pytest
import torch

import embkern
from embkern.bench import _half_matmul
from embkern.prepare import prepare

CPU = torch.device("cpu")
CASES = {"minilm": 1, "smollm2": 1, "random:262144x640": 1}


def _matrix(name: str) -> torch.Tensor:
    if name.startswith("random:"):
        from embkern.bench import random_matrix

        return random_matrix(name)
    try:
        return embkern.load(name).matrix
    except embkern.InputError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    return request.param, _matrix(request.param)


def _pedantic(benchmark, fn, name):
    benchmark.group = name
    benchmark.pedantic(fn, rounds=CASES[name], iterations=1, warmup_rounds=0)


def test_half_matmul(benchmark, case):
    name, X = case
    prep = prepare(X, CPU)
    _pedantic(benchmark, lambda: _half_matmul(prep, 2048), name)


def test_full_pass(benchmark, case):
    name, X = case
    _pedantic(benchmark, lambda: embkern.pair_stats(X, device="cpu"), name)


def test_naive(benchmark, case):
    name, X = case
    try:
        embkern.pair_stats(X[:64], backend="naive", device="cpu")
        _pedantic(benchmark, lambda: embkern.pair_stats(X, backend="naive", device="cpu"), name)
    except embkern.BackendError as exc:
        pytest.skip(str(exc))
