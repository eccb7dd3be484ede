"""Operating context: where on the fleet's operating range an asset was at the event.

An alert's embedding says how the window departs from *that asset's* normal (the symptom).
The same symptom can mean different things at different operating points - a small drop
in flow at full load is not what it is at a quarter load - so a history can also weigh
the operating point: the channels' levels at the event, in units of how far normal
operation spreads across the fleet (:meth:`ContextSettings.fit` on normal data of many
assets, or the channel statistics of a fleet-trained model).

The store searches one vector per incident, ``[unit embedding, w / sqrt(C) * context]``,
by Euclidean distance, and reports ``1 - d^2 / 2``, which is

    cosine(embedding) - w^2 * mean((context difference in fleet spreads)^2) / 2

so with no context it is exactly the cosine similarity, and each fleet spread of
operating-point difference (averaged over the channels) costs ``w^2 / 2`` of similarity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .errors import HistoryError

__all__ = [
    "ContextSettings",
    "distance_of_similarity",
    "similarity_of_distance",
    "unit",
]


class ContextSettings(BaseModel):
    """The fleet's normal operating range per channel, and the weight of a difference."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    weight: float = Field(
        2.0, gt=0, description="Similarity cost of operating-point difference: one fleet "
                               "spread on every channel costs weight^2 / 2.")
    channels: dict[str, tuple[float, float]] = Field(
        min_length=1, description="channel -> (centre, spread) of normal operation across "
                                  "the fleet, in the channel's units.")

    @field_validator("channels")
    @classmethod
    def _spreads_positive(cls, v: dict[str, tuple[float, float]]
                          ) -> dict[str, tuple[float, float]]:
        for name, (centre, spread) in v.items():
            if not (math.isfinite(centre) and math.isfinite(spread) and spread > 0):
                raise ValueError(f"channel {name!r}: centre must be finite and spread > 0")
        return v

    @classmethod
    def fit(cls, series: Sequence[npt.ArrayLike], channels: Sequence[str], *,
            weight: float = 2.0) -> ContextSettings:
        """Centre and spread of each channel over normal data pooled from many assets
        (each series ``[samples, channels]``). Constant channels carry no context and
        are left out."""
        arrays = [np.asarray(s, dtype=np.float64) for s in series]
        if not arrays or any(a.ndim != 2 or a.shape[1] != len(channels) for a in arrays):
            raise HistoryError(f"each series must be [samples, {len(channels)}]")
        x = np.concatenate(arrays)
        x = x[np.isfinite(x).all(axis=1)]
        if len(x) < 2:
            raise HistoryError("too few finite samples to fit an operating context")
        centre, spread = x.mean(axis=0), x.std(axis=0)
        kept = {c: (float(m), float(s)) for c, m, s in zip(channels, centre, spread, strict=True)
                if s > 1e-12 * max(1.0, abs(m))}
        if not kept:
            raise HistoryError("every channel is constant; no operating context to fit")
        return cls(weight=weight, channels=kept)

    @property
    def size(self) -> int:
        return len(self.channels)

    def spec(self) -> dict[str, Any]:
        """What a history stores to check later writers and readers use the same scale."""
        return {"weight": self.weight, "channels": {k: list(v) for k, v in
                                                    sorted(self.channels.items())}}

    def same_as(self, spec: Mapping[str, Any]) -> bool:
        try:
            other = ContextSettings.model_validate(spec)
        except ValueError:
            return False
        return (math.isclose(other.weight, self.weight, rel_tol=1e-9)
                and other.channels.keys() == self.channels.keys()
                and all(np.allclose(other.channels[k], self.channels[k], rtol=1e-9, atol=0)
                        for k in self.channels))

    def part(self, levels: Mapping[str, float] | None) -> tuple[list[float], list[str]]:
        """The context part of a vector and the channels ``levels`` lacked (those count
        as the fleet centre, i.e. no information)."""
        levels = levels or {}
        scale = self.weight / math.sqrt(self.size)
        out, missing = [], []
        for name in sorted(self.channels):
            centre, spread = self.channels[name]
            v = levels.get(name)
            if v is None or not math.isfinite(float(v)):
                missing.append(name)
                out.append(0.0)
            else:
                out.append(scale * (float(v) - centre) / spread)
        return out, missing


def unit(embedding: Sequence[float]) -> list[float]:
    """``embedding`` scaled to length 1 (a zero vector stays zero)."""
    a = np.asarray(embedding, dtype=np.float64)
    n = float(np.linalg.norm(a))
    return (a / n if n > 0 else a).tolist()


def similarity_of_distance(d: float) -> float:
    """Similarity reported for a Euclidean distance ``d`` between store vectors."""
    return 1.0 - d * d / 2.0


def distance_of_similarity(s: float) -> float:
    """The largest distance with similarity at least ``s``."""
    return math.sqrt(max(0.0, 2.0 * (1.0 - s)))
