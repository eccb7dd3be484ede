"""A small in-process MQTT 3.1.1 broker, so that ``aiotflow demo`` needs no set-up.

It speaks enough of MQTT 3.1.1 for aiotflow's own clients and common tools: CONNECT,
PUBLISH at QoS 0/1/2 in (delivered at most at QoS 1), SUBSCRIBE/UNSUBSCRIBE with ``+``
and ``#``, retained messages, last will, PING, clean sessions. It keeps no state on
disk. Production deployments use Mosquitto, EMQX or HiveMQ; tests use Mosquitto.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass, field
from types import TracebackType

import structlog

__all__ = ["EmbeddedBroker", "topic_matches"]

log = structlog.get_logger("aiotflow.broker")


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT filter matching (``+`` one level, ``#`` the rest; ``$`` topics need a literal)."""
    if topic.startswith("$") and not pattern.startswith("$"):
        return False
    p, t = pattern.split("/"), topic.split("/")
    for i, part in enumerate(p):
        if part == "#":
            return True
        if i >= len(t) or (part != "+" and part != t[i]):
            return False
    return len(p) == len(t)


def _enc_str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def _packet(kind: int, flags: int, body: bytes) -> bytes:
    n, out = len(body), bytearray([(kind << 4) | flags])
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out) + body


@dataclass
class _Session:
    client_id: str
    writer: asyncio.StreamWriter
    subs: dict[str, int] = field(default_factory=dict)
    next_id: int = 0
    will: tuple[str, bytes, int, bool] | None = None

    def packet_id(self) -> int:
        self.next_id = self.next_id % 65535 + 1
        return self.next_id


class EmbeddedBroker:
    """``async with EmbeddedBroker(port=0) as broker:`` serves on ``broker.port``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._sessions: dict[str, _Session] = {}
        self._retained: dict[str, tuple[bytes, int]] = {}
        self._conns: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.messages_routed = 0

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def __aenter__(self) -> EmbeddedBroker:
        if self._server is not None:
            raise RuntimeError("EmbeddedBroker is not re-entrant")
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("broker.started", url=self.url)
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is None:
            return
        self._server.close()
        # Closing the sockets ends each connection's read loop normally; cancelling the
        # handler tasks instead makes asyncio's stream callback log the cancellation.
        for w in list(self._writers):
            w.close()
        if self._conns:
            await asyncio.wait(list(self._conns), timeout=2.0)
        with contextlib.suppress(Exception):
            await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        self._writers.add(writer)
        session: _Session | None = None
        clean_exit = False
        try:
            while True:
                head = await reader.readexactly(1)
                mult, length = 1, 0
                while True:
                    b = (await reader.readexactly(1))[0]
                    length += (b & 0x7F) * mult
                    mult *= 128
                    if not b & 0x80:
                        break
                body = await reader.readexactly(length) if length else b""
                kind, flags = head[0] >> 4, head[0] & 0x0F
                if session is None:
                    if kind != 1:
                        return
                    session = self._connect(body, writer)
                    if session is None:
                        return
                    continue
                if kind == 3:
                    await self._on_publish(session, flags, body)
                elif kind == 6:  # PUBREL -> PUBCOMP
                    writer.write(_packet(7, 0, body[:2]))
                elif kind == 8:
                    self._on_subscribe(session, body)
                elif kind == 10:
                    pid, pos = struct.unpack("!H", body[:2])[0], 2
                    while pos < len(body):
                        n = struct.unpack("!H", body[pos:pos + 2])[0]
                        session.subs.pop(body[pos + 2:pos + 2 + n].decode(), None)
                        pos += 2 + n
                    writer.write(_packet(11, 0, struct.pack("!H", pid)))
                elif kind == 12:
                    writer.write(_packet(13, 0, b""))
                elif kind == 14:
                    clean_exit = True
                    return
                # PUBACK/PUBREC/PUBCOMP from subscribers need no action: no redelivery.
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, struct.error, UnicodeDecodeError):
            pass
        finally:
            self._conns.discard(task)
            self._writers.discard(writer)
            if session is not None and self._sessions.get(session.client_id) is session:
                del self._sessions[session.client_id]
                if session.will and not clean_exit:
                    topic, payload, qos, retain = session.will
                    self._route(topic, payload, qos, retain)
            writer.close()

    def _connect(self, body: bytes, writer: asyncio.StreamWriter) -> _Session | None:
        n = struct.unpack("!H", body[:2])[0]
        level, flags = body[2 + n], body[3 + n]
        pos = 6 + n
        if level not in (3, 4):
            writer.write(_packet(2, 0, b"\x00\x01"))  # unacceptable protocol version
            return None
        cid_len = struct.unpack("!H", body[pos:pos + 2])[0]
        client_id = body[pos + 2:pos + 2 + cid_len].decode() or f"anon-{id(writer):x}"
        pos += 2 + cid_len
        will = None
        if flags & 0x04:
            tl = struct.unpack("!H", body[pos:pos + 2])[0]
            topic = body[pos + 2:pos + 2 + tl].decode()
            pos += 2 + tl
            pl = struct.unpack("!H", body[pos:pos + 2])[0]
            will = (topic, body[pos + 2:pos + 2 + pl], (flags >> 3) & 3, bool(flags & 0x20))
        old = self._sessions.get(client_id)
        if old is not None:  # a second connection with the same id takes over
            old.writer.close()
        session = _Session(client_id, writer, will=will)
        self._sessions[client_id] = session
        writer.write(_packet(2, 0, b"\x00\x00"))
        return session

    async def _on_publish(self, session: _Session, flags: int, body: bytes) -> None:
        qos, retain = (flags >> 1) & 3, bool(flags & 1)
        n = struct.unpack("!H", body[:2])[0]
        topic = body[2:2 + n].decode()
        pos = 2 + n
        if qos:
            pid = body[pos:pos + 2]
            pos += 2
            session.writer.write(_packet(4 if qos == 1 else 5, 0, pid))
        self._route(topic, body[pos:], qos, retain)

    def _route(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        if retain:
            if payload:
                self._retained[topic] = (payload, qos)
            else:
                self._retained.pop(topic, None)
        for s in list(self._sessions.values()):
            granted = max((q for f, q in s.subs.items() if topic_matches(f, topic)), default=-1)
            if granted >= 0:
                self._deliver(s, topic, payload, min(qos, granted, 1), False)
                self.messages_routed += 1

    def _deliver(self, s: _Session, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        var = _enc_str(topic) + (struct.pack("!H", s.packet_id()) if qos else b"")
        s.writer.write(_packet(3, (qos << 1) | int(retain), var + payload))

    def _on_subscribe(self, session: _Session, body: bytes) -> None:
        pid, pos, granted = body[:2], 2, bytearray()
        new: list[tuple[str, int]] = []
        while pos < len(body):
            n = struct.unpack("!H", body[pos:pos + 2])[0]
            f = body[pos + 2:pos + 2 + n].decode()
            q = min(body[pos + 2 + n] & 3, 1)
            pos += 3 + n
            session.subs[f] = q
            granted.append(q)
            new.append((f, q))
        session.writer.write(_packet(9, 0, pid + bytes(granted)))
        for f, q in new:
            for topic, (payload, rq) in self._retained.items():
                if topic_matches(f, topic):
                    self._deliver(session, topic, payload, min(q, rq), True)
