"""GPU benchmark of the fused Triton full pass: ``python benchmarks/gpu_bench.py --out DIR``.

For each shape, on one seeded synthetic bf16 matrix (N(0, 1) rows plus a small common mean
direction, so that most cosines are positive as in real embedding matrices), three timings in
the same run:

* ``fused``: the triton backend's full pass with per-token statistics (what ``embkern stats
  --full`` runs), after a warm-up that compiles the kernel;
* ``naive``: embkern's naive backend (normalize, V×V fp32 matmul, torch reductions), only where
  it fits in GPU memory; otherwise recorded as "does not fit";
* ``matmul``: the raw bf16 matmuls of the same half problem with no statistics: row blocks of
  4096 rows times all rows from the block's first row on (the block upper trapezoid, a little
  more than half of X Xᵀ), bf16 output into one reused buffer.

Work and rates: the half problem is V·(V-1)/2 pairs of d multiply-adds, 2·V·(V-1)/2·d flops;
the TFLOP/s of ``fused`` and ``naive`` count that, the matmul's counts the flops it actually
multiplies (its throughput is the roofline). ``fraction_of_matmul`` is fused TFLOP/s over matmul
TFLOP/s. Peak memory is ``torch.cuda.max_memory_allocated`` during each timing (X included),
reported also as a multiple of the size of X.

Writes ``gpu_bench.csv`` and ``gpu_bench.json`` into DIR. Refuses to run without CUDA. The four
default shapes should take well under 5 minutes on an H100-class GPU (an estimate from the
matmul work: the script has not run on a GPU yet); ``--quick`` runs one small shape.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

SHAPES = {
    "Qwen3-0.6B": (151936, 1024),
    "gemma-3-4b": (262208, 2560),
    "gpt-oss-20b": (201088, 2880),
    "gemma-3-27b": (262208, 5376),
}
QUICK_SHAPES = {"quick": (8192, 256)}
#: Weight of the common mean direction added to every N(0, 1) row (|x| is about √d).
MEAN_WEIGHT = 0.3
MATMUL_BLOCK = 4096


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="folder for gpu_bench.csv/.json")
    p.add_argument("--quick", action="store_true", help="one small shape, as a smoke run")
    p.add_argument(
        "--shapes",
        default=",".join(SHAPES),
        help=f"comma-separated subset of {', '.join(SHAPES)}",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--block", type=int, default=None, help="tile side of the fused kernel")
    p.add_argument("--no-naive", action="store_true", help="skip the naive path")
    args = p.parse_args(argv)
    names = [s for s in args.shapes.split(",") if s]
    unknown = [s for s in names if s not in SHAPES]
    if unknown:
        p.error(f"unknown shape(s) {', '.join(unknown)}; choose from {', '.join(SHAPES)}")
    args.shape_map = QUICK_SHAPES if args.quick else {s: SHAPES[s] for s in names}
    return args


def synthetic(V: int, d: int, seed: int, device):
    """Seeded bf16 (V, d): N(0, 1) rows plus MEAN_WEIGHT·√d times a common unit direction.

    Built in chunks of rows so that no fp32 copy of the whole matrix exists.
    """
    import torch

    gen = torch.Generator(device=device).manual_seed(seed)
    direction = torch.randn(d, generator=gen, device=device)
    direction *= MEAN_WEIGHT * math.sqrt(d) / direction.norm()
    X = torch.empty((V, d), dtype=torch.bfloat16, device=device)
    for start in range(0, V, 16384):
        rows = torch.randn((min(16384, V - start), d), generator=gen, device=device)
        X[start : start + rows.shape[0]] = (rows + direction).to(torch.bfloat16)
    return X


def _timed(fn):
    """(seconds, peak bytes allocated) of one call, synchronized."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0, torch.cuda.max_memory_allocated(), out


def _half_matmul(X) -> int:
    """bf16 matmuls of the block upper trapezoid; returns the flops multiplied."""
    import torch

    V, d = X.shape
    buf = torch.empty(MATMUL_BLOCK * V, dtype=X.dtype, device=X.device)
    flops = 0
    for r0 in range(0, V, MATMUL_BLOCK):
        rows = X[r0 : r0 + MATMUL_BLOCK]
        cols = X[r0:]
        out = buf[: rows.shape[0] * cols.shape[0]].view(rows.shape[0], cols.shape[0])
        torch.mm(rows, cols.T, out=out)
        flops += 2 * rows.shape[0] * cols.shape[0] * d
    return flops


