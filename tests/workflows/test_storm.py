"""Alert storms: one workflow per asset episode, and a concurrency limit per site."""

import asyncio
from pathlib import Path
from typing import Any, TypedDict

import aiomqtt
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from aiotflow.edge.bundle import ModelBundle
from aiotflow.vectorstore.models import Incident
from aiotflow.workflows import App, Engine, WorkflowContext

from ..conftest import Mosquitto
from .helpers import make_alert, seed, settings_for, signed, wait_for
from .test_engine import maintenance_app


async def test_storm_of_500_alerts_for_one_asset_runs_one_workflow(
    mosquitto: Mosquitto, bundle: ModelBundle, incidents: list[Incident], tmp_path: Path
) -> None:
    base = make_alert(bundle)
    storm = [base.model_copy(update={"id": f"{base.id}-{i}", "score": base.score + i * 0.01})
             for i in range(500)]
    async with Engine(maintenance_app(), settings_for(tmp_path / "s", mosquitto.url)) as engine:
        await seed(engine, incidents)
        await wait_for(engine.subscribed.is_set)
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as c:
            for a in storm:
                await c.publish(*signed(a), qos=1)
        await wait_for(lambda: engine.stats.runs_started + engine.stats.coalesced == 500, 60)
        assert engine.stats.runs_started == 1 and engine.stats.coalesced == 499
        [req] = await engine.control.approvals(status="pending")  # one question, not 500
        attached = await engine.control.audit_records(kind="alert.coalesced",
                                                      thread_id=req.thread_id)
        assert len(attached) == 499  # the others are evidence on the running workflow
        assert engine.history.stats()["queries"] == 1


class State(TypedDict, total=False):
    alert: dict[str, Any]
    result: dict[str, Any]


async def test_runs_per_site_are_limited(mosquitto: Mosquitto, tmp_path: Path) -> None:
    running: dict[str, int] = {}
    peak: dict[str, int] = {}
    app = App("slow")

    async def work(state: State, runtime: Runtime[WorkflowContext]) -> State:
        site = runtime.context.alert.site
        running[site] = running.get(site, 0) + 1
        peak[site] = max(peak.get(site, 0), running[site])
        await asyncio.sleep(0.2)
        running[site] -= 1
        return {"result": {"ok": True}}

    @app.workflow(scopes=())
    def slow() -> StateGraph[Any, Any, Any, Any]:
        g = StateGraph(State, context_schema=WorkflowContext)
        g.add_node("work", work)
        g.add_edge(START, "work")
        g.add_edge("work", END)
        return g

    settings = settings_for(tmp_path / "s", mosquitto.url).model_copy(
        update={"max_runs_per_site": 2, "max_concurrent_runs": 8})
    from aiotflow.contracts.schema import Alert

    def alert(site: str, asset: str) -> Alert:
        return Alert(id=f"{site}-{asset}", site=site, asset=asset, ts=1.0, episode_start=1.0,
                     severity="major", score=5.0, threshold=1.0, embedding=[1.0],
                     summary={}, model_name="m", model_version="1")

    async with Engine(app, settings) as engine:
        alerts = [alert("plant-1", f"a{i}") for i in range(6)] + [alert("plant-2", "b0"),
                                                                   alert("plant-2", "b1")]
        outcomes = await asyncio.gather(*(engine.submit(a) for a in alerts))
    assert all(o[0].status == "completed" for o in outcomes)
    assert peak == {"plant-1": 2, "plant-2": 2}
