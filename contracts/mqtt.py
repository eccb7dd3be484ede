"""MQTT links shared by the edge runtime and the workflow engine: the connection
settings and the one reconnect loop."""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt
import paho.mqtt.client as mqtt
import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

__all__ = ["BufferedSocket", "LinkState", "MqttSettings", "buffer_reads", "deliver_directly",
           "reconnecting", "sink_queue", "wait_event"]

log = structlog.get_logger("aiotflow.mqtt")

_SCHEMES = ("mqtt", "tcp", "mqtts", "ssl")


class MqttSettings(BaseModel):
    """One MQTT broker connection: plain (``mqtt://``) or TLS (``mqtts://``), with
    credentials kept apart from the URL.

    A password may come as ``password`` (from the environment, e.g.
    ``AIOTFLOW_MQTT__PASSWORD``), from ``password_file``, or - discouraged, it shows in
    ``ps`` when given by flag - in the URL; it is taken out of the URL at load, so that the
    URL is safe to log, and it never appears in logs, stats, errors or ``repr``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field("mqtt://127.0.0.1:1883",
                     description="mqtt://host[:1883] or mqtts://host[:8883] (TLS)")
    username: str | None = Field(None, description="User name (or user@ in the URL).")
    password: SecretStr | None = Field(None, description="Password; better from the "
                                                         "environment or password_file.")
    password_file: Path | None = Field(None, description="A file holding the password.")
    ca_file: Path | None = Field(None, description="mqtts: CA certificates to verify the "
                                                   "broker with (default: the system's).")
    cert_file: Path | None = Field(None, description="mqtts: this client's certificate, for "
                                                     "brokers that require one (mutual TLS).")
    key_file: Path | None = Field(None, description="mqtts: the certificate's private key.")
    tls_insecure: bool = Field(False, description="mqtts: do not check that the broker's "
                                                  "certificate names its host (the chain "
                                                  "is still verified). Tests only.")
    client_id: str | None = Field(None, description="Client id; generated when unset.")
    keepalive: int = Field(30, ge=5, description="Keep-alive interval in seconds.")
    reconnect_max_s: float = Field(10.0, gt=0, description="Longest pause between reconnects.")
    persistent_session: bool = Field(
        False, description="Keep the broker session across reconnects (clean session off): "
                           "QoS 1 messages sent while briefly disconnected are delivered "
                           "after. Needs a fixed client_id.")

    @model_validator(mode="before")
    @classmethod
    def _credentials_out_of_url(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("url"), str):
            return data
        parts = urlsplit(data["url"])
        if parts.password is None and parts.username is None:
            return data
        data = dict(data)
        if parts.password is not None:
            if data.get("password") is not None or data.get("password_file") is not None:
                raise ValueError("a password both in the URL and in password/password_file")
            data["password"] = unquote(parts.password)
        if parts.username is not None and data.get("username") is None:
            data["username"] = unquote(parts.username)
        # host[:port] as written (a bad port is still refused by name below)
        data["url"] = parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]).geturl()
        return data

    @model_validator(mode="after")
    def _check(self) -> MqttSettings:
        if self.persistent_session and not self.client_id:
            raise ValueError("persistent_session needs a fixed client_id")
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if not self.tls and (self.ca_file or self.cert_file or self.tls_insecure):
            raise ValueError("ca_file, cert_file and tls_insecure need an mqtts:// url")
        for name in ("password_file", "ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name}: no such file {path}")
        return self

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in _SCHEMES or not parts.hostname:
            raise ValueError("must look like mqtt://host:1883 or mqtts://host:8883")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("the port must be a number from 1 to 65535") from None
        if port == 0:
            raise ValueError("the port must be a number from 1 to 65535")
        return v

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme in ("mqtts", "ssl")

    @property
    def hostname(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.tls else 1883)

    def secret(self) -> str | None:
        """The password (read from ``password_file`` each time: it may be rotated)."""
        if self.password_file is not None:
            return Path(self.password_file).read_text().rstrip("\r\n")
        return self.password.get_secret_value() if self.password is not None else None

    def tls_context(self) -> ssl.SSLContext | None:
        """The TLS context of an ``mqtts://`` link (``None`` for plain MQTT)."""
        if not self.tls:
            return None
        ctx = ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file is not None else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file is not None and self.key_file is not None:
            ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        if self.tls_insecure:
            ctx.check_hostname = False
        return ctx

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`aiomqtt.Client`."""
        kwargs: dict[str, Any] = {
            "hostname": self.hostname,
            "port": self.port,
            "username": self.username,
            "password": self.secret(),
            "identifier": self.client_id,
            "keepalive": self.keepalive,
            "clean_session": not self.persistent_session,
        }
        ctx = self.tls_context()
        if ctx is not None:
            kwargs["tls_context"] = ctx
            kwargs["tls_insecure"] = self.tls_insecure
        return kwargs



async def wait_event(event: asyncio.Event, seconds: float) -> None:
    """Wait for ``event`` at most ``seconds``.

    Not ``asyncio.wait_for``: on Python 3.11 it swallows a cancellation that arrives as
    the event is set, and a draining runtime then never stops.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


