"""The control database: audit trail, approval ledger and recorded tool effects.

One SQLite file (WAL) shared by every process of a deployment: the engine writes
approval requests, ``aiotflow approve`` in another terminal writes decisions, the tool
layer checks them before a high-stakes call. Each writer uses short transactions and a
busy timeout, so several processes can use it at once.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import ApprovalRequired
from .sqlite import SqliteStore, select

__all__ = ["ApprovalRecord", "AuditRecord", "ControlStore", "Decision"]

Decision = Literal["approved", "rejected"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    thread_id TEXT,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_thread ON audit(thread_id);
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY,
    thread_id TEXT NOT NULL,
    workflow TEXT NOT NULL,
    asset TEXT NOT NULL DEFAULT '',
    title TEXT NOT NULL,
    request TEXT NOT NULL,
    tools TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    decided_by TEXT,
    comment TEXT,
    requested_at REAL NOT NULL,
    decided_at REAL,
    resumed_at REAL
);
CREATE INDEX IF NOT EXISTS approvals_status ON approvals(status);
CREATE TABLE IF NOT EXISTS effects (
    key TEXT PRIMARY KEY,
    tool TEXT NOT NULL,
    thread_id TEXT,
    input TEXT NOT NULL,
    output TEXT NOT NULL,
    ts REAL NOT NULL
);
"""


class AuditRecord(BaseModel):
    """One audited step: sensor evidence, reasoning, approval or action."""

    model_config = ConfigDict(frozen=True)

    seq: int
    ts: float
    thread_id: str | None
    kind: str
    actor: str
    detail: dict[str, Any]


class ApprovalRecord(BaseModel):
    """A request for a human decision and, once given, the decision."""

    model_config = ConfigDict(frozen=True)

    id: str
    thread_id: str
    workflow: str
    asset: str
    title: str
    request: dict[str, Any]
    tools: list[str] = Field(description="High-stakes tools this approval authorises.")
    status: Literal["pending", "approved", "rejected"]
    decided_by: str | None = None
    comment: str | None = None
    requested_at: float
    decided_at: float | None = None
    resumed_at: float | None = None


