"""The maintenance agent of the reference scenario (``aiotflow demo --scenario coolant``).

alert -> similar past incidents (Qdrant) + maintenance log -> diagnosis with evidence
-> plan -> guardrails -> human approval -> book the on-call technician with the right
skill and open a work order with the evidence; if scheduling is down after retries, the
work order is opened unassigned and an operator gets a high-priority notification.

The plan comes from the LLM planner (:mod:`aiotflow.agents.planner`) when an endpoint is
configured - the model reads the evidence, may call read-only tools and proposes the
actions - and from fixed code otherwise, or whenever the model gives no usable plan.
Either plan passes the same guardrails, approvals and tool-layer checks; the diagnosis
the guardrails judge is always the one made from evidence.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

from langgraph.graph import StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, ConfigDict, Field, model_validator

from aiotflow.tools.decisions import filled_fields
from aiotflow.tools.errors import ToolFailed, ToolUnavailable
from aiotflow.workflows.app import App
from aiotflow.workflows.approval import ApprovalRequest, ProposedAction
from aiotflow.workflows.context import WorkflowContext
from aiotflow.workflows.filters import AlertFilter

from .evidence import AgentState, EvidenceSettings, agent_graph, evidence_nodes
from .knowledge import FAILURE_MODES, failure_mode
from .llm import LLMClient
from .planner import LLMPlanner, PlannerSettings, PlanResult

__all__ = [
    "Guardrails",
    "MaintenanceSettings",
    "MaintenanceState",
    "build_maintenance_graph",
    "register_maintenance_agent",
]

_PRIORITY = {"warning": "medium", "major": "high", "critical": "critical"}


class Guardrails(BaseModel):
    """Declared rules on what the agent may propose, checked before approval is asked."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timezone: str = Field("UTC", description="The sites' local time zone (IANA name).")
    business_hours: tuple[int, int] = Field((7, 18), description="[start, end) local hour.")
    business_days: tuple[int, ...] = Field((0, 1, 2, 3, 4), min_length=1,
                                           description="Monday = 0.")
    after_hours_severity: str = Field(
        "critical", description="Alerts of this severity may book outside business hours; "
                                "others are booked from the next opening.")
    max_work_orders_per_asset_per_day: int = Field(
        2, ge=1, description="More in 24 h: notify an operator instead of opening another.")
    technician_rate_per_h: float = Field(120.0, ge=0)
    callout_fee: float = Field(150.0, ge=0)
    max_cost_per_action: float = Field(
        2000.0, ge=0, description="Estimated cost (callout + hours x rate) above this: "
                                  "an operator decides instead.")

    @model_validator(mode="after")
    def _valid(self) -> Guardrails:
        start, end = self.business_hours
        if not 0 <= start <= end <= 24 or not set(self.business_days) <= set(range(7)):
            raise ValueError("business_hours must be 0 <= start <= end <= 24 and "
                             "business_days within 0..6")
        ZoneInfo(self.timezone)  # an unknown zone fails here, at configuration time
        return self

    def next_opening(self, now: float) -> float | None:
        """``None`` inside business hours, else the epoch second they next open."""
        tz = ZoneInfo(self.timezone)
        t = dt.datetime.fromtimestamp(now, tz)
        start, end = self.business_hours
        if t.weekday() in self.business_days and start <= t.hour < end:
            return None
        day = t.replace(hour=start, minute=0, second=0, microsecond=0)
        if t.hour >= start:
            day += dt.timedelta(days=1)
        while day.weekday() not in self.business_days:
            day += dt.timedelta(days=1)
        return day.timestamp()


class MaintenanceSettings(EvidenceSettings):
    """How cautious the maintenance agent is, and what its planner may use."""

    guardrails: Guardrails = Field(default_factory=Guardrails)
    planner: PlannerSettings | None = Field(
        default_factory=PlannerSettings,
        description="The LLM planner's limits; None: always plan in code.")
    read_tools: tuple[str, ...] = Field(
        ("maintenance_history", "recent_work_orders", "find_on_call_technician"),
        description="Tools the model may run while it plans.")
    action_tools: tuple[str, ...] = Field(
        ("book_technician", "create_work_order", "notify_operator"),
        description="Tools the model may propose.")

    min_confidence: float = Field(
        0.5, ge=0, le=1, description="Below this the agent asks an operator to inspect "
                                     "instead of dispatching a technician.")
    min_evidence: int = Field(3, ge=1, description="Similar incidents needed to dispatch.")


