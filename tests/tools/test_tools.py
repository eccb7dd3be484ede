import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from aiotflow.demo.seed import seed_maintenance, seed_roster
from aiotflow.keys import generate_key
from aiotflow.tools import (
    ApprovalRequired,
    CallContext,
    ControlStore,
    HttpScheduling,
    OpsDatabase,
    PermissionDenied,
    Principal,
    RetrySettings,
    ToolExecutor,
    ToolInputError,
    ToolNotFound,
    ToolRegistry,
    ToolUnavailable,
    register_builtin_tools,
)

from ..fakes import SchedulingService

ALL = frozenset({"maintenance:read", "schedule:read", "schedule:write", "workorders:write",
                 "notify:send"})
FAST = RetrySettings(attempts=3, initial_s=0.01, max_s=0.02)
#: the engine's local console key: with no operators configured it signs decisions
CONSOLE = generate_key("engine")


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as s:
        yield s


async def open_all(  # type: ignore[no-untyped-def]
    tmp_path: Path, stack: AsyncExitStack, scheduling: object = None
):
    control = await stack.enter_async_context(ControlStore(tmp_path / "control.db"))
    ops = await stack.enter_async_context(OpsDatabase(tmp_path / "ops.db"))
    await seed_roster(ops)
    await seed_maintenance(ops, ["gen-001", "gen-002"], stale=["gen-002"])
    reg = register_builtin_tools(ToolRegistry(), ops, scheduling=scheduling,  # type: ignore[arg-type]
                                 retry=FAST)
    return control, ops, ToolExecutor(reg, control, engine_key=CONSOLE.public_key)


def ctx(scopes: frozenset[str] = ALL, **kw: object) -> CallContext:
    return CallContext(principal=Principal(name="wf", scopes=scopes), thread_id="t-1", **kw)  # type: ignore[arg-type]


ORDER = {"asset": "gen-002", "site": "plant-1", "title": "Replace coolant pump",
         "description": "evidence...", "priority": "high"}
BOOK = {"skill": "cooling", "asset": "gen-002", "site": "plant-1", "reason": "r"}


async def approve(control: ControlStore, tools: list[str], thread: str = "t-1",
                  decision: str = "approved", args: dict[str, Any] | None = None) -> str:
    """An approval of ``tools``; ``args`` binds the approved arguments of each (a list:
    one proposed action per item)."""
    actions = []
    for t in tools:
        given = (args or {}).get(t, {})
        for a in given if isinstance(given, list) else [given]:
            actions.append({"tool": t, "summary": t, "args": a})
    rec = await control.request_approval(thread_id=thread, workflow="wf", title="x",
                                         request={"actions": actions}, tools=tools)
    await control.decide(rec.id, decision, by="alice", signer=CONSOLE)  # type: ignore[arg-type]
    return rec.id


async def test_permission_is_checked_and_audited(tmp_path: Path, stack: AsyncExitStack) -> None:
    control, _ops, ex = await open_all(tmp_path, stack)
    with pytest.raises(PermissionDenied) as info:
        await ex.call("maintenance_history", {"asset": "gen-001"}, ctx(frozenset()))
    assert info.value.missing == {"maintenance:read"}
    assert [r.kind for r in await control.audit_records()] == ["tool.denied"]
    out = await ex.call("maintenance_history", {"asset": "gen-002", "system": "cooling"}, ctx())
    assert out.days_since["cooling"] > 90


async def test_high_stakes_tools_need_a_matching_approval(
    tmp_path: Path, stack: AsyncExitStack
) -> None:
    control, ops, ex = await open_all(tmp_path, stack)
    with pytest.raises(ApprovalRequired, match="without an approval"):
        await ex.call("create_work_order", ORDER, ctx())
    pending = await control.request_approval(thread_id="t-1", workflow="wf", title="x",
                                             request={}, tools=["create_work_order"])
    with pytest.raises(ApprovalRequired, match="pending"):
        await ex.call("create_work_order", ORDER, ctx(approval_id=pending.id))
    rejected = await approve(control, ["create_work_order"], decision="rejected")
    with pytest.raises(ApprovalRequired, match="rejected"):
        await ex.call("create_work_order", ORDER, ctx(approval_id=rejected))
    other_tool = await approve(control, ["notify_operator"])
    with pytest.raises(ApprovalRequired, match="does not cover"):
        await ex.call("create_work_order", ORDER, ctx(approval_id=other_tool))
    other_thread = await approve(control, ["create_work_order"], thread="t-2")
    with pytest.raises(ApprovalRequired, match="another workflow run"):
        await ex.call("create_work_order", ORDER, ctx(approval_id=other_thread))
    with pytest.raises(ApprovalRequired, match="does not exist"):
        await ex.call("create_work_order", ORDER, ctx(approval_id="forged"))
    assert await ops.work_orders() == []
    # approved for one exact action: a call that differs (an edited plan, or one that adds
    # an argument the approval did not name) is refused
    partial = await approve(control, ["create_work_order"],
                            args={"create_work_order": {"asset": "gen-002", "priority": "high"}})
    with pytest.raises(ApprovalRequired, match="not for this call"):
        await ex.call("create_work_order", ORDER, ctx(approval_id=partial))
    bound = await approve(control, ["create_work_order"], args={"create_work_order": ORDER})
    with pytest.raises(ApprovalRequired, match="not for this call"):
        await ex.call("create_work_order", ORDER | {"asset": "gen-001"},
                      ctx(approval_id=bound))
    with pytest.raises(ApprovalRequired, match="not for this call"):
        await ex.call("create_work_order", ORDER | {"priority": "critical"},
                      ctx(approval_id=bound))
    assert await ops.work_orders() == []
    wo = await ex.call("create_work_order", ORDER, ctx(approval_id=bound))
    assert wo.id == "WO-000001" and wo.asset == "gen-002"
    kinds = [r.kind for r in await control.audit_records()]
    assert kinds.count("tool.blocked") == 9 and kinds.count("tool.ok") == 1


