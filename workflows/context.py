"""What a workflow node receives at run time (``runtime.context``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic import BaseModel

from aiotflow.contracts.schema import Alert
from aiotflow.tools.control import ControlStore
from aiotflow.tools.registry import CallContext, Principal, ToolExecutor
from aiotflow.vectorstore.store import HistoryStore

__all__ = ["WorkflowContext"]


@dataclass
class WorkflowContext:
    """Services of one workflow run, injected by the engine (never built in a workflow)."""

    thread_id: str
    workflow: str
    alert: Alert
    principal: Principal
    executor: ToolExecutor
    control: ControlStore
    history: HistoryStore | None = None
    services: dict[str, Any] = field(default_factory=dict)

    @property
    def log(self) -> Any:
        return structlog.get_logger("aiotflow.workflow").bind(
            thread_id=self.thread_id, workflow=self.workflow, asset=self.alert.asset,
            alert_id=self.alert.id)

    async def call_tool(
        self,
        name: str,
        args: BaseModel | dict[str, Any],
        *,
        approval_id: str | None = None,
        key: str | None = None,
    ) -> Any:
        """Call a tool as this workflow (its scopes, its thread, optional approval)."""
        ctx = CallContext(principal=self.principal, thread_id=self.thread_id,
                          approval_id=approval_id, idempotency_key=key)
        return await self.executor.call(name, args, ctx)

    async def audit(self, kind: str, /, **detail: Any) -> None:
        """Append an audit record for this run."""
        await self.control.audit(kind, actor=self.workflow, thread_id=self.thread_id, **detail)
