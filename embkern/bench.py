"""``embkern bench``: the full pass against its roofline and against the naive path.

Three timings on the same matrix in one run, so that their ratios mean something:

1. **matmul**: the raw fp32 matmul of the half problem, the tiles J >= I with the full pass's
   own block size and no statistics at all: the roofline of this machine for this work;
2. **full**: the full pass as ``embkern stats --full`` runs it (row exclusion, the pass with
   per-token statistics, the closed-form check);
3. **naive**: normalize, materialize the V×V matrix, torch reductions; skipped with the reason
   when it does not fit in memory.

Peak memory is the process's peak resident set size (``ru_maxrss``), read once before the
phases (``rss_mb_start``: Python, torch, the loaded matrix) and after each phase; the phases
run in the order above, so each reading includes the phases before it.
"""

from __future__ import annotations

import platform
import re
import resource
import sys
import time

import torch

from . import engine
from .backends import get_backend
from .backends.base import PassOptions
from .errors import BackendError, InputError
from .prepare import prepare
from .schedule import upper_tiles


def random_matrix(spec: str) -> torch.Tensor | None:
    """``random:VxD[:seed]`` -> a seeded N(0, 1) float32 matrix, else None."""
    m = re.fullmatch(r"random:(\d+)x(\d+)(?::(\d+))?", spec)
    if not m:
        return None
    V, d, seed = int(m[1]), int(m[2]), int(m[3] or 0)
    if V < 2 or d < 1:
        raise InputError(f"{spec}: a random matrix needs at least 2 rows and 1 column")
    return torch.randn(V, d, generator=torch.Generator().manual_seed(seed))


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _half_matmul(prep, block: int) -> None:
    """The fp32 matmuls of the tiles J >= I into one reused buffer, no statistics.

    Row blocks are taken from X as it is (upcast one block at a time, as the fused backend
    does), so this phase allocates no copy of X.
    """
    X = prep.X
    buf = torch.empty(block * block, dtype=torch.float32, device=X.device)
    row_block = None
    for tile in upper_tiles(X.shape[0], block):
        if tile.diagonal:
            row_block = X[tile.r0 : tile.r1].to(torch.float32)
        C = buf[: (tile.r1 - tile.r0) * (tile.c1 - tile.c0)].view(tile.r1 - tile.r0, -1)
        torch.matmul(row_block, X[tile.c0 : tile.c1].to(torch.float32).T, out=C)


def _timed(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run(
    X: torch.Tensor,
    *,
    name: str,
    backend: str = "auto",
    device: torch.device,
    block: int | None = None,
    naive: bool = True,
    repeat: int = 1,
    progress=None,
) -> dict:
    """Time matmul, full pass and naive path on X; return the JSON-ready report."""
    impl = get_backend(backend, device)
    prep = prepare(X, device)
    tile = impl.block(PassOptions(block=block)) if hasattr(impl, "block") else block or 1024
    work = prep.n * (prep.n - 1) // 2 * X.shape[1] * 2  # flops of the half problem
    out = {
        "name": name,
        "shape": list(X.shape),
        "dtype": str(X.dtype).replace("torch.", ""),
        "x_mb": X.element_size() * X.numel() / 2**20,
        "backend": impl.name,
        "block": tile,
        "device": str(device),
        "machine": {
            "cpu": _cpu_name(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "rss_mb_start": _peak_rss_mb(),
    }
    t = _timed(lambda: _half_matmul(prep, tile), repeat)
    out["matmul"] = {"seconds": t, "gflops": work / t / 1e9, "peak_rss_mb": _peak_rss_mb()}
    t = _timed(lambda: engine.full_pass(prep, impl, block=block, progress=progress), repeat)
    out["full"] = {
        "seconds": t,
        "gflops": work / t / 1e9,
        "peak_rss_mb": _peak_rss_mb(),
        "vs_matmul": t / out["matmul"]["seconds"],
    }
    out["naive"] = None
    if naive:
        naive_impl = get_backend("naive", device)
        try:
            t = _timed(lambda: engine.full_pass(prep, naive_impl), repeat)
            out["naive"] = {
                "seconds": t,
                "gflops": work / t / 1e9,
                "peak_rss_mb": _peak_rss_mb(),
                "full_speedup": t / out["full"]["seconds"],
            }
        except BackendError as exc:
            out["naive"] = {"skipped": str(exc)}
    return out


def table(report: dict) -> str:
    from tabulate import tabulate

    rows = []
    for phase in ("matmul", "full", "naive"):
        r = report.get(phase)
        if r is None:
            continue
        if "skipped" in r:
            rows.append([phase, "skipped", "", "", r["skipped"].split(";")[0]])
            continue
        note = ""
        if phase == "full":
            note = f"{r['vs_matmul']:.2f}x the matmul"
        if phase == "naive":
            speedup = r["full_speedup"]
            note = (
                f"full pass is {speedup:.2f}x faster"
                if speedup >= 1
                else f"full pass is {1 / speedup:.2f}x slower"
            )
        rows.append(
            [phase, f"{r['seconds']:.2f}", f"{r['gflops']:.1f}", f"{r['peak_rss_mb']:.0f}", note]
        )
    head = (
        f"{report['name']}: {report['shape'][0]} x {report['shape'][1]} {report['dtype']}"
        f" ({report['x_mb']:.0f} MB), backend {report['backend']}, block {report['block']},"
        f" {report['machine']['cpu']}, {report['machine']['threads']} threads,"
        f" torch {report['machine']['torch']}"
    )
    body = tabulate(
        rows,
        headers=["phase", "seconds", "GFLOP/s", "peak RSS MB", "note"],
        tablefmt="github",
        disable_numparse=True,
    )
    return head + "\n" + body
