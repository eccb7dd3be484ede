"""Errors raised by the edge runtime.

Exception tree::

    EdgeError
    ├── ConfigError          a configuration file or value is unusable (names the field)
    ├── BundleError          a model bundle is missing, malformed or breaks the contract
    └── PayloadError         one telemetry message is unusable (counted, dead-lettered)
"""

from __future__ import annotations


class EdgeError(Exception):
    """Base class of every error raised by :mod:`edge`."""


class ConfigError(EdgeError):
    """A configuration is unusable; ``field`` names the offending setting."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message if field is None else f"{field}: {message}")
        self.field = field


class BundleError(EdgeError):
    """A model bundle cannot be loaded or does not meet the bundle contract."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message if path is None else f"{path}: {message}")
        self.path = path


class PayloadError(EdgeError):
    """A telemetry message was rejected; ``reason`` is a short machine-readable cause."""

    def __init__(self, reason: str, detail: str, *, topic: str = "") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.topic = topic
