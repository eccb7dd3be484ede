"""aiotflow incident history: past events on Qdrant, searched by embedding similarity.

Embedded by default (Qdrant Edge, in-process, on a path); a Qdrant server by URL. Depends
on none of aiotflow's other packages.
"""

from aiotflow.extras import require as _require

_require("engine", feature="aiotflow.vectorstore")

from .context import ContextSettings
from .diagnosis import Diagnosis, DiagnosisCache, DiagnosisSettings, ModeEstimate
from .errors import EmbeddingMismatch, HistoryBusy, HistoryError, HistoryUnavailable
from .models import Incident, MaintenanceRecord, OutcomeStats, SimilarIncident, outcome_stats
from .store import HistorySettings, HistoryStore

__all__ = [
    "ContextSettings",
    "Diagnosis",
    "DiagnosisCache",
    "DiagnosisSettings",
    "EmbeddingMismatch",
    "HistoryBusy",
    "HistoryError",
    "HistorySettings",
    "HistoryStore",
    "HistoryUnavailable",
    "Incident",
    "MaintenanceRecord",
    "ModeEstimate",
    "OutcomeStats",
    "SimilarIncident",
    "outcome_stats",
]
