"""The engine's state database as a whole: its schema versions and their upgrade.

``aiotflow db upgrade`` and ``aiotflow db status`` are these two functions; a deployment
script can call them too (before it starts the workers).
"""

from __future__ import annotations

from typing import Any

from aiotflow.tools.control import MIGRATIONS as CONTROL
from aiotflow.tools.database import Migration, open_database, schema_version, upgrade
from aiotflow.tools.ops import MIGRATIONS as OPS

from .settings import EngineSettings

__all__ = ["state_versions", "upgrade_state"]


def _components(s: EngineSettings) -> list[tuple[str, Any, tuple[Migration, ...]]]:
    return [("control", s.control_target, CONTROL), ("ops", s.ops_target, OPS)]


async def upgrade_state(s: EngineSettings) -> dict[str, Any]:
    """Apply every missing migration - control, ops and, on PostgreSQL, the LangGraph
    checkpointer's - each under the database's migration lock; running it twice, or from
    two hosts at once, is harmless. Returns what was applied per component."""
    report: dict[str, Any] = {}
    for component, target, migrations in _components(s):
        db = await open_database(target)
        try:
            report[component] = {"database": db.name,
                                 "applied": await upgrade(db, component, migrations),
                                 "version": max(m.version for m in migrations)}
        finally:
            await db.close()
    if s.state_url is None:
        report["checkpoints"] = "SQLite (set up by the engine)"
    else:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

        async with AsyncPostgresSaver.from_conn_string(s.state_url) as saver:
            await saver.setup()
        report["checkpoints"] = "PostgreSQL (up to date)"
    return report


async def state_versions(s: EngineSettings) -> dict[str, dict[str, Any]]:
    """Per component: the database, its schema version and the one this aiotflow needs."""
    out = {}
    for component, target, migrations in _components(s):
        db = await open_database(target)
        try:
            have = await schema_version(db, component)
        finally:
            await db.close()
        out[component] = {"database": db.name, "version": have,
                          "expected": max(m.version for m in migrations)}
    return out
