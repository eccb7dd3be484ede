"""aiotflow: event-driven agent orchestration for AIoT.

Workflow authors import from here::

    from aiotflow import App, AlertFilter, WorkflowContext, approval_node

Everything installs under this one namespace: :mod:`aiotflow.contracts` (the alert and
reading schemas edge and engine share), :mod:`aiotflow.edge` (the gateway runtime),
:mod:`aiotflow.vectorstore`, :mod:`aiotflow.tools`, :mod:`aiotflow.workflows` and
:mod:`aiotflow.agents` (the engine stack, ``aiotflow[engine]``), and the tooling beside
them: :mod:`aiotflow.training`, :mod:`aiotflow.evaluation`, :mod:`aiotflow.simulator`,
:mod:`aiotflow.demo`. The names below are imported on first use, so that
``import aiotflow.edge`` on a gateway loads none of the engine stack.
"""

from __future__ import annotations

import importlib
import typing

__version__ = "0.1.0"

#: public name -> the module that defines it (imported on first use)
_LAZY: dict[str, str] = {
    "Alert": "aiotflow.contracts",
    "Reading": "aiotflow.contracts",
    "AlertFilter": "aiotflow.workflows",
    "App": "aiotflow.workflows",
    "ApprovalRequest": "aiotflow.workflows",
    "Engine": "aiotflow.workflows",
    "EngineSettings": "aiotflow.workflows",
    "ProposedAction": "aiotflow.workflows",
    "WorkflowContext": "aiotflow.workflows",
    "approval_node": "aiotflow.workflows",
    "load_app": "aiotflow.workflows",
}

if typing.TYPE_CHECKING:
    from aiotflow.contracts import Alert, Reading
    from aiotflow.workflows import (
        AlertFilter,
        App,
        ApprovalRequest,
        Engine,
        EngineSettings,
        ProposedAction,
        WorkflowContext,
        approval_node,
        load_app,
    )


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aiotflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Alert",
    "AlertFilter",
    "App",
    "ApprovalRequest",
    "Engine",
    "EngineSettings",
    "ProposedAction",
    "Reading",
    "WorkflowContext",
    "__version__",
    "approval_node",
    "load_app",
]
