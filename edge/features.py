"""Window features: the same numpy code computes them for training and at the edge.

A window is ``length`` consecutive samples of ``C`` channels; its feature vector holds,
for each feature name of the spec, one value per channel (feature-major order), so the
vector of a bundle with channels ``[a, b]`` and spec ``[mean, std]`` is
``[a:mean, b:mean, a:std, b:std]``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from .errors import BundleError

__all__ = ["FEATURES", "WindowBuffer", "feature_names", "window_features"]

FEATURES: tuple[str, ...] = ("mean", "std", "min", "max", "last", "slope")

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


def _check_spec(spec: Sequence[str]) -> None:
    unknown = [f for f in spec if f not in FEATURES]
    if unknown:
        raise BundleError(f"unknown features {unknown}; known: {list(FEATURES)}")


def feature_names(channels: Sequence[str], spec: Sequence[str]) -> list[str]:
    """Names of the feature vector's entries, ``channel:feature``, in vector order."""
    _check_spec(spec)
    return [f"{c}:{f}" for f in spec for c in channels]


def window_features(windows: F64 | F32, spec: Sequence[str], *,
                    time_major: bool = False, means: F64 | None = None) -> F32:
    """Features of a batch of windows ``[B, length, C]`` (``[length, B, C]`` when
    ``time_major``: the layout they are computed in, so a caller stacking windows can
    stack them so) as a ``[B, len(spec) * C]`` array. ``means``, a ``[B, C]`` float64
    array, receives each window's channel means (computed here anyway, in float64)."""
    w = np.asarray(windows, dtype=np.float64)
    if w.ndim != 3:
        raise ValueError(f"windows must be [batch, length, channels], got shape {w.shape}")
    _check_spec(spec)
    # time-major [length, B*C]: each statistic is a reduction over the outer axis, which
    # numpy runs along contiguous rows of B*C values (over axis 1 of [B, length, C] its
    # inner loop is C values long: 3-4x slower for the same result, bit for bit)
    if time_major:
        n, b, c = w.shape
        t = np.ascontiguousarray(w).reshape(n, b * c)
    else:
        b, n, c = w.shape
        t = np.ascontiguousarray(w.transpose(1, 0, 2)).reshape(n, b * c)
    out = np.empty((len(spec), b * c), dtype=np.float32)
    mean = t.mean(axis=0)
    if means is not None:
        np.copyto(means, mean.reshape(b, c))  # any layout; another shape raises
    for k, name in enumerate(spec):
        if name == "mean":
            out[k] = mean
        elif name == "std":
            d = t - mean
            d *= d
            out[k] = np.sqrt(d.mean(axis=0))
        elif name == "min":
            out[k] = t.min(axis=0)
        elif name == "max":
            out[k] = t.max(axis=0)
        elif name == "last":
            out[k] = t[-1]
        else:  # slope: least squares on centred time, so the mean need not be removed
            x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
            out[k] = (x @ t) / (float((x * x).sum()) or 1.0)
    # [feature, B, C] -> [B, feature * C]: feature-major per window
    return np.ascontiguousarray(out.reshape(len(spec), b, c).transpose(1, 0, 2)).reshape(b, -1)


class Ring:
    """One asset's sliding window and bookkeeping (see :class:`WindowBuffer`)."""

    __slots__ = ("blocked", "count", "data", "dirty", "last", "last_ts", "pos", "seen",
                 "since", "stale", "unseen")

    def __init__(self, length: int, channels: int) -> None:
        self.data: F64 = np.zeros((length, channels))
        self.pos = 0  # next row to write
        self.count = 0  # rows written, up to length
        self.since = 0  # rows since the last due window
        self.last: Sequence[float] = [0.0] * channels
        self.last_ts = float("-inf")
        # per channel: samples carried forward in a row; -1 until first received
        self.stale = [-1] * channels
        self.unseen = channels
        self.dirty = True  # stale/unseen need attention (cleared by a complete sample)
        self.blocked = 0  # rows until a gap or placeholder has left the window
        self.seen = 0.0  # monotonic time of the last message for this asset


