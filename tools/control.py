"""The control database: approval ledger, inbox, recorded tool effects and (from
:mod:`aiotflow.tools.audit`) the audit trail.

One SQLite file (WAL) shared by every process of a deployment: the engine writes
approval requests, ``aiotflow approve`` in another terminal writes decisions, the tool
layer checks them before a high-stakes call. Every change is one unit of work (see
:mod:`aiotflow.tools.database`) together with its audit record: a decision is never
recorded without its audit entry, nor the entry without the decision.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aiotflow.keys import SigningKey

from .audit import (
    AuditCheckpoint,
    AuditEntry,
    AuditLog,
    AuditRecord,
    ChainReport,
    _append,
    append_audit,
    audit_hash,
)
from .database import Migration, select
from .decisions import decision_document, sign_decision
from .policy import Policy, RiskTier

__all__ = [
    "ApprovalRecord",
    "AuditCheckpoint",
    "AuditEntry",
    "AuditRecord",
    "ChainReport",
    "ControlStore",
    "Decision",
    "append_audit",
    "audit_hash",
]

Decision = Literal["approved", "rejected"]
ApprovalStatus = Literal["pending", "approved", "rejected", "expired"]

_V1 = """
CREATE TABLE IF NOT EXISTS audit (
    seq {int} PRIMARY KEY,
    ts {real} NOT NULL,
    thread_id TEXT,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev TEXT NOT NULL DEFAULT '',
    hash TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS audit_head (
    id {int} PRIMARY KEY CHECK (id = 1),
    seq {int} NOT NULL,
    hash TEXT NOT NULL
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
    requested_at {real} NOT NULL,
    decided_at {real},
    resumed_at {real},
    risk TEXT NOT NULL DEFAULT 'high',
    escalated_at {real}
);
CREATE INDEX IF NOT EXISTS approvals_status ON approvals(status);
CREATE TABLE IF NOT EXISTS inbox (
    alert_id TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,
    received {real} NOT NULL,
    processed {real}
);
CREATE INDEX IF NOT EXISTS inbox_open ON inbox(processed);
CREATE TABLE IF NOT EXISTS history_queue (
    seq {serial},
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    created {real} NOT NULL,
    applied {real}
);
CREATE TABLE IF NOT EXISTS effects (
    key TEXT PRIMARY KEY,
    tool TEXT NOT NULL,
    thread_id TEXT,
    input TEXT NOT NULL,
    output TEXT NOT NULL,
    ts {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    thread_id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    asset TEXT NOT NULL,
    status TEXT NOT NULL,
    alert TEXT NOT NULL,
    result TEXT,
    error TEXT,
    created {real} NOT NULL,
    updated {real} NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_active ON runs(workflow, asset, status)
"""

#: many workers on one database: who runs what (runs and inbox rows owned by a worker,
#: taken over when its heartbeat stops), single-flight as a unique index over active runs,
#: the per-site run limit as slots, and the audit chain's head row made once here so that
#: appends lock it (PostgreSQL) instead of racing to insert it
_V2 = """
ALTER TABLE runs ADD COLUMN owner TEXT;
ALTER TABLE runs ADD COLUMN flight TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS runs_one_active ON runs(workflow, flight)
    WHERE status IN ('running', 'waiting_approval');
CREATE INDEX IF NOT EXISTS runs_owner ON runs(status, owner);
ALTER TABLE inbox ADD COLUMN owner TEXT;
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    incarnation TEXT NOT NULL,
    started {real} NOT NULL,
    heartbeat {real} NOT NULL,
    stopped {real}
);
CREATE TABLE IF NOT EXISTS run_slots (
    site TEXT NOT NULL,
    slot {int} NOT NULL,
    thread_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    PRIMARY KEY (site, slot)
);
INSERT INTO audit_head(id, seq, hash)
    SELECT 1, COALESCE(MAX(seq), 0),
           COALESCE((SELECT hash FROM audit ORDER BY seq DESC LIMIT 1), '')
    FROM audit WHERE 1 = 1 ON CONFLICT DO NOTHING
"""

#: verified decisions (the signed document beside the row), single-use grants, the
#: operators' PIN lock-outs and the signed checkpoints of the audit chain
_V3 = """
ALTER TABLE approvals ADD COLUMN decision_doc TEXT;
ALTER TABLE approvals ADD COLUMN signature TEXT;
ALTER TABLE approvals ADD COLUMN signer TEXT;
CREATE TABLE IF NOT EXISTS grant_uses (
    approval_id TEXT NOT NULL,
    action {int} NOT NULL,
    tool TEXT NOT NULL,
    call_key TEXT NOT NULL,
    used_at {real} NOT NULL,
    PRIMARY KEY (approval_id, action)
);
CREATE TABLE IF NOT EXISTS operator_guard (
    name TEXT PRIMARY KEY,
    failures {int} NOT NULL DEFAULT 0,
    last_failure {real},
    locked_until {real},
    notified {int} NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    seq {int} PRIMARY KEY,
    hash TEXT NOT NULL,
    ts {real} NOT NULL,
    signer TEXT NOT NULL,
    signature TEXT NOT NULL
)
"""

MIGRATIONS = (
    Migration(1, "audit, approvals, inbox, history queue, effects, runs", _V1,
              sqlite_columns={"audit": {"prev": "TEXT NOT NULL DEFAULT ''",
                                        "hash": "TEXT NOT NULL DEFAULT ''"},
                              "approvals": {"risk": "TEXT NOT NULL DEFAULT 'high'",
                                            "escalated_at": "REAL"}}),
    Migration(2, "workers: run ownership, single-flight index, site slots", _V2),
    Migration(3, "signed decisions, single-use grants, PIN lock-outs, audit checkpoints",
              _V3),
)


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
    status: ApprovalStatus
    decided_by: str | None = None
    comment: str | None = None
    requested_at: float
    decided_at: float | None = None
    resumed_at: float | None = None
    risk: RiskTier = "high"
    escalated_at: float | None = None
    decision_doc: str | None = Field(None, description="The signed decision document.")
    signature: str | None = None
    signer: str | None = Field(None, description="Key id of the decision's signer.")

    @property
    def actions(self) -> list[dict[str, Any]]:
        """The proposed actions (tool and arguments) a decision covers."""
        acts = self.request.get("actions") or []
        return [a for a in acts if isinstance(a, dict)]


class ControlStore(AuditLog):
    """``async with ControlStore(target) as control:`` audit, approvals, inbox, effects and
    the run ledger's tables, in a SQLite file or a PostgreSQL database."""

    COMPONENT = "control"
    MIGRATIONS = MIGRATIONS

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
        risk: RiskTier = "high",
    ) -> ApprovalRecord:
        """Record a pending approval (idempotent per ``approval_id``) and return it; the
        request and its audit record are one unit of work."""
        aid = approval_id or str(uuid.uuid4())
        async with self.unit() as db:
            inserted = await db.execute(
                "INSERT INTO approvals(id, thread_id, workflow, asset, title, request, tools,"
                " requested_at, risk) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (aid, thread_id, workflow, asset, title, json.dumps(request, default=str),
                 json.dumps(tools), time.time(), risk),
            )
            if inserted:
                await _append(db, "approval.requested", actor=workflow, thread_id=thread_id,
                              detail={"approval_id": aid, "title": title, "tools": tools,
                                      "risk": risk, "actions": request.get("actions")})
            row = await db.one("SELECT * FROM approvals WHERE id = ?", (aid,))
        assert row is not None
        return _approval(row)

    async def approval(self, approval_id: str) -> ApprovalRecord | None:
        async with self.read() as db:
            row = await db.one("SELECT * FROM approvals WHERE id = ?", (approval_id,))
        return _approval(row) if row else None

    async def approvals(
        self, *, status: str | None = "pending", thread_id: str | None = None
    ) -> list[ApprovalRecord]:
        sql, args = select("approvals", "requested_at", status=status, thread_id=thread_id)
        async with self.read() as db:
            return [_approval(r) for r in await db.all(sql, args)]

    async def decide(
        self, approval_id: str, decision: Decision, *, by: str, comment: str | None = None,
        signer: SigningKey | None = None,
    ) -> ApprovalRecord:
        """Record a human decision; only a pending approval can be decided (first wins).

        ``signer``'s key signs the decision document (see :mod:`aiotflow.tools.decisions`)
        over the row as it is now; an unsigned decision is recorded, audited, and refused
        as a forgery wherever it would count. The decision and its audit record are one
        unit of work."""
        if decision not in ("approved", "rejected"):
            raise ValueError(f"decision must be approved or rejected, not {decision!r}")
        async with self.unit() as db:
            row = await db.one("SELECT * FROM approvals WHERE id = ?" + db.for_update,
                               (approval_id,))
            if row is None:
                raise KeyError(f"no approval {approval_id!r}")
            if row["status"] != "pending":
                return _approval(row)
            now = time.time()
            doc = sig = kid = None
            if signer is not None:
                doc, sig, kid = sign_decision(decision_document(
                    _approval(row), decision, by=by, at=now, comment=comment), signer)
            await db.execute(
                "UPDATE approvals SET status = ?, decided_by = ?, comment = ?, decided_at = ?,"
                " decision_doc = ?, signature = ?, signer = ? WHERE id = ? AND status = 'pending'",
                (decision, by, comment, now, doc, sig, kid, approval_id))
            await _append(db, f"approval.{decision}", actor=by, thread_id=row["thread_id"],
                          detail={"approval_id": approval_id, "comment": comment,
                                  "signer": kid})
            row = await db.one("SELECT * FROM approvals WHERE id = ?", (approval_id,))
        assert row is not None
        return _approval(row)

    async def refuse_forgery(self, rec: ApprovalRecord, reason: str, *, actor: str) -> bool:
        """A decision that did not verify: audit it as a forgery and put the approval back
        to pending (so that the people who may decide still can), unless the row changed
        meanwhile. Returns whether it was put back."""
        async with self.unit() as db:
            undone = await db.execute(
                "UPDATE approvals SET status = 'pending', decided_by = NULL, comment = NULL,"
                " decided_at = NULL, decision_doc = NULL, signature = NULL, signer = NULL,"
                " resumed_at = NULL WHERE id = ? AND status = ?"
                " AND COALESCE(decided_by, '') = ? AND COALESCE(signature, '') = ?",
                (rec.id, rec.status, rec.decided_by or "", rec.signature or ""))
            await _append(db, "approval.forgery", actor=actor, thread_id=rec.thread_id,
                          detail={"approval_id": rec.id, "claimed": rec.status,
                                  "claimed_by": rec.decided_by, "reason": reason,
                                  "reset": bool(undone)})
        return bool(undone)

    async def redact_personal(self, before: float) -> int:
        """Retention: the comments of decisions taken before ``before`` whose runs were
        resumed are removed from the approvals (with the signed document that repeats
        them: its purpose, verifying the action, is over; the signer's key id stays).
        The audit keeps its records: they are the accountability the retention is
        weighed against (``retention.redacted`` says what was removed, and when)."""
        async with self.unit() as db:
            n = await db.execute(
                "UPDATE approvals SET comment = NULL, decision_doc = NULL, signature = NULL"
                " WHERE decided_at < ? AND resumed_at IS NOT NULL AND (comment IS NOT NULL"
                " OR decision_doc IS NOT NULL)", (before,))
        return n

    async def use_grant(self, approval_id: str, action: int, *, tool: str,
                        call_key: str) -> bool:
        """Spend proposed action ``action`` of an approval on the call ``call_key``:
        ``True`` the first time and for the same call again (a retry or a resume),
        ``False`` once another call spent it."""
        async with self.unit() as db:
            await db.execute(
                "INSERT INTO grant_uses(approval_id, action, tool, call_key, used_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (approval_id, action, tool, call_key, time.time()))
            row = await db.one("SELECT call_key FROM grant_uses WHERE approval_id = ? AND"
                               " action = ?", (approval_id, action))
        return row is not None and row[0] == call_key

    # ------------------------------------------------------------------ operators
    async def operator_guard(self, name: str) -> tuple[int, float | None, float | None]:
        """``(wrong PINs in a row, locked until, last wrong PIN)`` of operator ``name``."""
        async with self.read() as db:
            row = await db.one("SELECT failures, locked_until, last_failure FROM"
                               " operator_guard WHERE name = ?", (name,))
        return (0, None, None) if row is None else (int(row[0]), row[1], row[2])

    async def pin_failed(self, name: str, *, attempts: int, lockout_s: float,
                         reason: str) -> tuple[int, float | None]:
        """Count a wrong PIN of ``name`` (audited); the ``attempts``-th in a row locks them
        out for ``lockout_s`` (audited as ``operator.locked``, announced by the engine).
        Returns ``(failures, locked until)``."""
        now = time.time()
        async with self.unit() as db:
            await db.execute(
                "INSERT INTO operator_guard(name, failures, last_failure) VALUES (?, 0, ?)"
                " ON CONFLICT DO NOTHING", (name, now))
            row = await db.one("SELECT failures FROM operator_guard WHERE name = ?"
                               + db.for_update, (name,))
            failures = (int(row[0]) if row else 0) + 1
            locked = now + lockout_s if failures >= attempts else None
            if locked:
                await db.execute(
                    "UPDATE operator_guard SET failures = 0, last_failure = ?,"
                    " locked_until = ?, notified = 0 WHERE name = ?", (now, locked, name))
            else:
                await db.execute("UPDATE operator_guard SET failures = ?, last_failure = ?"
                                 " WHERE name = ?", (failures, now, name))
            await _append(db, "console.refused", actor=name, thread_id=None,
                          detail={"reason": reason, "failures": failures})
            if locked:
                await _append(db, "operator.locked", actor=name, thread_id=None,
                              detail={"failures": failures, "until": locked,
                                      "lockout_s": lockout_s})
        return failures, locked

    async def pin_ok(self, name: str) -> None:
        """A right PIN: the count of wrong ones starts again."""
        async with self.unit() as db:
            await db.execute("UPDATE operator_guard SET failures = 0 WHERE name = ?", (name,))

    async def lockouts_to_announce(self) -> list[tuple[str, float]]:
        """Lock-outs nobody was told of yet, each handed out once: ``(name, until)``."""
        async with self.unit() as db:
            rows = await db.all("SELECT name, locked_until FROM operator_guard"
                                " WHERE notified = 0" + db.for_update)
            for r in rows:
                await db.execute("UPDATE operator_guard SET notified = 1 WHERE name = ?",
                                 (r[0],))
        return [(r[0], float(r[1] or 0)) for r in rows]

    async def decided_not_resumed(self) -> list[ApprovalRecord]:
        """Decisions whose workflow has not been resumed yet."""
        async with self.read() as db:
            rows = await db.all(
                "SELECT * FROM approvals WHERE status != 'pending' AND resumed_at IS NULL"
                " ORDER BY decided_at")
        return [_approval(r) for r in rows]

    async def mark_resumed(self, approval_id: str) -> None:
        async with self.unit() as db:
            await db.execute("UPDATE approvals SET resumed_at = ? WHERE id = ?",
                             (time.time(), approval_id))

    async def sweep(self, policy: Policy, now: float | None = None
                    ) -> list[tuple[ApprovalRecord, Literal["escalated", "expired"]]]:
        """Escalate and expire pending approvals by the policy; returns what changed.
        Each change and its audit record are one unit of work."""
        now = time.time() if now is None else now
        changed: list[tuple[ApprovalRecord, Literal["escalated", "expired"]]] = []
        for rec in await self.approvals(status="pending"):
            rule = policy.rule(rec.risk)
            age = now - rec.requested_at
            change: Literal["escalated", "expired"]
            if rule.expires_s is not None and age >= rule.expires_s:
                change, detail = "expired", {}
                sql = ("UPDATE approvals SET status = 'expired', decided_by = 'policy',"
                       " decided_at = ? WHERE id = ? AND status = 'pending'")
            elif (rule.escalate_after_s is not None and rec.escalated_at is None
                  and age >= rule.escalate_after_s):
                change, detail = "escalated", {"to": rule.escalate_to}
                sql = ("UPDATE approvals SET escalated_at = ? WHERE id = ? AND status ="
                       " 'pending' AND escalated_at IS NULL")
            else:
                continue
            async with self.unit() as db:
                done = await db.execute(sql, (now, rec.id))
                if done:  # not already changed by another process's sweep
                    await _append(db, f"approval.{change}", actor="policy",
                                  thread_id=rec.thread_id,
                                  detail={"approval_id": rec.id, "after_s": round(age),
                                          "risk": rec.risk, **detail})
            if done:
                changed.append((rec, change))
        return changed

    # ------------------------------------------------------------------ inbox
    async def receive(self, alert_id: str, *, topic: str, payload: str,
                      owner: str | None = None) -> bool:
        """Record an arriving alert durably, before it is acknowledged to its edge, as
        ``owner``'s to process (another worker takes it over if that one dies first);
        ``False`` if it was recorded before (a repeated delivery)."""
        async with self.unit() as db:
            new = await db.execute(
                "INSERT INTO inbox(alert_id, topic, payload, received, owner)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (alert_id, topic, payload, time.time(), owner))
        return bool(new)

    async def processed(self, alert_id: str) -> None:
        """The alert's workflows were started (or it matched none): nothing to recover."""
        async with self.unit() as db:
            await db.execute("UPDATE inbox SET processed = ? WHERE alert_id = ?",
                             (time.time(), alert_id))

    async def unprocessed(self) -> list[tuple[str, str]]:
        """``(alert id, payload)`` of recorded alerts not processed yet, oldest first."""
        async with self.read() as db:
            rows = await db.all(
                "SELECT alert_id, payload FROM inbox WHERE processed IS NULL ORDER BY received")
        return [(r[0], r[1]) for r in rows]

    async def is_processed(self, alert_id: str) -> bool:
        async with self.read() as db:
            row = await db.one("SELECT processed FROM inbox WHERE alert_id = ?", (alert_id,))
        return row is not None and row[0] is not None

    # ------------------------------------------------------------------ history queue
    async def enqueue_history(self, kind: str, payload: dict[str, Any], *, actor: str) -> int:
        """Queue a write to the incident history for the process that holds it (the
        embedded store has one writer); the engine applies the queue as it runs."""
        async with self.unit() as db:
            row = await db.one(
                "INSERT INTO history_queue(kind, payload, created) VALUES (?, ?, ?)"
                " RETURNING seq", (kind, json.dumps(payload, default=str), time.time()))
            assert row is not None
            seq = int(row[0])
            await _append(db, "history.queued", actor=actor, thread_id=None,
                          detail={"kind": kind, "seq": seq})
        return seq

    async def pending_history(self) -> list[tuple[int, str, dict[str, Any]]]:
        async with self.read() as db:
            rows = await db.all("SELECT seq, kind, payload FROM history_queue"
                                             " WHERE applied IS NULL ORDER BY seq")
        return [(r[0], r[1], json.loads(r[2])) for r in rows]

    async def history_applied(self, seq: int) -> None:
        async with self.unit() as db:
            await db.execute("UPDATE history_queue SET applied = ? WHERE seq = ?",
                             (time.time(), seq))

    # ------------------------------------------------------------------ effects
    async def effect(self, key: str) -> dict[str, Any] | None:
        async with self.read() as db:
            row = await db.one("SELECT output FROM effects WHERE key = ?", (key,))
        return json.loads(row["output"]) if row else None

    async def record_effect(
        self, key: str, *, tool: str, thread_id: str | None, input: dict[str, Any],
        output: dict[str, Any], audit: AuditEntry | None = None,
    ) -> None:
        """Record a tool's effect under its key; with ``audit`` (kind, actor, detail) its
        audit record is appended in the same unit of work."""
        async with self.unit() as db:
            if audit is not None:
                await append_audit(db, audit, thread_id=thread_id)
            await db.execute(
                "INSERT INTO effects(key, tool, thread_id, input, output, ts)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (key, tool, thread_id, json.dumps(input, default=str),
                 json.dumps(output, default=str), time.time()),
            )


def _approval(row: Any) -> ApprovalRecord:
    return ApprovalRecord(
        id=row["id"], thread_id=row["thread_id"], workflow=row["workflow"], asset=row["asset"],
        title=row["title"], request=json.loads(row["request"]), tools=json.loads(row["tools"]),
        status=row["status"], decided_by=row["decided_by"], comment=row["comment"],
        requested_at=row["requested_at"], decided_at=row["decided_at"],
        resumed_at=row["resumed_at"], risk=row["risk"], escalated_at=row["escalated_at"],
        decision_doc=row["decision_doc"], signature=row["signature"], signer=row["signer"],
    )
