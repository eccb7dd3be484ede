"""The line-stop and bearing agents through the engine: what runs on its own, what a
person must approve, and what happens when nobody does."""

import time
from pathlib import Path
from typing import Any

import pytest

from aiotflow.agents.bearing import hours_to_limit, register_bearing_agent
from aiotflow.agents.line_stop import register_line_stop_agent
from aiotflow.demo.seed import history_incidents, seed_plant
from aiotflow.edge.bundle import ModelBundle
from aiotflow.keys import generate_key
from aiotflow.tools.plant import ConditionReading, Part
from aiotflow.tools.policy import OperatorSpec, Policy, TierRule
from aiotflow.vectorstore.models import Incident
from aiotflow.workflows import App, Engine
from aiotflow.workflows.filters import AlertFilter

from ..conftest import Mosquitto
from ..workflows.helpers import make_alert, seed, settings_for, wait_for

ANA, MAX = generate_key("ana"), generate_key("max")


def policy(**critical: Any) -> Policy:
    return Policy(
        tiers={"low": TierRule(mode="auto"), "medium": TierRule(mode="auto"),
               "high": TierRule(mode="approval"),
               "critical": TierRule(mode="approval", approvers=["manager"], **critical)},
        operators=[OperatorSpec(name="ana", roles=["supervisor"], public_key=ANA.public_key),
                   OperatorSpec(name="max", roles=["manager"], public_key=MAX.public_key)])


@pytest.fixture(scope="module")
def oil_incidents(bundle: ModelBundle) -> list[Incident]:
    return history_incidents(bundle, 10, seed=1000, modes={"oil_leak": 1.0})


async def line_stop_engine(tmp_path: Path, mosquitto: Mosquitto, pol: Policy) -> Engine:
    app = App("line")
    register_line_stop_agent(app, when=AlertFilter(asset_types=["generator"]), llm=False)
    settings = settings_for(tmp_path / "s", mosquitto.url).model_copy(update={"policy": pol})
    return Engine(app, settings)


async def test_line_stop_derates_on_its_own_and_only_a_manager_stops_it(
    mosquitto: Mosquitto, bundle: ModelBundle, incidents: list[Incident],
    oil_incidents: list[Incident], tmp_path: Path
) -> None:
    async with await line_stop_engine(tmp_path, mosquitto, policy()) as engine:
        await seed(engine, incidents + oil_incidents)
        [outcome] = await engine.submit(make_alert(bundle, "oil_leak"))
        assert outcome.status == "waiting_approval"
        # the reversible mitigation ran before anyone was asked; the stop did not
        assert [c.command for c in await engine.ops.commands()] == ["derate"]
        rec = await engine.control.approval(outcome.approval_id or "")
        assert rec is not None and rec.risk == "critical"
        assert [a["tool"] for a in rec.request["actions"]] == ["stop_asset", "create_work_order"]
        assert any(e.startswith("stopping now costs about") and "expected" in e
                   for e in rec.request["evidence"])
        assert "runs at 60 % load" in rec.request["summary"]
        # a supervisor's signed approval is not enough for a critical action
        await engine.control.decide(rec.id, "approved", by="ana", signer=ANA)

        async def back_to_pending() -> bool:
            r = await engine.control.approval(rec.id)
            return r is not None and r.status == "pending" and bool(
                await engine.control.audit_records(kind="approval.forgery"))

        await wait_for(back_to_pending)
        [forged] = await engine.control.audit_records(kind="approval.forgery")
        assert "manager" in forged.detail["reason"]
        assert [c.command for c in await engine.ops.commands()] == ["derate"]
        await engine.control.decide(rec.id, "approved", by="max", signer=MAX)
        await wait_for(lambda: engine.stats.runs_completed == 1)
        assert [c.command for c in await engine.ops.commands()] == ["derate", "stop"]
        [wo] = await engine.ops.work_orders()
        assert wo.priority == "critical" and "Stop approved by max" in wo.description


async def test_line_stop_request_escalates_and_expires_and_the_machine_runs_on(
    mosquitto: Mosquitto, bundle: ModelBundle, incidents: list[Incident],
    oil_incidents: list[Incident], tmp_path: Path
) -> None:
    pol = policy(escalate_after_s=0.3, escalate_to=["director"], expires_s=1.5)
    async with await line_stop_engine(tmp_path, mosquitto, pol) as engine:
        await seed(engine, incidents + oil_incidents)
        [outcome] = await engine.submit(make_alert(bundle, "oil_leak"))
        assert outcome.status == "waiting_approval"
        await wait_for(lambda: engine.stats.runs_completed == 1, 15)
        kinds = [r.kind for r in await engine.control.audit_records()]
        assert "approval.escalated" in kinds and "approval.expired" in kinds
        assert "line_stop.not_stopped" in kinds
        assert [c.command for c in await engine.ops.commands()] == ["derate"]
        assert await engine.ops.work_orders() == []
        notes = [n.subject for n in await engine.ops.notifications()]
        assert any("not approved (expired): it runs on" in s for s in notes), notes


