"""``aiotflow audit`` (verify the hash chain; one alert's story, sensor to work order)
and ``aiotflow costs`` (LLM spend per alert, site or day)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import TYPE_CHECKING, Any

from aiotflow.terminal import printable

from ._common import add_state_options, command, engine_settings
from .output import print_json, table

if TYPE_CHECKING:
    from aiotflow.tools.control import AuditRecord

__all__ = ["format_story", "register"]

#: the detail fields worth a line, per record kind (others: all of them, shortened)
_KEYS: dict[str, tuple[str, ...]] = {
    "alert.received": ("asset", "site", "severity", "score", "threshold", "model"),
    "evidence.gathered": ("retrieval", "maintenance_entries"),
    "diagnosis": ("failure_mode", "confidence", "call", "evidence", "evidence_ids"),
    "plan": ("kind", "headline", "actions"),
    "guardrails": ("plan", "checks"),
    "approval.requested": ("approval_id", "title", "tools"),
    "approval.approved": ("approval_id", "comment"),
    "approval.rejected": ("approval_id", "comment"),
}


def _short(value: Any, width: int = 160) -> str:
    text = printable(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[:width - 1] + "…"


def format_story(alert_id: str, records: list[AuditRecord]) -> str:
    """The audit records of one alert as lines a person can read, oldest first."""
    if not records:
        return f"No audit records for alert {alert_id}.\n"
    lines = [f"Alert {alert_id}: {len(records)} audit records"]
    trace = next((r.detail["trace_id"] for r in records
                  if isinstance(r.detail.get("trace_id"), str)), None)
    if trace:  # the edge started it; a tracing backend has its spans under this id
        lines.append(f"Trace {printable(trace)}")
    for r in records:
        when = dt.datetime.fromtimestamp(r.ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"{when}  #{r.seq:<5} {printable(r.kind):22} by {printable(r.actor)}")
        keys = _KEYS.get(r.kind, tuple(r.detail))
        for k in keys:
            if k == "trace_id":
                continue  # in the header
            if k in r.detail and r.detail[k] not in (None, "", [], {}):
                v = r.detail[k]
                if k in ("evidence", "checks", "actions") and isinstance(v, list):
                    for item in v:
                        if isinstance(item, dict) and {"rule", "passed", "detail"} <= set(item):
                            mark = "ok  " if item["passed"] else "FAIL"
                            item = printable(f"{mark} {item['rule']}: {item['detail']}")
                        lines.append(f"{'':30}- {_short(item, 120)}")
                else:
                    lines.append(f"{'':30}{k}: {_short(v)}")
    return "\n".join(lines) + "\n"


async def _audit(a: argparse.Namespace) -> int:
    from aiotflow.tools import ControlStore

    s = engine_settings(a)
    if s.state_url is None and not s.control_db.exists():
        print(f"error: no control database at {s.control_db}", file=sys.stderr)
        return 2
    async with ControlStore(s.control_target) as control:
        if a.action == "verify":
            public, anchor, notes = _verify_inputs(a, s)
            report = await control.verify_audit(public_key=public, anchor=anchor)
            print(json.dumps(report.model_dump(), indent=2) if a.json else
                  f"audit chain {'intact' if report.ok else 'BROKEN'}: {report.records} "
                  f"records, head {report.head[:16] or '-'}, {report.checkpoints} signed "
                  f"checkpoints, {report.unsigned_tail} records since the last"
                  + "".join(f"\n  - {p}" for p in report.problems)
                  + "".join(f"\n  note: {n}" for n in notes))
            return 0 if report.ok else 1
        records = await control.alert_story(a.alert_id)
    if a.json:
        print_json([r.model_dump() for r in records])
    else:
        print(format_story(a.alert_id, records), end="")
    return 0 if records else 1


def _verify_inputs(a: argparse.Namespace, s: Any) -> tuple[str | None, Any, list[str]]:
    """The engine's public key and the anchor to verify against, and what is missing."""
    from pathlib import Path

    from aiotflow.keys import KeyFileError, load_key, parse_public_key
    from aiotflow.tools.control import AuditCheckpoint

    notes: list[str] = []
    public = a.public_key
    if public is not None:
        parse_public_key(public)
    else:
        try:
            public = load_key(s.engine_key_file).public_key
        except (KeyFileError, OSError):
            notes.append(f"no engine key at {s.engine_key_file} (--public-key): checkpoint "
                         "signatures not checked")
    path = Path(a.anchor) if a.anchor else s.audit_anchor_file
    anchor = None
    if path.exists():
        anchor = AuditCheckpoint.model_validate_json(path.read_text())
    else:
        notes.append(f"no anchor at {path}: a tail cut off with its checkpoints is not seen")
    return public, anchor, notes


async def _costs(a: argparse.Namespace) -> int:
    from aiotflow.agents.costs import LLM_KINDS, cost_report
    from aiotflow.tools import ControlStore

    s = engine_settings(a)
    async with ControlStore(s.control_target) as control:
        records = [r for kind in LLM_KINDS for r in await control.audit_records(kind=kind)]
        rows = cost_report(records, a.by)
    if a.json:
        print_json(rows)
        return 0
    total = [["total", sum(g["calls"] for g in rows), sum(g["tokens"] for g in rows),
              f"{sum(g['usd'] for g in rows):.4f}", sum(g["without_llm"] for g in rows)]]
    table((a.by, "calls", "tokens", "USD", "without LLM"),
          [[g[a.by], g["calls"], g["tokens"], f"{g['usd']:.4f}", g["without_llm"]]
           for g in rows] + total)
    return 0


def register(sub: Any) -> None:
    au = sub.add_parser("audit", help="verify the audit chain, or show one alert's story")
    aus = au.add_subparsers(dest="action", required=True)
    auv = aus.add_parser("verify", help="recompute every hash, check the engine's signed "
                                        "checkpoints and the anchor; exit 1 if the chain "
                                        "was edited, re-hashed or cut short")
    auv.add_argument("--json", action="store_true")
    auv.add_argument("--public-key", help="the engine's ed25519:... key (default: read from "
                                          "its key file)")
    auv.add_argument("--anchor", help="the last checkpoint kept outside the database "
                                      "(default: the engine's audit_anchor)")
    ash = aus.add_parser("show", help="from sensor evidence to work order, for one alert")
    ash.add_argument("alert_id")
    ash.add_argument("--json", action="store_true")
    add_state_options(auv, ash)
    command(auv, _audit, "engine")
    command(ash, _audit, "engine")

    co = sub.add_parser("costs", help="LLM spend per alert, site, day, model or step")
    co.add_argument("--by", choices=["alert", "site", "day", "model", "step"], default="site")
    co.add_argument("--json", action="store_true")
    add_state_options(co)
    command(co, _costs, "engine")
