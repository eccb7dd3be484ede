"""aiotflow agents, built only from the public APIs of workflows, tools and vectorstore."""

from aiotflow.extras import require as _require

_require("engine", feature="aiotflow.agents")

from .knowledge import FAILURE_MODES, FailureMode, failure_mode
from .learning import close_and_learn
from .llm import LLMClient, LLMSettings, LLMText
from .maintenance import (
    Guardrails,
    MaintenanceSettings,
    MaintenanceState,
    build_maintenance_graph,
    register_maintenance_agent,
)

__all__ = [
    "FAILURE_MODES",
    "FailureMode",
    "Guardrails",
    "LLMClient",
    "LLMSettings",
    "LLMText",
    "MaintenanceSettings",
    "MaintenanceState",
    "build_maintenance_graph",
    "close_and_learn",
    "failure_mode",
    "register_maintenance_agent",
]
