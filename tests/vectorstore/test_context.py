"""Operating context beside the embedding, the history's own vector layout, and the
search for k distinct events behind a crowd of windows."""

import json
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from aiotflow.vectorstore import (
    ContextSettings,
    DiagnosisSettings,
    HistoryError,
    HistorySettings,
    HistoryStore,
    Incident,
)
from aiotflow.vectorstore.backends import EdgeBackend

DIM = 8
SYMPTOM = np.eye(DIM)[0] + 0.5 * np.eye(DIM)[3]  # flow down, temperature up
CTX = ContextSettings(weight=2.0, channels={"flow": (60.0, 20.0), "temp": (80.0, 5.0)})
LOW = {"flow": 32.0, "temp": 79.0}  # a valve campaign's operating point
HIGH = {"flow": 76.0, "temp": 92.0}  # a leak campaign's operating point


def inc(i: int, mode: str, point: dict[str, float], rng: np.random.Generator,
        **kw: object) -> Incident:
    vec = SYMPTOM + rng.normal(0, 0.05, DIM)
    base: dict[str, object] = {"id": f"{mode}-{i}", "asset": f"p-{i}", "asset_type": "pump",
                               "ts": 1000.0 + i, "failure_mode": mode, "context": point}
    return Incident(embedding=vec.tolist(), **(base | kw))  # type: ignore[arg-type]


def history(rng: np.random.Generator) -> list[Incident]:
    """The same symptom ends differently at the two operating points; the low one is the
    more common in the history."""
    return ([inc(i, "valve_closed", LOW, rng) for i in range(8)]
            + [inc(i, "fluid_leak", HIGH, rng) for i in range(8, 12)])


@pytest.fixture(params=["edge", "client"])
async def ctx_store(request: pytest.FixtureRequest, tmp_path: Path
                    ) -> AsyncIterator[HistoryStore]:
    settings = HistorySettings(context=CTX, cache_ttl_s=0,
                               diagnosis=DiagnosisSettings(k=4))
    h = (HistoryStore(path=tmp_path / "h", settings=settings) if request.param == "edge"
         else HistoryStore(location=":memory:", settings=settings))
    async with h:
        yield h


