"""One trace per alert: W3C trace context carried in the alert, OpenTelemetry spans.

The edge gives every alert a ``traceparent`` (W3C Trace Context) when it detects the
episode; the engine continues that trace through the alert's processing, each workflow
run (and its resume after an approval, hours later, maybe on another worker), every node,
tool call, history query and LLM call. The trace id is there whether or not spans are
exported: it is in the alert, the audit (``aiotflow audit show``) and the logs, so they
can be joined with the spans of a tracing backend.

Spans are recorded only when a tracer provider is configured: :func:`configure` sets up
OTLP export (``opentelemetry-sdk`` and its OTLP/HTTP exporter, the ``otel`` extra) when
``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set, and
nothing when not: then :func:`span` is a no-op that imports nothing. Tests pass their own
provider (the SDK's in-memory exporter).

Attribute names follow the OpenTelemetry semantic conventions: messaging (``messaging.*``)
for alerts, GenAI (``gen_ai.*``: ``invoke_agent``, ``execute_tool``, ``chat``) for
workflows, tools and model calls, database (``db.*``) for the history store.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import structlog

__all__ = ["annotate", "configure", "current_traceparent", "enabled", "new_traceparent",
           "set_attributes", "shutdown", "span", "trace_id", "valid_traceparent"]

log = structlog.get_logger("aiotflow.tracing")

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

SpanKind = Literal["internal", "producer", "consumer", "client", "server"]

_tracer: Any = None
_provider: Any = None  # the provider :func:`configure` made (and shuts down)


def new_traceparent() -> str:
    """A fresh W3C ``traceparent`` (sampled): the trace of an alert nobody records spans
    of still has an id that joins its audit and logs."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def valid_traceparent(value: object) -> bool:
    """Is ``value`` a W3C traceparent (version 00, non-zero ids)?"""
    m = _TRACEPARENT.match(value) if isinstance(value, str) else None
    return bool(m) and set(m.group(1)) != {"0"} and set(m.group(2)) != {"0"}  # type: ignore[union-attr]


def trace_id(traceparent: str | None) -> str | None:
    """The 32-hex trace id of a ``traceparent`` (None if there is none or it is bad)."""
    return traceparent[3:35] if traceparent and valid_traceparent(traceparent) else None


def configure(service: str, *, provider: Any = None,
              env: Mapping[str, str] | None = None) -> bool:
    """Record spans as ``service``: with ``provider`` (a ``TracerProvider``), or exported
    by OTLP/HTTP when the environment names an endpoint; returns whether spans are
    recorded. Without either, tracing stays off (and costs nothing)."""
    global _tracer, _provider
    env = os.environ if env is None else env
    if provider is None:
        if not any(env.get(k) for k in _ENDPOINTS):
            _tracer = None
            return False
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as exc:
            from aiotflow.extras import MissingExtra

            raise MissingExtra("otel", "OTLP export (OTEL_EXPORTER_OTLP_ENDPOINT)",
                               [exc.name or "opentelemetry"]) from None
        attrs = {"service.name": env.get("OTEL_SERVICE_NAME") or service}
        provider = TracerProvider(resource=Resource.create(attrs))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        _provider = provider
        log.info("tracing.otlp", service=attrs["service.name"],
                 endpoint=next(env[k] for k in _ENDPOINTS if env.get(k)))
    from aiotflow import __version__

    _tracer = provider.get_tracer("aiotflow", __version__)
    return True


def shutdown() -> None:
    """Export what is buffered and stop (the provider :func:`configure` made)."""
    global _tracer, _provider
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        with contextlib.suppress(Exception):
            provider.shutdown()


def enabled() -> bool:
    return _tracer is not None


def _kind(kind: SpanKind) -> Any:
    from opentelemetry.trace import SpanKind as K

    return {"internal": K.INTERNAL, "producer": K.PRODUCER, "consumer": K.CONSUMER,
            "client": K.CLIENT, "server": K.SERVER}[kind]


def _context_of(traceparent: str) -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract({"traceparent": traceparent})


@contextlib.contextmanager
def span(name: str, *, kind: SpanKind = "internal", parent: str | None = None,
         attributes: Mapping[str, Any] | None = None, start_ns: int | None = None,
         benign: tuple[type[BaseException], ...] = ()) -> Iterator[Any]:
    """A span around the block, as a child of the current span or, when there is none,
    of ``parent`` (a traceparent: the alert's). Yields the span (``None`` when tracing is
    off). An exception marks it failed, but for ``benign`` ones (a workflow's interrupt
    for an approval) and cancellation."""
    tracer = _tracer
    if tracer is None:
        yield None
        return
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode

    ctx = None
    if parent and valid_traceparent(parent) and not trace.get_current_span(
            ).get_span_context().is_valid:
        ctx = _context_of(parent)
    attrs = {k: v for k, v in (attributes or {}).items() if v is not None}
    with tracer.start_as_current_span(name, context=ctx, kind=_kind(kind), attributes=attrs,
                                      start_time=start_ns, record_exception=False,
                                      set_status_on_exception=False) as s:
        try:
            yield s
        except benign:
            raise
        except (asyncio.CancelledError, GeneratorExit):
            s.set_attribute("aiotflow.cancelled", True)
            raise
        except BaseException as exc:
            s.record_exception(exc)
            s.set_attribute("error.type", type(exc).__name__)
            s.set_status(Status(StatusCode.ERROR, str(exc)[:300]))
            raise


def set_attributes(s: Any, **attrs: Any) -> None:
    """Set attributes on span ``s`` (``None`` values and ``s is None`` are skipped);
    double underscores in names become dots (``gen_ai__usage__input_tokens``)."""
    if s is None:
        return
    for k, v in attrs.items():
        if v is not None:
            s.set_attribute(k.replace("__", "."), v)


def annotate(**attrs: Any) -> None:
    """Set attributes on the current span, as :func:`set_attributes` (tracing off: no-op)."""
    if _tracer is None:
        return
    from opentelemetry import trace

    set_attributes(trace.get_current_span(), **attrs)


def current_traceparent() -> str | None:
    """The current span as a ``traceparent`` (None when tracing is off or no span)."""
    if _tracer is None:
        return None
    from opentelemetry import trace

    sc = trace.get_current_span().get_span_context()
    if not sc.is_valid:
        return None
    return f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags):02x}"
