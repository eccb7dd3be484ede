"""The built-in operations database (SQLite or PostgreSQL): roster, bookings, work
orders, notifications and the maintenance log; and the plant's inventory, maintenance
calendar and control journal (:mod:`aiotflow.tools.plant`). This is the default backend
of the built-in tools; a deployment can point scheduling at the customer's REST service
instead.

Every write carries the caller's idempotency key in a UNIQUE column, so a repeated
call returns the row it created the first time, even if the tool layer's own record
of the effect was lost.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .database import Migration, Tx, select
from .errors import ToolFailed
from .plant import V2, PlantData

__all__ = [
    "Booking",
    "MaintenanceEntry",
    "Notification",
    "OpsDatabase",
    "Technician",
    "WorkOrder",
]

_V1 = """
CREATE TABLE IF NOT EXISTS technicians (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, skills TEXT NOT NULL, phone TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS oncall (
    technician_id TEXT NOT NULL REFERENCES technicians(id), start {real} NOT NULL,
    "end" {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS bookings (
    id TEXT PRIMARY KEY, technician_id TEXT NOT NULL, asset TEXT NOT NULL, site TEXT NOT NULL,
    start {real} NOT NULL, "end" {real} NOT NULL, reason TEXT NOT NULL, key TEXT UNIQUE,
    created {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS work_orders (
    seq {serial}, asset TEXT NOT NULL, site TEXT NOT NULL,
    title TEXT NOT NULL, description TEXT NOT NULL, priority TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open', evidence TEXT NOT NULL,
    technician_id TEXT, booking_id TEXT, key TEXT UNIQUE, created {real} NOT NULL,
    failure_mode TEXT, resolution TEXT, closed_by TEXT, closed {real}
);
CREATE TABLE IF NOT EXISTS notifications (
    id TEXT PRIMARY KEY, recipient TEXT NOT NULL, priority TEXT NOT NULL, subject TEXT NOT NULL,
    message TEXT NOT NULL, key TEXT UNIQUE, created {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS maintenance_log (
    id TEXT PRIMARY KEY, asset TEXT NOT NULL, system TEXT NOT NULL, ts {real} NOT NULL,
    action TEXT NOT NULL, technician TEXT NOT NULL DEFAULT '', notes TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS maintenance_asset ON maintenance_log(asset, system, ts);
"""

MIGRATIONS = (
    Migration(1, "roster, bookings, work orders, notifications, maintenance log", _V1,
              sqlite_columns={"work_orders": {"failure_mode": "TEXT", "resolution": "TEXT",
                                              "closed_by": "TEXT", "closed": "REAL"}}),
    V2,
)


class Technician(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    skills: list[str]
    phone: str = ""
    on_call_from: float | None = None
    on_call_until: float | None = None


class Booking(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    technician_id: str
    technician_name: str = ""
    asset: str
    site: str
    start: float
    end: float
    reason: str


class WorkOrder(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str = Field(description="WO-000001 style number.")
    asset: str
    site: str
    title: str
    description: str
    priority: str
    status: str
    evidence: dict[str, Any]
    technician_id: str | None = None
    booking_id: str | None = None
    created: float
    failure_mode: str | None = Field(None, description="Confirmed when the order closed.")
    resolution: str | None = None
    closed_by: str | None = None
    closed: float | None = None


class Notification(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    recipient: str
    priority: str
    subject: str
    message: str
    created: float


class MaintenanceEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    asset: str
    system: str
    ts: float
    action: str
    technician: str = ""
    notes: str = ""


class OpsDatabase(PlantData):
    """``async with OpsDatabase(target) as ops:`` the built-in tools' data, in a SQLite
    file or a PostgreSQL database."""

    COMPONENT = "ops"
    MIGRATIONS = MIGRATIONS

    # ------------------------------------------------------------------ seeding
    async def add_technician(
        self, tech: Technician, shifts: Sequence[tuple[float, float]] = ()
    ) -> None:
        async with self.unit() as db:
            await db.execute(
                "INSERT INTO technicians(id, name, skills, phone) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(id) DO UPDATE SET name = excluded.name, skills = excluded.skills,"
                " phone = excluded.phone",
                (tech.id, tech.name, json.dumps(tech.skills), tech.phone),
            )
            await db.executemany(
                'INSERT INTO oncall(technician_id, start, "end") VALUES (?, ?, ?)',
                [(tech.id, s, e) for s, e in shifts],
            )

    async def add_maintenance(self, entries: Sequence[MaintenanceEntry]) -> None:
        async with self.unit() as db:
            await db.executemany(
                "INSERT INTO maintenance_log(id, asset, system, ts, action, technician, notes)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET"
                " asset = excluded.asset, system = excluded.system, ts = excluded.ts,"
                " action = excluded.action, technician = excluded.technician,"
                " notes = excluded.notes",
                [(e.id, e.asset, e.system, e.ts, e.action, e.technician, e.notes)
                 for e in entries],
            )

    # ------------------------------------------------------------------ queries
    async def maintenance(
        self, asset: str, *, system: str | None = None, since: float | None = None
    ) -> list[MaintenanceEntry]:
        sql = "SELECT * FROM maintenance_log WHERE asset = ?"
        args: list[object] = [asset]
        if system is not None:
            sql += " AND system = ?"
            args.append(system)
        if since is not None:
            sql += " AND ts >= ?"
            args.append(since)
        async with self.read() as db:
            rows = await db.all(sql + " ORDER BY ts DESC", args)
        return [MaintenanceEntry(**dict(r)) for r in rows]

    async def find_on_call(self, skill: str, at: float) -> Technician | None:
        """The technician with ``skill`` on call at ``at``, else the next one to start."""
        async with self.read() as db:
            rows = await db.all(
                'SELECT t.*, o.start AS s, o."end" AS e FROM technicians t JOIN oncall o'
                ' ON o.technician_id = t.id WHERE o."end" > ? ORDER BY (o.start > ?), o.start',
                (at, at))
            for r in rows:
                skills = json.loads(r["skills"])
                if skill in skills and not await _busy(db, r["id"], max(at, r["s"])):
                    return Technician(id=r["id"], name=r["name"], skills=skills,
                                      phone=r["phone"], on_call_from=r["s"],
                                      on_call_until=r["e"])
        return None

    # ------------------------------------------------------------------ writes
    async def book(
        self, *, technician_id: str, asset: str, site: str, start: float, hours: float,
        reason: str, key: str,
    ) -> Booking:
        existing = await self._insert_once(
            "bookings", key,
            'INSERT INTO bookings(id, technician_id, asset, site, start, "end", reason,'
            " key, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (f"BK-{uuid.uuid4().hex[:10]}", technician_id, asset, site, start,
             start + hours * 3600, reason, key, time.time()),
        )
        async with self.read() as db:
            t = await db.one("SELECT name FROM technicians WHERE id = ?",
                             (existing["technician_id"],))
        return Booking(id=existing["id"], technician_id=existing["technician_id"],
                       technician_name=t["name"] if t else "", asset=existing["asset"],
                       site=existing["site"], start=existing["start"], end=existing["end"],
                       reason=existing["reason"])

    async def create_work_order(
        self, *, asset: str, site: str, title: str, description: str, priority: str,
        evidence: dict[str, Any], technician_id: str | None, booking_id: str | None,
        key: str,
    ) -> WorkOrder:
        return _work_order(await self._insert_once(
            "work_orders", key,
            "INSERT INTO work_orders(asset, site, title, description, priority, evidence,"
            " technician_id, booking_id, key, created) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (asset, site, title, description, priority, json.dumps(evidence, default=str),
             technician_id, booking_id, key, time.time()),
        ))

    async def notify(
        self, *, recipient: str, priority: str, subject: str, message: str, key: str
    ) -> Notification:
        row = await self._insert_once(
            "notifications", key,
            "INSERT INTO notifications(id, recipient, priority, subject, message, key,"
            " created) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (f"NT-{uuid.uuid4().hex[:10]}", recipient, priority, subject, message, key,
             time.time()),
        )
        return Notification(id=row["id"], recipient=row["recipient"], priority=row["priority"],
                            subject=row["subject"], message=row["message"], created=row["created"])

    async def work_order(self, wo_id: str) -> WorkOrder | None:
        seq = _seq(wo_id)
        async with self.read() as db:
            row = await db.one("SELECT * FROM work_orders WHERE seq = ?", (seq,))
        return _work_order(row) if row else None

    async def close_work_order(self, wo_id: str, *, failure_mode: str, resolution: str,
                               by: str) -> WorkOrder:
        """Close a work order with the failure mode found. Closing again with the same
        finding returns the closed order; with a different one it is refused (correct the
        incident history instead)."""
        wo = await self.work_order(wo_id)
        if wo is None:
            raise ToolFailed(f"no work order {wo_id}", tool="close_work_order")
        if wo.status == "closed":
            if wo.failure_mode != failure_mode:
                raise ToolFailed(f"{wo_id} was closed as {wo.failure_mode} by {wo.closed_by};"
                                 " correct the history instead", tool="close_work_order")
            return wo
        async with self.unit() as db:
            await db.execute(
                "UPDATE work_orders SET status = 'closed', failure_mode = ?, resolution = ?,"
                " closed_by = ?, closed = ? WHERE seq = ? AND status != 'closed'",
                (failure_mode, resolution, by, time.time(), _seq(wo_id)))
        closed = await self.work_order(wo_id)
        assert closed is not None
        return closed

    async def redact_personal(self, before: float) -> dict[str, int]:
        """Retention: the free text of work orders and notifications made before
        ``before`` (descriptions naming who approved and why, resolutions, who closed,
        messages) is replaced by a marker; asset, dates, priority, failure mode and the
        evidence's ids stay, for the history and the statistics."""
        mark = "[redacted: personal data retention]"
        async with self.unit() as db:
            wo = await db.execute(
                "UPDATE work_orders SET description = ?, resolution = CASE WHEN resolution IS"
                " NULL THEN NULL ELSE ? END, closed_by = CASE WHEN closed_by IS NULL THEN NULL"
                " ELSE ? END WHERE created < ? AND description != ?",
                (mark, mark, mark, before, mark))
            notes = await db.execute(
                "UPDATE notifications SET message = ? WHERE created < ? AND message != ?",
                (mark, before, mark))
        return {"work_orders": wo, "notifications": notes}

    async def work_orders(self, *, asset: str | None = None) -> list[WorkOrder]:
        sql, args = select("work_orders", "seq", asset=asset)
        async with self.read() as db:
            return [_work_order(r) for r in await db.all(sql, args)]

    async def notifications(self) -> list[Notification]:
        async with self.read() as db:
            rows = await db.all("SELECT * FROM notifications ORDER BY created")
        return [Notification(id=r["id"], recipient=r["recipient"], priority=r["priority"],
                             subject=r["subject"], message=r["message"], created=r["created"])
                for r in rows]

    async def bookings(self) -> list[Booking]:
        async with self.read() as db:
            rows = await db.all("SELECT * FROM bookings ORDER BY created")
        return [Booking(id=r["id"], technician_id=r["technician_id"], asset=r["asset"],
                        site=r["site"], start=r["start"], end=r["end"], reason=r["reason"])
                for r in rows]


async def _busy(db: Tx, technician_id: str, at: float) -> bool:
    return await db.one(
        'SELECT 1 FROM bookings WHERE technician_id = ? AND start <= ? AND "end" > ?',
        (technician_id, at, at)) is not None


def _seq(wo_id: str) -> int:
    try:
        return int(wo_id.removeprefix("WO-"))
    except ValueError:
        raise ToolFailed(f"not a work order number: {wo_id!r}", tool="work_order") from None


def _work_order(row: Any) -> WorkOrder:
    keys = row.keys()
    closing = {k: row[k] for k in ("failure_mode", "resolution", "closed_by", "closed")
               if k in keys}
    return WorkOrder(**closing,
        id=f"WO-{row['seq']:06d}", asset=row["asset"], site=row["site"], title=row["title"],
        description=row["description"], priority=row["priority"], status=row["status"],
        evidence=json.loads(row["evidence"]), technician_id=row["technician_id"],
        booking_id=row["booking_id"], created=row["created"],
    )
