"""The application object: workflows registered by decorator, tools, services.

    app = App("maintenance")

    @app.workflow(when=AlertFilter(asset_types=["generator"]))
    def triage() -> StateGraph:
        '''Triage generator alerts.'''
        ...

``aiotflow run module:app`` loads it by import string, like ``uvicorn module:app``.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langgraph.graph import StateGraph

from aiotflow.contracts.schema import Alert
from aiotflow.tools.builtin import BUILTIN_SCOPES
from aiotflow.tools.registry import ToolRegistry

from .errors import AppLoadError, WorkflowDefinitionError
from .filters import AlertFilter

__all__ = ["App", "ServiceFactory", "WorkflowSpec", "load_app"]

ServiceFactory = Callable[[Any], AbstractAsyncContextManager[Any] | AsyncIterator[Any] | Any]

#: Scopes a workflow's tool calls carry unless its registration says otherwise.
DEFAULT_SCOPES = BUILTIN_SCOPES


@dataclass(frozen=True)
class WorkflowSpec:
    """A registered workflow: its graph builder, trigger filter and RBAC scopes."""

    name: str
    build: Callable[[], StateGraph[Any, Any, Any, Any]]
    when: Callable[[Alert], bool]
    scopes: frozenset[str]
    description: str = ""
    single_flight: bool = True

    def matches(self, alert: Alert) -> bool:
        return self.when(alert)


@dataclass
class App:
    """An aiotflow application: workflows, tools and services, run by the engine."""

    name: str
    workflows: dict[str, WorkflowSpec] = field(default_factory=dict)
    tools: ToolRegistry = field(default_factory=ToolRegistry)
    services: dict[str, ServiceFactory] = field(default_factory=dict)

    def workflow(
        self,
        name: str | None = None,
        *,
        when: AlertFilter | Callable[[Alert], bool] | None = None,
        scopes: Iterable[str] | None = None,
        single_flight: bool = True,
    ) -> Callable[[Callable[[], StateGraph[Any, Any, Any, Any]]],
                  Callable[[], StateGraph[Any, Any, Any, Any]]]:
        """Register a graph-building function for alerts matching ``when``.

        ``single_flight``: while a run of this workflow is active for an asset, further
        alerts of that asset are recorded against it instead of starting another run.
        """

        def decorate(
            build: Callable[[], StateGraph[Any, Any, Any, Any]],
        ) -> Callable[[], StateGraph[Any, Any, Any, Any]]:
            wf_name = name or build.__name__
            if wf_name in self.workflows:
                raise WorkflowDefinitionError(f"workflow {wf_name!r} is already registered")
            if not callable(build) or inspect.iscoroutinefunction(build):
                raise WorkflowDefinitionError(
                    f"{wf_name}: register a plain function that returns a StateGraph")
            match: Callable[[Alert], bool]
            if when is None:
                match = _always
            elif isinstance(when, AlertFilter):
                match = when.matches
            else:
                match = when
            self.workflows[wf_name] = WorkflowSpec(
                name=wf_name, build=build, when=match,
                scopes=frozenset(scopes) if scopes is not None else DEFAULT_SCOPES,
                description=inspect.cleandoc(build.__doc__ or ""), single_flight=single_flight,
            )
            return build

        return decorate

    def service(self, name: str) -> Callable[[ServiceFactory], ServiceFactory]:
        """Register a service factory ``f(settings)`` (an async context manager or a value);
        workflow nodes reach it as ``runtime.context.services[name]``."""

        def decorate(factory: ServiceFactory) -> ServiceFactory:
            self.services[name] = factory
            return factory

        return decorate

    def matching(self, alert: Alert) -> list[WorkflowSpec]:
        return [w for w in self.workflows.values() if w.matches(alert)]


def _always(alert: Alert) -> bool:
    return True


def load_app(target: str) -> App:
    """Import ``package.module:attribute`` and return the :class:`App` it names."""
    module_name, _, attr = target.partition(":")
    if not module_name:
        raise AppLoadError(f"expected module:attribute, got {target!r}")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AppLoadError(f"cannot import {module_name!r}: {exc}") from exc
    obj = getattr(module, attr or "app", None)
    if obj is None:
        raise AppLoadError(f"{module_name!r} has no attribute {attr or 'app'!r}")
    if callable(obj) and not isinstance(obj, App):
        obj = obj()
    if not isinstance(obj, App):
        raise AppLoadError(f"{target} is a {type(obj).__name__}, not an aiotflow App")
    return obj
