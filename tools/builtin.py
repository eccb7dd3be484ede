"""The built-in tools: maintenance history, on-call roster, booking, work orders and
operator notifications; and the plant's inventory, calendar and control tools
(:mod:`aiotflow.tools.plant`).

Scopes: ``maintenance:read``, ``schedule:read``, ``schedule:write``,
``workorders:write``, ``notify:send``. Booking a technician and opening a work order are
high-stakes (they send people and spend money): the tool layer refuses them without a
recorded human approval. Notifying an operator is the fallback and needs none.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .decisions import FILLED
from .errors import ToolFailed
from .failsafe import BreakerSettings
from .ops import Booking, MaintenanceEntry, Notification, OpsDatabase, Technician, WorkOrder
from .plant import register_plant_tools
from .registry import RetrySettings, ToolRegistry
from .scheduling import SchedulingBackend, SqliteScheduling

__all__ = [
    "BUILTIN_SCOPES",
    "BookTechnicianIn",
    "CreateWorkOrderIn",
    "FindOnCallIn",
    "MaintenanceHistoryIn",
    "MaintenanceHistoryOut",
    "NotifyIn",
    "OnCallOut",
    "RecentWorkOrdersIn",
    "RecentWorkOrdersOut",
    "register_builtin_tools",
]

#: what a workflow may do by default (``control:write``, stopping machines, is not in it)
BUILTIN_SCOPES = frozenset({
    "maintenance:read", "schedule:read", "schedule:write", "workorders:read",
    "workorders:write", "notify:send", "inventory:read", "inventory:write", "calendar:read",
})

Priority = Literal["low", "medium", "high", "critical"]


class _In(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MaintenanceHistoryIn(_In):
    asset: str
    system: str | None = Field(None, description="cooling, lubrication, fuel, ...; all if unset")
    days: float = Field(365.0, gt=0, description="How far back to look.")


class MaintenanceHistoryOut(BaseModel):
    entries: list[MaintenanceEntry]
    days_since: dict[str, float | None] = Field(
        description="Days since the last entry per system asked about (None: no entry).")


class FindOnCallIn(_In):
    skill: str
    at: float | None = Field(None, description="Epoch seconds; now if unset.")


class OnCallOut(BaseModel):
    technician: Technician | None


class BookTechnicianIn(_In):
    skill: str
    asset: str
    site: str
    reason: str
    hours: float = Field(4.0, gt=0, le=24)
    not_before: float | None = Field(None, description="Earliest start; now if unset.")
    idempotency_key: str | None = None


class CreateWorkOrderIn(_In):
    """An approval binds asset, site, title and priority; the text, the evidence and the
    booking it links are written when the approved work order is opened."""

    asset: str
    site: str
    title: str = Field(min_length=3, max_length=200)
    description: str = Field(json_schema_extra=FILLED)
    priority: Priority
    evidence: dict[str, Any] = Field(default_factory=dict, json_schema_extra=FILLED)
    technician_id: str | None = Field(None, json_schema_extra=FILLED)
    booking_id: str | None = Field(None, json_schema_extra=FILLED)
    idempotency_key: str | None = None


class RecentWorkOrdersIn(_In):
    asset: str
    hours: float = Field(24.0, gt=0, description="How far back to look.")


class RecentWorkOrdersOut(BaseModel):
    work_orders: list[WorkOrder]


class NotifyIn(_In):
    subject: str
    message: str
    priority: Priority = "high"
    recipient: str = "operator-on-duty"
    idempotency_key: str | None = None


def register_builtin_tools(
    registry: ToolRegistry,
    ops: OpsDatabase,
    *,
    scheduling: SchedulingBackend | None = None,
    retry: RetrySettings | None = None,
    breaker: BreakerSettings | None = None,
    timeout_s: float = 30.0,
) -> ToolRegistry:
    """Register the built-in tools on ``registry``, backed by ``ops`` and ``scheduling``.

    The scheduling tools get ``retry``, a circuit ``breaker`` and a per-attempt
    ``timeout_s``: the scheduling service is the one that goes down.
    """
    sched: SchedulingBackend = scheduling or SqliteScheduling(ops)
    retry = retry or RetrySettings()

    @registry.tool(scopes={"maintenance:read"})
    async def maintenance_history(args: MaintenanceHistoryIn) -> MaintenanceHistoryOut:
        """Maintenance log entries of an asset, newest first, and days since the last one."""
        now = time.time()
        entries = await ops.maintenance(args.asset, system=args.system,
                                        since=now - args.days * 86400)
        systems = [args.system] if args.system else sorted({e.system for e in entries})
        days_since: dict[str, float | None] = {}
        for s in systems:
            last = await ops.maintenance(args.asset, system=s)
            days_since[s] = round((now - last[0].ts) / 86400, 1) if last else None
        return MaintenanceHistoryOut(entries=entries, days_since=days_since)

    @registry.tool(scopes={"schedule:read"}, retry=retry, breaker=breaker, timeout_s=timeout_s)
    async def find_on_call_technician(args: FindOnCallIn) -> OnCallOut:
        """The technician with the skill who is on call now (or next)."""
        return OnCallOut(technician=await sched.find_on_call(args.skill, args.at or time.time()))

    @registry.tool(scopes={"schedule:write"}, high_stakes=True, retry=retry, breaker=breaker,
                   timeout_s=timeout_s)
    async def book_technician(args: BookTechnicianIn) -> Booking:
        """Book the next on-call technician with the skill for the asset."""
        at = args.not_before or time.time()
        tech = await sched.find_on_call(args.skill, at)
        if tech is None:
            raise ToolFailed(f"no technician with skill {args.skill!r} on call",
                             tool="book_technician")
        start = max(at, tech.on_call_from or at)
        assert args.idempotency_key is not None  # the executor always supplies one
        return await sched.book(technician_id=tech.id, asset=args.asset, site=args.site,
                                start=start, hours=args.hours, reason=args.reason,
                                key=args.idempotency_key)

    @registry.tool(scopes={"workorders:write"}, high_stakes=True)
    async def create_work_order(args: CreateWorkOrderIn) -> WorkOrder:
        """Open a work order with its evidence."""
        assert args.idempotency_key is not None
        return await ops.create_work_order(
            asset=args.asset, site=args.site, title=args.title, description=args.description,
            priority=args.priority, evidence=args.evidence, technician_id=args.technician_id,
            booking_id=args.booking_id, key=args.idempotency_key)

    @registry.tool(scopes={"workorders:read"})
    async def recent_work_orders(args: RecentWorkOrdersIn) -> RecentWorkOrdersOut:
        """Work orders of an asset opened in the last ``hours`` (for guardrails)."""
        since = time.time() - args.hours * 3600
        return RecentWorkOrdersOut(work_orders=[w for w in await ops.work_orders(asset=args.asset)
                                                if w.created >= since])

    @registry.tool(scopes={"notify:send"}, side_effect=True)
    async def notify_operator(args: NotifyIn) -> Notification:
        """Send a notification to the operator on duty (the fallback when a tool is down)."""
        assert args.idempotency_key is not None
        return await ops.notify(recipient=args.recipient, priority=args.priority,
                                subject=args.subject, message=args.message,
                                key=args.idempotency_key)

    return register_plant_tools(registry, ops)
