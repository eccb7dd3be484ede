"""Optional parts of aiotflow and the extra that installs each.

The base install is what a gateway needs to run ``aiotflow edge``; the engine stack and
model training come with extras. A package that needs an extra checks for it on import
and raises :class:`MissingExtra` (an :class:`ImportError`) naming the extra to install,
rather than failing deep inside a third-party import.
"""

from __future__ import annotations

import importlib.util

__all__ = ["EXTRAS", "MissingExtra", "extra_for_module", "require"]

#: extra -> the top-level modules it brings (what ``require`` looks for)
EXTRAS: dict[str, tuple[str, ...]] = {
    "engine": ("langgraph", "openai", "qdrant_client", "qdrant_edge", "tenacity", "httpx"),
    "train": ("sklearn", "skl2onnx", "onnx"),
    "demo": ("amqtt",),
    "otel": ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"),
    "postgres": ("psycopg", "psycopg_pool"),
}


class MissingExtra(ImportError):
    """A part of aiotflow was used whose extra is not installed."""

    def __init__(self, extra: str, feature: str, missing: list[str]) -> None:
        super().__init__(f"{feature} needs the '{extra}' extra: pip install 'aiotflow[{extra}]'"
                         f" (not installed: {', '.join(missing)})")
        self.extra = extra
        self.feature = feature
        self.missing = missing


def _missing(extra: str) -> list[str]:
    return [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]


def require(*extras: str, feature: str) -> None:
    """Raise :class:`MissingExtra` unless every module of ``extras`` can be imported."""
    for extra in extras:
        missing = _missing(extra)
        if missing:
            raise MissingExtra(extra, feature, missing)


def extra_for_module(name: str | None) -> str | None:
    """The extra that installs module ``name`` (a dotted name), or None."""
    name = name or ""
    return next((e for e, mods in EXTRAS.items()
                 if any(name == m or name.startswith(m + ".") or m.startswith(name + ".")
                        or name.partition(".")[0] == m for m in mods)), None)
