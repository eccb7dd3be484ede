"""The workflow engine on a real Mosquitto: alert -> workflow -> approval -> work order."""

import asyncio
import json
from pathlib import Path

import aiomqtt

from aiotflow.agents import register_maintenance_agent
from aiotflow.contracts.schema import Alert
from aiotflow.contracts.signing import sign_alert
from aiotflow.edge.bundle import ModelBundle
from aiotflow.edge.config import EdgeSettings
from aiotflow.edge.runtime import EdgeRuntime
from aiotflow.simulator.fleet import Fleet, parse_fault
from aiotflow.tools.scheduling import HttpScheduling
from aiotflow.vectorstore.models import Incident
from aiotflow.workflows import App, Engine

from ..conftest import Mosquitto
from ..edge.helpers import publish_simulated
from ..fakes import SchedulingService
from .helpers import (
    EDGE,
    cli,
    edge_key_file,
    make_alert,
    seed,
    settings_for,
    signed,
    wait_for,
)


def maintenance_app() -> App:
    app = App("test-fleet")
    register_maintenance_agent(app)
    return app


async def publish_alert(port: int, alert: Alert) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as c:
        await c.publish(*signed(alert), qos=1)


async def pending(engine: Engine) -> list:  # type: ignore[type-arg]
    return await engine.control.approvals(status="pending")


