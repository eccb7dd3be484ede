"""Diagnosis with provenance, the thin-evidence call, and the answer cache."""

from pathlib import Path

import numpy as np
import pytest

from aiotflow.vectorstore import (
    DiagnosisCache,
    DiagnosisSettings,
    HistorySettings,
    HistoryStore,
    Incident,
    MaintenanceRecord,
)

DIM = 16
COOL, BEAR, FUEL = np.eye(DIM)[0], np.eye(DIM)[1], np.eye(DIM)[2]


def inc(mode: str, centre: np.ndarray, rng: np.random.Generator, i: int, **kw: object
        ) -> Incident:
    base: dict[str, object] = {"id": f"{mode}-{i}", "asset": f"gen-{i % 4}",
                               "asset_type": "generator", "site": "plant-1", "ts": 1000.0 + i,
                               "failure_mode": mode,
                               "system": {"coolant_pump": "cooling",
                                          "thermostat": "cooling"}.get(mode, "mechanical")}
    vec = centre + rng.normal(0, 0.08, DIM)
    return Incident(embedding=vec.tolist(), **(base | kw))  # type: ignore[arg-type]


def store(tmp_path: Path, clock: list[float] | None = None, **diag: object) -> HistoryStore:
    settings = HistorySettings(path=tmp_path / "h", cache_ttl_s=600, cache_distance=0.05,
                               diagnosis=DiagnosisSettings(**diag))  # type: ignore[arg-type]
    now = clock or [0.0]
    return HistoryStore(settings=settings, clock=lambda: now[0])


