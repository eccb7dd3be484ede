"""Errors raised by the edge runtime.

Exception tree::

    EdgeError
    └── BundleError          a model bundle is missing, malformed or breaks the contract

A bad configuration or telemetry message raises the shared contracts' errors
(:class:`~aiotflow.contracts.ConfigError`, :class:`~aiotflow.contracts.PayloadError`),
re-exported here for convenience.
"""

from __future__ import annotations

from aiotflow.contracts.errors import ConfigError, PayloadError

__all__ = ["BundleError", "ConfigError", "EdgeError", "PayloadError"]


class EdgeError(Exception):
    """Base class of the errors of :mod:`aiotflow.edge` itself."""


class BundleError(EdgeError):
    """A model bundle cannot be loaded or does not meet the bundle contract."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message if path is None else f"{path}: {message}")
        self.path = path
