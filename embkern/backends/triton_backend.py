"""The fused Triton backend: every statistic reduced inside the matmul kernel.

One kernel (``embkern.kernels.triton_stats``) multiplies a tile of rows with a tile of columns
and reduces it in registers; only O(n) per-token buffers, the histograms and a few numbers per
tile ever reach memory. The launcher builds the table of tiles (the upper tiles J >= I of the
symmetric pass, grouped eight row blocks at a time so that consecutive programs share their
column block in L2; or every tile of a cross pass), launches the kernel over it in chunks (the
chunks drive the progress bar), and merges the per-tile partials on the host in float64.

Devices: CUDA, and the CPU only through Triton's interpreter (``TRITON_INTERPRET=1`` set
before embkern imports the kernels), which runs the same kernel with numpy, slowly: it is
meant for tests and for checking results without a GPU.

Precision: bf16 and fp16 rows go to ``tl.dot`` as they are stored (exact products, fp32
accumulation). fp32 rows use the input precision chosen with ``precision``: "ieee" (default,
full fp32 products), "tf32" (inputs cut to 10 mantissa bits; fastest, can flip the sign of a
cosine up to about 2e-3 from zero) or "tf32x3" (three tf32 products, about fp32 accuracy).

Sign band: the kernel also counts the pairs with |cos| < eps, where eps bounds the error of the
computed cosine for that input precision (:func:`sign_band`); ``PairStats.neg_uncertain`` is
that count, an upper bound on how many pairs the negative count may have on the wrong side.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..errors import BackendError
from ..stats import FINE_BINS, NO_PARTNER, RADIX_BINS, PairStats, PerToken
from .base import Backend, PassOptions, Progress

PRECISIONS = ("ieee", "tf32", "tf32x3")
#: Tile side on CUDA, and under the CPU interpreter (numpy is faster with small tiles there).
DEFAULT_BLOCK = {"cuda": 128, "cpu": 32}
#: Tile sides the kernel accepts; another requested block is rounded down into this range.
MIN_BLOCK, MAX_BLOCK = 16, 256
#: Row blocks per group of the tile order: a group's programs share column blocks in L2.
GROUP = 8
#: Tiles per launch on CUDA and in the interpreter; each finished launch ticks the progress.
CHUNK = {"cuda": 1 << 16, "cpu": 64}
#: Relative error of one product of rounded inputs, by input precision (see sign_band).
_INPUT_ERROR = {"ieee": 0.0, "tf32": 2.0**-9, "tf32x3": 2.0**-18}
#: Unit roundoff of fp32 accumulation, taken as 2^-23 so that it also covers tensor cores
#: that truncate instead of rounding to nearest.
_ACCUMULATION_UNIT = 2.0**-23


def available() -> bool:
    """True when Triton imports."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def interpreter_requested() -> bool:
    """True when TRITON_INTERPRET is set to a true value in the environment now."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() not in ("", "0", "false")


def sign_band(dtype: torch.dtype, precision: str, d: int) -> float:
    """Half-width eps of the band |cos| < eps in which the computed sign is not guaranteed.

    The computed cosine is (Σ_k x_k y_k)·(1/|x|)·(1/|y|) with an fp32 sum of d products. The
    inverse norms change it by a relative amount only, which never flips a sign; the sum is off
    by at most (input error + d·u)·Σ_k |x_k y_k|, and Σ_k |x_k y_k| <= |x||y|, so

        eps = input_error + d · 2^-23,

    where input_error is 0 when the products are exact (bf16, fp16, fp32 "ieee"), 2^-9 for
    "tf32" (each factor truncated to 10 mantissa bits: relative 2^-10 each) and 2^-18 for
    "tf32x3" (the dropped low×low product and the rounding of the low parts). It is a worst
    case: a real sum of d roundings errs by about √d·2^-24, so far fewer pairs actually flip.
    """
    input_error = _INPUT_ERROR[precision] if dtype == torch.float32 else 0.0
    return input_error + d * _ACCUMULATION_UNIT


def _block_side(requested: int) -> int:
    """The largest power of two <= requested, clamped to [MIN_BLOCK, MAX_BLOCK]."""
    side = 1 << (max(requested, 1).bit_length() - 1)
    return min(max(side, MIN_BLOCK), MAX_BLOCK)


def tile_table(n: int, block: int, split: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """int32 tile origins (r0, c0) of a pass, in launch order.

    Symmetric pass: the tiles J >= I, taken GROUP row blocks at a time, column block by column
    block within a group. Cross pass (``split`` = s): every tile of rows [0, s) against
    columns [s, n), in the same grouped order.
    """
    if n >= 2**31 - MAX_BLOCK:
        raise BackendError(
            f"the triton backend indexes tiles with int32 and takes < 2^31 rows, not {n}"
        )
    if split is None:
        nb = -(-n // block)
        rb, cb = np.triu_indices(nb)
        col_start = 0
    else:
        if not 0 < split < n:
            raise ValueError(f"split must be inside (0, {n}), got {split}")
        ra, cb_all = -(-split // block), -(-(n - split) // block)
        rb, cb = (a.ravel() for a in np.meshgrid(np.arange(ra), np.arange(cb_all), indexing="ij"))
        col_start = split
    order = np.lexsort((rb, cb, rb // GROUP))
    r0 = (rb[order] * block).astype(np.int32)
    c0 = (col_start + cb[order] * block).astype(np.int32)
    return r0, c0


def _decode_signed_key(key: np.ndarray) -> np.ndarray:
    """Invert the kernel's signed order key: int32 keys -> float32 values."""
    key = key.astype(np.int32)
    bits = np.where(key < 0, key ^ np.int32(0x7FFFFFFF), key).astype(np.int32)
    return bits.view(np.float32)


