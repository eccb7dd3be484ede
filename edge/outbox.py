"""A durable, bounded SQLite outbox: what must reach the uplink is written here first.

Messages are keyed (an alert id, say): putting the same key twice stores it once. A
message leaves the outbox only when it was delivered: for most, when the broker
acknowledged it (QoS 1); for one put with ``await_ack`` (an alert), only when its consumer
confirmed it (:meth:`Outbox.confirm`, the engine's acknowledgement after its commit).
Until then it is sent again when due, with exponential backoff. So delivery is at least
once across broker outages, engine crashes and restarts of the edge process (``kill -9``
included: a committed row is in the WAL file); consumers deduplicate by key.

When full (``max_messages``, or ``max_bytes`` of payload), the outbox keeps what matters
most. Every message has a
priority (dead letter 0 < warning/drift 1 < major 2 < critical 3). A new message evicts
the oldest message of the lowest priority present, provided that priority is not higher
than its own; otherwise the new message is the one dropped. Evictions and drops are
counted (``evicted``, ``dropped``) and logged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import aiosqlite
import structlog

from aiotflow.files import private_db

__all__ = ["PRIORITY", "Outbox", "OutboxMessage"]

log = structlog.get_logger("aiotflow.outbox")

#: priority of what the edge sends: severity for alerts, lowest for dead letters
PRIORITY = {"deadletter": 0, "warning": 1, "model_drift": 1, "major": 2, "critical": 3}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    priority INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL,
    await_ack INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    due REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_victim ON outbox(priority, seq);
"""
#: columns added after the first release (an older outbox file gets them at open)
_COLUMNS = {"await_ack": "INTEGER NOT NULL DEFAULT 0",
            "attempts": "INTEGER NOT NULL DEFAULT 0", "due": "REAL NOT NULL DEFAULT 0"}


@dataclass(frozen=True)
class OutboxMessage:
    seq: int
    key: str
    topic: str
    payload: bytes
    await_ack: bool = False
    attempts: int = 0


