"""MQTT links shared by the edge runtime and the workflow engine: the connection
settings and the one reconnect loop."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["LinkState", "MqttSettings", "reconnecting", "sink_queue", "wait_event"]

log = structlog.get_logger("aiotflow.mqtt")


class MqttSettings(BaseModel):
    """One MQTT broker connection."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field("mqtt://127.0.0.1:1883", description="mqtt://[user:pass@]host[:port]")
    client_id: str | None = Field(None, description="Client id; generated when unset.")
    keepalive: int = Field(30, ge=5, description="Keep-alive interval in seconds.")
    reconnect_max_s: float = Field(10.0, gt=0, description="Longest pause between reconnects.")
    persistent_session: bool = Field(
        False, description="Keep the broker session across reconnects (clean session off): "
                           "QoS 1 messages sent while briefly disconnected are delivered "
                           "after. Needs a fixed client_id.")

    @model_validator(mode="after")
    def _persistent_needs_id(self) -> MqttSettings:
        if self.persistent_session and not self.client_id:
            raise ValueError("persistent_session needs a fixed client_id")
        return self

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
            raise ValueError("must look like mqtt://host:1883")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("the port must be a number from 1 to 65535") from None
        if port == 0:
            raise ValueError("the port must be a number from 1 to 65535")
        return v

    @property
    def hostname(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 1883

    @property
    def username(self) -> str | None:
        return urlsplit(self.url).username

    @property
    def password(self) -> str | None:
        return urlsplit(self.url).password

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`aiomqtt.Client`."""
        return {
            "hostname": self.hostname,
            "port": self.port,
            "username": self.username,
            "password": self.password,
            "identifier": self.client_id,
            "keepalive": self.keepalive,
            "clean_session": not self.persistent_session,
        }



async def wait_event(event: asyncio.Event, seconds: float) -> None:
    """Wait for ``event`` at most ``seconds``.

    Not ``asyncio.wait_for``: on Python 3.11 it swallows a cancellation that arrives as
    the event is set, and a draining runtime then never stops.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


@dataclass
class LinkState:
    """Connection state of one MQTT link, for stats and logs."""

    connected: bool = False
    connects: int = 0
    disconnects: int = 0
    last_error: str | None = None
    since: float = 0.0


async def reconnecting(
    name: str,
    settings: MqttSettings,
    body: Callable[[aiomqtt.Client], Awaitable[None]],
    *,
    client_id: str,
    state: LinkState | None = None,
    **client_options: Any,
) -> None:
    """Run ``body`` with a connected client for ever, reconnecting with exponential
    backoff and full jitter (so a fleet of gateways does not reconnect in step).

    ``body`` subscribes again on every connection. Retry lives here and only here for
    MQTT links (one retry layer per call).
    """
    state = state or LinkState()
    base = 0.2
    kwargs = settings.client_kwargs() | client_options
    kwargs["identifier"] = kwargs["identifier"] or client_id
    while True:
        try:
            async with aiomqtt.Client(**kwargs) as client:
                base = 0.2
                state.connected, state.since = True, time.time()
                state.connects += 1
                log.info("mqtt.connected", link=name, broker=settings.url,
                         reconnect=state.connects > 1)
                await body(client)
        except aiomqtt.MqttError as exc:
            delay = random.uniform(0.5, 1.0) * base
            if state.connected:
                state.disconnects += 1
            state.connected, state.since, state.last_error = False, time.time(), str(exc)
            log.warning("mqtt.disconnected", link=name, error=str(exc), retry_in=round(delay, 2))
            await asyncio.sleep(delay)
            base = min(base * 2, settings.reconnect_max_s)
        except BaseException:
            state.connected = False
            raise


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