async def test_probable_with_counts_weights_and_cited_records(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rows = ([inc("coolant_pump", COOL, rng, i) for i in range(7)]
            + [inc("thermostat", COOL, rng, 7)]
            + [inc("bearing_wear", BEAR, rng, i) for i in range(8, 14)])
    async with store(tmp_path, k=8) as h:
        await h.add(rows)
        await h.add_maintenance([
            MaintenanceRecord(id="LOG-1", asset="gen-2", system="cooling", ts=10.0,
                              action="coolant flush"),
            MaintenanceRecord(id="LOG-2", asset="gen-2", system="mechanical", ts=20.0,
                              action="bearing check"),
        ])
        d = await h.diagnose(COOL.tolist(), asset="gen-2", asset_type="generator")
    assert d.call == "probable" and d.failure_mode == "coolant_pump"
    assert d.events == 8 and d.top is not None and d.top.events == 7
    assert 0.8 < d.probability < 0.95  # similarity-weighted share, not just 7/8
    assert d.sentence().startswith("7 of 8 similar events ended in coolant_pump (0.8")
    assert [m.failure_mode for m in d.modes] == ["coolant_pump", "thermostat"]
    assert sorted(d.top.incident_ids) == sorted(f"coolant_pump-{i}" for i in range(7))
    # the implicated subsystem's last maintenance is found and cited
    assert d.system == "cooling" and d.last_maintenance is not None
    assert d.last_maintenance.id == "LOG-1"
    assert set(d.evidence_ids) == {r.id for r in rows[:8]} | {"LOG-1"}


async def test_thin_evidence_is_called_uncertain(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    async with store(tmp_path) as h:
        await h.add([inc("coolant_pump", COOL, rng, 0), inc("coolant_pump", COOL, rng, 1),
                     inc("bearing_wear", BEAR, rng, 2)])
        few = await h.diagnose(COOL.tolist(), asset="gen-9")
        assert few.call == "uncertain" and few.failure_mode == "coolant_pump"
        assert any("only 2 similar event" in r for r in few.reasons)
        far = await h.diagnose((FUEL + COOL).tolist(), asset="gen-8")  # cosine 0.71
        assert far.call == "uncertain"
        assert any("best match only" in r for r in far.reasons)
        assert "uncertain" in far.sentence()
        nothing = await h.diagnose(FUEL.tolist(), asset="gen-7")  # no neighbour at all
        assert nothing.call == "uncertain" and nothing.failure_mode is None
        assert nothing.events == 0 and nothing.evidence_ids == []


async def test_split_evidence_is_uncertain(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    rows = ([inc("coolant_pump", COOL, rng, i) for i in range(5)]
            + [inc("thermostat", COOL, rng, i) for i in range(5, 10)])
    async with store(tmp_path) as h:
        await h.add(rows)
        d = await h.diagnose(COOL.tolist(), asset="gen-1")
    assert d.call == "uncertain" and d.events == 10
    assert any("evidence split" in r for r in d.reasons)


async def test_an_event_stored_as_many_windows_counts_once(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    windows = [inc("injector", COOL, rng, i, id=f"w{i}", event="EV-1") for i in range(30)]
    others = [inc("coolant_pump", COOL, rng, i) for i in range(40, 43)]
    async with store(tmp_path) as h:
        await h.add(windows + others)
        d = await h.diagnose(COOL.tolist(), asset="gen-1")
    assert d.events == 4  # one injector event + three coolant pump events
    assert {m.failure_mode: m.events for m in d.modes} == {"coolant_pump": 3, "injector": 1}


async def test_cache_reuses_answers_for_the_same_asset(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    clock = [0.0]
    async with store(tmp_path, clock) as h:
        await h.add([inc("coolant_pump", COOL, rng, i) for i in range(6)])
        q = COOL + rng.normal(0, 0.01, DIM)
        first = await h.diagnose(q.tolist(), asset="gen-1", asset_type="generator")
        assert not first.cached and h.queries == 1
        clock[0] = 300.0
        again = await h.diagnose((q + rng.normal(0, 0.01, DIM)).tolist(), asset="gen-1",
                                 asset_type="generator")
        assert again.cached and again.failure_mode == first.failure_mode and h.queries == 1
        # another asset, another filter, or a different pattern: asked again
        await h.diagnose(q.tolist(), asset="gen-2", asset_type="generator")
        await h.diagnose(q.tolist(), asset="gen-1", asset_type="pump")
        await h.diagnose(BEAR.tolist(), asset="gen-1", asset_type="generator")
        assert h.queries == 4
        clock[0] = 1000.0  # older than the TTL
        expired = await h.diagnose(q.tolist(), asset="gen-1", asset_type="generator")
        assert not expired.cached and h.queries == 5
        assert h.cache is not None and h.cache.hits == 1 and h.cache.misses == 5
        assert h.stats() == {"engine": "qdrant-edge", "queries": 5, "cache_hits": 1,
                             "cache_misses": 5, "cache_hit_rate": round(1 / 6, 4)}
        # new evidence invalidates every cached answer
        await h.add([inc("thermostat", COOL, rng, 99)])
        fresh = await h.diagnose(q.tolist(), asset="gen-1", asset_type="generator")
        assert not fresh.cached and h.queries == 6


def test_cache_distance_and_capacity() -> None:
    from aiotflow.vectorstore import Diagnosis

    now = [0.0]
    cache = DiagnosisCache(ttl_s=10, max_distance=0.05, max_per_key=2, clock=lambda: now[0])
    d = Diagnosis(call="uncertain", failure_mode=None, probability=0.0, events=0, modes=[],
                  neighbours=[], reasons=["none"], evidence_ids=[])
    key = ("a", "", "", "")
    cache.put(key, [1.0, 0.0], d)
    assert cache.get(key, [1.0, 0.2]) is not None  # cosine distance 0.019
    assert cache.get(key, [1.0, 0.5]) is None  # 0.106
    cache.put(key, [0.0, 1.0], d)
    cache.put(key, [-1.0, 0.0], d)  # the oldest entry goes
    assert cache.get(key, [1.0, 0.0]) is None
    assert cache.hit_rate == pytest.approx(1 / 3)
