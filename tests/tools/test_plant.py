"""The plant tools: a part order's tier follows what it spends, the order never costs
more than was approved, the mitigation is bounded, a stop needs a manager and a scope
no workflow has by default."""

import time
from pathlib import Path

import pytest

from aiotflow.keys import generate_key
from aiotflow.tools import (
    ApprovalRequired,
    CallContext,
    ControlStore,
    OpsDatabase,
    PermissionDenied,
    Principal,
    ToolExecutor,
    ToolFailed,
    ToolInputError,
    ToolRegistry,
    register_builtin_tools,
)
from aiotflow.tools.builtin import BUILTIN_SCOPES
from aiotflow.tools.plant import ConditionReading, DowntimeWindow, Part, trend_per_day
from aiotflow.tools.policy import OperatorSpec, Policy

MAX = generate_key("max")
ANA = generate_key("ana")
POLICY = Policy(spend_limit_usd=500, operators=[
    OperatorSpec(name="ana", roles=["supervisor"], public_key=ANA.public_key),
    OperatorSpec(name="max", roles=["manager"], public_key=MAX.public_key)])
KIT = Part(part_no="BRG-KIT", description="bearing kit", fits=["bearing_wear"], stock=0,
           unit_cost=1450.0, lead_time_days=3)
SEALS = Part(part_no="OL-KIT", description="seals", fits=["oil_starvation"], stock=0,
             unit_cost=85.0, lead_time_days=1)
ORDER = {"part_no": "BRG-KIT", "quantity": 1, "asset": "gen-2", "site": "p1",
         "reason": "bearing wear", "max_total_usd": 1450.0}


def ctx(approval_id: str | None = None, scopes: frozenset[str] = BUILTIN_SCOPES,
        thread: str = "t-1") -> CallContext:
    return CallContext(principal=Principal(name="wf", scopes=scopes), thread_id=thread,
                       approval_id=approval_id)


async def approve(control: ControlStore, tool: str, args: dict[str, object], risk: str,
                  by: str, key: object) -> str:
    rec = await control.request_approval(
        thread_id="t-1", workflow="wf", title=tool, risk=risk, tools=[tool],  # type: ignore[arg-type]
        request={"actions": [{"tool": tool, "summary": "", "args": args}]})
    await control.decide(rec.id, "approved", by=by, signer=key)  # type: ignore[arg-type]
    return rec.id


async def test_spend_limit_raises_the_tier_and_the_approved_amount_binds(tmp_path: Path) -> None:
    async with ControlStore(tmp_path / "c.db") as control, OpsDatabase(tmp_path / "o.db") as ops:
        await ops.add_parts([KIT, SEALS])
        ex = ToolExecutor(register_builtin_tools(ToolRegistry(), ops), control, policy=POLICY)
        assert ex.tier("order_part", {"max_total_usd": 85}) == "medium"
        assert ex.tier("order_part", ORDER) == "high"
        assert ex.tier("order_part", {"max_total_usd": "lots"}) == "high"
        # within the limit it runs on its own, once per key
        cheap = ORDER | {"part_no": "OL-KIT", "max_total_usd": 85.0}
        first = await ex.call("order_part", cheap, ctx())
        again = await ex.call("order_part", cheap, ctx())
        assert first.id == again.id and first.total_usd == 85.0
        # above it: refused without a decision
        with pytest.raises(ApprovalRequired, match="without an approval"):
            await ex.call("order_part", ORDER, ctx())
        # the attacker's way under the limit: claim the order costs less than it does
        with pytest.raises(ToolFailed, match=r"costs 1,450\.00, more than the 400\.00 approved"):
            await ex.call("order_part", ORDER | {"max_total_usd": 400.0}, ctx())
        aid = await approve(control, "order_part", ORDER, "high", "ana", ANA)
        po = await ex.call("order_part", ORDER, ctx(aid))
        assert po.total_usd == 1450.0 and po.eta > time.time() + 2 * 86400
        assert [o.part_no for o in await ops.part_orders()] == ["OL-KIT", "BRG-KIT"]


async def test_derate_is_bounded_and_a_stop_needs_a_manager_and_control_scope(
    tmp_path: Path
) -> None:
    async with ControlStore(tmp_path / "c.db") as control, OpsDatabase(tmp_path / "o.db") as ops:
        ex = ToolExecutor(register_builtin_tools(ToolRegistry(), ops), control, policy=POLICY)
        control_scope = BUILTIN_SCOPES | {"control:write"}
        derate = {"asset": "gen-2", "site": "p1", "load_pct": 60, "minutes": 90,
                  "reason": "oil pressure falling"}
        with pytest.raises(PermissionDenied, match="control:write"):
            await ex.call("derate_asset", derate, ctx())  # not a default scope
        cmd = await ex.call("derate_asset", derate, ctx(scopes=control_scope))
        assert cmd.command == "derate" and cmd.until == pytest.approx(time.time() + 5400, abs=5)
        for bad in ({"load_pct": 20}, {"minutes": 600}):
            with pytest.raises(ToolInputError):
                await ex.call("derate_asset", derate | bad, ctx(scopes=control_scope))
        stop = {"asset": "gen-2", "site": "p1", "reason": "oil loss"}
        with pytest.raises(ApprovalRequired, match="without an approval"):
            await ex.call("stop_asset", stop, ctx(scopes=control_scope))
        by_ana = await approve(control, "stop_asset", stop, "critical", "ana", ANA)
        with pytest.raises(ApprovalRequired, match=r"roles \['manager'\]"):
            await ex.call("stop_asset", stop, ctx(by_ana, scopes=control_scope))
        by_max = await approve(control, "stop_asset", stop, "critical", "max", MAX)
        done = await ex.call("stop_asset", stop, ctx(by_max, scopes=control_scope))
        assert done.command == "stop"
        assert [c.command for c in await ops.commands()] == ["derate", "stop"]


async def test_calendar_and_condition_trend(tmp_path: Path) -> None:
    now = time.time()
    async with ControlStore(tmp_path / "c.db") as control, OpsDatabase(tmp_path / "o.db") as ops:
        await ops.add_downtime([
            DowntimeWindow(id="a", asset="gen-2", site="p1", start=now + 3600,
                           end=now + 3 * 3600),
            DowntimeWindow(id="b", asset="gen-2", site="p1", start=now + 86400,
                           end=now + 86400 + 10 * 3600)])
        await ops.add_condition([ConditionReading(asset="gen-2", channel="vib", ts=now - d * 86400,
                                                  value=5.0 - 0.1 * d) for d in (30, 20, 10)])
        ex = ToolExecutor(register_builtin_tools(ToolRegistry(), ops), control, policy=POLICY)
        short = await ex.call("next_downtime", {"asset": "gen-2"}, ctx())
        long = await ex.call("next_downtime", {"asset": "gen-2", "min_hours": 6}, ctx())
        assert short.window.id == "a" and long.window.id == "b"
        none = await ex.call("next_downtime", {"asset": "gen-9"}, ctx())
        assert none.window is None
        trend = await ex.call("condition_trend", {"asset": "gen-2", "channel": "vib"}, ctx())
        assert len(trend.readings) == 3 and trend.slope_per_day == pytest.approx(0.1)
    assert trend_per_day([(0.0, 1.0)]) is None
