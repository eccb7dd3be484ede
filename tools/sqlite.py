"""One SQLite database shared by several processes: the base of the tools' stores.

Every access goes through a **unit of work**: :meth:`SqliteStore.unit` is one transaction
(``BEGIN IMMEDIATE``: the database's write lock, across processes, from its first
statement), committed when the block ends and rolled back if it raises;
:meth:`SqliteStore.read` is a read. Both hold the store's one writer lock, so no other
task of the process runs a statement on the shared connection meanwhile: a task's
rollback can never discard another task's write, another task's commit can never land
half of a unit, and no read sees a unit that is later rolled back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

import aiosqlite

__all__ = ["SqliteStore", "select"]


def select(table: str, order: str, **equal: object) -> tuple[str, list[object]]:
    """``SELECT * FROM table WHERE col = ? AND ... ORDER BY order`` and its parameters,
    for the ``equal`` columns whose value is not ``None``."""
    conds = {k: v for k, v in equal.items() if v is not None}
    where = " WHERE " + " AND ".join(f"{k} = ?" for k in conds) if conds else ""
    return f"SELECT * FROM {table}{where} ORDER BY {order}", list(conds.values())


class SqliteStore:
    """``async with Store(path) as store:`` one aiosqlite connection in WAL mode.

    Subclasses set ``SCHEMA`` (run at open, so it must be idempotent) and ``COLUMNS``
    (columns added later; an older database gets them at open). Writers in other
    processes are waited for up to 30 s (busy timeout) instead of failing.
    """

    SCHEMA = ""
    COLUMNS: ClassVar[Mapping[str, Mapping[str, str]]] = {}

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        if self._db is not None:
            raise RuntimeError(f"{type(self).__name__} is not re-entrant")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path, timeout=30)
        self._db.row_factory = aiosqlite.Row
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA busy_timeout=30000")
        await self._db.executescript(self.SCHEMA)
        for table, columns in self.COLUMNS.items():
            async with self._db.execute(f"PRAGMA table_info({table})") as cur:
                have = {r[1] for r in await cur.fetchall()}
            for name, decl in columns.items():
                if name not in have:
                    await self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
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
        """The connection itself, for a schema set-up at open; everything else uses
        :meth:`unit` or :meth:`read`."""
        if self._db is None:
            raise RuntimeError(f"{type(self).__name__} is not open")
        return self._db

    @contextlib.asynccontextmanager
    async def unit(self) -> AsyncIterator[aiosqlite.Connection]:
        """``async with store.unit() as db:`` one transaction of its own: committed at the
        end of the block, rolled back if it raises (or is cancelled)."""
        async with self._lock:
            db = self.db
            if db.in_transaction:  # left open by a unit whose rollback was interrupted
                await db.rollback()
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                await asyncio.shield(db.rollback())
                raise
            await db.commit()

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[aiosqlite.Connection]:
        """``async with store.read() as db:`` statements that only read, never inside
        another task's unit (they would see its uncommitted rows)."""
        async with self._lock:
            yield self.db
