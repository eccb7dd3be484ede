"""The demo's MQTT broker: amqtt, in-process, so that ``aiotflow demo`` needs no set-up.

aiotflow used to ship a small MQTT 3.1.1 broker of its own for this. amqtt, a maintained
asyncio broker, serves the demo's load as well (``benchmarks/demo_broker.py``: the demo's
24 messages/s arrive complete and in order on both; amqtt starts in ~30 ms against ~12
and moves 0.4-0.6x the messages per second, far above what the demo needs), so the demo
uses it and aiotflow keeps no broker code. Production deployments use Mosquitto, EMQX or
HiveMQ; tests use Mosquitto.
"""

from __future__ import annotations

import logging
import socket
from types import TracebackType
from typing import Any

import structlog

from aiotflow.contracts.errors import ConfigError

__all__ = ["DemoBroker"]

log = structlog.get_logger("aiotflow.broker")


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class DemoBroker:
    """``async with DemoBroker() as broker:`` serves MQTT on ``broker.url`` (a free port
    of ``host`` unless ``port`` is given); anonymous clients, no persistence, no $SYS."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def __aenter__(self) -> DemoBroker:
        from amqtt.broker import Broker

        if self._broker is not None:
            raise RuntimeError("DemoBroker is not re-entrant")
        # amqtt logs every connection at INFO through the standard logging module
        logging.getLogger("amqtt").setLevel(max(logging.WARNING,
                                                logging.getLogger().getEffectiveLevel()))
        for attempt in range(5):  # a free port can be taken between probe and bind
            port = self.port or _free_port(self.host)
            broker = Broker({
                "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{port}"}},
                "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                            {"allow_anonymous": True}}})
            try:
                await broker.start()
            except Exception as exc:  # amqtt wraps the bind's OSError in its BrokerError
                if self.port or attempt == 4:
                    why = exc.__cause__ or exc
                    raise ConfigError(f"cannot listen on {self.host}:{port} ({why})",
                                      field="broker") from exc
                continue
            self._broker, self.port = broker, port
            break
        log.info("broker.started", url=self.url)
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._broker is None:
            return
        broker, self._broker = self._broker, None
        await broker.shutdown()
