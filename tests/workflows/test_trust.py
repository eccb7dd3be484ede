"""The engine's safety nets: a forged plan is refused, an expired approval never runs."""

import asyncio
from pathlib import Path

from aiotflow.edge.bundle import ModelBundle
from aiotflow.tools.policy import Policy, TierRule
from aiotflow.vectorstore.models import Incident
from aiotflow.workflows import Engine

from ..conftest import Mosquitto
from .helpers import make_alert, seed, settings_for, wait_for
from .test_engine import maintenance_app, pending


async def test_plan_edited_after_the_approval_request_is_refused(
    mosquitto: Mosquitto, bundle: ModelBundle, incidents: list[Incident], tmp_path: Path
) -> None:
    async with Engine(maintenance_app(), settings_for(tmp_path / "s", mosquitto.url)) as engine:
        await seed(engine, incidents)
        [outcome] = await engine.submit(make_alert(bundle))
        assert outcome.status == "waiting_approval"
        [req] = await pending(engine)
        # someone with access to the checkpoint store edits the paused run's plan: the
        # booking now goes to another asset for a full day
        config = {"configurable": {"thread_id": outcome.thread_id}}
        graph = engine._graphs["maintenance"]
        plan = dict((await graph.aget_state(config)).values["plan"])
        plan["actions"] = [
            dict(a, args=dict(a["args"], asset="gen-001", hours=24.0))
            if a["tool"] == "book_technician" else a for a in plan["actions"]]
        await graph.aupdate_state(config, {"plan": plan})
        await engine.control.decide(req.id, "approved", by="erin")
        await wait_for(lambda: engine.stats.runs_failed == 1)
        assert await engine.ops.bookings() == [] and await engine.ops.work_orders() == []
        [blocked] = await engine.control.audit_records(kind="tool.blocked")
        assert blocked.detail["tool"] == "book_technician"
        assert "not for this call" in blocked.detail["reason"]


async def test_an_expired_approval_never_runs(
    mosquitto: Mosquitto, bundle: ModelBundle, incidents: list[Incident], tmp_path: Path
) -> None:
    policy = Policy(tiers={"high": TierRule(mode="approval", expires_s=0.5)})
    settings = settings_for(tmp_path / "s", mosquitto.url).model_copy(update={"policy": policy})
    async with Engine(maintenance_app(), settings) as engine:
        await seed(engine, incidents)
        [outcome] = await engine.submit(make_alert(bundle))
        assert outcome.status == "waiting_approval"
        run = await wait_for(lambda: _completed(engine, outcome.thread_id), 10)
        assert run.result["status"] == "expired"
        [rec] = await engine.control.approvals(status=None)
        assert rec.status == "expired" and rec.decided_by == "policy"
        late = await engine.control.decide(rec.id, "approved", by="erin")  # too late
        assert late.status == "expired"
        assert await engine.ops.bookings() == [] and await engine.ops.work_orders() == []
        assert await engine.control.audit_records(kind="approval.expired")
        [note] = await engine.ops.notifications()  # people are told
        assert note.subject.startswith("Expired, nothing was done")


async def test_an_escalated_approval_is_announced_to_the_escalation_roles(
    mosquitto: Mosquitto, bundle: ModelBundle, incidents: list[Incident], tmp_path: Path
) -> None:
    policy = Policy(tiers={"high": TierRule(mode="approval", approvers=["supervisor"],
                                            escalate_after_s=0.3, escalate_to=["manager"])})
    settings = settings_for(tmp_path / "s", mosquitto.url).model_copy(update={"policy": policy})
    async with Engine(maintenance_app(), settings) as engine:
        await seed(engine, incidents)
        [outcome] = await engine.submit(make_alert(bundle))
        assert outcome.status == "waiting_approval"
        [note] = await wait_for(engine.ops.notifications, 10)
        assert note.recipient == "role:manager" and note.subject.startswith("Escalated")
        [rec] = await engine.control.approvals(status="pending")
        assert rec.escalated_at is not None and rec.id in note.message
        await asyncio.sleep(0.5)  # announced once, not at every poll
        assert len(await engine.ops.notifications()) == 1


async def _completed(engine: Engine, tid: str) -> object:
    run = await engine.runs.get(tid)
    return run if run is not None and run.status == "completed" else None
