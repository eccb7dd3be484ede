"""Declared guardrails: business hours, work orders per asset per day, cost per action."""

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from aiotflow.agents import Guardrails, MaintenanceSettings, register_maintenance_agent
from aiotflow.edge.bundle import ModelBundle
from aiotflow.vectorstore.models import Incident
from aiotflow.workflows import App, Engine

from ..conftest import Mosquitto
from ..workflows.helpers import make_alert, seed, settings_for, wait_for
from ..workflows.test_engine import publish_alert

UTC = dt.UTC


def ts(*args: int, tz: dt.tzinfo = UTC) -> float:
    return dt.datetime(*args, tzinfo=tz).timestamp()


@pytest.mark.parametrize("now, opening", [
    (ts(2026, 11, 24, 10, 0), None),                     # Tuesday 10:00: open
    (ts(2026, 11, 24, 6, 59), ts(2026, 11, 24, 7, 0)),   # Tuesday before opening
    (ts(2026, 11, 24, 18, 0), ts(2026, 11, 25, 7, 0)),   # Tuesday 18:00: closed
    (ts(2026, 11, 27, 19, 30), ts(2026, 11, 30, 7, 0)),  # Friday evening -> Monday
    (ts(2026, 11, 29, 3, 0), ts(2026, 11, 30, 7, 0)),    # Sunday night -> Monday
])
def test_next_business_opening(now: float, opening: float | None) -> None:
    assert Guardrails().next_opening(now) == opening


def test_business_hours_in_the_sites_time_zone() -> None:
    lisbon = ZoneInfo("Europe/Lisbon")
    g = Guardrails(timezone="Asia/Tokyo", business_hours=(8, 17))
    # 23:30 in Lisbon on a Monday is 08:30 on Tuesday in Tokyo: open there
    assert g.next_opening(ts(2026, 11, 23, 23, 30, tz=lisbon)) is None


async def run_one(tmp: Path, mosquitto: Mosquitto, bundle: ModelBundle,
                  incidents: list[Incident], guardrails: Guardrails, *, prior_orders: int = 0
                  ) -> Engine:
    app = App("guarded")
    register_maintenance_agent(app, settings=MaintenanceSettings(guardrails=guardrails))
    async with Engine(app, settings_for(tmp, mosquitto.url)) as engine:
        await seed(engine, incidents)
        for i in range(prior_orders):
            await engine.ops.create_work_order(
                asset="gen-002", site="plant-1", title="earlier", description="", key=f"k{i}",
                priority="low", evidence={}, technician_id=None, booking_id=None)
        await wait_for(engine.subscribed.is_set)
        await publish_alert(mosquitto.port, make_alert(bundle))
        await wait_for(lambda: engine.stats.runs_completed == 1)
        return engine


async def test_work_order_limit_is_checked_before_approval(
    mosquitto: Mosquitto, bundle: ModelBundle, incidents: list[Incident], tmp_path: Path
) -> None:
    engine = await run_one(tmp_path / "s", mosquitto, bundle, incidents,
                           Guardrails(max_work_orders_per_asset_per_day=2), prior_orders=2)
    async with engine.control.__class__(tmp_path / "s" / "control.db") as control:
        assert await control.approvals(status=None) == []  # never asked
        [verdict] = await control.audit_records(kind="guardrails")
        failed = [c for c in verdict.detail["checks"] if not c["passed"]]
        assert [c["rule"] for c in failed] == ["work_orders_per_asset_per_day"]
        assert "2 work order(s) for gen-002 in the last 24 h (limit 2)" in failed[0]["detail"]
    from aiotflow.tools.ops import OpsDatabase

    async with OpsDatabase(tmp_path / "s" / "ops.db") as ops:
        [note] = await ops.notifications()
        assert "limit 2" in note.subject and len(await ops.work_orders()) == 2


async def test_cost_limit_is_checked_before_approval(
    mosquitto: Mosquitto, bundle: ModelBundle, incidents: list[Incident], tmp_path: Path
) -> None:
    await run_one(tmp_path / "s", mosquitto, bundle, incidents,
                  Guardrails(max_cost_per_action=300, callout_fee=150, technician_rate_per_h=100))
    from aiotflow.tools.control import ControlStore

    async with ControlStore(tmp_path / "s" / "control.db") as control:
        assert await control.approvals(status=None) == []
        [verdict] = await control.audit_records(kind="guardrails")
        assert verdict.detail["plan"] == "inspect"
        cost = next(c for c in verdict.detail["checks"] if c["rule"] == "cost_per_action")
        assert not cost["passed"] and "estimated 550" in cost["detail"]


async def test_outside_business_hours_the_booking_waits_for_the_opening(
    mosquitto: Mosquitto, bundle: ModelBundle, incidents: list[Incident], tmp_path: Path
) -> None:
    closed = Guardrails(business_hours=(0, 0), business_days=(0, 1, 2, 3, 4, 5, 6))
    app = App("night")
    register_maintenance_agent(app, settings=MaintenanceSettings(guardrails=closed))
    async with Engine(app, settings_for(tmp_path / "s", mosquitto.url)) as engine:
        await seed(engine, incidents)
        await wait_for(engine.subscribed.is_set)
        alert = make_alert(bundle)
        assert alert.severity != "critical"
        await publish_alert(mosquitto.port, alert)
        [req] = await wait_for(lambda: engine.control.approvals(status="pending"))
        book = next(a for a in req.actions if a["tool"] == "book_technician")
        opening = closed.next_opening(req.requested_at)
        assert opening is not None and book["args"]["not_before"] == opening
        assert any("booking starts at the next opening" in e for e in req.request["evidence"])
        await engine.control.decide(req.id, "approved", by="erin", signer=engine.key)
        await wait_for(lambda: engine.stats.runs_completed == 1)
        [booking] = await engine.ops.bookings()
        assert booking.start >= opening


def test_bad_guardrails_fail_at_configuration() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        Guardrails(business_days=())
    with pytest.raises(ValidationError):
        Guardrails(business_hours=(18, 7))
    with pytest.raises(Exception, match="Nowhere/City"):
        Guardrails(timezone="Nowhere/City")
