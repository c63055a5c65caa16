"""Compiled kernels of embkern, installed as ``embkern.kernels``.

``cpu_epilogue``: the numba epilogue of the ``cpu-fused`` backend (one pass over a tile of dot
products). ``triton_stats``: the fused Triton kernel of the ``triton`` backend (the tile's
matmul and every reduction in one kernel). Each has its launcher in ``embkern.backends``.
"""
