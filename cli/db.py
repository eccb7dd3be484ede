"""``aiotflow db upgrade`` / ``aiotflow db status``: the state database's schema."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ._common import add_state_options, command, engine_settings

__all__ = ["register"]


async def _upgrade(a: argparse.Namespace) -> int:
    """Apply every missing migration (control, ops, the LangGraph checkpointer) once,
    under the database's migration lock: run it before starting workers, or again after
    an upgrade of aiotflow; running it twice, or from two hosts at once, is harmless."""
    from aiotflow.tools.control import MIGRATIONS as CONTROL
    from aiotflow.tools.database import open_database, upgrade
    from aiotflow.tools.ops import MIGRATIONS as OPS

    s = engine_settings(a)
    report: dict[str, Any] = {}
    for component, target, migrations in (("control", s.control_target, CONTROL),
                                          ("ops", s.ops_target, OPS)):
        db = await open_database(target)
        try:
            report[component] = {"database": db.name,
                                 "applied": await upgrade(db, component, migrations),
                                 "version": max(m.version for m in migrations)}
        finally:
            await db.close()
    report["checkpoints"] = await _checkpoints(s)
    lines = []
    for k, v in report.items():
        if isinstance(v, dict):
            done = ", ".join(map(str, v["applied"]))
            lines.append(f"{k}: version {v['version']} "
                         f"({'applied ' + done if done else 'up to date'})")
        else:
            lines.append(f"{k}: {v}")
    print(json.dumps(report) if a.json else "\n".join(lines))
    return 0


async def _checkpoints(s: Any) -> str:
    if s.state_url is None:
        return "SQLite (set up by the engine)"
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    async with AsyncPostgresSaver.from_conn_string(s.state_url) as saver:
        await saver.setup()  # its own migrations, guarded by our lock's caller: run once
    return "PostgreSQL (up to date)"


async def _status(a: argparse.Namespace) -> int:
    from aiotflow.tools.control import MIGRATIONS as CONTROL
    from aiotflow.tools.database import open_database, schema_version
    from aiotflow.tools.ops import MIGRATIONS as OPS

    s = engine_settings(a)
    behind = False
    out = {}
    for component, target, migrations in (("control", s.control_target, CONTROL),
                                          ("ops", s.ops_target, OPS)):
        db = await open_database(target)
        try:
            have, want = await schema_version(db, component), max(m.version for m in migrations)
        finally:
            await db.close()
        behind |= have != want
        out[component] = {"database": db.name, "version": have, "expected": want}
    print(json.dumps(out) if a.json else "\n".join(
        f"{k}: version {v['version']} of {v['expected']} ({v['database']})"
        for k, v in out.items()))
    if behind:
        print("the schema is behind: run `aiotflow db upgrade`", file=sys.stderr)
    return 1 if behind else 0


def register(sub: Any) -> None:
    d = sub.add_parser("db", help="the state database's schema (upgrade, status)")
    dsub = d.add_subparsers(dest="action", required=True)
    up = dsub.add_parser("upgrade", help="apply missing schema migrations, once")
    st = dsub.add_parser("status", help="schema versions; exit 1 when behind")
    for p, fn in ((up, _upgrade), (st, _status)):
        add_state_options(p)
        p.add_argument("--json", action="store_true")
        command(p, fn, "engine")
