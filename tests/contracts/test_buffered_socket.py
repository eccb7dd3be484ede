"""The telemetry link's buffered socket: the same byte stream as the socket, read in
chunks; and an MQTT client reading through it gets every message, intact and in order."""

import asyncio
import hashlib
import random
import select
import socket

import aiomqtt
import pytest

from aiotflow.contracts.mqtt import BufferedSocket, buffer_reads, deliver_directly, sink_queue

from ..conftest import Mosquitto
from ..workflows.helpers import wait_for


def test_reads_give_the_stream_as_written_whatever_the_sizes() -> None:
    """Random writes, random read sizes (paho's 1-byte reads among them): the reads put
    together are the stream; never more than ``chunk`` bytes held; no data is a
    BlockingIOError, the peer gone is b"" as on the socket itself."""
    rnd = random.Random(3)
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    sock = BufferedSocket(b, chunk=4096)
    with pytest.raises(BlockingIOError):
        sock.recv(1)
    assert sock.pending() == 0
    sent, got = bytearray(), bytearray()
    for _ in range(300):
        data = rnd.randbytes(rnd.choice([1, 2, 5, 100, 3000, 9000]))
        a.sendall(data)
        sent += data
        while len(got) < len(sent):
            n = rnd.choice([1, 1, 2, 4, 37, 1000, 5000, 20000])
            try:
                part = sock.recv(n)
            except BlockingIOError:
                select.select([b], [], [], 5)
                continue
            assert 0 < len(part) <= n
            got += part
            assert sock.pending() <= 4096 and len(sock._buf) <= max(n, 4096)
    assert bytes(got) == bytes(sent)
    assert sock.fileno() == b.fileno()  # the rest is the socket's
    a.sendall(b"xyz")
    a.close()
    select.select([b], [], [], 5)
    assert sock.recv(1) == b"x" and sock.pending() == 2
    assert sock.recv(10) == b"yz" and sock.recv(10) == b""  # end of stream
    b.close()


@pytest.mark.parametrize("direct", [False, True])
async def test_a_buffered_client_gets_every_message_intact_and_in_order(
    mosquitto: Mosquitto, direct: bool
) -> None:
    """QoS 1 both ways (the broker sends at most 20 unacknowledged: a client that did not
    acknowledge would stall), payloads from empty to several chunks, bursts of small
    ones: every message arrives once, in order, byte for byte - through aiomqtt's
    messages (a sink queue) or handed straight from paho's callback (``direct``), where
    a handler that fails on some messages loses those only."""
    rnd = random.Random(5)
    payloads = [rnd.randbytes(rnd.choice([0, 1, 60, 2500, 70_000, 200_000]))
                for _ in range(1500)]
    got: list[bytes] = []
    topics: set[str] = set()
    calls = 0

    def handler(topic: str, payload: bytes) -> None:
        nonlocal calls
        calls += 1
        topics.add(topic)
        if calls % 100 == 0:
            raise RuntimeError("a handler that fails on every 100th message")
        got.append(payload)

    client = aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="buffered-sub",
                            queue_type=sink_queue(lambda m: handler(m.topic.value, m.payload)))  # type: ignore[arg-type]
    assert buffer_reads(client)
    if direct:
        assert deliver_directly(client, handler)
    async with client:
        assert isinstance(client._client.socket(), BufferedSocket)
        await client.subscribe("buf/test", qos=1)
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="buffered-pub",
                                  max_queued_outgoing_messages=0) as pub:
            for i in range(0, len(payloads), 10):
                await asyncio.gather(*(pub.publish("buf/test", p, qos=1)
                                       for p in payloads[i:i + 10]))
        failed = len(payloads) // 100
        await wait_for(lambda: len(got) >= len(payloads) - failed, 30)
    expected = [p for i, p in enumerate(payloads) if (i + 1) % 100]
    assert topics == {"buf/test"} and len(got) == len(expected)
    assert [hashlib.sha256(p).digest() for p in got] == [
        hashlib.sha256(p).digest() for p in expected]
