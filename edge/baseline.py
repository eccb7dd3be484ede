"""Each asset's operating point: the channel levels of its recent normal operation.

An alert's embedding says how a window departs from normal; where the asset was running
when the trouble began (its load, flow, temperature) is context the incident history can
weigh (see ``vectorstore.context``). The window at the alert is a poor measure of that -
it already carries the fault's own effect - so the runtime keeps, per asset, an
exponentially weighted mean of the window means of *normal* windows (below threshold,
outside an episode) and publishes it with each alert as ``baseline``.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from .policy import AlertPolicy

__all__ = ["OperatingPoint"]


class OperatingPoint:
    """Per-asset EWMA of normal windows' channel means, time constant ``tau_s``.

    A larger ``tau_s`` remembers longer and is less swayed by a slow onset that stays
    under the threshold; a smaller one follows load changes faster.
    """

    def __init__(self, channels: list[str], *, tau_s: float = 600.0) -> None:
        if not tau_s > 0:
            raise ValueError("tau_s must be > 0")
        self.channels = list(channels)
        self.tau_s = tau_s
        self._level: dict[str, npt.NDArray[np.float64]] = {}
        self._ts: dict[str, float] = {}

    def forget(self, key: str) -> None:
        """Let an evicted asset's level go."""
        self._level.pop(key, None)
        self._ts.pop(key, None)

    def update(self, key: str, ts: float, means: npt.ArrayLike) -> None:
        """Fold in one normal window's channel means (non-finite ones are skipped)."""
        m = np.asarray(means, dtype=np.float64)
        if m.shape != (len(self.channels),) or not np.isfinite(m).all():
            return
        level = self._level.get(key)
        if level is None:
            self._level[key] = m.copy()
            self._ts[key] = ts
            return
        dt = max(0.0, ts - self._ts[key])
        self._ts[key] = max(ts, self._ts[key])
        # a window with no time elapsed since the last one (a replay) counts as 1 s
        a = 1.0 - math.exp(-max(dt, 1.0) / self.tau_s) if dt > 0 else 1.0 - math.exp(
            -1.0 / self.tau_s)
        level += a * (m - level)

    def observe(self, policy: AlertPolicy, key: str, ts: float, score: float,
                threshold: float, means: npt.ArrayLike) -> None:
        """Fold in a scored window if it is normal: below ``threshold`` and no episode
        open for ``key`` (call after ``policy.update`` for the same window)."""
        if score < threshold and not policy.in_episode(key):
            self.update(key, ts, means)

    def get(self, key: str) -> dict[str, float]:
        """The asset's operating point (empty until a normal window was seen)."""
        level = self._level.get(key)
        if level is None:
            return {}
        return {c: float(f"{v:.6g}") for c, v in zip(self.channels, level, strict=True)}

    def __len__(self) -> int:
        return len(self._level)
