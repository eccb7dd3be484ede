"""The run ledger: one row per (workflow, alert), so an alert delivered twice runs once.

It lives in the control database beside approvals and audit (its tables are the control
store's migrations), so that every process of a deployment sees the same runs.

With several workers on one database it also says **who runs what**: a running run and an
unprocessed inbox alert belong to a worker (``owner``); each worker has a row in
``workers`` with a heartbeat, and the runs and alerts of a worker whose heartbeat is older
than the lease (or that stopped, or that never registered) are taken over by another, one
compare-and-set per row, so exactly one worker wins each. Single-flight per asset is a
unique index over the active runs (``flight`` is the asset of a single-flight workflow),
and the per-site run limit is a set of numbered slots - both hold across workers.
"""

from __future__ import annotations

import builtins
import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from aiotflow.tools.control import AuditEntry, append_audit
from aiotflow.tools.database import Store, Tx, select

__all__ = ["ClaimResult", "RunLedger", "RunRecord", "RunStatus"]

RunStatus = Literal["running", "waiting_approval", "completed", "failed"]
ACTIVE: tuple[RunStatus, ...] = ("running", "waiting_approval")
ClaimResult = Literal["claimed", "duplicate", "coalesced"]

#: a worker is alive while it is registered, not stopped and has beaten within the lease
_DEAD = ("(w.id IS NULL OR w.stopped IS NOT NULL OR w.heartbeat < ?)")


class RunRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    thread_id: str
    workflow: str
    alert_id: str
    asset: str
    status: RunStatus
    alert: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    created: float
    updated: float
    owner: str | None = None


