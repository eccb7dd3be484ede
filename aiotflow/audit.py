"""``aiotflow audit``: verify the hash chain, tell one alert's story."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from tools.control import AuditRecord

__all__ = ["cost_report", "format_costs", "format_story"]

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
                        if isinstance(item, dict) and {"rule", "passed", "detail"} <= set(item):
                            mark = "ok  " if item["passed"] else "FAIL"
                            item = f"{mark} {item['rule']}: {item['detail']}"
                        lines.append(f"{'':30}- {_short(item, 120)}")
                else:
                    lines.append(f"{'':30}{k}: {_short(v)}")
    return "\n".join(lines) + "\n"


def cost_report(records: list[AuditRecord], by: str) -> list[dict[str, Any]]:
    """LLM spend (tokens, USD, calls, calls answered without it) grouped ``by`` alert,
    site or day (UTC), from the ``llm.*`` audit records."""
    groups: dict[str, dict[str, Any]] = {}
    for r in records:
        if not r.kind.startswith("llm."):
            continue
        d = r.detail
        key = {"alert": str(d.get("alert_id") or r.thread_id or "-"),
               "site": str(d.get("site") or "-"),
               "day": dt.datetime.fromtimestamp(r.ts, dt.UTC).strftime("%Y-%m-%d")}[by]
        g = groups.setdefault(key, {by: key, "calls": 0, "tokens": 0, "usd": 0.0,
                                    "without_llm": 0})
        g["calls"] += 1
        g["tokens"] += int(d.get("tokens") or 0)
        g["usd"] += float(d.get("cost_usd") or 0.0)
        g["without_llm"] += d.get("source") in ("offline", "refused")
    for g in groups.values():
        g["usd"] = round(g["usd"], 6)
    return sorted(groups.values(), key=lambda g: str(g[by]))


def format_costs(rows: list[dict[str, Any]], by: str) -> str:
    lines = [f"{by:38} {'calls':>6} {'tokens':>8} {'USD':>10} {'without LLM':>12}"]
    for g in rows:
        lines.append(f"{str(g[by])[:38]:38} {g['calls']:>6} {g['tokens']:>8} "
                     f"{g['usd']:>10.4f} {g['without_llm']:>12}")
    total = sum(g["usd"] for g in rows)
    lines.append(f"{'total':38} {sum(g['calls'] for g in rows):>6} "
                 f"{sum(g['tokens'] for g in rows):>8} {total:>10.4f}")
    return "\n".join(lines) + "\n"
