"""The engine's safety nets, attacked: a forged plan, forged and replayed decisions, an
expired approval - none of them books a technician or opens a work order."""

import asyncio
import time
from pathlib import Path

from aiotflow.edge.bundle import ModelBundle
from aiotflow.keys import generate_key
from aiotflow.tools.policy import OperatorSpec, Policy, TierRule
from aiotflow.vectorstore.models import Incident
from aiotflow.workflows import Engine

from ..conftest import Mosquitto
from .helpers import cli, make_alert, seed, settings_for, wait_for
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
        await engine.control.decide(req.id, "approved", by="erin", signer=engine.key)
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
        late = await engine.control.decide(rec.id, "approved", by="erin",
                                           signer=engine.key)  # too late
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


ANA = generate_key("ana")


async def _forgeries(engine: Engine, n: int, aid: str) -> None:
    """Wait until the engine refused the ``n``-th forgery and put ``aid`` back to pending."""
    async def refused() -> bool:
        rec = await engine.control.approval(aid)
        return (len(await engine.control.audit_records(kind="approval.forgery")) >= n
                and rec is not None and rec.status == "pending")
    await wait_for(refused, 15)


async def test_forged_and_replayed_decisions_run_nothing_and_are_audited(
    mosquitto: Mosquitto, bundle: ModelBundle, incidents: list[Incident], tmp_path: Path
) -> None:
    policy = Policy(operators=[OperatorSpec(name="ana", roles=["supervisor"],
                                            public_key=ANA.public_key)])
    state = tmp_path / "s"
    settings = settings_for(state, mosquitto.url).model_copy(update={"policy": policy})
    async with Engine(maintenance_app(), settings) as engine:
        await seed(engine, incidents)
        [outcome] = await engine.submit(make_alert(bundle))
        assert outcome.status == "waiting_approval"
        [req] = await pending(engine)

        # 1. the console run without the engine's config: it knows no operators, so it
        # signs "ana"'s approval with the key it finds in the state dir
        code, out, err = await cli("approve", req.id, "--decision", "approve", "--user", "ana",
                                   "--state-dir", str(state))
        assert code == 0 and "approved" in out, err  # recorded ...
        await _forgeries(engine, 1, req.id)  # ... refused where it would count

        # 2. the row edited in the database: approved by ana, no signature at all
        async with engine.control.unit() as db:
            await db.execute("UPDATE approvals SET status = 'approved', decided_by = 'ana',"
                             " decided_at = ? WHERE id = ?", (time.time(), req.id))
        await _forgeries(engine, 2, req.id)
        assert await engine.ops.bookings() == [] and await engine.ops.work_orders() == []

        # ana's real decision still counts, once
        await engine.control.decide(req.id, "approved", by="ana", signer=ANA)
        await wait_for(lambda: engine.stats.runs_completed == 1)
        assert len(await engine.ops.bookings()) == 1
        signed = await engine.control.approval(req.id)
        assert signed is not None and signed.signature

        # 3. a replay: ana's signed decision copied onto the next run's approval
        [second] = await engine.submit(make_alert(bundle, seed=2))
        assert second.status == "waiting_approval"
        [req2] = await pending(engine)
        async with engine.control.unit() as db:
            await db.execute(
                "UPDATE approvals SET status = 'approved', decided_by = 'ana', decided_at = ?,"
                " comment = ?, decision_doc = ?, signature = ?, signer = ? WHERE id = ?",
                (time.time(), signed.comment, signed.decision_doc, signed.signature,
                 signed.signer, req2.id))
        await _forgeries(engine, 3, req2.id)

        assert len(await engine.ops.bookings()) == 1 and len(await engine.ops.work_orders()) == 1
        forged = await engine.control.audit_records(kind="approval.forgery")
        reasons = [f.detail["reason"] for f in forged]
        assert "not ana's key" in reasons[0]
        assert "not signed" in reasons[1]
        assert "copied from another approval" in reasons[2]
        assert engine.stats.forgeries == 3
        assert (await engine.control.verify_audit()).ok


async def _completed(engine: Engine, tid: str) -> object:
    run = await engine.runs.get(tid)
    return run if run is not None and run.status == "completed" else None


async def test_personal_data_is_redacted_after_the_retention_period(
    mosquitto: Mosquitto, bundle: ModelBundle, incidents: list[Incident], tmp_path: Path
) -> None:
    async with Engine(maintenance_app(), settings_for(tmp_path / "s", mosquitto.url)) as engine:
        await seed(engine, incidents)
        await engine.submit(make_alert(bundle))
        [req] = await pending(engine)
        await engine.control.decide(req.id, "approved", by="erin", signer=engine.key,
                                    comment="erin here, call me on 0151 2345678")
        await wait_for(lambda: engine.stats.runs_completed == 1)
        [wo] = await engine.ops.work_orders()
        assert "erin here" in wo.description
        await engine._retention(force=True)  # nothing is old enough yet
        assert (await engine.ops.work_orders())[0].description == wo.description
        year_on = time.time() + 366 * 86400
        await engine._retention(now=year_on, force=True)
        [after] = await engine.ops.work_orders()
        assert "erin" not in after.description and after.asset == wo.asset
        assert after.evidence == wo.evidence  # the history's ids and statistics stay
        rec = await engine.control.approval(req.id)
        assert rec is not None and rec.comment is None and rec.decision_doc is None
        assert rec.signer == engine.key.key_id and rec.decided_by == "erin"
        [done] = await engine.control.audit_records(kind="retention.redacted")
        assert done.detail["approvals"] == 1 and done.detail["work_orders"] == 1
        assert (await engine.control.verify_audit()).ok
