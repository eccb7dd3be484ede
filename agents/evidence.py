"""Evidence shared by the maintenance agents: similar past incidents, the maintenance log,
and a diagnosis that states what it rests on.

``gather_evidence`` and ``diagnose`` are graph nodes any agent can reuse (their state
keys: ``similar``, ``retrieval``, ``maintenance``, ``diagnosis``). The diagnosis is made
from evidence only: the incident history's vote, the sensor signature of the failure
mode, and the days since the system's last maintenance.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, ConfigDict, Field

from aiotflow.workflows.approval import approval_node
from aiotflow.workflows.context import WorkflowContext

from .knowledge import failure_mode

__all__ = ["AgentState", "EvidenceSettings", "agent_graph", "evidence_nodes", "sensor_evidence"]

#: a node as LangGraph's ``add_node`` takes it (its overloads want the state's own type)
Node = Any


class AgentState(TypedDict, total=False):
    """The state keys every maintenance agent has (each adds its own)."""

    alert: dict[str, Any]
    similar: list[dict[str, Any]]
    retrieval: dict[str, Any] | None
    maintenance: list[dict[str, Any]]
    diagnosis: dict[str, Any]
    plan: dict[str, Any]
    approval: dict[str, Any] | None
    result: dict[str, Any]


class EvidenceSettings(BaseModel):
    """How far back an agent looks, and what counts as recent maintenance."""

    model_config = ConfigDict(frozen=True)

    recent_maintenance_days: float = Field(90.0, gt=0)
    history_days: float = Field(730.0, gt=0, description="Maintenance log look-back.")


def sensor_evidence(ctx: WorkflowContext) -> list[str]:
    """The channels that carry the anomaly, strongest first."""
    out = []
    ranked = sorted(ctx.alert.summary.items(), key=lambda kv: -kv[1].contribution)
    for ch, s in ranked[:3]:
        if s.contribution >= 0.1:
            side = "higher" if s.deviation > 0 else "lower"
            out.append(f"{ch} carries {s.contribution:.0%} of the anomaly: {s.last:g} now, "
                       f"{side} than the load explains, trend {s.slope_per_min:+.2f}/min")
    return out


def _title(mode: str) -> str:
    fm = failure_mode(mode)
    return fm.title if fm else mode


def _matches(summary: Any, sign: int) -> bool:
    return bool(summary.contribution >= 0.1 and summary.deviation * sign > 0)


def evidence_nodes(cfg: EvidenceSettings) -> tuple[Node, Node]:
    """``(gather_evidence, diagnose)``: the two nodes, configured by ``cfg``."""

    async def gather_evidence(state: dict[str, Any],
                              runtime: Runtime[WorkflowContext]) -> dict[str, Any]:
        ctx = runtime.context
        alert = ctx.alert
        retrieval: dict[str, Any] | None = None
        similar: list[dict[str, Any]] = []
        if ctx.history is not None:
            found = await ctx.history.diagnose(
                alert.embedding, asset=alert.asset, asset_type=alert.asset_type,
                before=alert.ts, context=alert.baseline or None)
            similar = [{"id": h.incident.id, "asset": h.incident.asset, "ts": h.incident.ts,
                        "failure_mode": h.incident.failure_mode, "outcome": h.incident.outcome,
                        "maintenance_refs": h.incident.maintenance_refs,
                        "similarity": round(h.similarity, 4)} for h in found.neighbours]
            retrieval = found.model_dump(mode="json", exclude={"neighbours"})
            retrieval["sentence"] = found.sentence()
        log = await ctx.call_tool("maintenance_history",
                                  {"asset": alert.asset, "days": cfg.history_days})
        maintenance = [e.model_dump() for e in log.entries]
        await ctx.audit("evidence.gathered", similar=[(s["id"], s["failure_mode"],
                                                       s["similarity"]) for s in similar],
                        retrieval=None if retrieval is None else {
                            k: retrieval[k] for k in ("call", "failure_mode", "probability",
                                                      "events", "reasons", "evidence_ids",
                                                      "cached")},
                        maintenance_entries=len(maintenance))
        return {"similar": similar, "retrieval": retrieval, "maintenance": maintenance}

    async def diagnose(state: dict[str, Any],
                       runtime: Runtime[WorkflowContext]) -> dict[str, Any]:
        ctx = runtime.context
        similar = state.get("similar", [])
        found = state.get("retrieval") or {}
        evidence = sensor_evidence(ctx)
        modes = found.get("modes", [])
        top = modes[0] if modes else None
        mode = top["failure_mode"] if top else None
        confidence = float(top["probability"]) if top else 0.0
        fm = failure_mode(mode)
        if top is not None:
            others = ", ".join(f"{m['events']} {_title(m['failure_mode'])}" for m in modes[1:])
            title = fm.title if fm else mode
            same = [i[:8] for i in top["incident_ids"]]
            ids = ", ".join(same[:5]) + (f" and {len(same) - 5} more" if len(same) > 5 else "")
            evidence.append(f"{top['events']} of {found['events']} similar past events ended in "
                            f"{title}, {confidence:.2f} of the similarity weight"
                            + (f" (others: {others})" if others else "")
                            + f"; incidents {ids}")
            if found.get("call") == "uncertain":
                evidence.append("thin evidence: " + "; ".join(found.get("reasons", [])))
        else:
            evidence.append("no similar past events in the incident history")
        if fm is not None and fm.signature:
            matched = [ch for ch, sign in fm.signature.items()
                       if ch in ctx.alert.summary and _matches(ctx.alert.summary[ch], sign)]
            if matched:
                evidence.append(f"sensor pattern consistent with {fm.title}: "
                                + ", ".join(f"{c} {'up' if fm.signature[c] > 0 else 'down'}"
                                            for c in matched))
            else:
                confidence *= 0.7
                evidence.append(f"sensor pattern does not clearly show the signature of {fm.title}")
        days_since = None
        if fm is not None and fm.system != "none":
            entries = [e for e in state.get("maintenance", []) if e["system"] == fm.system]
            if entries:
                last = max(entries, key=lambda e: e["ts"])
                days_since = round((time.time() - last["ts"]) / 86400, 1)
                when = f"last {fm.system} maintenance {days_since:g} days ago ({last['action']})"
                if days_since > cfg.recent_maintenance_days:
                    evidence.append(f"no {fm.system} maintenance in {cfg.recent_maintenance_days:g}"
                                    f" days; {when}")
                else:
                    evidence.append(when)
            else:
                evidence.append(f"no {fm.system} maintenance on record in the last "
                                f"{cfg.history_days:g} days")
        diagnosis = {
            "failure_mode": mode or "unknown",
            "title": fm.title if fm else "unknown condition",
            "system": fm.system if fm else "unknown",
            "confidence": round(confidence, 3),
            "call": found.get("call", "uncertain"),
            "similar_total": len(similar),
            "similar_top": top["events"] if top else 0,
            "evidence_ids": list(top["incident_ids"]) if top else [],
            "days_since_maintenance": days_since,
            "evidence": evidence,
        }
        await ctx.audit("diagnosis", **{k: v for k, v in diagnosis.items()})
        return {"diagnosis": diagnosis}

    return gather_evidence, diagnose


def agent_graph(state: type[Any], steps: list[tuple[str, Node]], *,
                approval: Callable[[dict[str, Any]], Any], execute: Node,
                asks: Callable[[dict[str, Any]], bool]) -> StateGraph[Any, Any, Any, Any]:
    """The shape every maintenance agent has: ``steps`` in order from START, then a
    human approval when ``asks(state)`` (``approval`` builds the request, see
    :func:`~aiotflow.workflows.approval.approval_node`), then ``execute``, then END.

    Each step is a node of its own, so that an effect in one (a mitigation, a part
    order) is checkpointed before the next starts.
    """
    g: StateGraph[Any, Any, Any, Any] = StateGraph(state, context_schema=WorkflowContext)
    for name, node in steps:
        g.add_node(name, node)
    g.add_node("approval", approval_node(approval))  # type: ignore[call-overload]
    g.add_node("execute", execute)
    g.add_edge(START, steps[0][0])
    for (a, _), (b, _) in itertools.pairwise(steps):
        g.add_edge(a, b)
    g.add_conditional_edges(steps[-1][0], lambda s: "approval" if asks(s) else "execute",
                            ["approval", "execute"])
    g.add_edge("approval", "execute")
    g.add_edge("execute", END)
    return g