async def test_the_operating_point_tells_apart_what_the_symptom_cannot(
        ctx_store: HistoryStore, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = history(rng)
    q = (SYMPTOM + rng.normal(0, 0.05, DIM)).tolist()
    async with HistoryStore(path=tmp_path / "plain",
                            settings=HistorySettings(diagnosis=DiagnosisSettings(k=4))) as plain:
        await plain.add(rows)
        blind = await plain.diagnose(q, asset="p-99", context=HIGH)
    assert plain.context is None
    # the symptom alone: the more common ending wins, whatever the operating point
    assert blind.failure_mode == "valve_closed"

    h = ctx_store
    await h.add(rows)
    at_high = await h.diagnose(q, asset="p-99", context=HIGH)
    at_low = await h.diagnose(q, asset="p-98", context=LOW)
    assert at_high.failure_mode == "fluid_leak" and at_high.call == "probable"
    assert at_high.sentence().startswith("4 of 4 similar events ended in fluid_leak")
    assert at_low.failure_mode == "valve_closed" and at_low.call == "probable"
    # similarity = cosine of the embeddings - w^2 * mean(context difference in spreads^2) / 2
    best = at_high.neighbours[0]
    got = await h.get(best.incident.id, with_embedding=True)
    assert got is not None
    e = np.asarray(got.embedding)
    qn = np.asarray(q) / np.linalg.norm(q)
    cos = float(e @ qn)  # the stored embedding comes back unit length
    assert abs(np.linalg.norm(e) - 1.0) < 1e-5
    assert best.similarity == pytest.approx(cos, abs=1e-4)  # same operating point: no cost
    other = await h.similar(q, context=LOW, limit=20)
    far = next(s for s in other if s.incident.failure_mode == "fluid_leak")
    got = await h.get(far.incident.id, with_embedding=True)
    assert got is not None
    e = np.asarray(got.embedding)
    d2 = ((76 - 32) / 20) ** 2 + ((92 - 79) / 5) ** 2
    assert far.similarity == pytest.approx(float(e @ qn) - 4.0 * (d2 / 2) / 2, abs=1e-3)
    assert far.incident.context == HIGH  # kept in the payload (export, re-index)


async def test_missing_operating_point_is_said(ctx_store: HistoryStore) -> None:
    h = ctx_store
    await h.add(history(np.random.default_rng(1)))
    d = await h.diagnose(SYMPTOM.tolist(), asset="p-99", context={"flow": 76.0})
    assert d.call == "uncertain"
    assert any("no operating context for temp" in r for r in d.reasons)
    d = await h.diagnose(SYMPTOM.tolist(), asset="p-97")
    assert any("no operating context for flow, temp" in r for r in d.reasons)


async def test_a_history_keeps_the_scale_it_was_built_with(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    async with HistoryStore(path=tmp_path / "h",
                            settings=HistorySettings(context=CTX)) as h:
        await h.add(history(rng))
        assert h.dim == DIM  # the embedding's, not the engine vector's (DIM + 2)
    async with HistoryStore(path=tmp_path / "h") as h:  # not configured: the history's own
        assert h.context is not None and h.context.same_as(CTX.spec())
        d = await h.diagnose(SYMPTOM.tolist(), asset="p-99", context=HIGH)
        assert d.failure_mode == "fluid_leak"
        exported = [r async for r in h.export()]
        assert len(exported) == 12 and all(len(r.embedding) == DIM for r in exported)
        assert {json.dumps(r.context, sort_keys=True) for r in exported} == {
            json.dumps(LOW, sort_keys=True), json.dumps(HIGH, sort_keys=True)}
    other = CTX.model_copy(update={"weight": 1.0})
    with pytest.raises(HistoryError, match="different operating-context scale"):
        async with HistoryStore(path=tmp_path / "h", settings=HistorySettings(context=other)):
            pass
    async with HistoryStore(path=tmp_path / "plain") as h:
        await h.add(history(rng))
    with pytest.raises(HistoryError, match="without operating context"):
        async with HistoryStore(path=tmp_path / "plain", settings=HistorySettings(context=CTX)):
            pass
    async with HistoryStore(path=tmp_path / "h"):  # the refused opens released the store
        pass


async def test_k_distinct_events_behind_a_crowd_of_windows(tmp_path: Path) -> None:
    """One event stored as 300 windows right next to the query must not hide the others:
    the search goes on, without the events found, until it has k."""
    rng = np.random.default_rng(3)
    crowd = [Incident(id=f"w{i}", event="EV-CROWD", asset="p-1", ts=1.0,
                      failure_mode="cavitation",
                      embedding=(SYMPTOM + rng.normal(0, 0.01, DIM)).tolist())
             for i in range(300)]
    further = [Incident(id=f"e{i}", asset=f"p-{i + 2}", ts=2.0, failure_mode="valve_closed",
                        embedding=(SYMPTOM + np.eye(DIM)[1] * (0.3 + 0.1 * i)).tolist())
               for i in range(4)]
    settings = HistorySettings(cache_ttl_s=0, diagnosis=DiagnosisSettings(k=5, oversample=4))
    async with HistoryStore(path=tmp_path / "h", settings=settings) as h:
        await h.add(crowd + further)
        d = await h.diagnose(SYMPTOM.tolist(), asset="p-99")
        assert [n.incident.event_id for n in d.neighbours] == ["EV-CROWD", "e0", "e1", "e2",
                                                               "e3"]
        assert {m.failure_mode: m.events for m in d.modes} == {"valve_closed": 4,
                                                               "cavitation": 1}
        assert 1 < h.queries <= 5
        # the best point of each event, as a brute-force search over every point finds it
        allpts = await h.similar(SYMPTOM.tolist(), limit=400)
        best: dict[str, float] = {}
        for s in allpts:
            best.setdefault(s.incident.event_id, s.similarity)
        assert [round(n.similarity, 5) for n in d.neighbours] == [
            round(best[n.incident.event_id], 5) for n in d.neighbours]


async def test_a_cosine_history_from_before_layouts_still_answers(tmp_path: Path) -> None:
    b = EdgeBackend(tmp_path / "h")
    await b.open()
    await b.create("incidents", 3, ("id", "asset", "event"), ("ts",), metric="cosine")
    await b.upsert("incidents", [
        ("A", [2.0, 0.0, 0.0], {"id": "A", "asset": "g", "ts": 1.0, "failure_mode": "x"}),
        ("B", [1.0, 1.0, 0.0], {"id": "B", "asset": "g", "ts": 2.0, "failure_mode": "y"})])
    await b.close()
    async with HistoryStore(path=tmp_path / "h") as h:
        assert h.dim == 3 and h.context is None
        hits = await h.similar([1.0, 0.0, 0.0], limit=5)
        assert [s.incident.id for s in hits] == ["A", "B"]
        assert hits[1].similarity == pytest.approx(2 ** -0.5, abs=1e-5)


def test_fit_and_validate_the_scale() -> None:
    rng = np.random.default_rng(4)
    a = np.column_stack([rng.normal(32, 1, 500), np.full(500, 230.0)])
    b = np.column_stack([rng.normal(76, 1, 500), np.full(500, 230.0)])
    ctx = ContextSettings.fit([a, b], ["flow", "voltage"])
    assert set(ctx.channels) == {"flow"}  # a constant channel says nothing
    centre, spread = ctx.channels["flow"]
    assert centre == pytest.approx(54, abs=0.2) and spread == pytest.approx(22, abs=0.2)
    with pytest.raises(ValueError, match="spread"):
        ContextSettings(channels={"flow": (1.0, 0.0)})
    with pytest.raises(HistoryError):
        ContextSettings.fit([np.ones((10, 3))], ["a", "b"])
    part, missing = ctx.part({"flow": centre + spread})
    assert missing == [] and part == pytest.approx([2.0])  # w / sqrt(1) * one spread
