"""Model drift: the live score distribution against the one seen in training.

The bundle carries the training scores' deciles. Over a rolling window of recent window
scores (all assets), the monitor computes the population stability index

    PSI = sum_i (a_i - e_i) * ln(a_i / e_i)

over those ten bins (e_i = 0.1 each). PSI < 0.1 is usually read as stable, 0.1-0.25 as a
moderate shift and > 0.25 as a significant one. At or above ``threshold`` the monitor
reports drift once; it re-arms when PSI falls below half the threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DriftMonitor", "DriftSettings", "psi", "psi_of_counts"]


class DriftSettings(BaseModel):
    """Drift monitoring (``[drift]`` in the edge config)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    window: int = Field(5000, ge=100, description="Recent window scores compared.")
    every: int = Field(1000, ge=10, description="Scores between two PSI computations.")
    threshold: float = Field(0.25, gt=0, description="PSI at or above which drift is reported.")


def psi(scores: Sequence[float] | np.ndarray, edges: Sequence[float]) -> tuple[float, list[float]]:
    """PSI of ``scores`` against equal-mass bins with inner ``edges``; also the actual
    share per bin."""
    inner = np.asarray(edges, dtype=np.float64)
    return psi_of_counts(np.bincount(np.searchsorted(inner, np.asarray(scores), side="right"),
                                     minlength=len(inner) + 1))


def psi_of_counts(counts: np.ndarray) -> tuple[float, list[float]]:
    """:func:`psi` of the scores' counts per bin."""
    actual = counts / max(1, counts.sum())
    expected = np.full(len(actual), 1.0 / len(actual))
    a = np.clip(actual, 1e-4, None)
    return float(((a - expected) * np.log(a / expected)).sum()), actual.round(4).tolist()


class DriftMonitor:
    """Feed it every window score; ``update`` returns the PSI when drift starts."""

    def __init__(self, quantiles: Sequence[float], settings: DriftSettings | None = None):
        self.settings = settings or DriftSettings()
        q = list(quantiles)
        self.edges = q[1:-1] if len(q) > 2 else q  # inner decile edges
        self._inner = np.asarray(self.edges, dtype=np.float64)
        # the bins of the last ``window`` scores, in a ring (order does not matter to
        # PSI), and how many are in each: a PSI costs the bins, not the window
        self._recent = np.zeros(self.settings.window, dtype=np.intp)
        self._counts = np.zeros(len(self._inner) + 1, dtype=np.int64)
        self._pos = 0
        self.filled = 0  # scores in the ring, up to window
        self._since = 0
        self.psi: float | None = None
        self.shares: list[float] = []
        self.drifting = False
        self.reports = 0

    def update(self, scores: Sequence[float] | np.ndarray) -> float | None:
        """Add scores; the PSI if this call found drift starting, else ``None``."""
        s = self.settings
        if not s.enabled or not self.edges:
            return None
        a = np.asarray(scores, dtype=np.float64).reshape(-1)
        self._since += len(a)
        self._add(a)
        if self._since < s.every or self.filled < min(s.window, 10 * s.every):
            return None
        self._since = 0
        self.psi, self.shares = psi_of_counts(self._counts)
        if not self.drifting and self.psi >= s.threshold:
            self.drifting = True
            self.reports += 1
            return self.psi
        if self.drifting and self.psi < s.threshold / 2:
            self.drifting = False
        return None

    def _add(self, a: np.ndarray) -> None:
        ring, size, k = self._recent, len(self._recent), len(self._counts)
        if len(a) >= size:  # only the last window of them stays
            ring[:] = np.searchsorted(self._inner, a[len(a) - size:], side="right")
            self._counts[:] = np.bincount(ring, minlength=k)
            self._pos, self.filled = 0, size
            return
        b = np.searchsorted(self._inner, a, side="right")
        pos = self._pos
        head = min(len(b), size - pos)
        # the slots written hold the oldest bins: from pos on once full, and from 0 when
        # the writing wraps (filled from 0, the ring is full by then)
        if self.filled == size:
            self._counts -= np.bincount(ring[pos:pos + head], minlength=k)
        if len(b) > head:
            self._counts -= np.bincount(ring[:len(b) - head], minlength=k)
        ring[pos:pos + head] = b[:head]
        ring[:len(b) - head] = b[head:]
        self._counts += np.bincount(b, minlength=k)
        self._pos = (pos + len(b)) % size
        self.filled = min(self.filled + len(b), size)
