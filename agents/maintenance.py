"""The maintenance agent of the reference scenario.

alert -> similar past incidents (Qdrant) + maintenance log -> diagnosis with evidence
-> plan (optionally narrated by an LLM) -> guardrails -> human approval -> book the
on-call technician with the right skill and open a work order with the evidence; if
scheduling is down after retries, the work order is opened unassigned and an operator
gets a high-priority notification instead.

Every decision is deterministic and made from evidence; the LLM only writes prose.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, TypedDict
from zoneinfo import ZoneInfo

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, ConfigDict, Field, model_validator

from aiotflow.tools.errors import ToolFailed, ToolUnavailable
from aiotflow.workflows.app import App
from aiotflow.workflows.approval import ApprovalRequest, ProposedAction, approval_node
from aiotflow.workflows.context import WorkflowContext
from aiotflow.workflows.filters import AlertFilter

from .knowledge import failure_mode
from .llm import LLMClient

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


class MaintenanceSettings(BaseModel):
    """How cautious the maintenance agent is."""

    model_config = ConfigDict(frozen=True)

    guardrails: Guardrails = Field(default_factory=Guardrails)

    min_confidence: float = Field(
        0.5, ge=0, le=1, description="Below this the agent asks an operator to inspect "
                                     "instead of dispatching a technician.")
    min_evidence: int = Field(3, ge=1, description="Similar incidents needed to dispatch.")
    recent_maintenance_days: float = Field(90.0, gt=0)
    history_days: float = Field(730.0, gt=0, description="Maintenance log look-back.")


class WorkOrderSummary(BaseModel):
    """The only thing the LLM may return: one short summary; anything else is refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    summary: str = Field(min_length=20, max_length=1200)


class MaintenanceState(TypedDict, total=False):
    alert: dict[str, Any]
    similar: list[dict[str, Any]]
    retrieval: dict[str, Any] | None
    maintenance: list[dict[str, Any]]
    diagnosis: dict[str, Any]
    plan: dict[str, Any]
    guardrails: list[dict[str, Any]]
    approval: dict[str, Any] | None
    result: dict[str, Any]


def _sensor_evidence(ctx: WorkflowContext) -> list[str]:
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


