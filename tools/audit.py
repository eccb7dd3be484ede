"""The audit trail: hash-chained records, the engine's signed checkpoints of the chain.

Each record carries the hash of the one before and a hash over its own content; the head
of the chain is kept beside it. The engine signs checkpoints of the head with its key
(kept outside the database) and anchors the last one outside the database, so that an
edited record, a chain re-hashed after an edit, a forged checkpoint and a cut-off tail are
all found by :meth:`AuditLog.verify_audit`. Appends happen inside the unit of work of the
change they record (:func:`append_audit`).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from aiotflow.keys import SigningKey, verify_signature

from .database import Store, Tx, select

__all__ = ["AuditCheckpoint", "AuditEntry", "AuditLog", "AuditRecord", "ChainReport",
           "append_audit", "audit_hash"]


class AuditRecord(BaseModel):
    """One audited step: sensor evidence, reasoning, approval or action."""

    model_config = ConfigDict(frozen=True)

    seq: int
    ts: float
    thread_id: str | None
    kind: str
    actor: str
    detail: dict[str, Any]
    prev: str = Field("", description="Hash of the record before (the chain).")
    hash: str = Field("", description="sha256 over prev and this record's content.")


def audit_hash(prev: str, seq: int, ts: float, thread_id: str | None, kind: str, actor: str,
               detail_json: str) -> str:
    """The chain hash of one audit record: any edit of a field changes it."""
    body = json.dumps([prev, seq, repr(ts), thread_id, kind, actor, detail_json],
                      separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


class ChainReport(BaseModel):
    """What ``verify_audit`` found."""

    model_config = ConfigDict(frozen=True)

    ok: bool
    records: int
    head: str
    problems: list[str]
    checkpoints: int = Field(0, description="Signed checkpoints verified.")
    unsigned_tail: int = Field(0, description="Records after the last checkpoint: covered "
                                              "by the hash chain only, until the next one.")


class AuditCheckpoint(BaseModel):
    """The engine's signature over the audit chain's head at record ``seq``."""

    model_config = ConfigDict(frozen=True)

    seq: int
    hash: str
    ts: float
    signer: str
    signature: str

    def signed_bytes(self) -> bytes:
        return f"aiotflow-audit-v1\n{self.seq}\n{self.hash}\n{self.ts!r}".encode()


def _stamp(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


class AuditLog(Store):
    """The audit methods of the control store (its ``audit``, ``audit_head`` and
    ``audit_checkpoints`` tables)."""

    async def audit(
        self, kind: str, /, *, actor: str, thread_id: str | None = None, **detail: Any
    ) -> None:
        """Append an audit record (``kind`` like ``alert.received``, ``tool.ok``).

        Records are hash-chained: each carries the hash of the one before and a hash over
        its own content, and the chain's head is kept beside it, so an edited, deleted or
        inserted record is found by :meth:`verify_audit`. The head is read and the record
        and new head written in one unit of work, which holds the database's write lock,
        so appends from several tasks and processes line up one after the other.
        """
        async with self.unit() as db:
            await _append(db, kind, actor=actor, thread_id=thread_id, detail=detail)

    async def checkpoint_audit(self, key: SigningKey, *, every: int = 1) -> AuditCheckpoint | None:
        """Sign the chain's head with ``key`` (the engine's, kept outside the database) if
        it moved ``every`` records or more since the last checkpoint; returns the new
        checkpoint (``None``: nothing new). A re-hashed chain no longer matches a signed
        checkpoint, and a cut-off tail no longer reaches one (or the anchor outside)."""
        async with self.unit() as db:
            head = await db.one("SELECT seq, hash FROM audit_head WHERE id = 1" + db.for_update)
            last = await db.one("SELECT MAX(seq) FROM audit_checkpoints")
            seq, h = (int(head[0]), str(head[1])) if head else (0, "")
            if seq == 0 or seq - int((last[0] if last else None) or 0) < every:
                return None
            cp = AuditCheckpoint(seq=seq, hash=h, ts=time.time(), signer=key.key_id,
                                 signature="")
            cp = cp.model_copy(update={"signature": key.sign(cp.signed_bytes())})
            await db.execute(
                "INSERT INTO audit_checkpoints(seq, hash, ts, signer, signature)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (cp.seq, cp.hash, cp.ts, cp.signer, cp.signature))
        return cp

    async def verify_audit(self, *, public_key: str | None = None,
                           anchor: AuditCheckpoint | None = None) -> ChainReport:
        """Walk the audit chain: every hash recomputed, every link and the head checked;
        with the engine's ``public_key``, every signed checkpoint verified and matched
        against the chain (a re-hashed chain, a forged checkpoint); with an ``anchor`` (the
        last checkpoint as kept outside the database), a tail cut off with its
        checkpoints is found too."""
        problems: list[str] = []
        prev, last_seq, n = "", 0, 0
        hashes: dict[int, str] = {}
        async with self.read() as db:
            for r in await db.all("SELECT * FROM audit ORDER BY seq"):
                n += 1
                seq = r["seq"]
                if seq != last_seq + 1:
                    problems.append(f"records {last_seq + 1}..{seq - 1} are missing")
                if r["prev"] != prev:
                    problems.append(f"record {seq}: does not follow record {last_seq} "
                                    "(link broken: a record before it was changed or "
                                    "removed)")
                want = audit_hash(r["prev"], seq, r["ts"], r["thread_id"], r["kind"],
                                  r["actor"], r["detail"])
                if r["hash"] != want:
                    problems.append(f"record {seq} ({r['kind']}): content does not match "
                                    "its hash (edited)")
                prev, last_seq = r["hash"], seq
                hashes[seq] = r["hash"]
            head = await db.one("SELECT seq, hash FROM audit_head WHERE id = 1")
            cps = [AuditCheckpoint(seq=c["seq"], hash=c["hash"], ts=c["ts"], signer=c["signer"],
                                   signature=c["signature"])
                   for c in await db.all("SELECT * FROM audit_checkpoints ORDER BY seq")]
        if head is not None and head["seq"] == 0 and not head["hash"]:
            head = None  # the empty chain's head, made by the schema
        if head is None and n:
            problems.append("the chain head is missing")
        elif head is not None and (head["seq"] != last_seq or head["hash"] != prev):
            problems.append(f"the chain ends at record {last_seq}, its head says "
                            f"{head['seq']}: records were removed from the end")
        signed = 0
        if public_key is not None:
            for cp in [*cps, *([anchor] if anchor is not None else [])]:
                where = "the anchor" if cp is anchor else f"checkpoint {cp.seq}"
                if not verify_signature(public_key, cp.signed_bytes(), cp.signature):
                    problems.append(f"{where}: its signature is not the engine's (forged "
                                    "checkpoint)")
                    continue
                signed += cp is not anchor
                if cp.seq > last_seq:
                    problems.append(f"{where} was signed at record {cp.seq}, the chain ends "
                                    f"at {last_seq}: records {last_seq + 1}..{cp.seq} were "
                                    "cut off (truncated)")
                elif hashes.get(cp.seq) != cp.hash:
                    problems.append(f"{where}: record {cp.seq} is not the record signed "
                                    f"{_stamp(cp.ts)}: records up to {cp.seq} were rewritten "
                                    "and the chain re-hashed")
        return ChainReport(ok=not problems, records=n, head=prev, problems=problems,
                           checkpoints=signed,
                           unsigned_tail=last_seq - max((c.seq for c in cps), default=0))

    async def audit_records(
        self, *, thread_id: str | None = None, kind: str | None = None
    ) -> list[AuditRecord]:
        sql, args = select("audit", "seq", thread_id=thread_id, kind=kind)
        async with self.read() as db:
            return [_audit(r) for r in await db.all(sql, args)]

    async def alert_story(self, alert_id: str) -> list[AuditRecord]:
        """Every audit record about one alert, in order: its arrival, the runs it started
        (thread ids end with ``/{alert id}``) and everything they did."""
        async with self.read() as db:
            rows = await db.all(
                "SELECT * FROM audit WHERE thread_id LIKE ? ESCAPE '\\' OR "
                + ("CAST(detail AS jsonb) ->> 'alert_id'" if db.dialect == "postgres"
                   else "json_extract(detail, '$.alert_id')") + " = ? ORDER BY seq",
                ("%/" + alert_id.replace("\\", "\\\\").replace("%", "\\%")
                 .replace("_", "\\_"), alert_id))
        return [_audit(r) for r in rows]


#: an audit record to append inside another unit of work: (kind, actor, detail)
AuditEntry = tuple[str, str, dict[str, Any]]


async def append_audit(db: Tx, entry: AuditEntry, *, thread_id: str | None) -> None:
    """Append ``entry`` to the audit chain inside the caller's unit of work (one
    transaction with the change it records)."""
    kind, actor, detail = entry
    await _append(db, kind, actor=actor, thread_id=thread_id, detail=detail)


async def _append(db: Tx, kind: str, *, actor: str, thread_id: str | None,
                  detail: dict[str, Any]) -> None:
    """Append one audit record on top of the chain's head, inside the caller's unit."""
    detail_json = json.dumps(detail, default=str, sort_keys=True)
    # the head row stays locked until the unit ends (SQLite: the unit holds the write
    # lock), so appends from many tasks and workers line up one after the other
    head = await db.one("SELECT seq, hash FROM audit_head WHERE id = 1" + db.for_update)
    prev = head["hash"] if head else ""
    seq = (head["seq"] if head else 0) + 1
    ts = time.time()
    h = audit_hash(prev, seq, ts, thread_id, kind, actor, detail_json)
    await db.execute(
        "INSERT INTO audit(seq, ts, thread_id, kind, actor, detail, prev, hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (seq, ts, thread_id, kind, actor, detail_json, prev, h))
    await db.execute(
        "INSERT INTO audit_head(id, seq, hash) VALUES (1, ?, ?) ON CONFLICT(id)"
        " DO UPDATE SET seq = excluded.seq, hash = excluded.hash", (seq, h))


def _audit(r: Any) -> AuditRecord:
    return AuditRecord(seq=r["seq"], ts=r["ts"], thread_id=r["thread_id"], kind=r["kind"],
                       actor=r["actor"], detail=json.loads(r["detail"]), prev=r["prev"],
                       hash=r["hash"])
