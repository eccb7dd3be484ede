"""aiotflow workflows: alert-triggered LangGraph runs with durable state, human approval
nodes, an approval console and an audit trail.

Depends on :mod:`aiotflow.tools`, :mod:`aiotflow.vectorstore` and
:mod:`aiotflow.contracts`; never on the edge runtime, the simulator or the demo broker.
"""

from aiotflow.extras import require as _require

_require("engine", feature="aiotflow.workflows")

from .app import App, WorkflowSpec, load_app
from .approval import (
    ApprovalOutcome,
    ApprovalRequest,
    ProposedAction,
    approval_id_for,
    approval_node,
)
from .console import (
    IdentityError,
    approval_panel,
    ask_decision,
    check_identity,
    decide,
    format_pending,
    pending_rows,
    render_request,
    review_pending,
)
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
    "IdentityError",
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
    "approval_panel",
    "ask_decision",
    "check_identity",
    "decide",
    "format_pending",
    "load_app",
    "pending_rows",
    "render_request",
    "review_pending",
]