class WindowBuffer:
    """Sliding windows of many assets, one ring buffer per asset.

    ``push`` appends one sample and returns ``True`` when the asset's window is full and
    ``hop`` samples have arrived since the last due window, i.e. a window is due.

    Missing channels, the rule (no window is ever scored on invented data): a channel
    absent from a sample is carried forward from its last value for at most
    ``max_impute`` consecutive samples (counted in ``imputed``). A longer gap, or rows
    from before a channel was first received, make every window that contains them not
    due: such windows are counted in ``skipped``, and scoring resumes by itself once the
    gap has left the window.
    """

    def __init__(self, channels: Sequence[str], length: int, hop: int, *, max_impute: int = 3,
                 max_assets: int | None = None, idle_s: float = 3600.0,
                 on_evict: Callable[[str], None] | None = None):
        """``max_assets``: at most this many rings (asset names come from topics and
        payloads: anyone on the broker can invent them). When full, the least recently
        seen asset is evicted if it has been idle ``idle_s`` (``on_evict(key)`` lets its
        other state go too); otherwise the new asset is refused (:meth:`ring` returns
        ``None``). Both are counted."""
        if length < 2:
            raise ValueError("window length must be at least 2 samples")
        if hop < 1:
            raise ValueError("hop must be at least 1 sample")
        self.channels = list(channels)
        self.length = length
        self.hop = hop
        self.max_impute = max_impute
        self._rings: dict[str, Ring] = {}  # least recently seen first
        self.max_assets = max_assets
        self.idle_s = idle_s
        self.on_evict = on_evict
        self.evicted = 0
        self.refused = 0
        # row order of the window that ends just before write position p
        self._order = [np.roll(np.arange(length), -p) for p in range(length)]
        self.imputed = 0
        self.skipped = 0

    def __len__(self) -> int:
        return len(self._rings)

    def ring(self, asset: str, *, readings: int = 1) -> Ring | None:
        """The ring of ``asset``, created on first use; ``None`` when the buffer is full of
        assets that are not idle (the new one is refused, and ``refused`` counts the
        ``readings`` that asked for it)."""
        rings = self._rings
        now = time.monotonic()
        ring = rings.get(asset)
        if ring is None:
            if self.max_assets is not None and len(rings) >= self.max_assets:
                oldest = next(iter(rings))
                if now - rings[oldest].seen < self.idle_s:
                    self.refused += readings
                    return None
                del rings[oldest]
                self.evicted += 1
                if self.on_evict is not None:
                    self.on_evict(oldest)
            ring = rings[asset] = Ring(self.length, len(self.channels))
        elif next(reversed(rings)) != asset:
            rings[asset] = rings.pop(asset)  # most recently seen last: O(1)
        ring.seen = now
        return ring

    def last_ts(self, asset: str) -> float | None:
        """Timestamp of the newest sample of ``asset``, if any."""
        ring = self._rings.get(asset)
        return ring.last_ts if ring is not None and ring.count else None

    def push(self, ring: Ring, ts: float, values: dict[str, float]) -> bool:
        """Append one sample; ``True`` when a window of this ring is due."""
        try:
            row = [values[c] for c in self.channels]
        except KeyError:
            return self._append(ring, ts, self._impute(ring, values))
        return self.push_row(ring, ts, row)

    def push_row(self, ring: Ring, ts: float, row: Sequence[float]) -> bool:
        """:meth:`push` of a complete sample given as its values in channel order."""
        if ring.dirty:
            self._complete(ring)
        return self._append(ring, ts, row)

    def _append(self, ring: Ring, ts: float, row: Sequence[float]) -> bool:
        ring.data[ring.pos] = row
        ring.last = row
        ring.last_ts = ts
        ring.pos = (ring.pos + 1) % self.length
        if ring.count < self.length:
            ring.count += 1
        if ring.blocked:
            ring.blocked -= 1
        ring.since += 1
        if ring.count == self.length and ring.since >= self.hop:
            ring.since = 0
            if ring.blocked or ring.unseen:
                self.skipped += 1
                return False
            return True
        return False

    def push_many(self, ring: Ring, ts: float, rows: F64) -> tuple[range, F64]:
        """Append the complete samples ``rows`` ``[n, C]`` (every channel, in channel
        order) at once, the last one at time ``ts``: what ``n`` calls of :meth:`push`
        would do. Returns ``(due, ext)``: the rows after which a window is due (a range
        of row indices, every ``hop``) and the samples they are windows of - window
        ``length`` rows long after row ``j`` is ``ext[j + 1:j + 1 + length]``, oldest
        sample first (``ext`` is read-only: the scorer keeps it)."""
        length, n = self.length, len(rows)
        if ring.dirty:
            self._complete(ring)
        # the current window then the new rows: the window due after row j is a slice
        ext = np.concatenate((ring.data[self._order[ring.pos]] if ring.pos else ring.data,
                              rows))
        ext.flags.writeable = False
        count, since, blocked, hop = ring.count, ring.since, ring.blocked, self.hop
        # push's arithmetic for n rows at once: after row j, count is min(count + j + 1,
        # length) and since is since + j + 1 until a window is due - the first once both
        # the window is full and hop rows have come, then every hop rows
        dues = range(max(length - count - 1, hop - since - 1, 0), n, hop)
        # a due window is skipped while a gap is still in it: blocked - j - 1 > 0 after row j
        wait = max(blocked - 1 - dues.start, 0)
        clear = range(dues.start + -(-wait // hop) * hop, n, hop)
        self.skipped += len(dues) - len(clear)
        ring.count = min(count + n, length)
        ring.since = n - 1 - dues[-1] if dues else since + n
        ring.blocked = max(blocked - n, 0)
        # the window, oldest row first: the next block appends to it without a gather
        ring.pos = 0
        ring.data[:] = ext[n:]
        ring.last = ext[-1].tolist()
        ring.last_ts = ts
        return clear, ext

    def _complete(self, ring: Ring) -> None:
        """A sample with every channel: gaps end; first-seen channels start clean rows."""
        if ring.unseen and ring.count:
            ring.blocked = max(ring.blocked, self.length)
        ring.unseen = 0
        ring.stale = [0] * len(self.channels)
        ring.dirty = False

    def _impute(self, ring: Ring, values: dict[str, float]) -> list[float]:
        row = list(ring.last)
        ring.dirty = True
        newly_seen = False
        for i, c in enumerate(self.channels):
            v = values.get(c)
            if v is None:
                if ring.stale[i] >= 0:  # seen before: carry its last value forward
                    ring.stale[i] += 1
                    self.imputed += 1
                    if ring.stale[i] > self.max_impute:
                        ring.blocked = self.length + 1  # this row must leave the window
            else:
                row[i] = v
                newly_seen = newly_seen or ring.stale[i] < 0
                ring.stale[i] = 0
        ring.unseen = sum(1 for x in ring.stale if x < 0)
        if newly_seen and ring.count:
            ring.blocked = max(ring.blocked, self.length)
        return row

    def window(self, ring: Ring) -> F64:
        """The ring's current window, oldest sample first, ``[length, C]`` (a copy)."""
        return ring.data[self._order[ring.pos]]


def make_windows(series: npt.NDArray[np.float64], window: int, hop: int) -> npt.NDArray[np.float64]:
    """All windows ``[n, window, C]`` of a ``[T, C]`` series, one every ``hop`` samples."""
    if series.shape[0] < window:
        return np.empty((0, window, series.shape[1]))
    view = np.lib.stride_tricks.sliding_window_view(series, window, axis=0)  # [n, C, window]
    return np.ascontiguousarray(view[::hop].transpose(0, 2, 1))
