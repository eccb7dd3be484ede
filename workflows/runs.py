"""The run ledger: one row per (workflow, alert), so an alert delivered twice runs once.

It lives in the control database beside approvals and audit, so that every process of a
deployment sees the same runs.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from aiotflow.tools.sqlite import SqliteStore, select

__all__ = ["RunLedger", "RunRecord", "RunStatus"]

RunStatus = Literal["running", "waiting_approval", "completed", "failed"]
ACTIVE: tuple[RunStatus, ...] = ("running", "waiting_approval")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    thread_id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    asset TEXT NOT NULL,
    status TEXT NOT NULL,
    alert TEXT NOT NULL,
    result TEXT,
    error TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_active ON runs(workflow, asset, status);
"""


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


class RunLedger:
    """Runs of workflows, in the control database (``RunLedger(control)``); every change
    is one unit of work of that store."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store

    async def setup(self) -> None:
        async with self.store.unit() as db:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                await db.execute(statement)

    async def claim(self, *, thread_id: str, workflow: str, alert: dict[str, Any]) -> bool:
        """Record a new run; ``False`` if this thread already exists (a duplicate)."""
        now = time.time()
        async with self.store.unit() as db:
            cur = await db.execute(
                "INSERT OR IGNORE INTO runs(thread_id, workflow, alert_id, asset, status, alert,"
                " created, updated) VALUES (?, ?, ?, ?, 'running', ?, ?, ?)",
                (thread_id, workflow, alert["id"], alert["asset"], json.dumps(alert), now, now),
            )
        return bool(cur.rowcount)

    async def active_for(self, workflow: str, asset: str) -> str | None:
        """Thread id of an active run of ``workflow`` on ``asset``, if any."""
        async with self.store.read() as db:
            rows = await db.execute_fetchall(
                "SELECT thread_id FROM runs WHERE workflow = ? AND asset = ? AND status IN"
                " (?, ?) ORDER BY created LIMIT 1", (workflow, asset, *ACTIVE))
        return next((str(r[0]) for r in rows), None)

    async def set_status(
        self, thread_id: str, status: RunStatus, *, result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        async with self.store.unit() as db:
            await db.execute(
                "UPDATE runs SET status = ?, result = COALESCE(?, result), error = ?,"
                " updated = ? WHERE thread_id = ?",
                (status, json.dumps(result, default=str) if result is not None else None,
                 error, time.time(), thread_id),
            )

    async def get(self, thread_id: str) -> RunRecord | None:
        return await self._first("SELECT * FROM runs WHERE thread_id = ?", (thread_id,))

    async def for_alert(self, alert_id: str) -> RunRecord | None:
        """The first run started for an alert (any workflow)."""
        return await self._first("SELECT * FROM runs WHERE alert_id = ? ORDER BY created"
                                 " LIMIT 1", (alert_id,))

    async def list(self, *, status: RunStatus | None = None) -> list[RunRecord]:
        sql, args = select("runs", "created", status=status)
        async with self.store.read() as db:
            return [_record(r) for r in await db.execute_fetchall(sql, args)]

    async def _first(self, sql: str, args: tuple[Any, ...]) -> RunRecord | None:
        async with self.store.read() as db:
            rows = list(await db.execute_fetchall(sql, args))
        return _record(rows[0]) if rows else None


def _record(row: Any) -> RunRecord:
    return RunRecord(
        thread_id=row[0], workflow=row[1], alert_id=row[2], asset=row[3], status=row[4],
        alert=json.loads(row[5]), result=json.loads(row[6]) if row[6] else None, error=row[7],
        created=row[8], updated=row[9],
    )