async def reap(tasks: list[asyncio.Task[Any]], *, every_s: float = 2.0,
               attempts: int = 5) -> None:
    """Wait for cancelled ``tasks`` to end, cancelling again those that do not.

    A cancellation can be lost - on Python 3.11 ``asyncio.wait_for``, which libraries use
    inside, returns instead of raising when what it waits for completes in the same step -
    and a loop that lost it runs on: the runtime never stops (seen once in the test suite:
    an edge's uplink never disconnected at exit). A task still running after ``every_s``
    is logged with where it waits and cancelled again, up to ``attempts`` times.
    """
    for _ in range(attempts):
        pending = [task for task in tasks if not task.done()]
        if not pending:
            return
        _, still = await asyncio.wait(pending, timeout=every_s)
        for task in still:
            where = [f"{f.f_code.co_filename}:{f.f_lineno} {f.f_code.co_name}"
                     for f in task.get_stack(limit=8)]
            log.error("task.cancel_lost", task=task.get_name(), waiting_at=where)
            task.cancel()


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
    prepare: Callable[[aiomqtt.Client], object] | None = None,
    **client_options: Any,
) -> None:
    """Run ``body`` with a connected client for ever, reconnecting with exponential
    backoff and full jitter (so a fleet of gateways does not reconnect in step).

    ``body`` subscribes again on every connection. Retry lives here and only here for
    MQTT links (one retry layer per call). ``prepare(client)`` is called on each new
    client before it connects (:func:`buffer_reads`, :func:`deliver_directly`).
    """
    state = state or LinkState()
    base = 0.2
    kwargs = settings.client_kwargs() | client_options
    kwargs["identifier"] = kwargs["identifier"] or client_id
    while True:
        try:
            client = aiomqtt.Client(**kwargs)
            if prepare is not None:
                prepare(client)
            async with client:
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


#: bytes a telemetry link reads at once: with messages of 10 kB, 64 KiB held 3-4 of them
#: per read on this machine and the fast path below took 70% (one per read straddles two);
#: 1 MiB holds ~100, the event loop's turn and that one slow packet per read amortised
READ_CHUNK = 1 << 20


