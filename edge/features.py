"""Window features: the same numpy code computes them for training and at the edge.

A window is ``length`` consecutive samples of ``C`` channels; its feature vector holds,
for each feature name of the spec, one value per channel (feature-major order), so the
vector of a bundle with channels ``[a, b]`` and spec ``[mean, std]`` is
``[a:mean, b:mean, a:std, b:std]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from .errors import BundleError

__all__ = ["FEATURES", "WindowBuffer", "feature_names", "window_features"]

FEATURES: tuple[str, ...] = ("mean", "std", "min", "max", "last", "slope")

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


def feature_names(channels: Sequence[str], spec: Sequence[str]) -> list[str]:
    """Names of the feature vector's entries, ``channel:feature``, in vector order."""
    unknown = [f for f in spec if f not in FEATURES]
    if unknown:
        raise BundleError(f"unknown features {unknown}; known: {list(FEATURES)}")
    return [f"{c}:{f}" for f in spec for c in channels]


def window_features(windows: F64 | F32, spec: Sequence[str]) -> F32:
    """Features of a batch of windows ``[B, length, C]`` as a ``[B, len(spec) * C]`` array."""
    w = np.asarray(windows, dtype=np.float64)
    if w.ndim != 3:
        raise ValueError(f"windows must be [batch, length, channels], got shape {w.shape}")
    parts: list[F64] = []
    mean = w.mean(axis=1)
    for name in spec:
        if name == "mean":
            parts.append(mean)
        elif name == "std":
            parts.append(w.std(axis=1))
        elif name == "min":
            parts.append(w.min(axis=1))
        elif name == "max":
            parts.append(w.max(axis=1))
        elif name == "last":
            parts.append(w[:, -1, :])
        elif name == "slope":
            n = w.shape[1]
            x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
            denom = float((x * x).sum()) or 1.0
            parts.append(np.einsum("l,blc->bc", x, w - mean[:, None, :]) / denom)
        else:
            raise BundleError(f"unknown feature {name!r}; known: {list(FEATURES)}")
    return np.concatenate(parts, axis=1).astype(np.float32)


class WindowBuffer:
    """Sliding windows of many assets, one ring buffer per asset.

    ``push`` appends one sample and returns ``True`` when the asset's window is full and
    ``hop`` samples have arrived since it was last handed out, i.e. a window is due.
    A channel missing from a sample is carried forward from the previous sample
    (counted in ``imputed``); until a channel has been seen once it takes ``fill``.
    """

    def __init__(self, channels: Sequence[str], length: int, hop: int, fill: Sequence[float]):
        if length < 2:
            raise ValueError("window length must be at least 2 samples")
        if hop < 1:
            raise ValueError("hop must be at least 1 sample")
        self.channels = list(channels)
        self.index = {c: i for i, c in enumerate(self.channels)}
        self.length = length
        self.hop = hop
        self._fill = np.asarray(fill, dtype=np.float64)
        self._rings: dict[str, F64] = {}
        self._state: dict[str, list[int]] = {}  # asset -> [next write pos, count, since due]
        self._last: dict[str, F64] = {}
        self._last_ts: dict[str, float] = {}
        self.imputed = 0

    def __len__(self) -> int:
        return len(self._rings)

    def last_ts(self, asset: str) -> float | None:
        """Timestamp of the newest sample of ``asset``, if any."""
        return self._last_ts.get(asset)

    def push(self, asset: str, ts: float, values: dict[str, float]) -> bool:
        """Append one sample of ``asset``; ``True`` when a window is due."""
        ring = self._rings.get(asset)
        if ring is None:
            ring = self._rings[asset] = np.empty((self.length, len(self.channels)))
            self._state[asset] = [0, 0, 0]
            self._last[asset] = self._fill.copy()
        row = self._last[asset]
        seen = 0
        for name, value in values.items():
            i = self.index.get(name)
            if i is not None:
                row[i] = value
                seen += 1
        if seen < len(self.channels):
            self.imputed += len(self.channels) - seen
        st = self._state[asset]
        ring[st[0]] = row
        st[0] = (st[0] + 1) % self.length
        st[1] = min(st[1] + 1, self.length)
        st[2] += 1
        self._last_ts[asset] = ts
        if st[1] == self.length and st[2] >= self.hop:
            st[2] = 0
            return True
        return False

    def window(self, asset: str) -> F64:
        """The asset's current window, oldest sample first, ``[length, C]``."""
        ring = self._rings[asset]
        pos = self._state[asset][0]
        return np.concatenate((ring[pos:], ring[:pos]))
