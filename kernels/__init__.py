"""Triton kernels of embkern, installed as ``embkern.kernels``.

One kernel family per file, each with its launcher and a torch twin in ``embkern.backends``.
The fused full-pass kernel is not in this release: ``--backend triton`` says so.
"""