class BufferedSocket:
    """A client socket read in chunks of up to ``chunk`` bytes.

    paho reads an incoming packet in three or four ``recv`` calls (the command byte,
    each byte of the remaining length, then the rest); served from a buffer, a burst of
    messages costs one system call per chunk instead, and :meth:`take_publishes` takes
    the QoS 0 and 1 publishes in it without paho. ``pending()`` counts the buffered bytes as
    an SSL socket's counts its decrypted ones: aiomqtt's read callback asks it and reads
    on until the buffer is empty, and paho's own loop does not wait in ``select`` while
    bytes are buffered. The rest of a packet begun in an emptied buffer is read alone,
    so that the buffer is empty once it is whole and the callback ends: about one chunk
    per callback, and the event loop has its turn. Every other attribute is the
    socket's. At most ``chunk`` bytes are held.
    """

    __slots__ = ("_buf", "_chunk", "_inner_pending", "_pos", "_sock")

    def __init__(self, sock: Any, chunk: int = READ_CHUNK) -> None:
        self._sock = sock
        self._chunk = chunk
        self._buf = b""
        self._pos = 0
        # an SSL socket's own count of decrypted bytes (asked after every message)
        self._inner_pending: Callable[[], int] | None = getattr(sock, "pending", None)

    def recv(self, n: int) -> bytes:
        pos = self._pos
        if pos >= len(self._buf):  # empty: read the socket (BlockingIOError; b"" at EOF)
            if n > 1:  # the rest of a packet (paho's header reads are of one byte): no
                # more, so that the buffer is empty once the packet is whole and the read
                # callback gives the event loop its turn (it reads on while any is held)
                return self._sock.recv(n)  # type: ignore[no-any-return]
            data: bytes = self._sock.recv(self._chunk)
            if len(data) <= n:
                return data
            self._buf, self._pos = data, n
            return data[:n]
        self._pos = pos + n  # past the end: the next call reads the socket
        return self._buf[pos:pos + n]

    def take_publishes(self, deliver: Callable[[str, bytes], None], *, v5: bool = False,
                       puback: Callable[[int], object] | None = None) -> int:
        """Hand each QoS 0 PUBLISH packet that lies whole in the buffer, from where the
        next read would start (which the caller knows to be a packet boundary), to
        ``deliver(topic, payload)`` and consume it; how many. With ``puback``, QoS 1 ones
        too, each acknowledged with ``puback(packet_id)`` once ``deliver`` returned (as
        paho does). It stops at the first packet that is anything else - another type or
        QoS, a packet not yet whole, an MQTT 5 publish with properties, a topic that is
        empty or not UTF-8, a length that does not add up - and leaves it, and all after
        it, to the MQTT client, which handles it (or says what is wrong with it) as it
        would have."""
        buf, pos = self._buf, self._pos
        end = len(buf)
        taken = 0
        while end - pos >= 5:  # the least: command, length, topic length, a topic byte
            command = buf[pos]
            if command & 0xFE != 0x30:  # not PUBLISH with DUP clear and QoS 0 (RETAIN either)
                if command & 0xF6 != 0x32 or puback is None:  # nor QoS 1 (DUP either)
                    break
                qos = 1
            else:
                qos = 0
            # the remaining length: 1-4 bytes of 7 bits, least significant first
            p, length, shift = pos + 1, 0, 0
            while p < end and shift < 28:
                byte = buf[p]
                p += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            else:
                break  # not all there yet, or longer than MQTT allows
            nxt = p + length
            if length < 3 or nxt > end:  # too short for a topic (paho says so), or not whole
                break
            tlen = buf[p] << 8 | buf[p + 1]
            body = p + 2 + tlen  # past the topic
            mid = 0
            if qos:  # the packet id
                if body + 2 > nxt:
                    break
                mid = buf[body] << 8 | buf[body + 1]
                if not mid:
                    break
                body += 2
            if v5:  # properties: only none (a zero length byte) here
                if body >= nxt or buf[body]:
                    break
                body += 1
            if not tlen or body > nxt:
                break
            try:
                topic = buf[p + 2:p + 2 + tlen].decode()
            except UnicodeDecodeError:
                break
            pos = self._pos = nxt  # consumed before it is handed on
            taken += 1
            deliver(topic, buf[body:nxt])
            if qos:
                puback(mid)  # type: ignore[misc]
        return taken

    def pending(self) -> int:
        held = len(self._buf) - self._pos
        inner = self._inner_pending
        return (held if held > 0 else 0) + (inner() if inner is not None else 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def buffer_reads(client: aiomqtt.Client) -> bool:
    """Make ``client`` (not yet connected) read its socket through a
    :class:`BufferedSocket`. This reaches into aiomqtt's paho client: where that is not
    as this code knows it (another version), nothing changes and ``False`` says so."""
    paho = getattr(client, "_client", None)
    create = getattr(paho, "_create_socket", None)
    if create is None or getattr(paho, "_transport", None) not in ("tcp", "unix"):
        log.warning("mqtt.unbuffered", reason="the paho client is not as this code knows it")
        return False

    def create_buffered() -> BufferedSocket:
        return BufferedSocket(create())

    paho._create_socket = create_buffered  # type: ignore[union-attr]
    return True


def deliver_directly(client: aiomqtt.Client, handler: Callable[[str, bytes], None]) -> bool:
    """Hand each message's topic and payload to ``handler`` from paho's own callback,
    without the aiomqtt ``Message`` (and its validated ``Topic``) made for each: for a
    link that receives many. ``client.messages`` then only waits for (and raises on)
    the disconnection. With :func:`buffer_reads`, QoS 0 and 1 publishes that came whole
    in a read are taken from the buffer before paho reads them (:meth:`BufferedSocket.
    take_publishes`; a QoS 1 one acknowledged by paho's own PUBACK once ``handler``
    returned, as paho does): no paho message, log call or callback look-up for each,
    about a fifth of an edge's time at saturation. ``handler`` must not block; an
    exception it raises is logged, never propagated into the MQTT client. Like
    :func:`buffer_reads`, this reaches into aiomqtt's paho client (its ``on_message``,
    ``_packet_read``, ``_in_packet``, ``_send_puback``), and ``False`` (nothing changed)
    says it is not as known."""
    paho = getattr(client, "_client", None)
    if paho is None or getattr(paho, "on_message", None) is None:
        log.warning("mqtt.not_direct", reason="the paho client is not as this code knows it")
        return False

    def on_message(_paho: Any, _userdata: Any, message: Any) -> None:
        try:
            handler(message.topic, message.payload)
        except Exception:
            log.exception("mqtt.handler_failed", topic=message.topic)

    def deliver(topic: str, payload: bytes) -> None:
        try:
            handler(topic, payload)
        except Exception:
            log.exception("mqtt.handler_failed", topic=topic)

    paho.on_message = on_message
    # QoS 0 and 1 publishes whole in a BufferedSocket's buffer are taken from it at a
    # packet boundary, before paho reads the next packet: no MQTTMessage, log call or
    # callback look-up per message (most of paho's cost per message). Everything else -
    # other packets, QoS 2, what is not whole yet - paho reads as before, in stream order.
    read = getattr(paho, "_packet_read", None)
    state = getattr(paho, "_in_packet", None)
    if (read is None or not isinstance(state, dict) or "command" not in state
            or not hasattr(paho, "_last_bytes_received")):
        log.warning("mqtt.no_fast_path", reason="paho reads packets as this code does not know")
        return True
    v5 = getattr(paho, "_protocol", None) == mqtt.MQTTv5
    clock = getattr(mqtt, "time_func", time.monotonic)
    # QoS 1 too, acknowledged as paho would, unless the application acknowledges itself
    send_puback = getattr(paho, "_send_puback", None)

    def packet_read() -> Any:
        sock = paho._sock
        puback = None if getattr(paho, "_manual_ack", True) else send_puback
        if (type(sock) is BufferedSocket and paho._in_packet["command"] == 0
                and sock.take_publishes(deliver, v5=v5, puback=puback)):
            # what paho does after each packet: the keepalive counts from the last one
            # (without, a flood taken here would leave it at the last packet paho read,
            # and paho close the link when a PINGRESP is queued behind the flood)
            paho._last_bytes_received = clock()
        return read()

    paho._packet_read = packet_read
    return True


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
