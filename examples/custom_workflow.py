"""A custom workflow in a few lines: page the operator on major vibration alerts.

    aiotflow run examples.custom_workflow:app
"""

from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from aiotflow import AlertFilter, App, WorkflowContext

app = App("vibration-watch")


class State(TypedDict, total=False):
    alert: dict[str, Any]
    result: dict[str, Any]


async def page_operator(state: State, runtime: Runtime[WorkflowContext]) -> State:
    ctx = runtime.context
    channel, top = max(ctx.alert.summary.items(), key=lambda kv: kv[1].contribution)
    note = await ctx.call_tool("notify_operator", {
        "subject": f"{ctx.alert.asset}: {ctx.alert.severity} anomaly in {channel}",
        "message": f"{channel} at {top.last:g}, trend {top.slope_per_min:+.2f}/min",
        "priority": "high"})
    return {"result": {"notification": note.id}}


@app.workflow(when=AlertFilter(min_severity="major"), scopes={"notify:send"})
def vibration_watch() -> StateGraph[Any, Any, Any, Any]:
    """Page the operator on duty for major and critical alerts."""
    g = StateGraph(State, context_schema=WorkflowContext)
    g.add_node("page", page_operator)
    g.add_edge(START, "page")
    g.add_edge("page", END)
    return g
