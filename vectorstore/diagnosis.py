"""Diagnosis with provenance from similar past incidents, and the answer cache.

Given an alert's embedding, :func:`diagnose` takes the ``k`` most similar past *events*
(one event may be stored as several window embeddings; it counts once, at its best
similarity), estimates each failure mode's probability as its share of the similarity
weight, and says "probable" only when the evidence holds up: enough events, a close
enough best match, and a clear majority of the weight. Otherwise the call is
"uncertain" with the reasons, rather than a guess. Every record used is cited by id.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .models import MaintenanceRecord, SimilarIncident

__all__ = ["Diagnosis", "DiagnosisCache", "DiagnosisSettings", "ModeEstimate", "estimate"]


class DiagnosisSettings(BaseModel):
    """How much evidence a diagnosis needs (``[history.diagnosis]`` in a config)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    k: int = Field(20, ge=1, description="Similar past events to weigh.")
    oversample: int = Field(
        2, ge=1, description="Points first fetched per event wanted; the search adapts to "
                             "events stored as many windows (see nearest_events).")
    min_similarity: float = Field(
        0.2, ge=-1, le=1, description="Neighbours less similar than this are not evidence "
                                      "(those above weigh by their similarity; whether the "
                                      "evidence is thin is judged by min_events and "
                                      "min_top_similarity).")
    min_events: int = Field(3, ge=1, description="Fewer similar events: thin evidence.")
    min_top_similarity: float = Field(
        0.8, ge=-1, le=1, description="Best match below this: nothing really alike.")
    min_probability: float = Field(
        0.6, ge=0, le=1, description="Top failure mode's weight share needed for 'probable'.")


class ModeEstimate(BaseModel):
    """One failure mode among the similar events: how many, how much weight, which ones."""

    model_config = ConfigDict(frozen=True)

    failure_mode: str
    events: int
    probability: float = Field(description="Share of the similarity weight (0-1).")
    mean_similarity: float
    incident_ids: list[str]


class Diagnosis(BaseModel):
    """What similar past events say about an alert, with every record cited."""

    model_config = ConfigDict(frozen=True)

    call: Literal["probable", "uncertain"]
    failure_mode: str | None
    probability: float
    events: int = Field(description="Similar events weighed.")
    modes: list[ModeEstimate]
    neighbours: list[SimilarIncident] = Field(description="Best point of each event, best first.")
    reasons: list[str] = Field(description="Why the call is uncertain (empty if probable).")
    system: str | None = Field(None, description="Subsystem the top mode implicates.")
    last_maintenance: MaintenanceRecord | None = None
    evidence_ids: list[str] = Field(description="Ids of every incident and record used.")
    cached: bool = False

    @property
    def top(self) -> ModeEstimate | None:
        return self.modes[0] if self.modes else None

    def sentence(self) -> str:
        """'7 of 8 similar events ended in coolant_pump (0.91 weighted); probable'."""
        top = self.top
        if top is None:
            return "no similar past events; uncertain"
        text = (f"{top.events} of {self.events} similar events ended in {top.failure_mode} "
                f"({top.probability:.2f} weighted)")
        if self.call == "uncertain":
            text += "; uncertain: " + "; ".join(self.reasons)
        return text


def estimate(hits: Sequence[SimilarIncident], settings: DiagnosisSettings
             ) -> tuple[list[SimilarIncident], list[ModeEstimate], list[str]]:
    """Events (best point each, at most ``k``), mode estimates and thin-evidence reasons."""
    best: dict[str, SimilarIncident] = {}
    for h in hits:
        if h.similarity < settings.min_similarity:
            continue
        key = h.incident.event_id
        if key not in best or h.similarity > best[key].similarity:
            best[key] = h
    events = sorted(best.values(), key=lambda h: -h.similarity)[:settings.k]
    weight: dict[str, float] = defaultdict(float)
    members: dict[str, list[SimilarIncident]] = defaultdict(list)
    for h in events:
        weight[h.incident.failure_mode] += max(h.similarity, 0.0)
        members[h.incident.failure_mode].append(h)
    total = sum(weight.values())
    modes = sorted(
        (ModeEstimate(failure_mode=m, events=len(members[m]),
                      probability=round(w / total, 4) if total else 0.0,
                      mean_similarity=round(float(np.mean([h.similarity for h in members[m]])), 4),
                      incident_ids=[h.incident.id for h in members[m]])
         for m, w in weight.items()),
        key=lambda e: (-e.probability, -e.events))
    reasons = []
    if len(events) < settings.min_events:
        reasons.append(f"only {len(events)} similar event(s) at similarity >= "
                       f"{settings.min_similarity:g} (need {settings.min_events})")
    if events and events[0].similarity < settings.min_top_similarity:
        reasons.append(f"best match only {events[0].similarity:.2f} similar "
                       f"(need {settings.min_top_similarity:g})")
    if modes and modes[0].probability < settings.min_probability:
        reasons.append(f"evidence split: {modes[0].failure_mode} carries "
                       f"{modes[0].probability:.0%} of the weight "
                       f"(need {settings.min_probability:.0%})")
    return events, modes, reasons


class DiagnosisCache:
    """Reuse a recent answer for an alert that looks the same on the same asset.

    A hit needs the same asset and filters, an embedding within ``max_distance`` (cosine
    distance, 1 - similarity) of the cached query, and an answer younger than ``ttl_s``.
    """

    def __init__(self, *, ttl_s: float = 600.0, max_distance: float = 0.05,
                 max_per_key: int = 8, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s, self.max_distance, self.max_per_key = ttl_s, max_distance, max_per_key
        self.clock = clock
        self._entries: dict[tuple[str, ...], list[tuple[float, np.ndarray, Diagnosis]]] = {}
        self.hits = 0
        self.misses = 0

    @property
    def hit_rate(self) -> float:
        n = self.hits + self.misses
        return self.hits / n if n else 0.0

    @staticmethod
    def _unit(v: Sequence[float]) -> np.ndarray:
        a = np.asarray(v, dtype=np.float64)
        n = float(np.linalg.norm(a))
        return a / n if n else a

    def get(self, key: tuple[str, ...], embedding: Sequence[float]) -> Diagnosis | None:
        now = self.clock()
        fresh = [e for e in self._entries.get(key, []) if now - e[0] <= self.ttl_s]
        self._entries[key] = fresh
        q = self._unit(embedding)
        for _, vec, answer in fresh:
            if len(vec) == len(q) and 1.0 - float(vec @ q) <= self.max_distance:
                self.hits += 1
                return answer.model_copy(update={"cached": True})
        self.misses += 1
        return None

    def put(self, key: tuple[str, ...], embedding: Sequence[float], answer: Diagnosis) -> None:
        entries = self._entries.setdefault(key, [])
        entries.append((self.clock(), self._unit(embedding), answer))
        del entries[:-self.max_per_key]

    def clear(self) -> None:
        self._entries.clear()
