"""The bearing agent (``aiotflow demo --scenario bearing``): slow bearing wear, planned
for instead of dispatched.

alert -> similar incidents + maintenance log -> diagnosis -> the time left before the
vibration reaches its alarm limit, from the condition trend (route surveys and daily
values over months - a one-minute alert window cannot show a wear rate of weeks) and
the level the alert reports -> the spare part in stock, or ordered (on its own up to the
policy's spend limit, with the job's approval above it) -> the work booked in the next
planned downtime window that the part arrives for, with a work order; an emergency
dispatch instead only when the estimate is shorter than the wait for that window.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import Any

from langgraph.graph import StateGraph
from langgraph.runtime import Runtime
from pydantic import Field

from aiotflow.tools.plant import trend_per_day
from aiotflow.workflows.app import App
from aiotflow.workflows.approval import ApprovalRequest, ProposedAction
from aiotflow.workflows.context import WorkflowContext
from aiotflow.workflows.filters import AlertFilter

from .evidence import AgentState, EvidenceSettings, agent_graph, evidence_nodes
from .knowledge import failure_mode
from .llm import LLMClient
from .maintenance import narrate, run_actions

__all__ = ["BearingSettings", "build_bearing_graph", "hours_to_limit",
           "register_bearing_agent"]


class BearingSettings(EvidenceSettings):
    """How the bearing agent estimates and plans."""

    trend_days: float = Field(365.0, gt=0, description="Condition readings looked at.")
    margin_h: float = Field(48.0, ge=0, description="The estimate must leave this much "
                                                    "after the window starts.")
    modes: tuple[str, ...] = Field(("bearing_wear",), description="Failure modes planned "
                                                                  "for; others: inspect.")


class BearingState(AgentState, total=False):
    assessment: dict[str, Any]
    ordered: dict[str, Any] | None


def hours_to_limit(points: list[tuple[float, float]], now: float, level: float,
                   limit: float) -> tuple[float, float | None, float | None]:
    """``(hours, fitted slope/day, last-leg slope/day)`` until ``level`` reaches ``limit``.

    Two rates are taken: the least-squares trend over every point (with the current
    level), and the last leg, from the latest reading to now, which shows an
    acceleration the long fit smooths away. The faster rate gives the estimate (the
    cautious one); ``inf`` when neither rises.
    """
    if level >= limit:
        return 0.0, None, None
    fit = trend_per_day([*points, (now, level)])
    leg = None
    if points:
        t_last, v_last = max(points)
        if now - t_last > 3600:
            leg = (level - v_last) / ((now - t_last) / 86400)
    rate = max([r for r in (fit, leg) if r is not None], default=0.0)
    if rate <= 0:
        return math.inf, fit, leg
    return (limit - level) / rate * 24, fit, leg


def build_bearing_graph(settings: BearingSettings | None = None
                        ) -> StateGraph[Any, Any, Any, Any]:
    """The bearing agent as an uncompiled graph."""
    cfg = settings or BearingSettings()
    gather_evidence, diagnose = evidence_nodes(cfg)

    async def assess(state: BearingState, runtime: Runtime[WorkflowContext]) -> BearingState:
        ctx = runtime.context
        alert = ctx.alert
        d = state["diagnosis"]
        fm = failure_mode(d["failure_mode"])
        now = time.time()
        a: dict[str, Any] = {"planned_for": bool(fm and fm.key in cfg.modes
                                                 and fm.alarm_channel and fm.alarm_limit)}
        if not a["planned_for"] or fm is None or fm.alarm_channel is None \
                or fm.alarm_limit is None:
            return {"assessment": a}
        ch = fm.alarm_channel
        s = alert.summary.get(ch)
        trend = await ctx.call_tool("condition_trend", {"asset": alert.asset, "channel": ch,
                                                        "days": cfg.trend_days})
        level = s.mean if s is not None else (trend.readings[-1].value if trend.readings
                                              else 0.0)
        hours, fit, leg = hours_to_limit([(r.ts, r.value) for r in trend.readings], now,
                                         level, fm.alarm_limit)
        stock = await ctx.call_tool("check_stock", {"failure_mode": fm.key})
        part = min(stock.parts, key=lambda p: (p.stock == 0, p.unit_cost), default=None)
        arrive = now + (part.lead_time_days * 86400 if part and part.stock == 0 else 0.0)
        window = (await ctx.call_tool("next_downtime", {
            "asset": alert.asset, "after": arrive, "min_hours": fm.hours})).window
        wait_h = (max(window.start, now) - now) / 3600 if window else math.inf
        a |= {"channel": ch, "limit": fm.alarm_limit, "level": round(level, 3),
              "hours_to_limit": None if math.isinf(hours) else round(hours, 1),
              "slope_fit_per_day": None if fit is None else round(fit, 5),
              "slope_last_leg_per_day": None if leg is None else round(leg, 5),
              "readings": len(trend.readings),
              "part": part.model_dump() if part else None,
              "part_arrives": arrive if part and part.stock == 0 else None,
              "window": window.model_dump() if window else None,
              "wait_h": None if math.isinf(wait_h) else round(wait_h, 1),
              "emergency": hours < wait_h + cfg.margin_h}
        ev = [f"{ch} at {level:.2f} now against an alarm limit of {fm.alarm_limit:g}; "
              + (f"at the faster of the trend over {len(trend.readings)} condition readings "
                 f"({_rate(fit)}) and since the last one ({_rate(leg)}) it reaches the limit "
                 f"in about {_duration(hours)}" if not math.isinf(hours) else
                 "no rising trend in the condition readings")]
        if part is None:
            ev.append(f"no spare part for {fm.title} in the catalogue")
        elif part.stock > 0:
            ev.append(f"spare part {part.part_no} ({part.description}) in stock: {part.stock}")
        else:
            ev.append(f"spare part {part.part_no} ({part.description}) out of stock: "
                      f"{part.unit_cost:,.0f} from {part.supplier or 'the supplier'}, "
                      f"{part.lead_time_days:g} days' lead time")
        if window is not None:
            ev.append(f"next planned downtime of {alert.asset} that leaves {fm.hours:g} h"
                      + (" after the part arrives" if a["part_arrives"] else "")
                      + f": {_when(window.start)} for {window.hours:g} h "
                      f"({window.note or window.kind}), in {_duration(wait_h)}")
        else:
            ev.append(f"no planned downtime of {alert.asset} in the calendar")
        ev.append("the estimate leaves time to wait for that window" if not a["emergency"]
                  else "the estimate is shorter than the wait for a planned window "
                       f"(+{cfg.margin_h:g} h margin): emergency dispatch")
        a["evidence"] = ev
        await ctx.audit("bearing.assessed", **{k: v for k, v in a.items() if k != "part"},
                        part_no=part.part_no if part else None)
        return {"assessment": a}

    async def plan(state: BearingState, runtime: Runtime[WorkflowContext]) -> BearingState:
        ctx = runtime.context
        alert = ctx.alert
        d, a = state["diagnosis"], state["assessment"]
        fm = failure_mode(d["failure_mode"])
        evidence = [*d["evidence"], *a.get("evidence", [])]
        order: dict[str, Any] | None = None
        actions: list[dict[str, Any]] = []
        if not a["planned_for"] or fm is None:
            kind = "inspect"
            headline = f"{alert.asset}: {d['title']}, not a wear pattern this agent plans for"
        else:
            kind = "emergency" if a["emergency"] else "planned"
            part = a["part"]
            if part and part["stock"] == 0:
                order = {"tool": "order_part", "summary": f"order 1 x {part['part_no']} "
                         f"({part['unit_cost']:,.0f})", "args": {
                             "part_no": part["part_no"], "quantity": 1, "asset": alert.asset,
                             "site": alert.site, "reason": f"{fm.title} on {alert.asset}",
                             "max_total_usd": round(part["unit_cost"], 2)}}
            w = a["window"]
            book_args: dict[str, Any] = {"skill": fm.skill, "asset": alert.asset,
                                         "site": alert.site, "hours": fm.hours,
                                         "reason": f"{fm.title}: {fm.action}"[:300]}
            if kind == "planned" and w:
                book_args["not_before"] = w["start"]
                headline = (f"{alert.asset}: {fm.title}, about {_duration(a['hours_to_limit'])}"
                            f" to the alarm limit: planned for {_when(w['start'])}")
                priority = "medium"
            else:
                headline = (f"{alert.asset}: {fm.title}, about "
                            f"{_duration(a['hours_to_limit'])} to the alarm limit: dispatch now")
                priority = "high"
            actions = [
                {"tool": "book_technician", "summary": f"book a {fm.skill} technician for "
                 f"{fm.hours:g} h" + (f" from {_when(w['start'])}" if "not_before" in book_args
                                      else " now"), "args": book_args},
                {"tool": "create_work_order", "summary": f"open a {priority}-priority work "
                 f"order: {fm.action}", "args": {"asset": alert.asset, "site": alert.site,
                                                 "priority": priority,
                                                 "title": headline[:200]}}]
        auto_order = None
        if order is not None:
            rule = ctx.executor.policy.rule(ctx.executor.tier("order_part", order["args"]))
            if rule.mode == "auto":
                auto_order = order
            else:
                actions.insert(0, order)
        fallback = f"{headline}. " + " ".join(f"{e[:1].upper()}{e[1:]}." for e in
                                               a.get("evidence", [])[:1])
        text, source = await narrate(ctx, "\n".join([headline, *evidence]), fallback)
        p = {"kind": kind, "headline": headline, "actions": actions, "evidence": evidence,
             "auto_order": auto_order, "narrative": text, "narrative_source": source,
             "source": "code"}
        await ctx.audit("plan", kind=kind, headline=headline,
                        auto=auto_order["summary"] if auto_order else None,
                        actions=[x["summary"] for x in actions])
        return {"plan": p}

    async def order(state: BearingState, runtime: Runtime[WorkflowContext]) -> BearingState:
        """A part order within the spend limit: one keyed effect in its own node."""
        o = state["plan"].get("auto_order")
        if o is None:
            return {"ordered": None}
        out = await runtime.context.call_tool(o["tool"], o["args"])
        return {"ordered": out.model_dump(mode="json")}

    def approval_request(state: dict[str, Any]) -> ApprovalRequest | None:
        p, d = state["plan"], state["diagnosis"]
        if p["kind"] not in ("planned", "emergency"):
            return None
        o = state.get("ordered")
        return ApprovalRequest(
            title=f"{'Planned' if p['kind'] == 'planned' else 'EMERGENCY'} bearing job on "
                  f"{state['alert']['asset']}",
            summary=p["narrative"] + (f" Part ordered on its own (within the spend limit): "
                                      f"{o['id']}." if o else ""),
            evidence=p["evidence"],
            actions=[ProposedAction(tool=x["tool"], summary=x["summary"], args=x["args"])
                     for x in p["actions"]],
            details={"diagnosis": d, "assessment": state.get("assessment"),
                     "alert_id": state["alert"]["id"]})

    async def execute(state: BearingState, runtime: Runtime[WorkflowContext]) -> BearingState:
        ctx = runtime.context
        alert = ctx.alert
        p, d = state["plan"], state["diagnosis"]
        approval = state.get("approval")
        base = {"failure_mode": d["failure_mode"], "asset": alert.asset, "plan": p["kind"],
                "part_order": (state.get("ordered") or {}).get("id")}
        body = p["narrative"] + "\n\nEvidence:\n" + "\n".join(f"- {e}" for e in p["evidence"])
        if p["kind"] == "inspect":
            ran = await run_actions(ctx, [{"tool": "notify_operator", "args": {
                "subject": f"[{alert.severity.upper()}] {p['headline']}"[:300],
                "message": body, "priority": "high"}}], None, fill={})
            return {"result": base | {"status": "notified",
                                      "notification": ran["notify_operator"].id}}
        if not approval or approval["status"] != "approved":
            status = (approval or {}).get("status", "rejected")
            await ctx.audit("bearing.not_scheduled", reason=f"approval {status}")
            return {"result": base | {"status": status,
                                      "approval_id": (approval or {}).get("approval_id")}}
        aid = approval["approval_id"]
        ran = await run_actions(ctx, [x for x in p["actions"] if x["tool"] != "create_work_order"],
                                aid, fill={})
        booking = ran.get("book_technician")
        ordered = ran.get("order_part") or state.get("ordered")
        description = (f"{p['narrative']}\n\nEvidence:\n" + "\n".join(
            f"- {e}" for e in p["evidence"])
            + (f"\n\nPart order: {ordered['id'] if isinstance(ordered, dict) else ordered.id}."
               if ordered else "")
            + f"\nTechnician: {booking.technician_name if booking else 'unassigned'}"
            + (f", from {_when(booking.start)}." if booking else ".")
            + f"\nApproved by {approval['by']}.\nAlert {alert.id}.")
        wo_action = [x for x in p["actions"] if x["tool"] == "create_work_order"]
        ran |= await run_actions(ctx, wo_action, aid, fill={"create_work_order": {
            "description": description,
            "evidence": {"alert_id": alert.id, "diagnosis": d["failure_mode"],
                         "assessment": {k: v for k, v in state["assessment"].items()
                                        if k != "evidence"},
                         "approval_id": aid, "statements": p["evidence"]},
            "technician_id": booking.technician_id if booking else None,
            "booking_id": booking.id if booking else None}})
        return {"result": base | {
            "status": "scheduled" if p["kind"] == "planned" else "dispatched",
            "work_order": ran["create_work_order"].id,
            "booking": booking.id if booking else None,
            "start": booking.start if booking else None,
            "part_order": (ran["order_part"].id if "order_part" in ran else base["part_order"]),
            "approval_id": aid, "actions_executed": sorted(ran)}}

    return agent_graph(BearingState, [("gather_evidence", gather_evidence),
                                      ("diagnose", diagnose), ("assess", assess),
                                      ("plan", plan), ("order", order)],
                       approval=approval_request, execute=execute,
                       asks=lambda s: s["plan"]["kind"] != "inspect")


def register_bearing_agent(app: App, *, name: str = "bearing",
                           when: AlertFilter | None = None,
                           settings: BearingSettings | None = None, llm: bool = True) -> None:
    """Add the bearing agent to ``app`` (generator alerts by default)."""
    if llm and "llm" not in app.services:
        app.service("llm")(lambda _settings: LLMClient())

    def bearing() -> StateGraph[Any, Any, Any, Any]:
        """Slow wear: estimate time to the alarm limit, order parts, plan into downtime."""
        return build_bearing_graph(settings)

    app.workflow(name, when=when or AlertFilter(asset_types=["generator"]))(bearing)


def _rate(per_day: float | None) -> str:
    return "n/a" if per_day is None else f"{per_day:+.2g}/day"


def _duration(hours: float | None) -> str:
    if hours is None or math.isinf(hours):
        return "no estimate"
    return f"{hours:.0f} h" if hours < 72 else f"{hours / 24:.0f} days"


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%a %Y-%m-%d %H:%M UTC")
