"""The fused Triton backend, run through Triton's CPU interpreter (TRITON_INTERPRET=1).

The interpreter executes the very kernel a GPU runs, one program at a time with numpy, so the
masks, the tile table, the atomics and the host-side merge are all checked here; what it cannot
check is the GPU's own arithmetic (tf32 rounding, tensor-core accumulation order), which the
sign band accounts for. Sizes are small (V <= 211, tiles of 16 to 64) to keep the module fast.

The environment variable is set only while these tests run (and while the kernels are first
imported), so the other test modules still see the triton backend refuse the plain CPU.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

_saved = os.environ.get("TRITON_INTERPRET")
os.environ["TRITON_INTERPRET"] = "1"
try:
    pytest.importorskip("triton")
    from embkern.kernels import triton_stats
finally:
    if _saved is None:
        del os.environ["TRITON_INTERPRET"]
    else:
        os.environ["TRITON_INTERPRET"] = _saved

from reference import COUNT_MARGIN, TOLERANCE, reference, sample  # noqa: E402
from test_pair_stats import (  # noqa: E402
    _axis_rows,
    _with_bad_rows,
    assert_matches_reference,
)

import embkern  # noqa: E402
from embkern.backends import PassOptions, get_backend  # noqa: E402
from embkern.backends.triton_backend import TritonBackend, sign_band, tile_table  # noqa: E402
from embkern.cli import main  # noqa: E402
from embkern.errors import BackendError  # noqa: E402
from embkern.prepare import prepare  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("error::RuntimeWarning"),
    pytest.mark.skipif(not triton_stats.INTERPRETED, reason="kernels imported without interpreter"),
]

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def _no_progress(k):
    pass


def _backend_stats(X, options=None, precision="ieee"):
    """PairStats straight from the backend (neg_uncertain included) for the valid rows of X."""
    prep = prepare(X, CPU)
    backend = TritonBackend(CPU, precision)
    options = options or PassOptions()
    return prep, backend.pair_stats(prep.X, prep.inv_norm, options, _no_progress)


# (V, d, block, seed, dtype): seeds where no reference pair is within 1e-6 of zero.
CASES = [
    (211, 17, 32, 0, torch.float32),
    (101, 17, 16, 1, torch.float32),
    (211, 300, 64, 0, torch.float32),
    (211, 300, 32, 0, torch.bfloat16),
    (211, 300, 64, 0, torch.float16),
    (211, 1, 64, 0, torch.float32),
    (13, 17, None, 0, torch.float32),
]


@pytest.mark.parametrize(("V", "d", "block", "seed", "dtype"), CASES)
def test_matches_reference_and_torch(V, d, block, seed, dtype):
    X = sample(V, d, seed, dtype)
    result = embkern.pair_stats(X, backend="triton", device="cpu", block=block)
    assert result.backend == "triton"
    ref = reference(X)
    assert_matches_reference(result, ref, dtype)
    other = embkern.pair_stats(X, backend="torch", device="cpu", block=block)
    tol = TOLERANCE[dtype]["quantile"]
    assert (result.pairs, result.neg) == (other.pairs, other.neg)
    for name in ("min", "max", "mean", "std"):
        assert abs(getattr(result, name) - getattr(other, name)) <= tol, name
    np.testing.assert_array_equal(result.per_token.neg, other.per_token.neg)
    for name in ("mean", "min", "max"):
        a, b = getattr(result.per_token, name), getattr(other.per_token, name)
        np.testing.assert_allclose(a, b, rtol=0, atol=tol, err_msg=name)


def test_row_and_column_strides():
    """A column slice (row stride 40) and a column-major copy give the contiguous result."""
    wide = sample(150, 40, 3)
    X = wide[:, :17]
    transposed = X.T.contiguous().T
    assert X.stride() == (40, 1) and transposed.stride() == (1, 150)
    _, base = _backend_stats(X.contiguous(), PassOptions(block=32))
    for Y in (X, transposed):
        _, got = _backend_stats(Y, PassOptions(block=32))
        assert (got.pairs, got.neg) == (base.pairs, base.neg)
        np.testing.assert_array_equal(got.hist, base.hist)
        np.testing.assert_array_equal(got.per_token.nearest, base.per_token.nearest)
        assert abs(got.total - base.total) <= 1e-9 * base.pairs


def test_excluded_and_duplicate_rows():
    X, excluded = _with_bad_rows(211, 17, 0)
    X[150] = X[3]
    X[90] = X[20]
    X[180] = X[20]
    result = embkern.pair_stats(X, backend="triton", device="cpu", block=32)
    assert result.excluded_rows == excluded
    assert_matches_reference(result, reference(X), torch.float32)
    pt = result.per_token
    bad = excluded["non_finite"] + excluded["zero_norm"]
    assert (pt.neg[bad] == -1).all() and (pt.nearest_id[bad] == -1).all()
    assert (pt.nearest_id[3], pt.nearest_id[150]) == (150, 3)
    assert pt.nearest_id[20] in (90, 180) and pt.nearest_id[90] in (20, 180)
    assert abs(result.max - 1.0) <= TOLERANCE[torch.float32]["value"]


@pytest.mark.parametrize("block", [16, None])
def test_exact_ties_go_to_the_smaller_id(block):
    X = _axis_rows([1, 2, 1, 1, -1, 3, 2, 1, -1, 3, 1] * 3)
    pt = embkern.pair_stats(X, backend="triton", device="cpu", block=block).per_token
    ref = reference(X).per_token()
    np.testing.assert_array_equal(pt.nearest_id, ref["nearest_id"])
    np.testing.assert_array_equal(pt.neg, ref["neg"])
    np.testing.assert_array_equal(pt.min, ref["min"])
    np.testing.assert_array_equal(pt.max, 1.0)


def test_per_token_agrees_with_global():
    """Row i and column i of a diagonal tile see the same fp32 value of each pair."""
    _, stats = _backend_stats(sample(211, 17, 0), PassOptions(block=32))
    pt = stats.per_token
    assert pt.neg.sum() == 2 * stats.neg
    assert pt.max.max() == stats.max and pt.min.min() == stats.min
    np.testing.assert_allclose(pt.total.sum(), 2 * stats.total, rtol=1e-6)


def test_exact_quantiles_and_radix():
    X = sample(101, 300, 0)
    got = embkern.pair_stats(X, backend="triton", device="cpu", block=32, exact_quantiles=True)
    torch_ = embkern.pair_stats(X, backend="torch", device="cpu", block=32, exact_quantiles=True)
    ref = reference(X)
    tol = TOLERANCE[torch.float32]["quantile"]
    assert got.quantiles_exact
    for q, value in got.quantiles.items():
        assert abs(value - ref.quantile(q)) <= tol, q
        assert abs(value - torch_.quantiles[q]) <= tol, q
    _, stats = _backend_stats(X, PassOptions(block=32, radix=True))
    assert stats.radix_hi.sum() == stats.pairs == 101 * 100 // 2


def test_without_per_token():
    X = sample(101, 17, 1)
    full = embkern.pair_stats(X, backend="triton", device="cpu", block=16)
    bare = embkern.pair_stats(X, backend="triton", device="cpu", block=16, per_token=False)
    assert bare.per_token is None
    assert (bare.pairs, bare.neg, bare.min, bare.max) == (full.pairs, full.neg, full.min, full.max)


@pytest.mark.parametrize(("split", "block"), [(40, 16), (1, 32), (100, 64)])
def test_cross_pass(split, block):
    """Rows [0, split) against rows [split, n): every pair once, no self pairs."""
    X = sample(101, 17, 1)
    prep, stats = _backend_stats(X, PassOptions(block=block, split=split))
    unit = X.double() / X.double().norm(dim=1, keepdim=True)
    C = (unit[:split] @ unit[split:].T).numpy()
    assert np.abs(C).min() > COUNT_MARGIN
    tol = TOLERANCE[torch.float32]["value"]
    assert stats.pairs == C.size == int(stats.hist.sum())
    assert stats.neg == int((C < 0).sum())
    assert abs(stats.min - C.min()) <= tol and abs(stats.max - C.max()) <= tol
    assert abs(stats.total / stats.pairs - C.mean()) <= tol
    assert abs(np.sqrt(stats.m2 / stats.pairs) - C.std()) <= tol
    pt = stats.per_token
    np.testing.assert_array_equal(pt.neg[:split], (C < 0).sum(1))
    np.testing.assert_array_equal(pt.neg[split:], (C < 0).sum(0))
    np.testing.assert_allclose(pt.max[:split], C.max(1), atol=tol)
    np.testing.assert_allclose(pt.min[split:], C.min(0), atol=tol)
    np.testing.assert_array_equal(pt.nearest[:split], split + C.argmax(1))
    np.testing.assert_array_equal(pt.nearest[split:], C.argmax(0))
    np.testing.assert_allclose(pt.total[split:], C.sum(0), atol=1e-5)


@pytest.mark.parametrize(("n", "block", "split"), [(100, 16, None), (33, 16, None), (70, 32, 9)])
def test_tile_table_covers_each_pair_once(n, block, split):
    r0, c0 = tile_table(n, block, split)
    seen = np.zeros((n, n), np.int64)
    for r, c in zip(r0.tolist(), c0.tolist(), strict=True):
        rows = np.arange(r, min(r + block, n if split is None else split))[:, None]
        cols = np.arange(c, min(c + block, n))[None, :]
        seen[rows, cols] += cols > rows
    want = np.triu(np.ones((n, n), np.int64), 1)
    if split is not None:
        want[:, :split] = 0
        want[split:] = 0
    np.testing.assert_array_equal(seen, want)
    options = PassOptions(block=block, split=split)
    assert TritonBackend(CPU).count_tiles(n, options) == r0.size


def test_sign_band_counts_the_pairs_near_zero():
    X = sample(101, 300, 0)
    X[7] = X[3] - (X[3] @ X[8]) / (X[8] @ X[8]) * X[8]  # row 7 orthogonal to row 8 (|cos| ~ 1e-8)
    prep, stats = _backend_stats(X, PassOptions(block=32))
    eps = sign_band(torch.float32, "ieee", 300)
    assert eps == 300 * 2.0**-23
    ref = reference(X)
    inside = int((np.abs(ref.pairs) < eps).sum())
    near_edge = int((np.abs(np.abs(ref.pairs) - eps) < 1e-6).sum())
    assert inside >= 1 and abs(stats.neg_uncertain - inside) <= near_edge
    assert abs(stats.neg - ref.neg) <= stats.neg_uncertain
    assert sign_band(torch.bfloat16, "tf32", 10) == 10 * 2.0**-23
    assert sign_band(torch.float32, "tf32", 10) == 2.0**-9 + 10 * 2.0**-23
    assert sign_band(torch.float32, "tf32x3", 10) == 2.0**-18 + 10 * 2.0**-23


@pytest.mark.parametrize("precision", ["tf32", "tf32x3"])
def test_fp32_input_precisions_run(precision):
    """The interpreter computes tl.dot in fp32 whatever the precision; the option must pass."""
    X = sample(101, 17, 1)
    _, stats = _backend_stats(X, PassOptions(block=32), precision=precision)
    assert stats.pairs == 101 * 100 // 2 and stats.neg == reference(X).neg


def test_refusals(monkeypatch):
    with pytest.raises(BackendError, match="tf32"):
        TritonBackend(CPU, precision="fp8")
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(BackendError, match="TRITON_INTERPRET=1"):
        get_backend("triton", CPU)
    assert get_backend("auto", CPU).name != "triton"


def test_cli_full_pass(tmp_path, capsys):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((101, 17)).astype(np.float32)
    X[3] = 0.0
    path, out = tmp_path / "emb.npy", {}
    np.save(path, X)
    for backend in ("triton", "torch"):
        js = tmp_path / f"{backend}.json"
        args = ["stats", path, "--full", "--backend", backend, "--device", "cpu"]
        code = main([str(a) for a in [*args, "--no-progress", "--block", "32", "--json", js]])
        capsys.readouterr()
        assert code == 0
        out[backend] = json.loads(js.read_text())["full"]
    assert out["triton"]["pairs"] == out["torch"]["pairs"] == 100 * 99 // 2
    assert out["triton"]["neg"] == out["torch"]["neg"]
    assert abs(out["triton"]["mean"] - out["torch"]["mean"]) <= 1e-6
    # Only the triton backend counts the sign band; the CLI and JSON carry it.
    assert isinstance(out["triton"]["neg_uncertain"], int)
    assert out["triton"]["sign_band"] == 17 * 2.0**-23
    assert out["torch"]["neg_uncertain"] is None and out["torch"]["sign_band"] is None
    code = main([str(a) for a in ["stats", path, "--full", "--backend", "triton", "--no-progress"]])
    assert code == 0 and "sign band:" in capsys.readouterr().out
    code = main([str(a) for a in ["stats", path, "--full", "--precision", "tf32", "--no-progress"]])
    assert code == 2 and "applies to the triton backend only" in capsys.readouterr().err


def test_cross_stats_through_the_engine():
    A, B = sample(70, 17, 3), sample(45, 17, 4)
    B[0] = 0.0
    tri = embkern.cross_stats(A, B, backend="triton", device="cpu", block=16)
    ref = embkern.cross_stats(A, B, backend="torch", device="cpu", block=16)
    assert tri.pairs.pairs == ref.pairs.pairs == 70 * 44
    assert tri.pairs.neg == ref.pairs.neg
    assert tri.pairs.mean == pytest.approx(ref.pairs.mean, abs=1e-6)
    assert tri.pairs.sign_band == 17 * 2.0**-23 and tri.pairs.neg_uncertain is not None
    np.testing.assert_array_equal(tri.per_token_a.neg, ref.per_token_a.neg)
    np.testing.assert_array_equal(tri.per_token_b.nearest_id, ref.per_token_b.nearest_id)


def _gpu_bench():
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_bench.py"
    spec = importlib.util.spec_from_file_location("gpu_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_gpu_bench_refuses_without_cuda(tmp_path, capsys):
    bench = _gpu_bench()
    assert bench.parse_args(["--out", str(tmp_path), "--quick"]).shape_map == bench.QUICK_SHAPES
    assert list(bench.parse_args(["--out", "x", "--shapes", "gemma-3-4b"]).shape_map) == [
        "gemma-3-4b"
    ]
    with pytest.raises(SystemExit):
        bench.parse_args(["--out", "x", "--shapes", "llama"])
    assert bench.main(["--out", str(tmp_path / "o")]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
