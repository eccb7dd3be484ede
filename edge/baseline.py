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
from collections.abc import Sequence
from typing import cast

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
        # one row per asset, so a scored batch is folded in with a few array operations
        self._row: dict[str, int] = {}
        self._free: list[int] = []
        self._level: npt.NDArray[np.float64] = np.zeros((16, len(self.channels)))
        self._ts: npt.NDArray[np.float64] = np.zeros(16)

    def forget(self, key: str) -> None:
        """Let an evicted asset's level go."""
        row = self._row.pop(key, None)
        if row is not None:
            self._free.append(row)

    def update(self, key: str, ts: float, means: npt.ArrayLike) -> None:
        """Fold in one normal window's channel means (non-finite ones are skipped)."""
        m = np.asarray(means, dtype=np.float64)
        if m.shape == (len(self.channels),):
            self.update_many([key], [ts], m[None])

    def update_many(self, keys: Sequence[str], ts: Sequence[float] | npt.ArrayLike,
                    means: npt.ArrayLike) -> None:
        """Fold in normal windows ``[B, C]`` in order, as ``update`` one at a time would
        (windows with a non-finite mean are skipped).

        A key's windows in a batch are folded in closed form: with ``d_j`` the time since
        the key's previous window (at least 1 s) and ``a_j = 1 - exp(-d_j / tau)``, the
        recurrence ``L_j = (1 - a_j) L_{j-1} + a_j m_j`` over ``k`` windows is
        ``exp(-E_k / tau) L_0 + sum_j a_j exp(-(E_k - E_j) / tau) m_j``, ``E_j`` the
        cumulated ``d``: a few array operations per batch, however many windows a key
        has in it, and no exponent above 0.
        """
        m = np.asarray(means, dtype=np.float64)
        t = np.asarray(ts, dtype=np.float64)
        if m.shape != (len(keys), len(self.channels)) or t.shape != (len(keys),):
            raise ValueError(f"means must be [{len(keys)}, {len(self.channels)}]")
        known: list[int | None] = list(map(self._row.get, keys))
        if None in known or not np.isfinite(m).all():
            fold, rows = self._sort_out(keys, t, m)
        else:  # the usual batch: known assets, finite means
            fold, rows = list(range(len(keys))), cast(list[int], known)
        if not fold:
            return
        r = np.fromiter(rows, dtype=np.intp, count=len(rows))
        first = self._runs(r)
        heads = r[first].tolist()  # a few runs (blocks): a set beats np.unique's sort
        if len(set(heads)) < len(heads):  # a key in several runs
            order = np.argsort(r, kind="stable")  # each key's windows together, in order
            idx, r = np.asarray(fold, dtype=np.intp)[order], r[order]
            tt, mm = t[idx], m[idx]
            first = self._runs(r)
        elif len(fold) == len(keys):  # the usual batch: each key's windows in one run
            tt, mm = t, m
        else:
            idx = np.asarray(fold, dtype=np.intp)
            tt, mm = t[idx], m[idx]
        starts = np.flatnonzero(first)
        self._fold_runs(r[starts], starts, np.cumsum(first) - 1, tt, mm)

    def update_runs(self, keys: Sequence[str], lengths: Sequence[int],
                    ts: Sequence[float] | npt.ArrayLike, means: npt.ArrayLike) -> None:
        """:meth:`update_many` of windows that come in runs of one key, each in time
        order: the first ``lengths[0]`` windows are ``keys[0]``'s, the next
        ``lengths[1]`` ``keys[1]``'s, ... - a scored batch of blocks, with a key per run
        instead of per window."""
        m = np.asarray(means, dtype=np.float64)
        t = np.asarray(ts, dtype=np.float64)
        lens = np.asarray(lengths, dtype=np.intp)
        n = int(lens.sum())
        if len(keys) != len(lens) or m.shape != (n, len(self.channels)) or t.shape != (n,):
            raise ValueError(f"means must be [{n}, {len(self.channels)}], ts [{n}], "
                             "a length per key")
        rows = list(map(self._row.get, keys))
        if (None in rows or len(set(keys)) < len(keys) or not lens.all()
                or not np.isfinite(m).all()):  # new keys, a key twice, a bad mean: by window
            self.update_many([k for k, c in zip(keys, lengths, strict=True) for _ in range(c)],
                             t, m)
            return
        starts = np.zeros(len(lens), dtype=np.intp)
        np.cumsum(lens[:-1], out=starts[1:])
        self._fold_runs(np.asarray(rows, dtype=np.intp), starts,
                        np.repeat(np.arange(len(lens)), lens), t, m)

    def _fold_runs(self, urows: npt.NDArray[np.intp], starts: npt.NDArray[np.intp],
                   group: npt.NDArray[np.intp], tt: npt.NDArray[np.float64],
                   mm: npt.NDArray[np.float64]) -> None:
        """Fold in windows grouped by key: run ``g`` (row ``urows[g]``) is windows
        ``starts[g]`` up to the next start, ``group`` the run of each window."""
        first = np.zeros(len(tt), dtype=bool)
        first[starts] = True
        if (tt[1:] < tt[:-1])[~first[1:]].any():  # time going back within a key: rare
            for row, ti, mi in zip(urows[group].tolist(), tt.tolist(), mm, strict=True):
                last = self._ts[row]
                a1 = 1.0 - math.exp(-max(ti - last, 1.0) / self.tau_s)
                self._ts[row] = max(ti, last)
                self._level[row] += a1 * (mi - self._level[row])
            return
        t0 = self._ts[urows]
        prev = np.empty_like(tt)
        prev[1:] = tt[:-1]
        prev = np.where(first, t0[group], np.maximum(prev, t0[group]))
        # time since the key's last window; none (a replay) or going back counts as 1 s
        d = np.maximum(tt - prev, 1.0)
        a = 1.0 - np.exp(-d / self.tau_s)
        e = np.cumsum(d)
        e -= (e[starts] - d[starts])[group]  # cumulated per key
        ends = np.append(starts[1:], len(tt)) - 1
        ek = e[ends]
        w = a * np.exp(-(ek[group] - e) / self.tau_s)
        self._level[urows] = (np.exp(-ek / self.tau_s)[:, None] * self._level[urows]
                              + np.add.reduceat(w[:, None] * mm, starts, axis=0))
        self._ts[urows] = np.maximum(t0, tt[ends])

    @staticmethod
    def _runs(r: npt.NDArray[np.intp]) -> npt.NDArray[np.bool_]:
        """Where a run of equal rows starts."""
        first = np.empty(len(r), dtype=bool)
        first[0] = True
        np.not_equal(r[1:], r[:-1], out=first[1:])
        return first

    def _sort_out(self, keys: Sequence[str], t: npt.NDArray[np.float64],
                  m: npt.NDArray[np.float64]) -> tuple[list[int], list[int]]:
        """The windows to fold in, and their rows, when some are not: a non-finite mean
        is skipped, and a new asset's first window sets its level."""
        ok = cast(list[bool], np.isfinite(m).all(axis=1).tolist())
        fold: list[int] = []
        rows: list[int] = []
        get = self._row.get
        for i, key in enumerate(keys):
            if not ok[i]:
                continue
            row = get(key)
            if row is None:  # a new asset's first window sets its level
                row = self._new_row(key)
                self._level[row] = m[i]
                self._ts[row] = t[i]
                continue
            fold.append(i)
            rows.append(row)
        return fold, rows

    def _new_row(self, key: str) -> int:
        if self._free:
            row = self._free.pop()
        else:
            row = len(self._row)
            if row >= len(self._ts):
                self._level = np.concatenate([self._level, np.zeros_like(self._level)])
                self._ts = np.concatenate([self._ts, np.zeros_like(self._ts)])
        self._row[key] = row
        return row

    def observe(self, policy: AlertPolicy, key: str, ts: float, score: float,
                threshold: float, means: npt.ArrayLike) -> None:
        """Fold in a scored window if it is normal: below ``threshold`` and no episode
        open for ``key`` (call after ``policy.update`` for the same window)."""
        if score < threshold and not policy.in_episode(key):
            self.update(key, ts, means)

    def get(self, key: str) -> dict[str, float]:
        """The asset's operating point (empty until a normal window was seen)."""
        row = self._row.get(key)
        if row is None:
            return {}
        return {c: float(f"{v:.6g}") for c, v in zip(self.channels, self._level[row].tolist(),
                                                     strict=True)}

    def __len__(self) -> int:
        return len(self._row)
