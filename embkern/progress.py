"""Progress bars for long passes: tqdm on stderr, one bar per pass."""

from __future__ import annotations

import sys

from tqdm import tqdm


class TileProgress:
    """tqdm bars on stderr, one per pass; a factory for :func:`engine.full_pass`."""

    def __init__(self, enabled: bool, label: str):
        self.enabled, self.label, self.bars = enabled, label, []

    def __call__(self, total: int, pass_number: int):
        desc = f"{self.label} pass {pass_number}"
        bar = tqdm(
            total=total,
            desc=desc,
            unit="tile",
            file=sys.stderr,
            disable=not self.enabled,
            dynamic_ncols=True,
        )
        self.bars.append(bar)
        return bar.update

    def close(self) -> None:
        for bar in self.bars:
            bar.close()
