"""Records of the incident history."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Incident",
    "MaintenanceRecord",
    "OutcomeStats",
    "SimilarIncident",
    "outcome_stats",
]


class Incident(BaseModel):
    """One past event on one asset: what the sensors showed and what it turned out to be."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    asset: str
    asset_type: str = "generator"
    site: str = ""
    ts: float = Field(description="When the event was detected (epoch seconds).")
    failure_mode: str = Field(
        description="What it turned out to be, e.g. coolant_pump; 'none' for a false alarm."
    )
    system: str = Field("", description="Affected system: cooling, lubrication, fuel, ...")
    outcome: str = Field("", description="What was done and found.")
    maintenance_refs: list[str] = Field(default_factory=list,
                                        description="Work orders and log entries.")
    work_order: str = Field("", description="The work order that settled it, if any.")
    event: str = Field("", description="Event this point belongs to, when one event is "
                                       "stored as several windows; counted once in a "
                                       "diagnosis. Empty: the incident is its own event.")
    confirmed: bool = Field(True, description="Failure mode confirmed by a person.")
    corrections: list[dict[str, Any]] = Field(
        default_factory=list, description="Earlier failure modes and who corrected them.")
    summary: str = ""
    context: dict[str, float] = Field(
        default_factory=dict, description="Operating point at the event: channel levels "
                                          "(e.g. window means); see vectorstore.context.")
    embedding: list[float]

    @property
    def event_id(self) -> str:
        return self.event or self.id

    def payload(self) -> dict[str, Any]:
        """Everything but the embedding; empty text and lists are left out (they come back
        as defaults), which keeps the stored payload small and inserts fast."""
        return {k: v for k, v in self.model_dump(exclude={"embedding"}).items()
                if v != "" and v != [] and v != {}}


class MaintenanceRecord(BaseModel):
    """One maintenance action on one asset's subsystem (from the CMMS or a work order)."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    asset: str
    site: str = ""
    system: str = Field(description="cooling, lubrication, fuel, mechanical, ...")
    ts: float = Field(description="When the work was done (epoch seconds).")
    action: str
    technician: str = ""
    work_order: str = ""
    notes: str = ""

    def payload(self) -> dict[str, Any]:
        return self.model_dump()


class SimilarIncident(BaseModel):
    """A past incident and its similarity to the query (1 = identical; the embeddings'
    cosine, less the operating-context penalty when the history weighs context)."""

    model_config = ConfigDict(frozen=True)

    incident: Incident
    similarity: float


class OutcomeStats(BaseModel):
    """How similar incidents ended, with the ids that prove it."""

    model_config = ConfigDict(frozen=True)

    total: int
    counts: dict[str, int]
    top_mode: str | None
    top_count: int
    evidence_ids: list[str] = Field(description="Ids of the incidents of the top mode.")

    @property
    def top_fraction(self) -> float:
        return self.top_count / self.total if self.total else 0.0

    def sentence(self) -> str:
        """'7 of 8 similar events ended in coolant_pump'."""
        if not self.total or self.top_mode is None:
            return "no similar past events"
        return f"{self.top_count} of {self.total} similar events ended in {self.top_mode}"


def outcome_stats(similar: list[SimilarIncident]) -> OutcomeStats:
    """Count the failure modes of ``similar`` incidents."""
    counts = Counter(s.incident.failure_mode for s in similar)
    if not counts:
        return OutcomeStats(total=0, counts={}, top_mode=None, top_count=0, evidence_ids=[])
    mode, n = counts.most_common(1)[0]
    return OutcomeStats(
        total=len(similar),
        counts=dict(counts),
        top_mode=mode,
        top_count=n,
        evidence_ids=[s.incident.id for s in similar if s.incident.failure_mode == mode],
    )
