"""aiotflow tool layer: typed tools, RBAC scopes, enforced approvals, idempotent effects,
retries and an audit trail; built-in scheduling, work-order and notification tools.

Depends on none of aiotflow's other packages.
"""

from aiotflow.extras import require as _require

_require("engine", feature="aiotflow.tools")

from .builtin import (
    BUILTIN_SCOPES,
    BookTechnicianIn,
    CreateWorkOrderIn,
    FindOnCallIn,
    MaintenanceHistoryIn,
    MaintenanceHistoryOut,
    NotifyIn,
    OnCallOut,
    register_builtin_tools,
)
from .control import ApprovalRecord, AuditRecord, ControlStore, Decision
from .decisions import DecisionVerifier, ForgedDecision
from .errors import (
    ApprovalRequired,
    PermissionDenied,
    ToolError,
    ToolFailed,
    ToolInputError,
    ToolNotFound,
    ToolUnavailable,
)
from .ops import Booking, MaintenanceEntry, Notification, OpsDatabase, Technician, WorkOrder
from .registry import CallContext, Principal, RetrySettings, Tool, ToolExecutor, ToolRegistry
from .scheduling import HttpScheduling, SchedulingBackend, SqliteScheduling

__all__ = [
    "BUILTIN_SCOPES",
    "ApprovalRecord",
    "ApprovalRequired",
    "AuditRecord",
    "BookTechnicianIn",
    "Booking",
    "CallContext",
    "ControlStore",
    "CreateWorkOrderIn",
    "Decision",
    "DecisionVerifier",
    "FindOnCallIn",
    "ForgedDecision",
    "HttpScheduling",
    "MaintenanceEntry",
    "MaintenanceHistoryIn",
    "MaintenanceHistoryOut",
    "Notification",
    "NotifyIn",
    "OnCallOut",
    "OpsDatabase",
    "PermissionDenied",
    "Principal",
    "RetrySettings",
    "SchedulingBackend",
    "SqliteScheduling",
    "Technician",
    "Tool",
    "ToolError",
    "ToolExecutor",
    "ToolFailed",
    "ToolInputError",
    "ToolNotFound",
    "ToolRegistry",
    "ToolUnavailable",
    "WorkOrder",
    "register_builtin_tools",
]