def build_maintenance_graph(
    settings: MaintenanceSettings | None = None,
) -> StateGraph[Any, Any, Any, Any]:
    """The agent as an uncompiled LangGraph graph (the engine compiles it)."""
    cfg = settings or MaintenanceSettings()

    async def gather_evidence(state: MaintenanceState,
                              runtime: Runtime[WorkflowContext]) -> MaintenanceState:
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

    async def diagnose(state: MaintenanceState,
                       runtime: Runtime[WorkflowContext]) -> MaintenanceState:
        ctx = runtime.context
        similar = state.get("similar", [])
        found = state.get("retrieval") or {}
        evidence = _sensor_evidence(ctx)
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

    async def plan(state: MaintenanceState, runtime: Runtime[WorkflowContext]) -> MaintenanceState:
        ctx = runtime.context
        alert = ctx.alert
        d = state["diagnosis"]
        fm = failure_mode(d["failure_mode"])
        priority = _PRIORITY[alert.severity]
        if fm is not None and fm.key != "none":
            kind = "dispatch"
            headline = (f"{alert.asset}: suspected {fm.title} "
                        f"({d['confidence']:.0%} of similar-event weight)")
            actions = [
                {"tool": "book_technician", "summary": f"book the next on-call {fm.skill} "
                 f"technician for {fm.hours:g} h at {alert.asset}",
                 "args": {"skill": fm.skill, "asset": alert.asset, "site": alert.site,
                          "hours": fm.hours, "reason": f"suspected {fm.title}"}},
                {"tool": "create_work_order", "summary": f"open a {priority}-priority work "
                 f"order: {fm.action}", "args": {"asset": alert.asset, "site": alert.site,
                                                 "priority": priority,
                                                 "title": headline[:200]}},
            ]
        else:
            kind = "inspect"
            headline = f"{alert.asset}: anomaly without a known pattern"
            actions = [{"tool": "notify_operator", "summary": "ask the operator on duty to "
                        "inspect the asset", "args": {"priority": "high"}}]
        facts = "\n".join([f"Asset {alert.asset} at site {alert.site}, alert severity "
                           f"{alert.severity} (score {alert.score:.1f}, threshold "
                           f"{alert.threshold:.1f}).", f"Diagnosis: {d['title']}, confidence "
                           f"{d['confidence']:.0%}.", "Evidence:"] +
                          [f"- {e}" for e in d["evidence"]] +
                          ["Planned actions:"] + [f"- {a['summary']}" for a in actions])
        history = next((e for e in d["evidence"] if "similar past events" in e), "")
        fallback = (f"{headline}. {history[:1].upper()}{history[1:]}."
                    + (f" Recommended: {fm.action}." if fm and fm.key != "none" else ""))
        llm = ctx.services.get("llm")
        text, source = fallback, "offline"
        if isinstance(llm, LLMClient):
            out = await llm.structured(
                "You are a maintenance planner for diesel generators. Write a concise work-order"
                " summary (at most 120 words) from the facts given. Do not invent facts.",
                facts, WorkOrderSummary, fallback=WorkOrderSummary(summary=fallback),
                site=alert.site, alert=alert.id)
            text, source = out.value.summary, out.source
            if out.source in ("offline", "refused") and out.reason != "no LLM configured":
                text += f" (Deterministic summary: {out.reason}.)"
            await ctx.audit("llm.narrative", source=out.source, tokens=out.tokens,
                            cost_usd=round(out.cost_usd, 6), reason=out.reason,
                            site=alert.site, alert_id=alert.id)
        p = {"kind": kind, "headline": headline, "actions": actions, "priority": priority,
             "narrative": text, "narrative_source": source,
             "skill": fm.skill if fm else "general", "hours": fm.hours if fm else 0.0,
             "recommended_action": fm.action if fm else "inspect"}
        await ctx.audit("plan", kind=kind, headline=headline,
                        actions=[a["summary"] for a in actions])
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
            cost = rules.callout_fee + p["hours"] * rules.technician_rate_per_h
            ok &= check("cost_per_action", cost <= rules.max_cost_per_action,
                        f"estimated {cost:,.0f} (callout {rules.callout_fee:,.0f} + "
                        f"{p['hours']:g} h x {rules.technician_rate_per_h:,.0f}) <= "
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
                         actions=[{"tool": "notify_operator", "summary": "ask the operator on "
                                   "duty to inspect the asset", "args": {"priority": "high"}}])
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
            evidence=[*d["evidence"], *verdicts],
            actions=[ProposedAction(**a) for a in p["actions"]],
            details={"diagnosis": d, "alert_id": state["alert"]["id"]},
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
            note = await ctx.call_tool("notify_operator", {
                "subject": subject, "message": body, "priority": "high"})
            return {"result": base | {"status": "notified", "notification": note.id}}
        if not approval or approval["status"] != "approved":
            status = (approval or {}).get("status", "rejected")  # rejected or expired
            await ctx.audit("maintenance.not_dispatched", reason=f"approval {status}",
                            by=(approval or {}).get("by"), comment=(approval or {}).get("comment"))
            return {"result": base | {"status": status,
                                      "approval_id": (approval or {}).get("approval_id")}}
        aid = approval["approval_id"]
        approved = {a["tool"]: dict(a["args"]) for a in p["actions"]}
        booking, note, fallback = None, None, None
        try:
            # exactly the arguments the person approved; the tool layer checks them again
            booking = await ctx.call_tool("book_technician", approved["book_technician"],
                                          approval_id=aid)
        except (ToolUnavailable, ToolFailed) as exc:
            fallback = str(exc)
            note = await ctx.call_tool("notify_operator", {
                "subject": f"ACTION NEEDED - scheduling failed: {subject}",
                "message": f"Booking a {p['skill']} technician failed ({exc}). Please dispatch "
                           f"manually. Approved by {approval['by']}.\n\n{body}",
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
        wo = await ctx.call_tool("create_work_order", approved["create_work_order"] | {
            "description": description,
            "evidence": {"alert_id": alert.id, "diagnosis": d["failure_mode"],
                         "confidence": d["confidence"], "similar_incidents": d["evidence_ids"],
                         "statements": d["evidence"], "approval_id": aid},
            "technician_id": booking.technician_id if booking else None,
            "booking_id": booking.id if booking else None}, approval_id=aid)
        return {"result": base | {
            "status": "work_order_created", "work_order": wo.id,
            "booking": booking.id if booking else None,
            "technician": booking.technician_name if booking else None,
            "notification": note.id if note else None, "scheduling_error": fallback,
            "approval_id": aid}}

    def after_guardrails(state: MaintenanceState) -> str:
        return "approval" if state["plan"]["kind"] == "dispatch" else "execute"

    g: StateGraph[Any, Any, Any, Any] = StateGraph(MaintenanceState, context_schema=WorkflowContext)
    g.add_node("gather_evidence", gather_evidence)
    g.add_node("diagnose", diagnose)
    g.add_node("plan", plan)
    g.add_node("guardrails", guardrails)
    g.add_node("approval", approval_node(approval_request))  # type: ignore[arg-type]
    g.add_node("execute", execute)
    g.add_edge(START, "gather_evidence")
    g.add_edge("gather_evidence", "diagnose")
    g.add_edge("diagnose", "plan")
    g.add_edge("plan", "guardrails")
    g.add_conditional_edges("guardrails", after_guardrails, ["approval", "execute"])
    g.add_edge("approval", "execute")
    g.add_edge("execute", END)
    return g


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


