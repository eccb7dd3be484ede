"""Detection quality metrics of the SKAB protocol, implemented here.

* Outliers, point-wise over all files together: F1 = TP / (TP + (FP + FN) / 2),
  FAR = FP / (FP + TN) * 100, MAR = FN / (FN + TP) * 100, rounded to 2 decimals.
* Changepoints as NAB scores. Each true changepoint t opens a detection window
  [t, t + width] (to its right); where windows overlap, the later one starts where the
  earlier ends. The first predicted changepoint inside a window (ends included) is a true
  positive rewarded on a tanh curve from A_tp at the window start down to A_fp at its end;
  a window without one is a false negative (A_fn); each predicted changepoint outside
  every window is a false positive (A_fp). Per profile, summed over files:
  100 * (S - S_null) / (S_perfect - S_null) with S_null = windows * A_fn and
  S_perfect = windows * A_tp. Predicted changepoints are the changes of the binary
  prediction (its first value counts as a change when it is 1).

Times are seconds (any float epoch); predictions and labels are 0/1 arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = [
    "NAB_PROFILES",
    "BinaryCounts",
    "NabTotals",
    "changepoints",
    "nab_file",
    "nab_windows",
]

#: (A_tp, A_fp, A_fn) per NAB application profile
NAB_PROFILES: dict[str, tuple[float, float, float]] = {
    "standard": (1.0, -0.11, -1.0),
    "lowfp": (1.0, -0.22, -1.0),
    "lowfn": (1.0, -0.11, -2.0),
}
_RESOLUTION = 1000


@dataclass
class BinaryCounts:
    """Point-wise confusion counts, summed over files."""

    tp: int = 0
    tn: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, true: npt.ArrayLike, pred: npt.ArrayLike) -> BinaryCounts:
        t = np.asarray(true) == 1
        p = np.asarray(pred) == 1
        if t.shape != p.shape:
            raise ValueError(f"labels {t.shape} and predictions {p.shape} differ in length")
        self.tp += int((t & p).sum())
        self.tn += int((~t & ~p).sum())
        self.fp += int((~t & p).sum())
        self.fn += int((t & ~p).sum())
        return self

    def merge(self, other: BinaryCounts) -> BinaryCounts:
        """Add another set of counts (e.g. another file's) to these."""
        self.tp += other.tp
        self.tn += other.tn
        self.fp += other.fp
        self.fn += other.fn
        return self

    @property
    def f1(self) -> float:
        d = self.tp + (self.fp + self.fn) / 2
        return round(self.tp / d, 2) if d else 0.0

    @property
    def far(self) -> float:
        d = self.fp + self.tn
        return round(self.fp / d * 100, 2) if d else 0.0

    @property
    def mar(self) -> float:
        d = self.fn + self.tp
        return round(self.fn / d * 100, 2) if d else 0.0


def changepoints(pred: npt.ArrayLike) -> npt.NDArray[np.int8]:
    """Predicted changepoints of a binary prediction: where it changes; the first value
    counts as a change when it is 1."""
    p = np.asarray(pred, dtype=np.int8)
    if not len(p):
        return p
    out = np.abs(np.diff(p, prepend=0)).astype(np.int8)
    return out


def nab_windows(cp_times: Sequence[float], width: float) -> list[tuple[float, float]]:
    """Detection windows [t, t + width] of sorted changepoint times, overlaps cut from the
    later window."""
    wins = [[float(t), float(t) + width] for t in cp_times]
    for i in range(len(wins) - 1):
        if wins[i][1] >= wins[i + 1][0]:
            wins[i + 1][0] = wins[i][1]
    return [(a, b) for a, b in wins]


def _reward(start: float, detected: float, end: float, a_tp: float, a_fp: float) -> float:
    """The tanh-shaped reward of a detection at ``detected`` in [start, end]."""
    span = end - start
    event = int((detected - start) / span * _RESOLUTION) if span > 0 else 0
    event = min(max(event, 0), _RESOLUTION - 1)
    x = -math.pi / 2 + event * math.pi / (_RESOLUTION - 1)
    half = (a_tp - a_fp) / 2
    return half * -math.tanh(x) / math.tanh(math.pi / 2) + half + a_fp


@dataclass
class NabTotals:
    """Sums over files of the NAB score, null and perfect scores, per profile."""

    score: dict[str, float] = field(default_factory=lambda: dict.fromkeys(NAB_PROFILES, 0.0))
    null: dict[str, float] = field(default_factory=lambda: dict.fromkeys(NAB_PROFILES, 0.0))
    perfect: dict[str, float] = field(default_factory=lambda: dict.fromkeys(NAB_PROFILES, 0.0))
    windows: int = 0
    missed: int = 0
    false_positives: int = 0

    def merge(self, other: NabTotals) -> NabTotals:
        """Add another file's (or group's) sums to these."""
        for name in NAB_PROFILES:
            self.score[name] += other.score[name]
            self.null[name] += other.null[name]
            self.perfect[name] += other.perfect[name]
        self.windows += other.windows
        self.missed += other.missed
        self.false_positives += other.false_positives
        return self

    def result(self, profile: str) -> float:
        d = self.perfect[profile] - self.null[profile]
        return round(100 * (self.score[profile] - self.null[profile]) / d, 2) if d else 0.0


def nab_file(times: npt.ArrayLike, true_cp: npt.ArrayLike, pred_cp: npt.ArrayLike,
             *, width: float = 60.0, totals: NabTotals | None = None) -> NabTotals:
    """Add one file's NAB outcome to ``totals`` (a new one if not given)."""
    t = np.asarray(times, dtype=np.float64)
    tc, pc = np.asarray(true_cp) == 1, np.asarray(pred_cp) == 1
    if not (len(t) == len(tc) == len(pc)):
        raise ValueError("times, true and predicted changepoints differ in length")
    totals = totals or NabTotals()
    wins = nab_windows(np.sort(t[tc]).tolist(), width)
    detections = np.sort(t[pc])
    fp = 0
    tps: list[tuple[float, float, float]] = []
    missed = 0
    if wins:
        fp += int((detections < wins[0][0]).sum())
        for i, (a, b) in enumerate(wins):
            inside = detections[(detections >= a) & (detections <= b)]
            if len(inside):
                tps.append((a, float(inside[0]), b))
            else:
                missed += 1
            nxt = wins[i + 1][0] if i + 1 < len(wins) else math.inf
            fp += int(((detections > b) & (detections < nxt)).sum())
    else:
        fp = len(detections)
    for name, (a_tp, a_fp, a_fn) in NAB_PROFILES.items():
        totals.score[name] += (a_fp * fp + a_fn * missed
                               + sum(_reward(a, d, b, a_tp, a_fp) for a, d, b in tps))
        totals.null[name] += len(wins) * a_fn
        totals.perfect[name] += len(wins) * a_tp
    totals.windows += len(wins)
    totals.missed += missed
    totals.false_positives += fp
    return totals
