"""Backends behind one interface, and the choice among them.

``auto`` picks the best available for the device: on the CPU the fused numba epilogue
(``cpu-fused``) when numba imports, else the tiled torch backend; on CUDA the fused Triton
kernel (``triton``) when Triton imports, else the tiled torch backend, which also serves MPS.
``triton`` runs on the CPU only through Triton's interpreter (TRITON_INTERPRET=1), which is
slow and meant for tests; ``auto`` never picks it there. A backend the user names
explicitly either runs or raises a :class:`~embkern.errors.BackendError` that says why; only
``auto`` falls back quietly.
"""

from __future__ import annotations

import torch

from ..errors import BackendError
from . import cpu_fused, triton_backend
from .base import Backend, PassOptions
from .naive import NaiveBackend
from .torch_tiled import TorchTiledBackend

BACKENDS = ("auto", "torch", "cpu-fused", "naive", "triton")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device to run on: the one asked for, else CUDA, else MPS, else the CPU."""
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendError(
            "device 'cuda' was asked for but torch sees no CUDA GPU; use --device cpu"
        )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise BackendError("device 'mps' was asked for but MPS is not available; use --device cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise BackendError(f"device {str(dev)!r} is not supported; use cpu, cuda or mps")
    return dev


def get_backend(name: str, device: torch.device, precision: str = "ieee") -> Backend:
    """Instantiate backend ``name`` (one of :data:`BACKENDS`) on ``device``.

    Args:
        precision: input precision of fp32 dot products in the triton backend ("ieee",
            "tf32", "tf32x3"); the other backends compute full fp32 products and accept only
            "ieee".
    """
    if precision not in triton_backend.PRECISIONS:
        raise BackendError(
            f"unknown input precision {precision!r};"
            f" choose one of {', '.join(triton_backend.PRECISIONS)}"
        )
    if precision != "ieee" and name != "triton":
        raise BackendError(
            f"--precision {precision} applies to the triton backend only;"
            " add --backend triton, or leave the precision at ieee"
        )
    if name == "auto":
        if device.type == "cpu" and cpu_fused.available():
            return cpu_fused.CpuFusedBackend(device)
        if device.type == "cuda" and triton_backend.available():
            try:
                return triton_backend.TritonBackend(device)
            except BackendError:
                return TorchTiledBackend(device)
        return TorchTiledBackend(device)
    if name == "torch":
        return TorchTiledBackend(device)
    if name == "cpu-fused":
        if device.type != "cpu":
            raise BackendError(
                f"the cpu-fused backend runs on the CPU only, not {device.type};"
                " use --backend torch or --device cpu"
            )
        if not cpu_fused.available():
            raise BackendError(
                "the cpu-fused backend needs numba, which does not import here;"
                " pip install numba, or use --backend torch"
            )
        return cpu_fused.CpuFusedBackend(device)
    if name == "naive":
        return NaiveBackend(device)
    if name == "triton":
        return triton_backend.TritonBackend(device, precision)
    raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "PassOptions", "get_backend", "resolve_device"]
