"""Errors raised by the tool layer.

Exception tree::

    ToolError
    ├── ToolNotFound        no tool of that name is registered
    ├── ToolInputError      the arguments do not validate against the tool's input model
    ├── PermissionDenied    the caller lacks a scope the tool requires
    ├── ApprovalRequired    a high-stakes tool was called without a valid human approval
    ├── ToolUnavailable     the backend is down or timed out (transient: retried)
    └── ToolFailed          the backend refused the call (permanent: not retried)
"""

from __future__ import annotations


class ToolError(Exception):
    """Base class of every error raised by :mod:`aiotflow.tools`; ``tool`` names the tool."""

    def __init__(self, message: str, *, tool: str = "") -> None:
        super().__init__(f"{tool}: {message}" if tool else message)
        self.tool = tool


class ToolNotFound(ToolError):
    """No tool of that name."""


class ToolInputError(ToolError):
    """Arguments failed validation."""


class PermissionDenied(ToolError):
    """The caller's scopes do not cover the tool; ``missing`` lists what is lacking."""

    def __init__(self, message: str, *, tool: str = "", missing: frozenset[str] = frozenset()):
        super().__init__(message, tool=tool)
        self.missing = missing


class ApprovalRequired(ToolError):
    """A high-stakes call without a recorded, matching, approved human decision."""


class ToolUnavailable(ToolError):
    """A transient failure (service down, timeout); retried, then raised."""


class ToolFailed(ToolError):
    """A permanent failure (the service said no); never retried."""
