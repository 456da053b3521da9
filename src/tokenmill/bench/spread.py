"""Repeated measurements of one figure: the median, and how far the repeats spread."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Spread:
    """The repeats of one figure, summarized."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Spread | None:
        """The summary of `values`; None when there are none."""
        if not values:
            return None
        return cls(statistics.median(values), min(values), max(values), len(values))

    @property
    def relative(self) -> float:
        """(high - low) / median: 0.1 means the repeats span 10% of the median."""
        return (self.high - self.low) / self.median if self.median else 0.0

    def render(self, digits: int = 1, scale: float = 1.0) -> str:
        """ "123.4 (120.1-125.0)": the median with the range of the repeats, each times
        `scale`; just the median for a single repeat."""
        m, lo, hi = self.median * scale, self.low * scale, self.high * scale
        if self.n < 2:
            return f"{m:.{digits}f}"
        return f"{m:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"

    def scaled(self, factor: float) -> Spread:
        """The same repeats with every value multiplied by `factor` (> 0)."""
        return Spread(self.median * factor, self.low * factor, self.high * factor, self.n)