async def test_effects_are_never_repeated(tmp_path: Path, stack: AsyncExitStack) -> None:
    control, ops, ex = await open_all(tmp_path, stack)
    aid = await approve(control, ["create_work_order", "book_technician"],
                        args={"create_work_order": ORDER, "book_technician": BOOK})
    first = await ex.call("create_work_order", ORDER, ctx(approval_id=aid))
    again = await ex.call("create_work_order", ORDER, ctx(approval_id=aid))
    assert first == again and len(await ops.work_orders()) == 1
    b1 = await ex.call("book_technician", {"skill": "cooling", "asset": "gen-002",
                                           "site": "plant-1", "reason": "r"}, ctx(approval_id=aid))
    b2 = await ex.call("book_technician", {"skill": "cooling", "asset": "gen-002",
                                           "site": "plant-1", "reason": "r"}, ctx(approval_id=aid))
    assert b1 == b2 and len(await ops.bookings()) == 1
    assert b1.technician_name in ("Ana Silva", "Dana Kovacs")
    # even if the tool layer's record were lost, the backend's unique key holds
    async with control.unit() as db:
        await db.execute("DELETE FROM effects")
    third = await ex.call("create_work_order", ORDER, ctx(approval_id=aid))
    assert third.id == first.id and len(await ops.work_orders()) == 1
    kinds = [r.kind for r in await control.audit_records()]
    assert kinds.count("tool.replayed") == 2


async def test_booking_skips_busy_technicians(tmp_path: Path, stack: AsyncExitStack) -> None:
    control, _ops, ex = await open_all(tmp_path, stack)
    aid = await approve(control, ["book_technician"], args={"book_technician": [
        BOOK | {"asset": "gen-001", "site": "p"}, BOOK | {"asset": "gen-002", "site": "p"}]})
    names = set()
    for asset in ("gen-001", "gen-002"):
        b = await ex.call("book_technician", {"skill": "cooling", "asset": asset,
                                              "site": "p", "reason": "r"}, ctx(approval_id=aid))
        names.add(b.technician_id)
    assert len(names) == 2  # the first cooling technician is busy with the first job


async def test_http_scheduling_retries_then_reports_unavailable(
    tmp_path: Path, scheduling_service: SchedulingService, stack: AsyncExitStack
) -> None:
    http = HttpScheduling(scheduling_service.url, timeout=2)
    control, _ops, ex = await open_all(tmp_path, stack, scheduling=http)
    args = {"skill": "cooling", "asset": "gen-002", "site": "p", "reason": "r"}
    aid = await approve(control, ["book_technician"],
                        args={"book_technician": [args, args | {"asset": "gen-001"}]})
    booking = await ex.call("book_technician", args, ctx(approval_id=aid))
    assert booking.technician_id == "EXT-7" and booking.id == "EXT-BK-1"
    scheduling_service.status = 503
    scheduling_service.requests.clear()
    started = time.monotonic()
    with pytest.raises(ToolUnavailable):
        await ex.call("book_technician", args | {"asset": "gen-001"}, ctx(approval_id=aid))
    assert len(scheduling_service.requests) == 3  # three attempts, then give up
    assert time.monotonic() - started < 5
    rec = (await control.audit_records(kind="tool.unavailable"))[-1]
    assert rec.detail["attempts"] == 3
    await http.aclose()


async def test_unknown_tool_and_bad_input(tmp_path: Path, stack: AsyncExitStack) -> None:
    _control, _ops, ex = await open_all(tmp_path, stack)
    with pytest.raises(ToolNotFound):
        await ex.call("launch_rocket", {}, ctx())
    with pytest.raises(ToolInputError):
        await ex.call("notify_operator", {"subject": "x"}, ctx())
    with pytest.raises(ToolInputError):
        await ex.call("create_work_order", ORDER | {"priority": "whenever"}, ctx())


def test_decorator_requires_typed_async_functions() -> None:
    reg = ToolRegistry()

    class In(BaseModel):
        x: int

    class Out(BaseModel):
        y: int

    @reg.tool(scopes={"math"})
    async def double(args: In) -> Out:
        """Double x."""
        return Out(y=args.x * 2)

    assert reg.get("double").description == "Double x." and "double" in reg
    with pytest.raises(TypeError):
        @reg.tool()
        def sync(args: In) -> Out:  # not async
            return Out(y=1)
    with pytest.raises(TypeError):
        @reg.tool()
        async def untyped(args):  # type: ignore[no-untyped-def]
            return 1
    with pytest.raises(ValueError):
        reg.tool()(double.fn)