class RunLedger:
    """Runs of workflows, in the control database (``RunLedger(control)``); every change
    is one unit of work of that store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # ------------------------------------------------------------------ runs
    async def claim(
        self, *, thread_id: str, workflow: str, alert: dict[str, Any], owner: str | None = None,
        single_flight: bool = False, audit: AuditEntry | None = None,
    ) -> tuple[ClaimResult, str]:
        """Record a new run owned by ``owner`` (and its ``audit`` record, in the same unit
        of work): ``("claimed", thread_id)``;
        ``("duplicate", thread_id)`` if this thread exists already; with
        ``single_flight``, ``("coalesced", active thread id)`` if another run of the
        workflow is active on the asset - in this process or any other."""
        now = time.time()
        for _ in range(5):  # the run we collided with may finish while we look at it
            async with self.store.unit() as db:
                if await db.execute(
                    "INSERT INTO runs(thread_id, workflow, alert_id, asset, status, alert,"
                    " created, updated, owner, flight) VALUES (?, ?, ?, ?, 'running', ?, ?, ?,"
                    " ?, ?) ON CONFLICT DO NOTHING",
                    (thread_id, workflow, alert["id"], alert["asset"], json.dumps(alert), now,
                     now, owner, alert["asset"] if single_flight else None)):
                    if audit is not None:
                        await append_audit(db, audit, thread_id=thread_id)
                    return "claimed", thread_id
                if await db.one("SELECT 1 FROM runs WHERE thread_id = ?", (thread_id,)):
                    return "duplicate", thread_id
                active = await db.one(
                    "SELECT thread_id FROM runs WHERE workflow = ? AND flight = ? AND status"
                    " IN (?, ?)", (workflow, alert["asset"], *ACTIVE))
                if active is not None:
                    return "coalesced", str(active[0])
        raise RuntimeError(f"could not claim {thread_id}: it kept colliding")

    async def set_status(
        self, thread_id: str, status: RunStatus, *, result: dict[str, Any] | None = None,
        error: str | None = None, audit: AuditEntry | None = None,
    ) -> None:
        """Set a run's status; with ``audit``, its audit record in the same unit."""
        async with self.store.unit() as db:
            if audit is not None:
                await append_audit(db, audit, thread_id=thread_id)
            await db.execute(
                "UPDATE runs SET status = ?, result = COALESCE(?, result), error = ?,"
                " updated = ? WHERE thread_id = ?",
                (status, json.dumps(result, default=str) if result is not None else None,
                 error, time.time(), thread_id),
            )

    async def take_for_resume(self, thread_id: str, owner: str) -> bool:
        """Move a run waiting for approval back to running, owned by ``owner``; ``False``
        if it is not waiting (another worker resumed it first, or it finished)."""
        async with self.store.unit() as db:
            return bool(await db.execute(
                "UPDATE runs SET status = 'running', owner = ?, updated = ? WHERE thread_id = ?"
                " AND status = 'waiting_approval'", (owner, time.time(), thread_id)))

    async def get(self, thread_id: str) -> RunRecord | None:
        return await self._first("SELECT * FROM runs WHERE thread_id = ?", (thread_id,))

    async def for_alert(self, alert_id: str) -> RunRecord | None:
        """The first run started for an alert (any workflow)."""
        return await self._first("SELECT * FROM runs WHERE alert_id = ? ORDER BY created"
                                 " LIMIT 1", (alert_id,))

    async def list(self, *, status: RunStatus | None = None) -> list[RunRecord]:
        sql, args = select("runs", "created", status=status)
        async with self.store.read() as db:
            return [_record(r) for r in await db.all(sql, args)]

    async def counts(self) -> dict[tuple[str, str], int]:
        """How many runs there are per (workflow, status)."""
        async with self.store.read() as db:
            rows = await db.all("SELECT workflow, status, COUNT(*) AS n FROM runs "
                                "GROUP BY workflow, status", ())
        return {(r["workflow"], r["status"]): int(r["n"]) for r in rows}

    async def _first(self, sql: str, args: tuple[Any, ...]) -> RunRecord | None:
        async with self.store.read() as db:
            row = await db.one(sql, args)
        return _record(row) if row else None

    # ------------------------------------------------------------------ workers
    async def register(self, worker: str) -> str:
        """Register ``worker`` (again) with a new incarnation, which it keeps beating;
        a previous process with the same id finds its incarnation gone at its next beat
        and stops. Its run slots are released: that process holds none any more."""
        incarnation = uuid.uuid4().hex
        now = time.time()
        async with self.store.unit() as db:
            await db.execute(
                "INSERT INTO workers(id, incarnation, started, heartbeat) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(id) DO UPDATE SET incarnation = excluded.incarnation,"
                " started = excluded.started, heartbeat = excluded.heartbeat, stopped = NULL",
                (worker, incarnation, now, now))
            await db.execute("DELETE FROM run_slots WHERE owner = ?", (worker,))
        return incarnation

    async def beat(self, worker: str, incarnation: str) -> bool:
        """Renew ``worker``'s lease; ``False`` if another process took over its id."""
        async with self.store.unit() as db:
            return bool(await db.execute(
                "UPDATE workers SET heartbeat = ? WHERE id = ? AND incarnation = ?",
                (time.time(), worker, incarnation)))

    async def stop(self, worker: str, incarnation: str) -> None:
        """A clean stop: the worker's remaining runs are free to take at once."""
        async with self.store.unit() as db:
            await db.execute("UPDATE workers SET stopped = ? WHERE id = ? AND incarnation = ?",
                             (time.time(), worker, incarnation))

    async def workers(self) -> builtins.list[dict[str, Any]]:
        async with self.store.read() as db:
            return [dict(r) for r in await db.all("SELECT * FROM workers ORDER BY id")]

    async def orphans(self, me: str, lease_s: float
                      ) -> tuple[builtins.list[RunRecord], builtins.list[tuple[str, str | None]]]:
        """Running runs and unprocessed inbox alerts that no live worker holds - their
        owner's lease expired, it stopped, or it is ``me`` (an earlier incarnation, or a
        run this process let go) - as ``(runs, [(alert id, owner)])``."""
        dead = time.time() - lease_s
        async with self.store.read() as db:
            runs = await db.all(
                "SELECT r.* FROM runs r LEFT JOIN workers w ON w.id = r.owner WHERE"
                f" r.status = 'running' AND (r.owner IS NULL OR r.owner = ? OR {_DEAD})"
                " ORDER BY r.created", (me, dead))
            alerts = await db.all(
                "SELECT i.alert_id, i.owner FROM inbox i LEFT JOIN workers w ON w.id ="
                f" i.owner WHERE i.processed IS NULL AND (i.owner IS NULL OR i.owner = ? OR"
                f" {_DEAD}) ORDER BY i.received", (me, dead))
        return [_record(r) for r in runs], [(str(a[0]), a[1]) for a in alerts]

    async def take_over(self, thread_id: str, *, was: str | None, me: str) -> bool:
        """Make ``me`` the owner of a running run that ``was`` owned; ``False`` if another
        worker took it first (compare-and-set)."""
        async with self.store.unit() as db:
            return bool(await db.execute(
                "UPDATE runs SET owner = ?, updated = ? WHERE thread_id = ? AND"
                " status = 'running' AND COALESCE(owner, '') = ?",
                (me, time.time(), thread_id, was or "")))

    async def take_over_alert(self, alert_id: str, *, was: str | None, me: str) -> str | None:
        """Make ``me`` the owner of an unprocessed inbox alert; its payload, or ``None``
        if another worker took it (or processed it) first."""
        async with self.store.unit() as db:
            if not await db.execute(
                    "UPDATE inbox SET owner = ? WHERE alert_id = ? AND processed IS NULL AND"
                    " COALESCE(owner, '') = ?", (me, alert_id, was or "")):
                return None
            row = await db.one("SELECT payload FROM inbox WHERE alert_id = ?", (alert_id,))
        return str(row[0]) if row else None

    # ------------------------------------------------------------------ site slots
    async def acquire_slot(self, site: str, *, thread_id: str, owner: str, limit: int
                           ) -> int | None:
        """One of ``site``'s ``limit`` run slots for ``thread_id``, or ``None`` when all
        are taken (by any worker). Slots of dead workers are freed by :meth:`free_slots`."""
        async with self.store.unit() as db:
            taken = {int(r[0]) for r in await db.all(
                "SELECT slot FROM run_slots WHERE site = ?", (site,))}
            for slot in range(limit):
                if slot not in taken and await _insert_slot(db, site, slot, thread_id, owner):
                    return slot
        return None

    async def release_slot(self, site: str, slot: int, *, thread_id: str) -> None:
        async with self.store.unit() as db:
            await db.execute("DELETE FROM run_slots WHERE site = ? AND slot = ? AND"
                             " thread_id = ?", (site, slot, thread_id))

    async def free_slots(self, lease_s: float) -> int:
        """Release the slots of workers that are not alive; how many."""
        async with self.store.unit() as db:
            return await db.execute(
                "DELETE FROM run_slots WHERE owner NOT IN (SELECT id FROM workers WHERE"
                " stopped IS NULL AND heartbeat >= ?)", (time.time() - lease_s,))


async def _insert_slot(db: Tx, site: str, slot: int, thread_id: str, owner: str) -> bool:
    return bool(await db.execute(
        "INSERT INTO run_slots(site, slot, thread_id, owner) VALUES (?, ?, ?, ?)"
        " ON CONFLICT DO NOTHING", (site, slot, thread_id, owner)))


def _record(row: Any) -> RunRecord:
    keys = row.keys()
    return RunRecord(
        thread_id=row["thread_id"], workflow=row["workflow"], alert_id=row["alert_id"],
        asset=row["asset"], status=row["status"], alert=json.loads(row["alert"]),
        result=json.loads(row["result"]) if row["result"] else None, error=row["error"],
        created=row["created"], updated=row["updated"],
        owner=row["owner"] if "owner" in keys else None,
    )
