"""LLM spend from the audit trail: what the agents' model calls cost, grouped."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from aiotflow.tools.control import AuditRecord

__all__ = ["LLM_KINDS", "By", "cost_report"]


#: the audit records that carry one model call each
LLM_KINDS = ("llm.narrative", "llm.call")

By = Literal["alert", "site", "day", "model", "step"]


def cost_report(records: list[AuditRecord], by: By) -> list[dict[str, Any]]:
    """LLM spend (tokens, USD, calls, calls answered without it) grouped ``by`` alert,
    site, day (UTC), model, or step (``plan#1``, ``plan#2``, ..., ``narrative``: which
    turn of which node), from the ``llm.*`` audit records."""
    groups: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.kind not in LLM_KINDS:
            continue
        d = r.detail
        key = {"alert": str(d.get("alert_id") or r.thread_id or "-"),
               "site": str(d.get("site") or "-"),
               "day": dt.datetime.fromtimestamp(r.ts, dt.UTC).strftime("%Y-%m-%d"),
               "model": str(d.get("model") or "-"),
               "step": str(d.get("step") or ("narrative" if r.kind == "llm.narrative"
                                            else "-"))}[by]
        g = groups.setdefault(key, {by: key, "calls": 0, "tokens": 0, "usd": 0.0,
                                    "without_llm": 0})
        g["calls"] += 1
        g["tokens"] += int(d.get("tokens") or 0)
        g["usd"] += float(d.get("cost_usd") or 0.0)
        g["without_llm"] += d.get("source") in ("offline", "refused")
    for g in groups.values():
        g["usd"] = round(g["usd"], 6)
    return sorted(groups.values(), key=lambda g: str(g[by]))