def test_hours_to_limit_takes_the_faster_of_the_long_trend_and_the_last_leg() -> None:
    day = 86400.0
    now = 100 * day
    slow = [(now - 90 * day, 2.0), (now - 60 * day, 2.3), (now - 30 * day, 2.6)]
    hours, fit, leg = hours_to_limit(slow, now, 2.9, 7.1)
    assert fit == pytest.approx(0.01) and leg == pytest.approx(0.01)
    assert hours == pytest.approx(4.2 / 0.01 * 24)
    jump = [*slow, (now - 2 * day, 2.9)]
    hours, fit, leg = hours_to_limit(jump, now, 4.9, 7.1)
    assert leg == pytest.approx(1.0) and hours == pytest.approx(2.2 * 24)
    assert hours_to_limit(slow, now, 8.0, 7.1)[0] == 0.0
    assert hours_to_limit([(now - day, 3.0)], now, 2.5, 7.1)[0] == float("inf")


async def bearing_run(tmp_path: Path, mosquitto: Mosquitto, bundle: ModelBundle,
                      incidents: list[Incident], *, parts: list[Part] | None = None,
                      readings: list[ConditionReading] | None = None,
                      answer: str | None = "approved") -> dict[str, Any]:
    app = App("bearing")
    register_bearing_agent(app, llm=False)
    async with Engine(app, settings_for(tmp_path / "s", mosquitto.url)) as engine:
        await seed(engine, incidents)
        await seed_plant(engine.ops, ["gen-001", "gen-002"], wearing=["gen-002"])
        if parts:
            await engine.ops.add_parts(parts)
        if readings:
            await engine.ops.add_condition(readings)
        [outcome] = await engine.submit(make_alert(bundle, "bearing_wear"))
        assert outcome.status == "waiting_approval"
        rec = await engine.control.approval(outcome.approval_id or "")
        assert rec is not None
        orders_before = await engine.ops.part_orders()
        if answer:
            await engine.control.decide(rec.id, answer, by="fay", signer=engine.key)  # type: ignore[arg-type]
            await wait_for(lambda: engine.stats.runs_completed == 1)
        [state] = [r for r in await engine.control.audit_records(kind="bearing.assessed")]
        return {"request": rec.request, "risk": rec.risk, "assessed": state.detail,
                "orders_before": orders_before, "orders": await engine.ops.part_orders(),
                "bookings": await engine.ops.bookings(), "wos": await engine.ops.work_orders()}


async def test_bearing_wear_is_planned_into_downtime_with_the_part_in_the_approval(
    mosquitto: Mosquitto, bundle: ModelBundle, incidents: list[Incident], tmp_path: Path
) -> None:
    out = await bearing_run(tmp_path, mosquitto, bundle, incidents)
    a = out["assessed"]
    assert a["emergency"] is False and a["hours_to_limit"] > a["wait_h"] + 48
    # 1,450 is above the default spend limit (1,000): the order waits for the approval
    assert [x["tool"] for x in out["request"]["actions"]] == [
        "order_part", "book_technician", "create_work_order"]
    assert out["risk"] == "high" and out["orders_before"] == []
    window = a["window"]
    assert window["start"] >= a["part_arrives"]  # the window the part arrives for
    [booking] = out["bookings"]
    assert booking.start >= window["start"]
    [po] = out["orders"]
    [wo] = out["wos"]
    assert po.part_no == "BRG-6316-KIT" and wo.priority == "medium" and po.id in wo.description


async def test_bearing_cheap_part_is_ordered_on_its_own_and_a_fast_rise_is_an_emergency(
    mosquitto: Mosquitto, bundle: ModelBundle, incidents: list[Incident], tmp_path: Path
) -> None:
    now = time.time()
    cheap = Part(part_no="BRG-6316-KIT", description="bearing kit", fits=["bearing_wear"],
                 stock=0, unit_cost=180.0, lead_time_days=1)
    rising = [ConditionReading(asset="gen-002", channel="vibration_mm_s", ts=now - 86400,
                               value=2.4)]  # yesterday's reading: a fast rise since
    out = await bearing_run(tmp_path, mosquitto, bundle, incidents, parts=[cheap],
                            readings=rising, answer="rejected")
    a = out["assessed"]
    assert a["emergency"] is True and a["hours_to_limit"] < a["wait_h"] + 48
    assert [x["tool"] for x in out["request"]["actions"]] == ["book_technician",
                                                              "create_work_order"]
    book = out["request"]["actions"][0]["args"]
    assert "not_before" not in book  # now, not in the window
    assert out["request"]["title"].startswith("EMERGENCY")
    # within the spend limit the part was ordered before anyone was asked; the rejected
    # job itself did not run
    assert [o.total_usd for o in out["orders_before"]] == [180.0]
    assert out["bookings"] == [] and out["wos"] == []