class Outbox:
    """Async context manager over one SQLite outbox file (WAL, one connection)."""

    def __init__(self, path: str | Path, *, max_messages: int = 100_000,
                 max_bytes: int = 64 * 2**20) -> None:
        if max_messages < 1 or max_bytes < 1:
            raise ValueError("max_messages and max_bytes must be at least 1")
        self.path = Path(path)
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._db: aiosqlite.Connection | None = None
        self._depth = 0
        self._bytes = 0  # payload bytes stored (an upper bound while _recount is set)
        self._recount = True
        self.evicted = 0
        self.dropped = 0

    async def __aenter__(self) -> Outbox:
        if self._db is not None:
            raise RuntimeError("Outbox is not re-entrant")
        private_db(self.path)  # 0600, its journals too, whatever the umask
        self._db = await aiosqlite.connect(self.path)
        await self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a commit survives the process dying (kill -9); only an OS crash or power
        # loss may lose the newest commits.
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.executescript(_SCHEMA)
        async with self._db.execute("PRAGMA table_info(outbox)") as cur:
            have = {r[1] for r in await cur.fetchall()}
        for name, decl in _COLUMNS.items():
            if name not in have:
                await self._db.execute(f"ALTER TABLE outbox ADD COLUMN {name} {decl}")
        await self._db.commit()
        self._depth = await self._count()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("Outbox is not open")
        return self._db

    async def put_many(self, messages: list[tuple[str, str, bytes, int]], *,
                       await_ack: bool = False) -> int:
        r"""Store ``(key, topic, payload, priority)`` messages in one transaction, applying
        the full-outbox policy; returns how many new rows were stored. With ``await_ack``
        they stay until :meth:`confirm`\ ed, not just until the broker has them."""
        if not messages:
            return 0
        now = time.time()
        db = self.db
        stored = 0
        if self._recount:  # messages left since the last count: count again, once
            self._recount = False
            async with db.execute("SELECT COALESCE(SUM(length(payload)), 0) FROM outbox") as c:
                row = await c.fetchone()
            self._bytes = int(row[0]) if row else 0
        for key, topic, payload, priority in messages:
            if len(payload) > self.max_bytes:
                self.dropped += 1
                log.warning("outbox.too_large_dropped", key=key, bytes=len(payload))
                continue
            room = True
            while self._depth >= self.max_messages or (
                    self._bytes + len(payload) > self.max_bytes):
                async with db.execute(
                    "SELECT seq, priority, length(payload) FROM outbox"
                    " ORDER BY priority, seq LIMIT 1") as cur:
                    victim = await cur.fetchone()
                if victim is None or victim[1] > priority:
                    room = False
                    break
                await db.execute("DELETE FROM outbox WHERE seq = ?", (victim[0],))
                self._depth -= 1
                self._bytes -= int(victim[2])
                self.evicted += 1
                log.warning("outbox.full_evicted", seq=victim[0], priority=victim[1])
            if not room:
                self.dropped += 1
                log.warning("outbox.full_dropped_new", key=key, priority=priority)
                continue
            cur = await db.execute(
                "INSERT OR IGNORE INTO outbox(key, topic, payload, priority, created, await_ack)"
                " VALUES (?, ?, ?, ?, ?, ?)", (key, topic, payload, priority, now, await_ack))
            if cur.rowcount:
                stored += 1
                self._depth += 1
                self._bytes += len(payload)
        await db.commit()
        return stored

    async def peek(self, limit: int = 100, *, now: float | None = None) -> list[OutboxMessage]:
        """The oldest ``limit`` messages due to be sent at ``now`` (default: the current
        time; never sent, or sent and not confirmed when their retry came due), in the
        order they were stored."""
        async with self.db.execute(
            "SELECT seq, key, topic, payload, await_ack, attempts FROM outbox WHERE due <= ?"
            " ORDER BY seq LIMIT ?", (time.time() if now is None else now, limit),
        ) as cur:
            return [OutboxMessage(r[0], r[1], r[2], bytes(r[3]), bool(r[4]), r[5])
                    for r in await cur.fetchall()]

    async def ack(self, seqs: list[int]) -> None:
        """Delete delivered messages."""
        if seqs:
            cur = await self.db.executemany("DELETE FROM outbox WHERE seq = ?",
                                            [(s,) for s in seqs])
            await self.db.commit()
            self._depth = max(0, self._depth - max(cur.rowcount, 0))
            self._recount = True

    async def sent(self, retries: list[tuple[int, float]]) -> None:
        """Messages awaiting confirmation went out: ``(seq, when to send again)``."""
        if retries:
            await self.db.executemany(
                "UPDATE outbox SET attempts = attempts + 1, due = ? WHERE seq = ?",
                [(due, seq) for seq, due in retries])
            await self.db.commit()

    async def confirm(self, keys: list[str]) -> int:
        """Delete the messages their consumer confirmed (by key); returns how many were
        here (a confirmation of another edge's message, or a repeated one, is ignored)."""
        if not keys:
            return 0
        cur = await self.db.executemany("DELETE FROM outbox WHERE key = ? AND await_ack = 1",
                                        [(k,) for k in keys])
        await self.db.commit()
        n = max(cur.rowcount, 0)
        self._depth = max(0, self._depth - n)
        self._recount = True
        return n

    async def waiting(self) -> tuple[float | None, int]:
        """``(when the next message is due, or None when the outbox is empty; how many
        were sent and wait for their consumer's confirmation)``, in one query."""
        async with self.db.execute(
                "SELECT min(due), count(*) FILTER (WHERE await_ack = 1 AND attempts > 0)"
                " FROM outbox") as cur:
            row = await cur.fetchone()
        if row is None:
            return None, 0
        return (None if row[0] is None else float(row[0])), int(row[1] or 0)

    @property
    def size(self) -> int:
        """Messages waiting, as counted by this connection (no query)."""
        return self._depth

    async def _count(self) -> int:
        async with self.db.execute("SELECT count(*) FROM outbox") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def depth(self) -> int:
        """Messages waiting (exact, from the database)."""
        self._depth = await self._count()
        self._recount = True
        return self._depth
