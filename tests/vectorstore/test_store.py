from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from aiotflow.vectorstore import (
    EmbeddingMismatch,
    HistoryError,
    HistorySettings,
    HistoryStore,
    Incident,
    MaintenanceRecord,
    outcome_stats,
)


def incident(mode: str, vec: np.ndarray, **kw: object) -> Incident:
    base = {"asset": "gen-101", "ts": 1000.0, "failure_mode": mode, "site": "plant-1"}
    return Incident(embedding=[float(v) for v in vec], **(base | kw))  # type: ignore[arg-type]


@pytest.fixture(params=["edge", "client"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[HistoryStore]:
    """The embedded default (Qdrant Edge) and qdrant-client's local mode: same behaviour."""
    if request.param == "edge":
        h = HistoryStore(path=tmp_path / "h")
    else:
        h = HistoryStore(location=":memory:")
    async with h:
        yield h


async def test_similar_with_filters_and_outcomes(store: HistoryStore) -> None:
    h = store
    rng = np.random.default_rng(0)
    cool, bear = np.eye(16)[0] * 5, np.eye(16)[1] * 5
    rows = (
        [incident("coolant_pump", cool + rng.normal(0, 0.3, 16), ts=100.0 + i,
                  id=f"INC-{i}") for i in range(7)]
        + [incident("thermostat", cool + rng.normal(0, 0.3, 16), asset="gen-102")]
        + [incident("bearing_wear", bear + rng.normal(0, 0.3, 16)) for _ in range(6)]
        + [incident("coolant_pump", cool, asset_type="pump", asset="p-1", site="plant-2")]
    )
    assert await h.similar(list(cool)) == []  # empty history, no collection yet
    assert await h.add(rows) == len(rows)
    hits = await h.similar(list(cool), limit=8, asset_type="generator")
    assert len(hits) == 8
    assert hits[0].similarity > 0.9
    stats = outcome_stats(hits)
    assert (stats.top_mode, stats.top_count, stats.total) == ("coolant_pump", 7, 8)
    assert stats.sentence() == "7 of 8 similar events ended in coolant_pump"
    assert sorted(stats.evidence_ids) == sorted(f"INC-{i}" for i in range(7))  # any id form
    only_102 = await h.similar(list(cool), exclude_asset="gen-101", asset_type="generator")
    assert [s.incident.asset for s in only_102] == ["gen-102"]
    early = await h.similar(list(cool), before=103.0, asset_type="generator", limit=20)
    assert {s.incident.failure_mode for s in early} == {"coolant_pump"}
    assert all(s.incident.ts < 103.0 for s in early) and len(early) == 3
    site2 = await h.similar(list(cool), site="plant-2", limit=20)
    assert [s.incident.asset for s in site2] == ["p-1"]
    close = await h.similar(list(cool), min_similarity=0.9, limit=50)
    assert {s.incident.failure_mode for s in close} == {"coolant_pump", "thermostat"}
    with pytest.raises(EmbeddingMismatch):
        await h.similar([1.0, 2.0])
    with pytest.raises(EmbeddingMismatch):
        await h.add([incident("x", np.ones(3))])
    found = await h.find(asset="gen-101", failure_mode="coolant_pump", since=102.0)
    assert [i.id for i in found] == ["INC-6", "INC-5", "INC-4", "INC-3", "INC-2"]  # newest first
    got = await h.get("INC-3", with_embedding=True)
    assert got is not None and got.ts == 103.0 and len(got.embedding) == 16
    exported = [r async for r in h.export()]
    assert len(exported) == len(rows) and all(len(r.embedding) == 16 for r in exported)


async def test_embedded_history_persists(tmp_path: Path) -> None:
    vec = np.eye(8)[0]
    async with HistoryStore(path=tmp_path / "h") as h:
        assert h.engine == "qdrant-edge"
        await h.add([incident("coolant_pump", vec, id="A"), incident("thermostat", vec, id="B")])
        await h.add([incident("injector", vec, id="A")])  # same id: replaced, not added
        await h.add_maintenance([MaintenanceRecord(id="M1", asset="gen-101", system="cooling",
                                                   ts=50.0, action="flush")])
    async with HistoryStore(path=tmp_path / "h") as h:
        assert await h.count() == 2 and h.dim == 8
        assert await h.count("maintenance") == 1
        a = await h.get("A")
        assert a is not None and a.failure_mode == "injector"


async def test_last_maintenance_of_a_subsystem(store: HistoryStore) -> None:
    await store.add_maintenance([
        MaintenanceRecord(id="M1", asset="gen-1", system="cooling", ts=100.0, action="flush"),
        MaintenanceRecord(id="M2", asset="gen-1", system="cooling", ts=300.0, action="pump"),
        MaintenanceRecord(id="M3", asset="gen-1", system="fuel", ts=400.0, action="injector"),
        MaintenanceRecord(id="M4", asset="gen-2", system="cooling", ts=500.0, action="flush"),
    ])
    last = await store.last_maintenance("gen-1", "cooling")
    assert last is not None and last.id == "M2"
    before = await store.last_maintenance("gen-1", "cooling", before=200.0)
    assert before is not None and before.id == "M1"
    anything = await store.last_maintenance("gen-1")
    assert anything is not None and anything.id == "M3"
    assert await store.last_maintenance("gen-9", "cooling") is None


def test_exactly_one_location() -> None:
    with pytest.raises(HistoryError):
        HistoryStore()
    with pytest.raises(HistoryError):
        HistoryStore(path="x", url="http://y")
    hs = HistorySettings(url="http://qdrant:6333", api_key="qdrant-key-123")  # type: ignore[arg-type]
    assert "qdrant-key-123" not in repr(hs) and "qdrant-key-123" not in hs.model_dump_json()
    s = HistoryStore(settings=hs)
    assert s.engine == "qdrant-server"
    assert HistoryStore(settings=HistorySettings(path=Path("x"), engine="client")).engine == \
        "qdrant-client-local"


@pytest.mark.filterwarnings("ignore:Failed to obtain server version")
async def test_unreachable_server_is_a_clear_error() -> None:
    from aiotflow.vectorstore import HistoryUnavailable

    with pytest.raises(HistoryUnavailable, match="cannot open incident history"):
        async with HistoryStore(url="http://127.0.0.1:9"):
            pass
