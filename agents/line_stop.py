"""The line-stop agent (``aiotflow demo --scenario line-stop``): a critical anomaly whose
right answer is to stop the machine - which the agent never does itself.

alert -> similar incidents + maintenance log -> diagnosis -> the cost of stopping against
the expected cost of running on, as the evidence shows them -> the one reversible,
bounded mitigation the policy lets run on its own (derate the load for a while), if the
policy allows any -> a person with the role the policy names for critical actions
(``manager`` by default) approves the stop and the work order; the request escalates
and expires by policy, and while it waits the machine runs derated. Rejected or
expired: the operator is told that the machine runs on, derated until the derate ends.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import StateGraph
from langgraph.runtime import Runtime
from pydantic import Field

from aiotflow.tools.builtin import BUILTIN_SCOPES
from aiotflow.workflows.app import App
from aiotflow.workflows.approval import ApprovalRequest, ProposedAction
from aiotflow.workflows.context import WorkflowContext
from aiotflow.workflows.filters import AlertFilter

from .evidence import AgentState, EvidenceSettings, agent_graph, evidence_nodes
from .knowledge import failure_mode
from .llm import LLMClient
from .maintenance import narrate, run_actions

__all__ = ["LineStopSettings", "build_line_stop_graph", "register_line_stop_agent",
           "stop_economics"]


class LineStopSettings(EvidenceSettings):
    """What a stop costs, and the mitigation the agent may apply on its own."""

    downtime_cost_per_h: float = Field(2500.0, ge=0, description="Production lost per hour "
                                                                 "the machine stands.")
    stop_hours: float = Field(4.0, gt=0, description="A planned stop: find and fix.")
    inspection_cost: float = Field(1500.0, ge=0)
    derate_load_pct: float = Field(60.0, ge=50, le=95)
    derate_minutes: float = Field(120.0, gt=0, le=240)
    min_probability: float = Field(
        0.2, ge=0, le=1, description="Below this share of the similar incidents' weight, a "
                                     "failure that calls for a stop is not asked about: "
                                     "the operator inspects instead.")


class LineStopState(AgentState, total=False):
    mitigation: dict[str, Any] | None


def stop_economics(modes: list[dict[str, Any]], cfg: LineStopSettings) -> dict[str, Any]:
    """Cost of a planned stop now against the expected cost of running on, over every
    failure mode the similar incidents point to (``modes``: ``failure_mode`` and
    ``probability`` each), not just the likeliest: a 40 % chance of a seizure outweighs a
    60 % chance of a faulty transmitter."""
    stop = cfg.stop_hours * cfg.downtime_cost_per_h + cfg.inspection_cost
    risks = []
    for m in modes:
        fm = failure_mode(m.get("failure_mode"))
        if fm is None or not fm.stop_required:
            continue
        p = float(m.get("probability") or 0.0)
        breakdown = fm.breakdown_cost_usd + fm.breakdown_downtime_h * cfg.downtime_cost_per_h
        risks.append((p * breakdown, p, breakdown, fm))
    run_on = sum(r[0] for r in risks)
    p_stop = sum(r[1] for r in risks)
    out: dict[str, Any] = {"stop_usd": round(stop, 2), "run_on_usd": round(run_on, 2),
                           "probability": round(p_stop, 3),
                           "stop_pays": bool(risks) and run_on > stop,
                           "mode": max(risks, key=lambda r: r[0])[3].key if risks else None}
    if risks:
        parts = "; ".join(f"{fm.title} with probability {p:.2f}, a breakdown costing about "
                          f"{b:,.0f} ({fm.breakdown_cost_usd:,.0f} repair + "
                          f"{fm.breakdown_downtime_h:g} h down)" for _, p, b, fm in risks)
        out["sentence"] = (f"stopping now costs about {stop:,.0f} ({cfg.stop_hours:g} h x "
                           f"{cfg.downtime_cost_per_h:,.0f}/h lost production + "
                           f"{cfg.inspection_cost:,.0f} inspection); running on risks "
                           f"{parts}: expected {run_on:,.0f}")
    return out


def build_line_stop_graph(settings: LineStopSettings | None = None
                          ) -> StateGraph[Any, Any, Any, Any]:
    """The line-stop agent as an uncompiled graph."""
    cfg = settings or LineStopSettings()
    gather_evidence, diagnose = evidence_nodes(cfg)

    async def plan(state: LineStopState, runtime: Runtime[WorkflowContext]) -> LineStopState:
        ctx = runtime.context
        alert = ctx.alert
        d = state["diagnosis"]
        money = stop_economics((state.get("retrieval") or {}).get("modes", []), cfg)
        fm = failure_mode(money["mode"])  # the mode that makes running on expensive
        evidence = list(d["evidence"])
        if "sentence" in money:
            evidence.append(money["sentence"])
        reasons = []
        if fm is None:
            reasons.append(f"none of the similar incidents ended in a failure that calls "
                           f"for a stop (likeliest: {d['title']})")
        elif money["probability"] < cfg.min_probability:
            reasons.append(f"{fm.title} has probability {money['probability']:.2f} < "
                           f"{cfg.min_probability}")
        if fm is not None and not money["stop_pays"]:
            reasons.append("the expected cost of running on does not exceed the cost of "
                           "stopping")
        derate: dict[str, Any] = {"tool": "derate_asset", "summary": f"limit {alert.asset} to "
                  f"{cfg.derate_load_pct:g} % load for {cfg.derate_minutes:g} min "
                  "(reversible: full load returns after)",
                  "args": {"asset": alert.asset, "site": alert.site,
                           "load_pct": cfg.derate_load_pct, "minutes": cfg.derate_minutes,
                           "reason": f"suspected {d['title']} (alert {alert.id[:8]})"}}
        auto = (derate["tool"] in ctx.executor.registry and ctx.executor.policy.rule(
            ctx.executor.tier(derate["tool"], derate["args"])).mode == "auto")
        if not auto:
            evidence.append("no mitigation runs on its own: the policy does not let "
                            "derate_asset run automatically")
        if reasons:
            kind, actions = "inspect", list[dict[str, Any]]()
            headline = f"{alert.asset}: {d['title']}; no stop proposed (" + "; ".join(
                reasons) + ")"
        else:
            kind = "stop"
            assert fm is not None
            headline = (f"{alert.asset}: stop recommended - risk of {fm.title} "
                        f"({money['probability']:.0%} of similar-event weight)")
            actions = [
                {"tool": "stop_asset", "summary": f"bring {alert.asset} to a controlled stop",
                 "args": {"asset": alert.asset, "site": alert.site,
                          "reason": f"risk of {fm.title}: {money['sentence'][:200]}"}},
                {"tool": "create_work_order", "summary": f"open a critical work order: "
                 f"{fm.action}",
                 "args": {"asset": alert.asset, "site": alert.site, "priority": "critical",
                          "title": headline[:200]}}]
        fallback = f"{headline}. {money.get('sentence', '')}."
        text, source = await narrate(ctx, "\n".join([headline, *evidence]), fallback)
        p = {"kind": kind, "headline": headline, "actions": actions, "evidence": evidence,
             "economics": money, "mitigation": derate if auto else None, "narrative": text,
             "risk": fm.title if fm else d["title"],
             "narrative_source": source, "source": "code"}
        await ctx.audit("plan", kind=kind, headline=headline, economics=money,
                        mitigation=derate["summary"] if auto else None,
                        actions=[a["summary"] for a in actions])
        return {"plan": p}

    async def mitigate(state: LineStopState,
                       runtime: Runtime[WorkflowContext]) -> LineStopState:
        """The automatic mitigation, one effect in a node of its own (keyed)."""
        ctx = runtime.context
        m = state["plan"].get("mitigation")
        if m is None:
            return {"mitigation": None}
        out = await ctx.call_tool(m["tool"], m["args"])
        await ctx.audit("line_stop.mitigated", command=out.id, load_pct=out.load_pct,
                        until=out.until)
        return {"mitigation": out.model_dump(mode="json")}

    def approval_request(state: dict[str, Any]) -> ApprovalRequest | None:
        p, d = state["plan"], state["diagnosis"]
        if p["kind"] != "stop":
            return None
        m = state.get("mitigation")
        now = (f"meanwhile {state['alert']['asset']} runs at {m['load_pct']:g} % load"
               if m else "the machine runs at full load until you decide")
        return ApprovalRequest(
            title=f"STOP {state['alert']['asset']}? Risk of {p['risk']}",
            summary=f"{p['narrative']} ({now}.)",
            evidence=p["evidence"],
            actions=[ProposedAction(tool=a["tool"], summary=a["summary"], args=a["args"])
                     for a in p["actions"]],
            details={"diagnosis": d, "alert_id": state["alert"]["id"],
                     "economics": p["economics"], "mitigation": m},
        )

    async def execute(state: LineStopState,
                      runtime: Runtime[WorkflowContext]) -> LineStopState:
        ctx = runtime.context
        alert = ctx.alert
        p, d = state["plan"], state["diagnosis"]
        approval = state.get("approval")
        m = state.get("mitigation")
        base = {"failure_mode": d["failure_mode"], "confidence": d["confidence"],
                "asset": alert.asset, "plan": p["kind"], "mitigation": m and m["id"]}
        body = p["narrative"] + "\n\nEvidence:\n" + "\n".join(f"- {e}" for e in p["evidence"])
        derated = (f" {alert.asset} is derated to {m['load_pct']:g} % until the derate ends."
                   if m else "")
        if p["kind"] != "stop":
            ran = await run_actions(ctx, [{"tool": "notify_operator", "args": {
                "subject": f"[{alert.severity.upper()}] {p['headline']}"[:300],
                "message": body + ("\n\n" + derated if derated else ""),
                "priority": "high"}}], None, fill={})
            return {"result": base | {"status": "notified",
                                      "notification": ran["notify_operator"].id}}
        if not approval or approval["status"] != "approved":
            status = (approval or {}).get("status", "rejected")
            ran = await run_actions(ctx, [{"tool": "notify_operator", "args": {
                "subject": f"[{alert.severity.upper()}] stop of {alert.asset} not approved "
                           f"({status}): it runs on"[:300],
                "message": f"The stop was {status}.{derated}\n\n{body}",
                "priority": "critical"}}], None, fill={})
            await ctx.audit("line_stop.not_stopped", reason=f"approval {status}",
                            by=(approval or {}).get("by"))
            return {"result": base | {"status": status,
                                      "notification": ran["notify_operator"].id,
                                      "approval_id": (approval or {}).get("approval_id")}}
        aid = approval["approval_id"]
        description = (f"{p['narrative']}\n\nEvidence:\n" + "\n".join(
            f"- {e}" for e in p["evidence"]) + f"\n\nStop approved by {approval['by']}"
            + (f": {approval['comment']}" if approval.get("comment") else "") + "."
            + f"\nAlert {alert.id}, score {alert.score:.1f} (threshold {alert.threshold:.1f}).")
        ran = await run_actions(ctx, p["actions"], aid, fill={"create_work_order": {
            "description": description,
            "evidence": {"alert_id": alert.id, "diagnosis": d["failure_mode"],
                         "confidence": d["confidence"], "economics": p["economics"],
                         "similar_incidents": d["evidence_ids"], "approval_id": aid,
                         "statements": p["evidence"]}}})
        return {"result": base | {"status": "stopped", "command": ran["stop_asset"].id,
                                  "work_order": ran["create_work_order"].id,
                                  "approval_id": aid, "actions_executed": sorted(ran)}}

    return agent_graph(LineStopState, [("gather_evidence", gather_evidence),
                                       ("diagnose", diagnose), ("plan", plan),
                                       ("mitigate", mitigate)],
                       approval=approval_request, execute=execute,
                       asks=lambda s: s["plan"]["kind"] == "stop")


def register_line_stop_agent(app: App, *, name: str = "line_stop",
                             when: AlertFilter | None = None,
                             settings: LineStopSettings | None = None, llm: bool = True) -> None:
    """Add the line-stop agent to ``app``: critical generator alerts by default. It gets
    ``control:write`` (derate and stop), which workflows do not have by default."""
    if llm and "llm" not in app.services:
        app.service("llm")(lambda _settings: LLMClient())

    def line_stop() -> StateGraph[Any, Any, Any, Any]:
        """Critical anomalies: derate on its own, ask a manager to approve a stop."""
        return build_line_stop_graph(settings)

    app.workflow(name, when=when or AlertFilter(asset_types=["generator"],
                                                min_severity="critical"),
                 scopes=BUILTIN_SCOPES | {"control:write"})(line_stop)
