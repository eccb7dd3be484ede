"""Circuit breaker, timeouts and rate limits, against a real HTTP service on loopback."""

import asyncio
import time
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from pydantic import BaseModel

from aiotflow.demo.seed import seed_roster
from aiotflow.tools import (
    CallContext,
    ControlStore,
    HttpScheduling,
    OpsDatabase,
    Principal,
    RetrySettings,
    ToolExecutor,
    ToolRegistry,
    ToolUnavailable,
    register_builtin_tools,
)
from aiotflow.tools.failsafe import BreakerSettings, RateLimitSettings

from ..fakes import SchedulingService

CTX = CallContext(principal=Principal(name="wf", scopes=frozenset({"schedule:read"})),
                  thread_id="t-1")
FIND = {"skill": "cooling"}


async def test_breaker_opens_fails_fast_probes_and_closes_on_recovery(
    tmp_path: Path, scheduling_service: SchedulingService
) -> None:
    svc = scheduling_service
    now = [1000.0]
    async with AsyncExitStack() as stack:
        control = await stack.enter_async_context(ControlStore(tmp_path / "control.db"))
        ops = await stack.enter_async_context(OpsDatabase(tmp_path / "ops.db"))
        await seed_roster(ops)
        http = HttpScheduling(svc.url, timeout=5)
        stack.push_async_callback(http.aclose)
        reg = register_builtin_tools(
            ToolRegistry(), ops, scheduling=http, timeout_s=0.3,
            retry=RetrySettings(attempts=2, initial_s=0.0, max_s=0.0),
            breaker=BreakerSettings(failures=3, reset_s=30))
        ex = ToolExecutor(reg, control, clock=lambda: now[0])
        assert (await ex.call("find_on_call_technician", FIND, CTX)).technician is not None

        svc.status = 503  # the service goes down
        with pytest.raises(ToolUnavailable, match="answered 503"):
            await ex.call("find_on_call_technician", FIND, CTX)  # 2 attempts
        with pytest.raises(ToolUnavailable, match="answered 503; circuit opened"):
            await ex.call("find_on_call_technician", FIND, CTX)  # 3rd failure opens it
        breaker = ex.breaker("find_on_call_technician")
        assert breaker is not None and breaker.state == "open"
        asked = len(svc.requests)
        assert asked == 1 + 3
        started = time.monotonic()
        for _ in range(20):  # open: refused at once, the service is not asked
            with pytest.raises(ToolUnavailable, match="circuit open"):
                await ex.call("find_on_call_technician", FIND, CTX)
        assert len(svc.requests) == asked and time.monotonic() - started < 1

        now[0] += 31  # half-open: one probe; still down, so open again
        with pytest.raises(ToolUnavailable):
            await ex.call("find_on_call_technician", FIND, CTX)
        assert len(svc.requests) == asked + 1 and breaker.state == "open"

        svc.status, svc.delay_s = 200, 1.0  # back, but too slow: a timeout is a failure
        now[0] += 31
        with pytest.raises(ToolUnavailable, match=r"^find_on_call_technician: no answer within "
                                                  r"0.3 s; circuit opened"):
            await ex.call("find_on_call_technician", FIND, CTX)
        assert breaker.state == "open"

        svc.delay_s = 0.0  # recovered
        now[0] += 31
        assert (await ex.call("find_on_call_technician", FIND, CTX)).technician is not None
        assert breaker.state == "closed" and breaker.opened == 3
        kinds = [r.kind for r in await control.audit_records()]
        assert kinds.count("tool.circuit_opened") == 3
        assert kinds.count("tool.circuit_open") == 20 and kinds[-2:] == ["tool.circuit_closed",
                                                                        "tool.ok"]


class Ping(BaseModel):
    n: int


async def test_rate_limit_waits_then_refuses(tmp_path: Path) -> None:
    reg = ToolRegistry()
    calls: list[float] = []

    @reg.tool(rate_limit=RateLimitSettings(rate_per_s=20, burst=2, max_wait_s=0.2))
    async def ping(args: Ping) -> Ping:
        calls.append(time.monotonic())
        return args

    async with ControlStore(tmp_path / "c.db") as control:
        ex = ToolExecutor(reg, control)
        ctx = CallContext(principal=Principal(name="wf"))
        started = time.monotonic()
        for i in range(6):
            await ex.call("ping", {"n": i}, ctx)
        elapsed = time.monotonic() - started
        assert 0.15 < elapsed < 1.0  # 2 at once, then one per 50 ms
        slow = RateLimitSettings(rate_per_s=0.5, burst=1, max_wait_s=0.1)

        @reg.tool("slow", rate_limit=slow)
        async def slow_ping(args: Ping) -> Ping:
            return args

        await ex.call("slow", {"n": 1}, ctx)
        with pytest.raises(ToolUnavailable, match="rate limit"):
            await ex.call("slow", {"n": 2}, ctx)
        assert (await control.audit_records(kind="tool.rate_limited"))[0].detail["tool"] == "slow"


async def test_permanent_failures_do_not_trip_the_breaker(tmp_path: Path) -> None:
    from aiotflow.tools.errors import ToolFailed

    reg = ToolRegistry()

    @reg.tool(breaker=BreakerSettings(failures=2))
    async def refuse(args: Ping) -> Ping:
        raise ToolFailed("no such asset")

    async with ControlStore(tmp_path / "c.db") as control:
        ex = ToolExecutor(reg, control)
        for _ in range(5):
            with pytest.raises(ToolFailed):
                await ex.call("refuse", {"n": 1}, CallContext(principal=Principal(name="x")))
        breaker = ex.breaker("refuse")
        assert breaker is not None and breaker.state == "closed"
        await asyncio.sleep(0)
