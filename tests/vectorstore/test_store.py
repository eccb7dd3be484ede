from pathlib import Path

import numpy as np
import pytest

from vectorstore import (
    EmbeddingMismatch,
    HistoryError,
    HistoryStore,
    Incident,
    outcome_stats,
)


def incident(mode: str, vec: np.ndarray, **kw: object) -> Incident:
    base = {"asset": "gen-101", "ts": 1000.0, "failure_mode": mode, "site": "plant-1"}
    return Incident(embedding=[float(v) for v in vec], **(base | kw))  # type: ignore[arg-type]


async def test_similar_with_filters_and_outcomes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    cool, bear = np.eye(16)[0] * 5, np.eye(16)[1] * 5
    rows = (
        [incident("coolant_pump", cool + rng.normal(0, 0.3, 16), ts=100.0 + i) for i in range(7)]
        + [incident("thermostat", cool + rng.normal(0, 0.3, 16), asset="gen-102")]
        + [incident("bearing_wear", bear + rng.normal(0, 0.3, 16)) for _ in range(6)]
        + [incident("coolant_pump", cool, asset_type="pump", asset="p-1")]
    )
    async with HistoryStore(path=tmp_path / "h") as h:
        assert await h.similar(list(cool)) == []  # empty history, no collection yet
        assert await h.add(rows) == len(rows)
        hits = await h.similar(list(cool), limit=8, asset_type="generator")
        assert len(hits) == 8
        assert hits[0].similarity > 0.9
        stats = outcome_stats(hits)
        assert (stats.top_mode, stats.top_count, stats.total) == ("coolant_pump", 7, 8)
        assert stats.sentence() == "7 of 8 similar events ended in coolant_pump"
        assert len(stats.evidence_ids) == 7
        only_102 = await h.similar(list(cool), exclude_asset="gen-101", asset_type="generator")
        assert [s.incident.asset for s in only_102] == ["gen-102"]
        early = await h.similar(list(cool), before=103.0, asset_type="generator", limit=20)
        assert {s.incident.failure_mode for s in early} == {"coolant_pump"}
        assert all(s.incident.ts < 103.0 for s in early) and len(early) == 3
        close = await h.similar(list(cool), min_similarity=0.9, limit=50)
        assert {s.incident.failure_mode for s in close} == {"coolant_pump", "thermostat"}
        with pytest.raises(EmbeddingMismatch):
            await h.similar([1.0, 2.0])
    async with HistoryStore(path=tmp_path / "h") as h:  # persisted on disk
        assert await h.count() == len(rows) and h.dim == 16


def test_exactly_one_location() -> None:
    with pytest.raises(HistoryError):
        HistoryStore()
    with pytest.raises(HistoryError):
        HistoryStore(path="x", url="http://y")