class ControlStore(SqliteStore):
    """``async with ControlStore(path) as control:`` audit, approvals and effects."""

    SCHEMA = _SCHEMA

    # ------------------------------------------------------------------ audit
    async def audit(
        self, kind: str, /, *, actor: str, thread_id: str | None = None, **detail: Any
    ) -> None:
        """Append an audit record (``kind`` like ``alert.received``, ``tool.ok``)."""
        await self.db.execute(
            "INSERT INTO audit(ts, thread_id, kind, actor, detail) VALUES (?, ?, ?, ?, ?)",
            (time.time(), thread_id, kind, actor, json.dumps(detail, default=str)),
        )
        await self.db.commit()

    async def audit_records(
        self, *, thread_id: str | None = None, kind: str | None = None
    ) -> list[AuditRecord]:
        sql, args = select("audit", "seq", thread_id=thread_id, kind=kind)
        async with self.db.execute(sql, args) as cur:
            rows = await cur.fetchall()
        return [AuditRecord(seq=r["seq"], ts=r["ts"], thread_id=r["thread_id"], kind=r["kind"],
                            actor=r["actor"], detail=json.loads(r["detail"])) for r in rows]

    # ------------------------------------------------------------------ approvals
    async def request_approval(
        self,
        *,
        thread_id: str,
        workflow: str,
        title: str,
        request: dict[str, Any],
        tools: list[str],
        asset: str = "",
        approval_id: str | None = None,
    ) -> ApprovalRecord:
        """Record a pending approval (idempotent per ``approval_id``) and return it."""
        aid = approval_id or str(uuid.uuid4())
        cur = await self.db.execute(
            "INSERT OR IGNORE INTO approvals(id, thread_id, workflow, asset, title, request,"
            " tools, requested_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (aid, thread_id, workflow, asset, title, json.dumps(request, default=str),
             json.dumps(tools), time.time()),
        )
        await self.db.commit()
        if cur.rowcount:
            await self.audit("approval.requested", actor=workflow, thread_id=thread_id,
                             approval_id=aid, title=title, tools=tools)
        rec = await self.approval(aid)
        assert rec is not None
        return rec

    async def approval(self, approval_id: str) -> ApprovalRecord | None:
        async with self.db.execute("SELECT * FROM approvals WHERE id = ?", (approval_id,)) as cur:
            row = await cur.fetchone()
        return _approval(row) if row else None

    async def approvals(
        self, *, status: str | None = "pending", thread_id: str | None = None
    ) -> list[ApprovalRecord]:
        sql, args = select("approvals", "requested_at", status=status, thread_id=thread_id)
        async with self.db.execute(sql, args) as cur:
            return [_approval(r) for r in await cur.fetchall()]

    async def decide(
        self, approval_id: str, decision: Decision, *, by: str, comment: str | None = None
    ) -> ApprovalRecord:
        """Record a human decision; only a pending approval can be decided (first wins)."""
        if decision not in ("approved", "rejected"):
            raise ValueError(f"decision must be approved or rejected, not {decision!r}")
        cur = await self.db.execute(
            "UPDATE approvals SET status = ?, decided_by = ?, comment = ?, decided_at = ?"
            " WHERE id = ? AND status = 'pending'",
            (decision, by, comment, time.time(), approval_id),
        )
        await self.db.commit()
        rec = await self.approval(approval_id)
        if rec is None:
            raise KeyError(f"no approval {approval_id!r}")
        if cur.rowcount:
            await self.audit(f"approval.{decision}", actor=by, thread_id=rec.thread_id,
                             approval_id=approval_id, comment=comment)
        return rec

    async def decided_not_resumed(self) -> list[ApprovalRecord]:
        """Decisions whose workflow has not been resumed yet."""
        async with self.db.execute(
            "SELECT * FROM approvals WHERE status != 'pending' AND resumed_at IS NULL"
            " ORDER BY decided_at"
        ) as cur:
            return [_approval(r) for r in await cur.fetchall()]

    async def mark_resumed(self, approval_id: str) -> None:
        await self.db.execute("UPDATE approvals SET resumed_at = ? WHERE id = ?",
                              (time.time(), approval_id))
        await self.db.commit()

    async def check_grant(self, approval_id: str | None, *, tool: str, thread_id: str | None) -> \
            ApprovalRecord:
        """The approval that authorises ``tool`` in ``thread_id``, or :class:`ApprovalRequired`."""
        if not approval_id:
            raise ApprovalRequired("high-stakes tool called without an approval", tool=tool)
        rec = await self.approval(approval_id)
        if rec is None:
            raise ApprovalRequired(f"approval {approval_id} does not exist", tool=tool)
        if rec.status != "approved":
            raise ApprovalRequired(f"approval {approval_id} is {rec.status}", tool=tool)
        if tool not in rec.tools:
            raise ApprovalRequired(f"approval {approval_id} does not cover this tool", tool=tool)
        if thread_id is not None and rec.thread_id != thread_id:
            raise ApprovalRequired(f"approval {approval_id} belongs to another workflow run",
                                   tool=tool)
        return rec

    # ------------------------------------------------------------------ effects
    async def effect(self, key: str) -> dict[str, Any] | None:
        async with self.db.execute("SELECT output FROM effects WHERE key = ?", (key,)) as cur:
            row = await cur.fetchone()
        return json.loads(row["output"]) if row else None

    async def record_effect(
        self, key: str, *, tool: str, thread_id: str | None, input: dict[str, Any],
        output: dict[str, Any],
    ) -> None:
        await self.db.execute(
            "INSERT OR IGNORE INTO effects(key, tool, thread_id, input, output, ts)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (key, tool, thread_id, json.dumps(input, default=str),
             json.dumps(output, default=str), time.time()),
        )
        await self.db.commit()


def _approval(row: Any) -> ApprovalRecord:
    return ApprovalRecord(
        id=row["id"], thread_id=row["thread_id"], workflow=row["workflow"], asset=row["asset"],
        title=row["title"], request=json.loads(row["request"]), tools=json.loads(row["tools"]),
        status=row["status"], decided_by=row["decided_by"], comment=row["comment"],
        requested_at=row["requested_at"], decided_at=row["decided_at"],
        resumed_at=row["resumed_at"],
    )