class WorkOrderSummary(BaseModel):
    """The only thing the LLM may return: one short summary; anything else is refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    summary: str = Field(min_length=20, max_length=1200)


class MaintenanceState(AgentState, total=False):
    guardrails: list[dict[str, Any]]


def build_maintenance_graph(
    settings: MaintenanceSettings | None = None,
) -> StateGraph[Any, Any, Any, Any]:
    """The agent as an uncompiled LangGraph graph (the engine compiles it)."""
    cfg = settings or MaintenanceSettings()
    gather_evidence, diagnose = evidence_nodes(cfg)

    def deterministic(ctx: WorkflowContext, d: dict[str, Any]) -> dict[str, Any]:
        alert = ctx.alert
        fm = failure_mode(d["failure_mode"])
        priority = _PRIORITY[alert.severity]
        if fm is not None and fm.key != "none":
            headline = (f"{alert.asset}: suspected {fm.title} "
                        f"({d['confidence']:.0%} of similar-event weight)")
            return {"kind": "dispatch", "headline": headline, "actions": [
                {"tool": "book_technician", "summary": f"book the next on-call {fm.skill} "
                 f"technician for {fm.hours:g} h at {alert.asset}",
                 "args": {"skill": fm.skill, "asset": alert.asset, "site": alert.site,
                          "hours": fm.hours, "reason": f"suspected {fm.title}"}},
                {"tool": "create_work_order", "summary": f"open a {priority}-priority work "
                 f"order: {fm.action}", "args": {"asset": alert.asset, "site": alert.site,
                                                 "priority": priority,
                                                 "title": headline[:200]}}]}
        return {"kind": "inspect", "headline": f"{alert.asset}: anomaly without a known pattern",
                "actions": [_INSPECT]}

    async def plan(state: MaintenanceState, runtime: Runtime[WorkflowContext]) -> MaintenanceState:
        ctx = runtime.context
        alert = ctx.alert
        d = state["diagnosis"]
        fm = failure_mode(d["failure_mode"])
        p = deterministic(ctx, d) | {"source": "code"}
        result = await plan_with_llm(
            ctx, cfg.planner, read_tools=cfg.read_tools, action_tools=cfg.action_tools,
            task="Decide what to do about this alert: dispatch a technician with the right "
                 "skill and open a work order, or ask the operator to inspect.",
            evidence=d["evidence"],
            data={"diagnosis": {k: d[k] for k in ("failure_mode", "title", "system",
                                                  "confidence", "call")},
                  "similar_incidents": [{k: i[k] for k in ("asset", "failure_mode", "outcome",
                                                           "similarity")}
                                        for i in state.get("similar", [])[:8]],
                  "maintenance_log": [{k: e.get(k) for k in ("system", "action", "notes",
                                                             "ts")}
                                      for e in state.get("maintenance", [])[:12]]},
            expected_mode=d["failure_mode"] if d.get("call") == "probable" else None)
        if result is not None and result.ok and result.proposals:
            actions = model_actions(result)
            high = any(a["tier"] in ("high", "critical") for a in actions)
            p = {"kind": "dispatch" if high else "inspect", "actions": actions,
                 "headline": f"{alert.asset}: " + (result.summary.split(". ")[0][:160]
                                                   or d["title"]),
                 "source": "llm"}
        facts = "\n".join([f"Asset {alert.asset} at site {alert.site}, alert severity "
                           f"{alert.severity} (score {alert.score:.1f}, threshold "
                           f"{alert.threshold:.1f}).", f"Diagnosis: {d['title']}, confidence "
                           f"{d['confidence']:.0%}.", "Evidence:"] +
                          [f"- {e}" for e in d["evidence"]] +
                          ["Planned actions:"] + [f"- {a['summary']}" for a in p["actions"]])
        history = next((e for e in d["evidence"] if "similar past events" in e), "")
        fallback = (f"{p['headline']}. {history[:1].upper()}{history[1:]}."
                    + (f" Recommended: {fm.action}." if fm and fm.key != "none" else ""))
        if result is None:  # no planner: the LLM (if any) only writes the summary
            text, source = await narrate(ctx, facts, fallback)
        elif p["source"] == "llm":
            text, source = result.summary or fallback, "llm"
        else:  # the model was asked and gave nothing usable: do not ask it again
            why = result.reason or "every action the model proposed was refused"
            text, source = f"{fallback} (Deterministic plan: {why}.)", "offline"
        p |= {"priority": _PRIORITY[alert.severity], "narrative": text,
              "narrative_source": source, "skill": fm.skill if fm else "general",
              "recommended_action": fm.action if fm else "inspect",
              "planner": result.public() if result is not None else None}
        await ctx.audit("plan", kind=p["kind"], headline=p["headline"], source=p["source"],
                        actions=[a["summary"] for a in p["actions"]])
        return {"plan": p}

    async def guardrails(state: MaintenanceState,
                         runtime: Runtime[WorkflowContext]) -> MaintenanceState:
        ctx = runtime.context
        alert = ctx.alert
        rules = cfg.guardrails
        d, p = state["diagnosis"], dict(state["plan"])
        checks: list[dict[str, Any]] = []

        def check(rule: str, passed: bool, detail: str) -> bool:
            checks.append({"rule": rule, "passed": passed, "detail": detail})
            return passed

        if p["kind"] == "dispatch":
            ok = check("min_confidence", d["confidence"] >= cfg.min_confidence,
                       f"{d['confidence']:.2f} >= {cfg.min_confidence}")
            ok &= check("min_evidence", d["similar_top"] >= cfg.min_evidence,
                        f"{d['similar_top']} >= {cfg.min_evidence} matching incidents")
            ok &= check("history_probable", d.get("call") == "probable",
                        f"the incident history calls the diagnosis {d.get('call', 'uncertain')}")
            recent = await ctx.call_tool("recent_work_orders", {"asset": alert.asset,
                                                                "hours": 24})
            n = len(recent.work_orders)
            limit = rules.max_work_orders_per_asset_per_day
            ok &= check("work_orders_per_asset_per_day", n < limit,
                        f"{n} work order(s) for {alert.asset} in the last 24 h (limit {limit})")
            hours = sum(float(a["args"].get("hours", 4.0)) for a in p["actions"]
                        if a["tool"] == "book_technician")
            cost = rules.callout_fee + hours * rules.technician_rate_per_h
            ok &= check("cost_per_action", cost <= rules.max_cost_per_action,
                        f"estimated {cost:,.0f} (callout {rules.callout_fee:,.0f} + "
                        f"{hours:g} h x {rules.technician_rate_per_h:,.0f}) <= "
                        f"{rules.max_cost_per_action:,.0f}")
            opening = rules.next_opening(time.time())
            actions = [dict(a) for a in p["actions"]]
            if opening is None:
                check("business_hours", True, "within business hours")
            elif alert.severity == rules.after_hours_severity:
                check("business_hours", True, f"outside business hours, allowed: "
                                              f"{alert.severity} alert")
            else:
                when = dt.datetime.fromtimestamp(opening, ZoneInfo(rules.timezone))
                check("business_hours", True, "outside business hours: the booking starts at "
                      f"the next opening, {when:%a %Y-%m-%d %H:%M} {rules.timezone}")
                for a in actions:
                    if a["tool"] == "book_technician":
                        a["args"] = dict(a["args"]) | {"not_before": opening}
                p["actions"] = actions
            if not ok:
                failed = "; ".join(c["detail"] for c in checks if not c["passed"])
                p.update(kind="inspect", headline=f"{alert.asset}: dispatch not proposed "
                         f"({d['title']}?): {failed}; operator inspection requested",
                         actions=[_INSPECT])
        check("human_approval_for_dispatch", True,
              "booking and work orders are approved by a person")
        await ctx.audit("guardrails", checks=checks, plan=p["kind"])
        return {"plan": p, "guardrails": checks}

    def approval_request(state: dict[str, Any]) -> ApprovalRequest | None:
        p, d = state["plan"], state["diagnosis"]
        if p["kind"] != "dispatch":
            return None
        verdicts = [f"guardrail {c['rule']}: {c['detail']}" for c in state.get("guardrails", [])]
        return ApprovalRequest(
            title=f"Dispatch to {state['alert']['asset']}: {d['title']}",
            summary=p["narrative"],
            evidence=[*d["evidence"], *cited_reasons(p["actions"], d["evidence"]), *verdicts],
            actions=[ProposedAction(tool=a["tool"], summary=a["summary"], args=a["args"])
                     for a in p["actions"]],
            details={"diagnosis": d, "alert_id": state["alert"]["id"],
                     "plan_source": p.get("source", "code"), "planner": p.get("planner")},
        )

    async def execute(state: MaintenanceState,
                      runtime: Runtime[WorkflowContext]) -> MaintenanceState:
        ctx = runtime.context
        alert = ctx.alert
        p, d = state["plan"], state["diagnosis"]
        approval = state.get("approval")
        base = {"failure_mode": d["failure_mode"], "confidence": d["confidence"],
                "asset": alert.asset, "plan": p["kind"]}
        subject = f"[{alert.severity.upper()}] {p['headline']}"
        body = p["narrative"] + "\n\nEvidence:\n" + "\n".join(f"- {e}" for e in d["evidence"])
        if p["kind"] != "dispatch":
            ran = await run_actions(ctx, p["actions"], None, fill={"notify_operator": {
                "subject": subject, "message": body, "priority": "high"}})
            note = ran.get("notify_operator")
            return {"result": base | {"status": "notified",
                                      "notification": note.id if note else None}}
        if not approval or approval["status"] != "approved":
            status = (approval or {}).get("status", "rejected")  # rejected or expired
            await ctx.audit("maintenance.not_dispatched", reason=f"approval {status}",
                            by=(approval or {}).get("by"), comment=(approval or {}).get("comment"))
            return {"result": base | {"status": status,
                                      "approval_id": (approval or {}).get("approval_id")}}
        aid = approval["approval_id"]
        booking, note, fallback = None, None, None
        done: dict[str, Any] = {}
        book = next((a for a in p["actions"] if a["tool"] == "book_technician"), None)
        if book is not None:
            try:
                # exactly the arguments the person approved; the tool layer checks them again
                booking = await ctx.call_tool("book_technician", book["args"], approval_id=aid)
                done["book_technician"] = booking
            except (ToolUnavailable, ToolFailed) as exc:
                fallback = str(exc)
                note = await ctx.call_tool("notify_operator", {
                    "subject": f"ACTION NEEDED - scheduling failed: {subject}",
                    "message": f"Booking a {book['args'].get('skill')} technician failed "
                               f"({exc}). Please dispatch manually. Approved by "
                               f"{approval['by']}.\n\n{body}",
                    "priority": "critical" if p["priority"] == "critical" else "high"})
        tech = f"{booking.technician_name} ({booking.technician_id})" if booking else "unassigned"
        description = (
            f"{p['narrative']}\n\nEvidence:\n" + "\n".join(f"- {e}" for e in d["evidence"])
            + f"\n\nRecommended action: {p['recommended_action']}.\nTechnician: {tech}."
            + f"\nApproved by {approval['by']}"
            + (f": {approval['comment']}" if approval.get("comment") else "") + "."
            + f"\nAlert {alert.id}, model {alert.model_name}@{alert.model_version}, score "
              f"{alert.score:.1f} (threshold {alert.threshold:.1f})."
        )
        rest = [a for a in p["actions"] if a is not book]
        done |= await run_actions(ctx, rest, aid, fill={
            "create_work_order": {
                "description": description,
                "evidence": {"alert_id": alert.id, "diagnosis": d["failure_mode"],
                             "confidence": d["confidence"],
                             "similar_incidents": d["evidence_ids"],
                             "statements": d["evidence"], "approval_id": aid,
                             "plan_source": p.get("source", "code")},
                "technician_id": booking.technician_id if booking else None,
                "booking_id": booking.id if booking else None},
            "notify_operator": {}})
        wo = done.get("create_work_order")
        return {"result": base | {
            "status": "work_order_created" if wo else "dispatched",
            "work_order": wo.id if wo else None,
            "booking": booking.id if booking else None,
            "technician": booking.technician_name if booking else None,
            "notification": note.id if note else None, "scheduling_error": fallback,
            "approval_id": aid, "actions_executed": sorted(done)}}

    return agent_graph(MaintenanceState, [("gather_evidence", gather_evidence),
                                          ("diagnose", diagnose), ("plan", plan),
                                          ("guardrails", guardrails)],
                       approval=approval_request, execute=execute,
                       asks=lambda s: s["plan"]["kind"] == "dispatch")


_INSPECT = {"tool": "notify_operator", "summary": "ask the operator on duty to inspect the "
                                                  "asset", "args": {"priority": "high"},
            "tier": "medium"}


async def narrate(ctx: WorkflowContext, facts: str, fallback: str) -> tuple[str, str]:
    """A work-order summary written by the LLM from ``facts`` (or ``fallback``), and its
    source; audited as ``llm.narrative``."""
    llm = ctx.services.get("llm")
    if not isinstance(llm, LLMClient):
        return fallback, "offline"
    alert = ctx.alert
    out = await llm.structured(
        "You are a maintenance planner for diesel generators. Write a concise work-order"
        " summary (at most 120 words) from the facts given. Do not invent facts.",
        facts, WorkOrderSummary, fallback=WorkOrderSummary(summary=fallback),
        site=alert.site, alert=alert.id)
    text = out.value.summary
    if out.source in ("offline", "refused") and out.reason != "no LLM configured":
        text += f" (Deterministic summary: {out.reason}.)"
    await ctx.audit("llm.narrative", step="narrative", model=llm.settings.model,
                    source=out.source, tokens=out.tokens, cost_usd=round(out.cost_usd, 6),
                    reason=out.reason, site=alert.site, alert_id=alert.id)
    return text, out.source


async def plan_with_llm(ctx: WorkflowContext, settings: PlannerSettings | None, *,
                        read_tools: Sequence[str], action_tools: Sequence[str], task: str,
                        evidence: Sequence[str], data: dict[str, Any],
                        expected_mode: str | None = None) -> PlanResult | None:
    """The LLM planner's result for this run, or ``None`` without an LLM (or planner)."""
    llm = ctx.services.get("llm")
    if settings is None or not isinstance(llm, LLMClient) or not llm.enabled:
        return None
    registry = ctx.executor.registry
    planner = LLMPlanner(llm, read_tools=[t for t in read_tools if t in registry],
                         action_tools=[t for t in action_tools if t in registry],
                         modes=list(FAILURE_MODES), settings=settings)
    return await planner.plan(ctx, task=task, evidence=evidence, data=data,
                              expected_mode=expected_mode)


