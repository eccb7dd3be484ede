"""aiotflow agents, built only from the public APIs of workflows, tools and vectorstore."""

from aiotflow.extras import require as _require

_require("engine", feature="aiotflow.agents")

from .bearing import BearingSettings, build_bearing_graph, register_bearing_agent
from .evidence import EvidenceSettings, evidence_nodes
from .knowledge import FAILURE_MODES, FailureMode, failure_mode
from .learning import close_and_learn
from .line_stop import LineStopSettings, build_line_stop_graph, register_line_stop_agent
from .llm import ChatAnswer, LLMClient, LLMSettings, LLMText
from .maintenance import (
    Guardrails,
    MaintenanceSettings,
    MaintenanceState,
    build_maintenance_graph,
    model_actions,
    plan_with_llm,
    register_maintenance_agent,
    run_actions,
)
from .planner import LLMPlanner, PlannerSettings, PlanResult

__all__ = [
    "FAILURE_MODES",
    "BearingSettings",
    "ChatAnswer",
    "EvidenceSettings",
    "FailureMode",
    "Guardrails",
    "LLMClient",
    "LLMPlanner",
    "LLMSettings",
    "LLMText",
    "LineStopSettings",
    "MaintenanceSettings",
    "MaintenanceState",
    "PlanResult",
    "PlannerSettings",
    "build_bearing_graph",
    "build_line_stop_graph",
    "build_maintenance_graph",
    "close_and_learn",
    "evidence_nodes",
    "failure_mode",
    "model_actions",
    "plan_with_llm",
    "register_bearing_agent",
    "register_line_stop_agent",
    "register_maintenance_agent",
    "run_actions",
]