def bench_shape(name: str, V: int, d: int, args) -> dict:
    import torch

    from embkern.backends import PassOptions
    from embkern.backends.naive import NaiveBackend
    from embkern.backends.triton_backend import TritonBackend
    from embkern.errors import BackendError

    dev = torch.device("cuda")
    X = synthetic(V, d, args.seed, dev)
    x_bytes = X.numel() * X.element_size()
    inv = torch.empty(V, dtype=torch.float32, device=dev)
    for start in range(0, V, 16384):
        inv[start : start + 16384] = 1.0 / X[start : start + 16384].float().norm(dim=1)
    half_flops = 2 * (V * (V - 1) // 2) * d
    row = {"shape": name, "V": V, "d": d, "dtype": "bfloat16", "x_bytes": x_bytes}

    fused = TritonBackend(dev)
    options = PassOptions(per_token=True, block=args.block)
    fused.pair_stats(X[:1024], inv[:1024], options, lambda k: None)  # compile
    seconds, peak, stats = _timed(lambda: fused.pair_stats(X, inv, options, lambda k: None))
    row.update(
        fused_s=seconds,
        fused_tflops=half_flops / seconds / 1e12,
        fused_peak_bytes=peak,
        fused_peak_over_x=peak / x_bytes,
        fused_pairs=stats.pairs,
        fused_neg=stats.neg,
        fused_neg_uncertain=stats.neg_uncertain,
        fused_mean=stats.total / stats.pairs,
    )

    _half_matmul(X[:MATMUL_BLOCK])  # warm the matmul library
    seconds, peak, flops = _timed(lambda: _half_matmul(X))
    row.update(
        matmul_s=seconds,
        matmul_flops=flops,
        matmul_tflops=flops / seconds / 1e12,
        matmul_peak_bytes=peak,
        matmul_half_problem_s=seconds * half_flops / flops,
    )
    row["fraction_of_matmul"] = row["fused_tflops"] / row["matmul_tflops"]

    row["naive"] = "skipped" if args.no_naive else "does not fit"
    if not args.no_naive:
        try:
            naive = NaiveBackend(dev)
            seconds, peak, _ = _timed(
                lambda: naive.pair_stats(X, inv, PassOptions(per_token=True), lambda k: None)
            )
            row.update(
                naive="ran",
                naive_s=seconds,
                naive_tflops=half_flops / seconds / 1e12,
                naive_peak_bytes=peak,
                naive_peak_over_x=peak / x_bytes,
                fused_speedup_over_naive=seconds / row["fused_s"],
            )
        except (BackendError, torch.cuda.OutOfMemoryError):
            pass
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import torch
    except ImportError:
        print("gpu_bench: error: torch does not import", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print(
            "gpu_bench: error: no CUDA GPU is visible to torch; this benchmark measures the"
            " Triton kernel on a GPU and does not run on the CPU",
            file=sys.stderr,
        )
        return 2
    import triton

    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "seed": args.seed,
        "flops_counted": "2*V*(V-1)/2*d (the half problem)",
        "matmul_work": f"bf16 torch.mm of row blocks of {MATMUL_BLOCK} against rows r0..V",
    }
    rows = []
    for name, (V, d) in args.shape_map.items():
        t0 = time.perf_counter()
        row = bench_shape(name, V, d, args)
        row["wall_s"] = time.perf_counter() - t0
        torch.cuda.empty_cache()
        rows.append(row)
        print(
            f"{name:>12} {V}x{d}: fused {row['fused_s']:.3f}s {row['fused_tflops']:.1f} TFLOP/s"
            f" ({row['fraction_of_matmul']:.0%} of matmul {row['matmul_tflops']:.1f}),"
            f" peak {row['fused_peak_over_x']:.2f}x X, naive {row['naive']}",
            flush=True,
        )
    (args.out / "gpu_bench.json").write_text(json.dumps({**meta, "rows": rows}, indent=2))
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k not in rows[0], k))
    with open(args.out / "gpu_bench.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
