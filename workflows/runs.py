"""The run ledger: one row per (workflow, alert), so an alert delivered twice runs once.

It lives in the control database beside approvals and audit, so that every process of a
deployment sees the same runs.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

import aiosqlite
from pydantic import BaseModel, ConfigDict

from aiotflow.tools.sqlite import select

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
    """Runs of workflows, on an open control-database connection."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

    async def setup(self) -> None:
        await self.db.executescript(_SCHEMA)
        await self.db.commit()

    async def claim(self, *, thread_id: str, workflow: str, alert: dict[str, Any]) -> bool:
        """Record a new run; ``False`` if this thread already exists (a duplicate)."""
        now = time.time()
        cur = await self.db.execute(
            "INSERT OR IGNORE INTO runs(thread_id, workflow, alert_id, asset, status, alert,"
            " created, updated) VALUES (?, ?, ?, ?, 'running', ?, ?, ?)",
            (thread_id, workflow, alert["id"], alert["asset"], json.dumps(alert), now, now),
        )
        await self.db.commit()
        return bool(cur.rowcount)

    async def active_for(self, workflow: str, asset: str) -> str | None:
        """Thread id of an active run of ``workflow`` on ``asset``, if any."""
        async with self.db.execute(
            "SELECT thread_id FROM runs WHERE workflow = ? AND asset = ? AND status IN (?, ?)"
            " ORDER BY created LIMIT 1", (workflow, asset, *ACTIVE),
        ) as cur:
            row = await cur.fetchone()
        return str(row[0]) if row else None

    async def set_status(
        self, thread_id: str, status: RunStatus, *, result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        await self.db.execute(
            "UPDATE runs SET status = ?, result = COALESCE(?, result), error = ?, updated = ?"
            " WHERE thread_id = ?",
            (status, json.dumps(result, default=str) if result is not None else None, error,
             time.time(), thread_id),
        )
        await self.db.commit()

    async def get(self, thread_id: str) -> RunRecord | None:
        async with self.db.execute("SELECT * FROM runs WHERE thread_id = ?", (thread_id,)) as cur:
            row = await cur.fetchone()
        return _record(row) if row else None

    async def for_alert(self, alert_id: str) -> RunRecord | None:
        """The first run started for an alert (any workflow)."""
        async with self.db.execute("SELECT * FROM runs WHERE alert_id = ? ORDER BY created"
                                   " LIMIT 1", (alert_id,)) as cur:
            row = await cur.fetchone()
        return _record(row) if row else None

    async def list(self, *, status: RunStatus | None = None) -> list[RunRecord]:
        sql, args = select("runs", "created", status=status)
        async with self.db.execute(sql, args) as cur:
            return [_record(r) for r in await cur.fetchall()]


def _record(row: Any) -> RunRecord:
    return RunRecord(
        thread_id=row[0], workflow=row[1], alert_id=row[2], asset=row[3], status=row[4],
        alert=json.loads(row[5]), result=json.loads(row[6]) if row[6] else None, error=row[7],
        created=row[8], updated=row[9],
    )