class TritonBackend(Backend):
    """Fused full pass in one Triton kernel; CUDA, or the CPU under TRITON_INTERPRET=1.

    Args:
        device: a CUDA device, or the CPU when the kernels were imported in interpreter mode.
        precision: input precision of ``tl.dot`` for fp32 rows: "ieee", "tf32" or "tf32x3".
    """

    name = "triton"

    def __init__(self, device: torch.device, precision: str = "ieee"):
        super().__init__(device)
        if precision not in PRECISIONS:
            raise BackendError(
                f"unknown input precision {precision!r}; choose one of {', '.join(PRECISIONS)}"
            )
        if not available():
            raise BackendError(
                "the triton backend needs the triton package, which does not import here;"
                " pip install triton, or use --backend torch"
            )
        from ..kernels import triton_stats

        if device.type == "cpu" and not interpreter_requested():
            raise BackendError(
                "the triton backend runs on the CPU only through Triton's slow interpreter:"
                " set TRITON_INTERPRET=1 in the environment to use it (for tests), or use"
                " --backend cpu-fused or --backend torch"
            )
        if device.type == "cpu" and not triton_stats.INTERPRETED:
            raise BackendError(
                "TRITON_INTERPRET=1 was set after embkern had compiled its Triton kernels for"
                " the GPU; set it before starting Python, or use --backend torch"
            )
        if device.type == "cuda" and triton_stats.INTERPRETED:
            raise BackendError(
                "TRITON_INTERPRET=1 is set, so the Triton kernels run on the CPU only;"
                " unset it to run them on CUDA, or use --device cpu"
            )
        if device.type not in ("cpu", "cuda"):
            raise BackendError(
                f"the triton backend runs on CUDA (or the CPU interpreter), not {device.type};"
                " use --backend torch"
            )
        self._k = triton_stats
        self.precision = precision

    def block(self, options: PassOptions) -> int:
        if options.block is None:
            return DEFAULT_BLOCK[self.device.type]
        return _block_side(options.block)

    def count_tiles(self, n: int, options: PassOptions) -> int:
        block = self.block(options)
        if options.split is None:
            nb = -(-n // block)
            return nb * (nb + 1) // 2
        return -(-options.split // block) * -(-(n - options.split) // block)

    def _check_input(self, X: torch.Tensor) -> None:
        if X.dtype not in (torch.float16, torch.bfloat16, torch.float32):
            raise BackendError(
                f"the triton backend takes float16, bfloat16 or float32 rows, not {X.dtype}"
            )
        if X.device.type != self.device.type:
            raise BackendError(f"X is on {X.device}, the backend on {self.device}")

    def _launches(self, X: torch.Tensor, options: PassOptions, progress: Progress):
        """Yield (grid, tile_base, common kernel arguments) chunk by chunk; tick progress."""
        n, d = X.shape
        block = self.block(options)
        r0, c0 = tile_table(n, block, options.split)
        dev = X.device
        tile_r0 = torch.from_numpy(r0).to(dev)
        tile_c0 = torch.from_numpy(c0).to(dev)
        r_end = n if options.split is None else options.split
        chunk = CHUNK[dev.type]
        pending: list[tuple[torch.cuda.Event | None, int]] = []
        for base in range(0, r0.size, chunk):
            size = min(chunk, r0.size - base)
            yield (size,), base, (tile_r0, tile_c0, base, r_end, n, d, X.stride(0), X.stride(1))
            if dev.type == "cuda":
                event = torch.cuda.Event()
                event.record()
                pending.append((event, size))
                # Report the previous launch once it has finished; the GPU stays busy.
                while len(pending) > 1:
                    done, k = pending.pop(0)
                    done.synchronize()
                    progress(k)
            else:
                progress(size)
        for event, k in pending:
            event.synchronize()
            progress(k)

    def _meta(self, X: torch.Tensor, options: PassOptions) -> dict:
        block = self.block(options)
        meta = {
            "BLOCK": block,
            "BLOCK_K": 32 if X.dtype == torch.float32 or self.device.type == "cpu" else 64,
            "IS_FP32": X.dtype == torch.float32,
            "PRECISION": self.precision,
            "UPCAST": self._k.INTERPRETED and X.dtype == torch.bfloat16,
        }
        if self.device.type == "cuda":
            meta["num_warps"] = 8 if block >= 128 else 4
            meta["num_stages"] = 3
        return meta

    def sign_band(self, X: torch.Tensor) -> float | None:
        return sign_band(X.dtype, self.precision, X.shape[1])

    def pair_stats(
        self, X: torch.Tensor, inv_norm: torch.Tensor, options: PassOptions, progress: Progress
    ) -> PairStats:
        self._check_input(X)
        n, d = X.shape
        dev = X.device
        tiles = self.count_tiles(n, options)
        i32 = {"dtype": torch.int32, "device": dev}
        f32 = {"dtype": torch.float32, "device": dev}
        i64 = {"dtype": torch.int64, "device": dev}
        part = {
            "neg": torch.zeros(tiles, **i32),
            "count": torch.zeros(tiles, **i32),
            "sum": torch.zeros(tiles, **f32),
            "m2": torch.zeros(tiles, **f32),
            "min": torch.zeros(tiles, **f32),
            "max": torch.zeros(tiles, **f32),
            "uncertain": torch.zeros(tiles, **i32),
        }
        hist = torch.zeros(FINE_BINS, **i64)
        radix_hi = torch.zeros(RADIX_BINS if options.radix else 1, **i64)
        size = n if options.per_token else 1
        tok_neg = torch.zeros(size, **i32)
        tok_total = torch.zeros(size, dtype=torch.float64, device=dev)
        inf_key = int(np.float32(np.inf).view(np.int32))
        tok_min = torch.full((size,), inf_key, **i32)
        tok_best = torch.full((size,), self._NO_BEST, **i64)
        eps = sign_band(X.dtype, self.precision, d)
        meta = self._meta(X, options)
        inv = inv_norm.to(torch.float32).contiguous()
        for grid, _, args in self._launches(X, options, progress):
            self._k.pair_stats_kernel[grid](
                X, inv, *args, eps,
                part["neg"], part["count"], part["sum"], part["m2"], part["min"], part["max"],
                part["uncertain"], hist, radix_hi, tok_neg, tok_total, tok_min, tok_best,
                PER_TOKEN=options.per_token, RADIX=options.radix, **meta,
            )  # fmt: skip
        host = {k: v.cpu().numpy() for k, v in part.items()}
        tok = (tok_neg, tok_total, tok_min, tok_best)
        return self._merge(n, host, hist, radix_hi if options.radix else None, options, tok)

    #: Initial max/argmax key: the key of -inf with the worst partner index.
    _NO_BEST = -2139095041 << 32

    def _merge(self, n, part, hist, radix_hi, options, tok) -> PairStats:
        """PairStats from the per-tile partials and the global buffers (float64 merge)."""
        count = part["count"].astype(np.int64)
        seen = count > 0
        pairs = int(count.sum())
        sums = part["sum"].astype(np.float64)
        total = float(sums.sum())
        m2 = float(part["m2"].astype(np.float64).sum())
        if pairs:
            tile_mean = sums[seen] / count[seen]
            m2 += float((count[seen] * (tile_mean - total / pairs) ** 2).sum())
        per_token = None
        if options.per_token:
            tok_neg, tok_total, tok_min, tok_best = (t.cpu().numpy() for t in tok)
            best_value = _decode_signed_key((tok_best >> 32).astype(np.int32))
            partner = np.int64(4294967295) - (tok_best & np.int64(0xFFFFFFFF))
            nearest = np.where(tok_best == self._NO_BEST, NO_PARTNER, partner)
            per_token = PerToken(
                neg=tok_neg.astype(np.int64),
                total=tok_total.astype(np.float64),
                min=_decode_signed_key(tok_min).astype(np.float64),
                max=best_value.astype(np.float64),
                nearest=nearest.astype(np.int64),
            )
        return PairStats(
            n_rows=n,
            pairs=pairs,
            neg=int(part["neg"].astype(np.int64).sum()),
            total=total,
            m2=m2,
            min=float(part["min"][seen].min()) if pairs else float("inf"),
            max=float(part["max"][seen].max()) if pairs else float("-inf"),
            hist=hist.cpu().numpy(),
            radix_hi=None if radix_hi is None else radix_hi.cpu().numpy(),
            per_token=per_token,
            neg_uncertain=int(part["uncertain"].astype(np.int64).sum()),
        )

    def radix_low(
        self,
        X: torch.Tensor,
        inv_norm: torch.Tensor,
        prefixes: list[int],
        options: PassOptions,
        progress: Progress,
    ) -> np.ndarray:
        self._check_input(X)
        dev = X.device
        lookup = torch.full((RADIX_BINS,), -1, dtype=torch.int32)
        lookup[prefixes] = torch.arange(len(prefixes), dtype=torch.int32)
        lookup = lookup.to(dev)
        counts = torch.zeros((max(len(prefixes), 1), RADIX_BINS), dtype=torch.int64, device=dev)
        meta = self._meta(X, options)
        inv = inv_norm.to(torch.float32).contiguous()
        for grid, _, args in self._launches(X, options, progress):
            self._k.radix_low_kernel[grid](X, inv, *args, lookup, counts, **meta)
        return counts[: len(prefixes)].cpu().numpy()


__all__ = ["PRECISIONS", "TritonBackend", "available", "sign_band", "tile_table"]
