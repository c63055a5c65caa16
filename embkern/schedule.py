"""The tile schedule of the full pass: only tiles on or above the block diagonal.

The pair matrix S = X̂ X̂ᵀ is symmetric, so a pass visits tile (I, J) only for J >= I: about
half of the V²·d multiply-adds. A diagonal tile holds each of its pairs twice and its self
pairs once; the backends handle it apart from the off-diagonal ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Tile:
    """Rows [r0, r1) against columns [c0, c1) of the valid-row matrix."""

    r0: int
    r1: int
    c0: int
    c1: int

    @property
    def diagonal(self) -> bool:
        return self.r0 == self.c0


def upper_tiles(n: int, block: int) -> Iterator[Tile]:
    """Yield the tiles (I, J), J >= I, of an n×n symmetric matrix cut into block×block tiles.

    Rows are taken in order so that a row block stays in cache across its whole tile row.
    """
    if block < 1:
        raise ValueError(f"block must be a positive number of rows, got {block}")
    for r0 in range(0, n, block):
        r1 = min(r0 + block, n)
        for c0 in range(r0, n, block):
            yield Tile(r0, r1, c0, min(c0 + block, n))


def count_tiles(n: int, block: int) -> int:
    """Number of tiles :func:`upper_tiles` yields."""
    nb = -(-n // block)
    return nb * (nb + 1) // 2
