"""aiotflow workflows: alert-triggered LangGraph runs with durable state, human approval
nodes, an approval console and an audit trail.

Depends on :mod:`tools`, :mod:`vectorstore` and :mod:`edge` (alert types and MQTT
settings only).
"""

from .app import App, WorkflowSpec, load_app
from .approval import (
    ApprovalOutcome,
    ApprovalRequest,
    ProposedAction,
    approval_id_for,
    approval_node,
)
from .console import ask_decision, format_pending, render_request, review_pending
from .context import WorkflowContext
from .engine import Engine, EngineStats, RunOutcome
from .errors import AppLoadError, ApprovalError, WorkflowDefinitionError, WorkflowError
from .filters import AlertFilter
from .runs import RunLedger, RunRecord
from .settings import EngineSettings

__all__ = [
    "AlertFilter",
    "App",
    "AppLoadError",
    "ApprovalError",
    "ApprovalOutcome",
    "ApprovalRequest",
    "Engine",
    "EngineSettings",
    "EngineStats",
    "ProposedAction",
    "RunLedger",
    "RunOutcome",
    "RunRecord",
    "WorkflowContext",
    "WorkflowDefinitionError",
    "WorkflowError",
    "WorkflowSpec",
    "approval_id_for",
    "approval_node",
    "ask_decision",
    "format_pending",
    "load_app",
    "render_request",
    "review_pending",
]
