"""The tile schedule of the full pass: only tiles on or above the block diagonal.

The pair matrix S = X̂ X̂ᵀ is symmetric, so a pass visits tile (I, J) only for J >= I: about
half of the V²·d multiply-adds. A diagonal tile holds each of its pairs twice and its self
pairs once; the backends handle it apart from the off-diagonal ones.

A cross pass (two matrices A and B stacked as one matrix, A's rows first, ``split`` = len(A))
visits every tile of A's rows against B's rows: n_A·n_B pairs, no symmetry and no diagonal.
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


def cross_tiles(n: int, split: int, block: int) -> Iterator[Tile]:
    """Yield the tiles of rows [0, split) against columns [split, n), row block by row block."""
    if block < 1:
        raise ValueError(f"block must be a positive number of rows, got {block}")
    if not 0 < split < n:
        raise ValueError(f"split must be inside (0, {n}), got {split}")
    for r0 in range(0, split, block):
        r1 = min(r0 + block, split)
        for c0 in range(split, n, block):
            yield Tile(r0, r1, c0, min(c0 + block, n))


def tiles(n: int, block: int, split: int | None = None) -> Iterator[Tile]:
    """The tiles of a pass: :func:`upper_tiles`, or :func:`cross_tiles` when ``split`` is set."""
    return upper_tiles(n, block) if split is None else cross_tiles(n, split, block)


def count_pass_tiles(n: int, block: int, split: int | None = None) -> int:
    """Number of tiles :func:`tiles` yields."""
    if split is None:
        return count_tiles(n, block)
    return -(-split // block) * -(-(n - split) // block)
