"""MQTT helpers shared by the edge runtime and the workflow engine."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import aiomqtt
import structlog

from .config import MqttSettings

__all__ = ["reconnecting", "sink_queue", "wait_event"]

log = structlog.get_logger("aiotflow.mqtt")


async def wait_event(event: asyncio.Event, seconds: float) -> None:
    """Wait for ``event`` at most ``seconds``.

    Not ``asyncio.wait_for``: on Python 3.11 it swallows a cancellation that arrives as
    the event is set, and a draining runtime then never stops.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


async def reconnecting(
    name: str,
    settings: MqttSettings,
    body: Callable[[aiomqtt.Client], Awaitable[None]],
    *,
    client_id: str,
    on_connect: Callable[[], None] | None = None,
    **client_options: Any,
) -> None:
    """Run ``body`` with a connected client for ever, reconnecting with backoff.

    Retry lives here and only here for MQTT links (one retry layer per call).
    """
    delay = 0.2
    kwargs = settings.client_kwargs() | client_options
    kwargs["identifier"] = kwargs["identifier"] or client_id
    while True:
        try:
            async with aiomqtt.Client(**kwargs) as client:
                delay = 0.2
                if on_connect:
                    on_connect()
                await body(client)
        except aiomqtt.MqttError as exc:
            log.warning("mqtt.disconnected", link=name, error=str(exc), retry_in=round(delay, 2))
            await asyncio.sleep(delay)
            delay = min(delay * 2, settings.reconnect_max_s)


def sink_queue(handler: Callable[[aiomqtt.Message], None]) -> type[asyncio.Queue[Any]]:
    """An aiomqtt ``queue_type`` that hands each message to ``handler`` as it is read.

    aiomqtt's ``client.messages`` creates a task and an ``asyncio.wait`` per message;
    measured here that is most of a consumer's cost. With this queue the message is
    processed inside the socket-read callback: no per-message task, and backpressure
    reaches the broker through TCP instead of an unbounded in-process queue.
    ``handler`` must not block; an exception it raises is logged, never propagated
    into the MQTT client.
    """

    class _Sink(asyncio.Queue[Any]):
        def put_nowait(self, item: aiomqtt.Message) -> None:
            try:
                handler(item)
            except Exception:
                log.exception("mqtt.handler_failed", topic=item.topic.value)

    return _Sink
