"""Errors raised by the workflow layer.

Exception tree::

    WorkflowError
    ├── AppLoadError         ``aiotflow run mod:app`` could not import or find the app
    ├── WorkflowDefinitionError   a workflow's graph is malformed
    └── ApprovalError        an approval id is unknown or already decided

LangGraph's ``GraphInterrupt`` is a control-flow signal, not an error: it is never
caught here.
"""

from __future__ import annotations


class WorkflowError(Exception):
    """Base class of every error raised by :mod:`aiotflow.workflows`."""


class AppLoadError(WorkflowError):
    """The app import string does not lead to an :class:`~aiotflow.workflows.App`."""


class WorkflowDefinitionError(WorkflowError):
    """A workflow's graph-building function returned something unusable."""


class ApprovalError(WorkflowError):
    """An approval cannot be decided (unknown id, or already decided)."""
