"""One SQLite database shared by several processes: the base of the tools' stores."""

from __future__ import annotations

from collections.abc import Mapping
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
        if self._db is None:
            raise RuntimeError(f"{type(self).__name__} is not open")
        return self._db
