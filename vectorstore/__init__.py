"""aiotflow incident history: past events on Qdrant, searched by embedding similarity.

Depends on none of aiotflow's other packages.
"""

from .errors import EmbeddingMismatch, HistoryError, HistoryUnavailable
from .models import Incident, OutcomeStats, SimilarIncident, outcome_stats
from .store import HistoryStore

__all__ = [
    "EmbeddingMismatch",
    "HistoryError",
    "HistoryStore",
    "HistoryUnavailable",
    "Incident",
    "OutcomeStats",
    "SimilarIncident",
    "outcome_stats",
]
