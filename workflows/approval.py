"""Human approval as a graph node, built on LangGraph's ``interrupt()``.

The node records a pending approval in the control database (idempotent: LangGraph
re-runs the node from the top on resume), then interrupts. The engine resumes the
thread with ``Command(resume=decision)`` once a person decided, from any process, via
``aiotflow approve``. The decision lands in state under ``approval``; the tool layer
checks the same record again before any high-stakes call.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from langgraph.runtime import Runtime
from langgraph.types import interrupt
from pydantic import BaseModel, ConfigDict, Field

from aiotflow.tools.policy import TIERS

from .context import WorkflowContext

__all__ = ["ApprovalOutcome", "ApprovalRequest", "ProposedAction", "approval_id_for",
           "approval_node"]


class ProposedAction(BaseModel):
    """One action the workflow wants to take once approved."""

    model_config = ConfigDict(frozen=True)

    tool: str
    summary: str
    args: dict[str, Any] = Field(default_factory=dict)


class ApprovalRequest(BaseModel):
    """What a person sees before deciding."""

    model_config = ConfigDict(frozen=True)

    title: str
    summary: str
    evidence: list[str] = Field(default_factory=list)
    actions: list[ProposedAction] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)

    @property
    def tools(self) -> list[str]:
        return sorted({a.tool for a in self.actions})


class ApprovalOutcome(BaseModel):
    """A recorded human decision, as the workflow receives it."""

    model_config = ConfigDict(frozen=True)

    approval_id: str
    status: Literal["approved", "rejected", "expired"]
    by: str
    comment: str | None = None

    @property
    def approved(self) -> bool:
        return self.status == "approved"


_NS = uuid.UUID("0d5b8a0e-2c7e-4a53-8c8e-3b9f6f0a1d22")


def approval_id_for(thread_id: str, node: str) -> str:
    """Stable id of the approval asked by ``node`` in ``thread_id``."""
    return str(uuid.uuid5(_NS, f"{thread_id}/{node}"))


def approval_node(
    make_request: Callable[[dict[str, Any]], ApprovalRequest | None]
    | Callable[[dict[str, Any]], Awaitable[ApprovalRequest | None]],
    *,
    name: str = "approval",
) -> Callable[[dict[str, Any], Runtime[WorkflowContext]], Awaitable[dict[str, Any]]]:
    """A node that asks a human to approve the request ``make_request(state)`` builds.

    Returns ``{"approval": ApprovalOutcome-as-dict}``; when ``make_request`` returns
    ``None`` nothing needs approval and ``approval`` is ``None``.
    """

    async def node(state: dict[str, Any], runtime: Runtime[WorkflowContext]) -> dict[str, Any]:
        ctx = runtime.context
        req = make_request(state)
        if isinstance(req, Awaitable):
            req = await req
        if req is None:
            return {"approval": None}
        aid = approval_id_for(ctx.thread_id, name)
        # each action's own tier: a part order's depends on what it spends
        tiers = [ctx.executor.tier(a.tool, a.args) for a in req.actions
                 if a.tool in ctx.executor.registry]
        await ctx.control.request_approval(
            approval_id=aid, thread_id=ctx.thread_id, workflow=ctx.workflow,
            asset=ctx.alert.asset, title=req.title, request=req.model_dump(mode="json"),
            tools=req.tools, risk=max(tiers, key=TIERS.index) if tiers else "high",
        )
        decision = interrupt({"approval_id": aid, "title": req.title})
        outcome = ApprovalOutcome.model_validate(decision)
        if outcome.approval_id != aid:
            raise ValueError(f"resumed with decision for {outcome.approval_id}, expected {aid}")
        return {"approval": outcome.model_dump()}

    node.__name__ = name
    return node
