"""``aiotflow audit``: verify the hash chain, tell one alert's story."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from tools.control import AuditRecord

__all__ = ["format_story"]

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
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[:width - 1] + "…"


def format_story(alert_id: str, records: list[AuditRecord]) -> str:
    """The audit records of one alert as lines a person can read, oldest first."""
    if not records:
        return f"No audit records for alert {alert_id}.\n"
    lines = [f"Alert {alert_id}: {len(records)} audit records"]
    for r in records:
        when = dt.datetime.fromtimestamp(r.ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"{when}  #{r.seq:<5} {r.kind:22} by {r.actor}")
        keys = _KEYS.get(r.kind, tuple(r.detail))
        for k in keys:
            if k in r.detail and r.detail[k] not in (None, "", [], {}):
                v = r.detail[k]
                if k in ("evidence", "checks", "actions") and isinstance(v, list):
                    for item in v:
                        lines.append(f"{'':30}- {_short(item, 120)}")
                else:
                    lines.append(f"{'':30}{k}: {_short(v)}")
    return "\n".join(lines) + "\n"