async def test_fault_to_work_order_with_approval_from_a_second_process(
    mosquitto: Mosquitto, bundle: ModelBundle, incidents: list[Incident], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    edge_settings = EdgeSettings(model=bundle.path, mqtt={"url": mosquitto.url},
                                 outbox=tmp_path / "outbox.db", key_file=edge_key_file(tmp_path))
    async with Engine(maintenance_app(), settings_for(state, mosquitto.url)) as engine:
        await seed(engine, incidents)
        async with EdgeRuntime(edge_settings, bundle=bundle) as edge:
            await wait_for(lambda: edge.subscribed.is_set() and engine.subscribed.is_set())
            fleet = Fleet(3, seed=9, faults=[parse_fault("gen-002:coolant_pump@60", ramp=40)])
            await publish_simulated(mosquitto.port, fleet, 200, bundle.meta.sample_rate_hz)
            [req] = await wait_for(lambda: pending(engine))
        assert req.asset == "gen-002" and "coolant pump" in req.title
        assert set(req.tools) == {"book_technician", "create_work_order"}
        assert any("similar past events ended in coolant pump failure" in e
                   for e in req.request["evidence"])
        assert await engine.ops.work_orders() == []  # nothing happens before approval

        code, _out, err = await cli("approve", req.id, "--decision", "approve", "--user", "bob",
                                   "--comment", "go", "--state-dir", str(state))
        assert code == 0, err

        run = await wait_for(lambda: _completed(engine, req.thread_id))
        [wo] = await engine.ops.work_orders()
        assert wo.asset == "gen-002" and wo.technician_id in ("T-01", "T-04")
        assert wo.booking_id and "no cooling maintenance in 90 days" in wo.description
        assert "Approved by bob: go" in wo.description
        assert wo.evidence["approval_id"] == req.id
        assert run.result["status"] == "work_order_created"
        kinds = [r.kind for r in await engine.control.audit_records(thread_id=req.thread_id)]
        for k in ("alert.received", "evidence.gathered", "diagnosis", "plan", "guardrails",
                  "approval.requested", "approval.approved", "tool.ok", "workflow.completed"):
            assert k in kinds, k
        assert kinds.index("approval.approved") < kinds.index("workflow.completed")
        assert engine.stats.runs_started == 1


async def _completed(engine: Engine, thread_id: str):  # type: ignore[no-untyped-def]
    run = await engine.runs.get(thread_id)
    return run if run and run.status == "completed" else None


async def test_rejection_opens_no_work_order(
    mosquitto: Mosquitto, bundle: ModelBundle, incidents: list[Incident], tmp_path: Path
) -> None:
    async with Engine(maintenance_app(), settings_for(tmp_path / "s", mosquitto.url)) as engine:
        await seed(engine, incidents)
        await wait_for(engine.subscribed.is_set)
        await publish_alert(mosquitto.port, make_alert(bundle))
        [req] = await wait_for(lambda: pending(engine))
        code, _, err = await cli("approve", req.id, "--decision", "reject", "--user", "carol",
                                 "--comment", "pump was replaced yesterday",
                                 "--state-dir", str(tmp_path / "s"))
        assert code == 0, err
        run = await wait_for(lambda: _completed(engine, req.thread_id))
        assert run.result["status"] == "rejected"
        assert await engine.ops.work_orders() == [] and await engine.ops.bookings() == []
        [rej] = await engine.control.audit_records(kind="approval.rejected")
        assert rej.actor == "carol" and rej.detail["comment"] == "pump was replaced yesterday"
        # a second decision cannot overturn the first
        code, _, _ = await cli("approve", req.id, "--decision", "approve",
                               "--state-dir", str(tmp_path / "s"))
        assert code == 1


async def test_duplicate_alert_runs_once(
    mosquitto: Mosquitto, bundle: ModelBundle, incidents: list[Incident], tmp_path: Path
) -> None:
    alert = make_alert(bundle)
    async with Engine(maintenance_app(), settings_for(tmp_path / "s", mosquitto.url)) as engine:
        await seed(engine, incidents)
        await wait_for(engine.subscribed.is_set)
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as edge:
            await edge.subscribe(f"aiotflow/acks/{alert.site}/#", qos=1)
            for _ in range(3):  # the edge sends again when it missed the acknowledgement
                await publish_alert(mosquitto.port, alert)
            acks = []
            async with asyncio.timeout(20):
                async for m in edge.messages:
                    acks.append(json.loads(m.payload))  # type: ignore[arg-type]
                    if len(acks) == 3:
                        break
        assert acks == [{"id": alert.id}] * 3  # each delivery acknowledged
        await engine.drain(10)
        # recorded once, run once
        assert engine.stats.alerts_received == 1 and engine.stats.alerts_repeated == 2
        # counted once the publish returned, which can be after the edge got the ack
        await wait_for(lambda: engine.stats.acks_sent == 3, 5)
        assert engine.stats.runs_started == 1
        assert len(await engine.control.approvals(status=None)) == 1
        # a later alert of the same asset joins the active run (single flight)
        await publish_alert(mosquitto.port, make_alert(bundle, seed=2))
        await wait_for(lambda: engine.stats.coalesced == 1)
        assert engine.stats.runs_started == 1


async def test_pending_approval_survives_restart(
    mosquitto: Mosquitto, bundle: ModelBundle, incidents: list[Incident], tmp_path: Path
) -> None:
    state = tmp_path / "s"
    async with Engine(maintenance_app(), settings_for(state, mosquitto.url)) as engine:
        await seed(engine, incidents)
        await wait_for(engine.subscribed.is_set)
        await publish_alert(mosquitto.port, make_alert(bundle))
        [req] = await wait_for(lambda: pending(engine))
    # engine stopped; a second process still sees the approval waiting
    code, out, _ = await cli("approvals", "--state-dir", str(state))
    assert code == 0 and req.id in out
    async with Engine(maintenance_app(), settings_for(state, mosquitto.url)) as engine:
        assert [r.id for r in await pending(engine)] == [req.id]
        run = await engine.runs.get(req.thread_id)
        assert run is not None and run.status == "waiting_approval"
        await asyncio.sleep(0.3)
        assert [r.id for r in await pending(engine)] == [req.id]  # nothing auto-decided
        await engine.control.decide(req.id, "approved", by="dave", signer=engine.key)
        await wait_for(lambda: _completed(engine, req.thread_id))
        assert len(await engine.ops.work_orders()) == 1
        assert engine.stats.runs_started == 0  # resumed, not restarted


async def test_scheduling_outage_falls_back_to_operator_notification(
    mosquitto: Mosquitto, bundle: ModelBundle, incidents: list[Incident], tmp_path: Path,
    scheduling_service: SchedulingService,
) -> None:
    scheduling_service.status = 503
    http = HttpScheduling(scheduling_service.url, timeout=1)
    settings = settings_for(tmp_path / "s", mosquitto.url).model_copy(
        update={"tool_attempts": 2})
    async with Engine(maintenance_app(), settings, scheduling=http) as engine:
        await seed(engine, incidents)
        await wait_for(engine.subscribed.is_set)
        await publish_alert(mosquitto.port, make_alert(bundle))
        [req] = await wait_for(lambda: pending(engine))
        await engine.control.decide(req.id, "approved", by="erin", signer=engine.key)
        run = await wait_for(lambda: _completed(engine, req.thread_id))
        assert run.result["scheduling_error"] and run.result["notification"]
        [note] = await engine.ops.notifications()
        assert note.priority in ("high", "critical") and "dispatch manually" in note.message
        [wo] = await engine.ops.work_orders()
        assert wo.technician_id is None and wo.booking_id is None
        assert len(scheduling_service.requests) == 2  # retried, then fell back
    await http.aclose()


async def test_open_breaker_falls_back_at_once_and_closes_on_recovery(
    mosquitto: Mosquitto, bundle: ModelBundle, incidents: list[Incident], tmp_path: Path,
    scheduling_service: SchedulingService,
) -> None:
    svc = scheduling_service
    svc.status = 503
    http = HttpScheduling(svc.url, timeout=1)
    settings = settings_for(tmp_path / "s", mosquitto.url).model_copy(
        update={"tool_attempts": 2, "breaker_failures": 2, "breaker_reset_s": 1.5})

    async def dispatch(asset: str, seed: int = 1) -> dict:  # type: ignore[type-arg]
        await publish_alert(mosquitto.port, make_alert(bundle, asset=asset, seed=seed))
        req = await wait_for(lambda: _pending_for(engine, asset))
        await engine.control.decide(req.id, "approved", by="erin", signer=engine.key)
        run = await wait_for(lambda: _completed(engine, req.thread_id))
        return run.result  # type: ignore[no-any-return]

    async with Engine(maintenance_app(), settings, scheduling=http) as engine:
        await seed(engine, incidents)
        await wait_for(engine.subscribed.is_set)
        first = await dispatch("gen-002")  # 2 failed attempts open the breaker
        assert first["scheduling_error"] and first["notification"]
        assert "circuit opened" in first["scheduling_error"] and len(svc.requests) == 2
        second = await dispatch("gen-001")  # open: fallback at once, service not asked
        assert "circuit open" in second["scheduling_error"] and second["notification"]
        assert len(svc.requests) == 2
        notes = await engine.ops.notifications()
        assert len(notes) == 2 and all(n.priority in ("high", "critical") for n in notes)
        svc.status = 200  # recovered; after reset_s one probe goes through and succeeds
        await asyncio.sleep(1.6)
        third = await dispatch("gen-002", seed=2)  # a new episode on the first asset
        assert third["booking"] == "EXT-BK-1" and not third["scheduling_error"]
        breaker = engine.executor.breaker("book_technician")
        assert breaker is not None and breaker.state == "closed"
        kinds = [r.kind for r in await engine.control.audit_records()]
        assert {"tool.circuit_opened", "tool.circuit_open", "tool.circuit_closed"} <= set(kinds)
    await http.aclose()


async def _pending_for(engine: Engine, asset: str) -> object:
    return next((a for a in await pending(engine) if a.asset == asset), None)


async def test_unknown_pattern_only_notifies(
    mosquitto: Mosquitto, bundle: ModelBundle, tmp_path: Path
) -> None:
    async with Engine(maintenance_app(), settings_for(tmp_path / "s", mosquitto.url)) as engine:
        await seed(engine, [])  # no history at all
        await wait_for(engine.subscribed.is_set)
        await publish_alert(mosquitto.port, make_alert(bundle, "injector"))
        await wait_for(lambda: engine.stats.runs_completed == 1)
        assert await engine.control.approvals(status=None) == []
        assert await engine.ops.work_orders() == []
        [note] = await engine.ops.notifications()
        assert "inspect" in note.subject.lower() or "without a known pattern" in note.subject


async def test_invalid_alert_is_audited_not_fatal(
    mosquitto: Mosquitto, bundle: ModelBundle, tmp_path: Path
) -> None:
    async with Engine(maintenance_app(), settings_for(tmp_path / "s", mosquitto.url)) as engine:
        await wait_for(engine.subscribed.is_set)
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as c:
            await c.publish("aiotflow/alerts/x/y",
                            sign_alert(EDGE, "aiotflow/alerts/x/y", b"{broken"), qos=1)
        await wait_for(lambda: engine.stats.alerts_invalid == 1)
        await publish_alert(mosquitto.port, make_alert(bundle))
        await wait_for(lambda: engine.stats.runs_started == 1)
        assert len(await engine.control.audit_records(kind="alert.invalid")) == 1


async def test_run_cut_off_by_a_crash_is_continued_at_start(
    mosquitto: Mosquitto, bundle: ModelBundle, incidents: list[Incident], tmp_path: Path
) -> None:
    alert = make_alert(bundle)
    tid = f"maintenance/{alert.id}"
    state = tmp_path / "s"
    async with Engine(maintenance_app(), settings_for(state, mosquitto.url)) as engine:
        await seed(engine, incidents)
        # what a crash right after claiming the alert leaves: a run, no checkpoint
        assert await engine.runs.claim(thread_id=tid, workflow="maintenance",
                                       alert=alert.model_dump(mode="json")) == ("claimed", tid)
    async with Engine(maintenance_app(), settings_for(state, mosquitto.url)) as engine:
        [req] = await wait_for(lambda: pending(engine))
        assert req.thread_id == tid
        assert await engine.control.audit_records(thread_id=tid, kind="workflow.recovered")
        # the alert delivered again after the restart is still a duplicate
        assert [o.status for o in await engine.submit(alert)] == ["duplicate"]


async def test_alert_that_names_itself_but_does_not_validate_is_audited_and_acknowledged(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """A schema-mismatched alert from a trusted edge is not run, but recorded with its
    error and acknowledged, so its edge does not send it for ever; unnamed garbage gets
    no acknowledgement."""
    async with Engine(maintenance_app(), settings_for(tmp_path / "s", mosquitto.url)) as engine:
        await wait_for(engine.subscribed.is_set)
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as edge:
            await edge.subscribe("aiotflow/acks/#", qos=1)
            topic = "aiotflow/alerts/plant-1/gen-001"
            await edge.publish(topic, sign_alert(EDGE, topic, b"not json at all"), qos=1)
            await edge.publish(topic, sign_alert(EDGE, topic, json.dumps(
                {"id": "A-bad", "site": "plant-1"}).encode()), qos=1)
            async with asyncio.timeout(20):
                m = await anext(aiter(edge.messages))
        assert str(m.topic) == "aiotflow/acks/plant-1/gen-001"
        assert json.loads(m.payload) == {"id": "A-bad"}  # type: ignore[arg-type]
        invalid = await engine.control.audit_records(kind="alert.invalid")
        assert [r.detail.get("alert_id") for r in invalid] == [None, "A-bad"]
        assert "A-bad" in invalid[1].detail["payload"]
        assert engine.stats.alerts_invalid == 2 and engine.stats.runs_started == 0


async def test_a_slow_resume_holds_up_neither_other_resumes_nor_the_poller(
    mosquitto: Mosquitto, bundle: ModelBundle, tmp_path: Path
) -> None:
    """Resumes run as tasks: while one resumed workflow is stuck, another decision is
    resumed and finishes, and a history-queue entry that fails is audited, not fatal."""
    from typing import Any, TypedDict

    from langgraph.graph import END, START, StateGraph
    from langgraph.runtime import Runtime

    from aiotflow import AlertFilter, ApprovalRequest, WorkflowContext, approval_node

    gate = asyncio.Event()
    app = App("resumes")

    class State(TypedDict, total=False):
        alert: dict[str, Any]
        approval: dict[str, Any] | None
        result: dict[str, Any]

    async def after(state: State, runtime: Runtime[WorkflowContext]) -> State:
        if runtime.context.alert.asset == "slow":
            await gate.wait()
        return {"result": {"asset": runtime.context.alert.asset}}

    @app.workflow(when=AlertFilter())
    def wf() -> StateGraph[Any, Any, Any, Any]:
        g = StateGraph(State, context_schema=WorkflowContext)
        g.add_node("approval", approval_node(
            lambda s: ApprovalRequest(title=f"go {s['alert']['asset']}?", summary="")))
        g.add_node("after", after)
        g.add_edge(START, "approval")
        g.add_edge("approval", "after")
        g.add_edge("after", END)
        return g

    base = make_alert(bundle)
    slow, fast = (base.model_copy(update={"id": i, "asset": i}) for i in ("slow", "fast"))
    async with Engine(app, settings_for(tmp_path / "s", mosquitto.url)) as engine:
        for alert in (slow, fast):
            [out] = await engine.submit(alert)
            assert out.status == "waiting_approval"
        ids = {r.asset: r.id for r in await engine.control.approvals()}
        await engine.control.decide(ids["slow"], "approved", by="ana", signer=engine.key)
        await wait_for(lambda: engine.stats.resumed == 1)  # stuck at the gate now
        await engine.control.enqueue_history("nonsense", {}, actor="test")
        await engine.control.decide(ids["fast"], "approved", by="ana", signer=engine.key)

        async def fast_done() -> bool:
            run = await engine.runs.get("wf/fast")
            return run is not None and run.status == "completed"

        await wait_for(fast_done, 10)
        slow_run = await engine.runs.get("wf/slow")
        assert slow_run is not None and slow_run.status == "running"
        kinds = [r.kind for r in await engine.control.audit_records()]
        assert "history.rejected" in kinds or "engine.poll_failed" in kinds
        gate.set()

        async def slow_done() -> bool:
            run = await engine.runs.get("wf/slow")
            return run is not None and run.status == "completed"

        await wait_for(slow_done, 10)
        assert (await engine.control.approval(ids["slow"])).resumed_at  # type: ignore[union-attr]
