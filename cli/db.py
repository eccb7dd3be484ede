"""``aiotflow db upgrade`` / ``aiotflow db status``: the state database's schema."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ._common import add_state_options, command, engine_settings

__all__ = ["register"]


async def _upgrade(a: argparse.Namespace) -> int:
    """Apply every missing migration once: before starting workers, and again after an
    upgrade of aiotflow."""
    from aiotflow.workflows.state import upgrade_state

    report = await upgrade_state(engine_settings(a))
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


async def _status(a: argparse.Namespace) -> int:
    from aiotflow.workflows.state import state_versions

    out = await state_versions(engine_settings(a))
    behind = any(v["version"] != v["expected"] for v in out.values())
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
