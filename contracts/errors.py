"""Errors of the shared contracts, raised on both sides of the wire.

Exception tree::

    ContractError
    ├── ConfigError          a configuration file or value is unusable (names the field)
    └── PayloadError         one message is unusable (counted, dead-lettered)
"""

from __future__ import annotations

__all__ = ["ConfigError", "ContractError", "PayloadError"]


class ContractError(Exception):
    """Base class of every error raised by :mod:`aiotflow.contracts`."""


class ConfigError(ContractError):
    """A configuration is unusable; ``field`` names the offending setting."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message if field is None else f"{field}: {message}")
        self.field = field


class PayloadError(ContractError):
    """A message was rejected; ``reason`` is a short machine-readable cause."""

    def __init__(self, reason: str, detail: str, *, topic: str = "") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.topic = topic
