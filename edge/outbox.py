"""A durable SQLite outbox: what must reach the uplink is written here first.

Messages are keyed (an alert id, say): putting the same key twice stores it once. A
message leaves the outbox only after the broker acknowledged it (QoS 1), so delivery is
at least once across broker outages and restarts; consumers deduplicate by key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import aiosqlite

__all__ = ["Outbox", "OutboxMessage"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL
);
"""


@dataclass(frozen=True)
class OutboxMessage:
    seq: int
    key: str
    topic: str
    payload: bytes


class Outbox:
    """Async context manager over one SQLite outbox file (WAL, one connection)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None

    async def __aenter__(self) -> Outbox:
        if self._db is not None:
            raise RuntimeError("Outbox is not re-entrant")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path)
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.executescript(_SCHEMA)
        await self._db.commit()
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

    async def put_many(self, messages: list[tuple[str, str, bytes]]) -> int:
        """Store ``(key, topic, payload)`` messages in one transaction; returns new rows."""
        if not messages:
            return 0
        now = time.time()
        before = self.db.total_changes
        await self.db.executemany(
            "INSERT OR IGNORE INTO outbox(key, topic, payload, created) VALUES (?, ?, ?, ?)",
            [(k, t, p, now) for k, t, p in messages],
        )
        await self.db.commit()
        return self.db.total_changes - before

    async def peek(self, limit: int = 100) -> list[OutboxMessage]:
        """The oldest ``limit`` messages, still stored."""
        async with self.db.execute(
            "SELECT seq, key, topic, payload FROM outbox ORDER BY seq LIMIT ?", (limit,)
        ) as cur:
            return [OutboxMessage(r[0], r[1], r[2], bytes(r[3])) for r in await cur.fetchall()]

    async def ack(self, seqs: list[int]) -> None:
        """Delete delivered messages."""
        if seqs:
            await self.db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])
            await self.db.commit()

    async def depth(self) -> int:
        async with self.db.execute("SELECT count(*) FROM outbox") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0