def model_actions(result: PlanResult) -> list[dict[str, Any]]:
    """The planner's proposals as plan actions, each summarised by the model's reason."""
    return [{"tool": p["tool"], "args": p["args"], "tier": p["tier"],
             "summary": f"{p['tool']}: {p['rationale']}"
                        + (f" [cites {', '.join(p['cites'])}]" if p["cites"] else ""),
             "rationale": p["rationale"], "cites": p["cites"]} for p in result.proposals]


def cited_reasons(actions: Sequence[dict[str, Any]], evidence: Sequence[str]) -> list[str]:
    """For the approver: each model-proposed action's reason next to what it cites."""
    out = []
    for a in actions:
        if "rationale" not in a:
            continue
        refs = "; ".join(f"{c} = {evidence[int(c[1:]) - 1][:160]}" for c in a["cites"]
                         if c[1:].isdigit() and 0 < int(c[1:]) <= len(evidence))
        out.append(f"model's reason for {a['tool']}: {a['rationale']}"
                   + (f" (cites {refs})" if refs else " (cites no evidence)"))
    return out


async def run_actions(ctx: WorkflowContext, actions: Sequence[dict[str, Any]],
                      approval_id: str | None, *, fill: dict[str, dict[str, Any]]
                      ) -> dict[str, Any]:
    """Run ``actions`` in order with what the workflow adds (``fill[tool]``): the fields
    the tool marks :data:`~aiotflow.tools.decisions.FILLED` are the workflow's to write,
    the others only complete what the plan left out. Returns the outputs by tool.

    Every call is keyed (thread, tool, arguments), so a re-run of the node returns the
    recorded effects instead of repeating them.
    """
    done: dict[str, Any] = {}
    for a in actions:
        extra = fill.get(a["tool"], {})
        ours = filled_fields(ctx.executor.registry.get(a["tool"]).input_model)
        args = ({k: v for k, v in extra.items() if k not in ours} | dict(a["args"])
                | {k: v for k, v in extra.items() if k in ours})
        done[a["tool"]] = await ctx.call_tool(a["tool"], args, approval_id=approval_id)
    return done


def register_maintenance_agent(
    app: App,
    *,
    name: str = "maintenance",
    when: AlertFilter | None = None,
    settings: MaintenanceSettings | None = None,
    llm: bool = True,
) -> None:
    """Add the maintenance agent to ``app`` (and the ``llm`` service unless present)."""
    if llm and "llm" not in app.services:
        app.service("llm")(lambda _settings: LLMClient())

    def maintenance() -> StateGraph[Any, Any, Any, Any]:
        """Diagnose generator alerts from history and maintenance logs; dispatch on approval."""
        return build_maintenance_graph(settings)

    app.workflow(name, when=when or AlertFilter(asset_types=["generator"]))(maintenance)
