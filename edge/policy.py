"""Alert policy: turns a stream of window scores into one alert per anomaly episode.

* debounce: ``k`` anomalous windows in a row open an episode;
* one alert per episode, raised when it opens;
* hysteresis: an episode closes only after ``clear`` windows in a row below
  ``clear_ratio * threshold``, so a score hovering at the threshold cannot flap;
* cooldown: no second alert for the same asset within ``cooldown_s`` of the last one.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from aiotflow.contracts.schema import Severity

__all__ = ["AlertPolicy", "Episode", "PolicySettings", "severity_for"]


class PolicySettings(BaseModel):
    """Alert policy settings (``[policy]`` in the edge config)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    k: int = Field(3, ge=1, description="Anomalous windows in a row that open an episode.")
    clear: int = Field(5, ge=1, description="Normal windows in a row that close an episode.")
    clear_ratio: float = Field(
        0.8, gt=0, le=1, description="A window counts as normal below this times threshold."
    )
    cooldown_s: float = Field(
        300.0, ge=0, description="Minimum seconds between two alerts of one asset."
    )


def severity_for(score: float, threshold: float) -> Severity:
    """``warning`` below 2x threshold, ``major`` below 4x, ``critical`` above."""
    ratio = score / threshold
    if ratio >= 4.0:
        return "critical"
    if ratio >= 2.0:
        return "major"
    return "warning"


@dataclass
class Episode:
    """An episode that just opened and must be alerted."""

    asset: str
    start: float
    ts: float
    score: float


@dataclass
class _AssetState:
    run: int = 0
    run_start: float = 0.0
    episode_start: float = 0.0
    normal_run: int = 0
    in_episode: bool = False
    last_alert: float | None = None


class AlertPolicy:
    """Per-asset episode state machine; ``update`` returns an :class:`Episode` to alert."""

    def __init__(self, settings: PolicySettings | None = None) -> None:
        self.settings = settings or PolicySettings()
        self._assets: dict[str, _AssetState] = {}
        #: assets in a run of anomalous windows or in an episode (the others are quiet:
        #: a window below threshold changes nothing for them)
        self._active: set[str] = set()
        self.suppressed = 0

    def forget(self, asset: str) -> None:
        """Let an evicted asset's state go."""
        self._assets.pop(asset, None)
        self._active.discard(asset)

    def episode_start(self, asset: str) -> float | None:
        """Time of the first anomalous window of the open episode (``None`` if none)."""
        st = self._assets.get(asset)
        return st.episode_start if st and st.in_episode else None

    def in_episode(self, asset: str) -> bool:
        st = self._assets.get(asset)
        return bool(st and st.in_episode)

    def update(self, asset: str, ts: float, score: float, threshold: float) -> Episode | None:
        st = self._assets.get(asset)
        if st is None:
            st = self._assets[asset] = _AssetState()
        episode = self._step(st, asset, ts, score, threshold)
        if st.run or st.in_episode:
            self._active.add(asset)
        else:
            self._active.discard(asset)
        return episode

    def _step(self, st: _AssetState, asset: str, ts: float, score: float,
              threshold: float) -> Episode | None:
        s = self.settings
        if score >= threshold:
            if st.run == 0:
                st.run_start = ts
            st.run += 1
            st.normal_run = 0
            if not st.in_episode and st.run >= s.k:
                st.in_episode = True
                st.episode_start = st.run_start
                if st.last_alert is not None and ts - st.last_alert < s.cooldown_s:
                    self.suppressed += 1
                    return None
                st.last_alert = ts
                return Episode(asset=asset, start=st.run_start, ts=ts, score=score)
            return None
        st.run = 0
        if st.in_episode:
            if score < threshold * s.clear_ratio:
                st.normal_run += 1
                if st.normal_run >= s.clear:
                    st.in_episode = False
                    st.normal_run = 0
            else:
                st.normal_run = 0
        return None

    def update_runs(self, keys: Sequence[str], lengths: Sequence[int], ts: Sequence[float],
                    scores: Sequence[float] | npt.NDArray[np.floating[Any]],
                    threshold: float) -> tuple[list[tuple[int, Episode]], list[int]]:
        """:meth:`update_many` of windows in runs of one key (``lengths[0]`` windows of
        ``keys[0]``, then ``lengths[1]`` of ``keys[1]``, ...): a run whose asset is
        neither active nor above the threshold in the batch is normal as a whole."""
        values = np.asarray(scores, dtype=np.float64)
        n = len(values)
        above = np.flatnonzero(values >= threshold)
        if not self._active and not len(above):  # all quiet: every window is normal
            return [], list(range(n))
        ends = list(itertools.accumulate(lengths))
        hot = self._active | {keys[j] for j in
                              set(np.searchsorted(ends, above, side="right").tolist())}
        episodes: list[tuple[int, Episode]] = []
        normal: list[int] = []
        vals: list[float] = values.tolist()
        update, assets = self.update, self._assets
        start = 0
        for key, end in zip(keys, ends, strict=True):
            if key not in hot:  # quiet and below the threshold: normal, nothing changes
                normal.extend(range(start, end))
            else:
                for i in range(start, end):
                    episode = update(key, ts[i], vals[i], threshold)
                    if episode is not None:
                        episodes.append((i, episode))
                    elif vals[i] < threshold and not assets[key].in_episode:
                        normal.append(i)
            start = end
        return episodes, normal

    def update_many(self, keys: Sequence[str], ts: Sequence[float],
                    scores: Sequence[float] | npt.NDArray[np.floating[Any]],
                    threshold: float) -> tuple[list[tuple[int, Episode]], list[int]]:
        """``update`` for a batch of windows in order: the episodes that opened, with the
        index of their window, and the indices of the windows of normal operation (below
        threshold, no episode open after it), in order.

        Only the windows of assets that are active or have a window at or above the
        threshold in the batch go through the state machine, each asset's in order; the
        others are quiet and below threshold, hence normal, and change nothing."""
        return self.update_runs(keys, [1] * len(keys), ts, scores, threshold)
