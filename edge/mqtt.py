"""MQTT helpers shared by the edge runtime and the workflow engine."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import aiomqtt
import structlog

from .config import MqttSettings

__all__ = ["reconnecting", "wait_event"]

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
