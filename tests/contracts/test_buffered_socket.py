"""The telemetry link's buffered socket: the same byte stream as the socket, read in
chunks; an MQTT client reading through it gets every message, intact and in order; and
its fast path, which takes publishes from the buffer, hands on what paho would have."""

import asyncio
import contextlib
import hashlib
import random
import select
import socket
import time
from collections.abc import Iterator

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


@contextlib.contextmanager
def fast_path_counted() -> Iterator[list[int]]:
    """Within the block, ``[n]``: how many messages the fast path took."""
    taken = [0]
    take = BufferedSocket.take_publishes

    def counting(self: BufferedSocket, deliver, **kw) -> int:  # type: ignore[no-untyped-def]
        n = take(self, deliver, **kw)
        taken[0] += n
        return n

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(BufferedSocket, "take_publishes", counting)
        yield taken


@pytest.mark.parametrize(("direct", "qos"), [(False, 1), (True, 1), (True, 0)])
async def test_a_buffered_client_gets_every_message_intact_and_in_order(
    mosquitto: Mosquitto, direct: bool, qos: int
) -> None:
    """QoS 1 both ways (the broker sends at most 20 unacknowledged: a client that did not
    acknowledge would stall) or QoS 0, payloads from empty to several
    chunks, bursts of small ones: every message arrives once, in order, byte for byte -
    through aiomqtt's messages (a sink queue) or handed straight from paho's callback or
    the read buffer (``direct``), where a handler that fails on some messages loses
    those only."""
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
    with fast_path_counted() as fast:
        async with client:
            assert isinstance(client._client.socket(), BufferedSocket)
            await client.subscribe("buf/test", qos=qos)
            async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="buffered-pub",
                                      max_queued_outgoing_messages=0) as pub:
                for i in range(0, len(payloads), 10):
                    await asyncio.gather(*(pub.publish("buf/test", p, qos=qos)
                                           for p in payloads[i:i + 10]))
            failed = len(payloads) // 100
            await wait_for(lambda: len(got) >= len(payloads) - failed, 30)
    # the fast path takes the messages that came whole in a read (QoS 1 acknowledged:
    # else the broker, at most 20 unacknowledged, would have stopped sending)
    assert (fast[0] > 0) if direct else (fast[0] == 0), fast
    expected = [p for i, p in enumerate(payloads) if (i + 1) % 100]
    assert topics == {"buf/test"} and len(got) == len(expected)
    assert [hashlib.sha256(p).digest() for p in got] == [
        hashlib.sha256(p).digest() for p in expected]


# ---------------------------------------------------------------- QoS 0 fast path
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, low = divmod(n, 128)
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _publish(topic: bytes, payload: bytes, *, qos: int = 0, retain: bool = False,
             dup: bool = False, mid: int = 1, v5: bool = False, props: bytes = b"") -> bytes:
    body = (len(topic).to_bytes(2, "big") + topic + (mid.to_bytes(2, "big") if qos else b"")
            + (_varint(len(props)) + props if v5 else b"") + payload)
    return bytes([0x30 | dup << 3 | qos << 1 | retain]) + _varint(len(body)) + body


def _taken(data: bytes, *, v5: bool = False,
           acks: list[int] | None = None) -> tuple[list[tuple[str, bytes]], int]:
    """What take_publishes hands on from a buffer holding ``data``, and where it stops;
    with ``acks``, QoS 1 taken too, their packet ids acknowledged into it."""
    sock = _holding(data)
    got: list[tuple[str, bytes]] = []
    sock.take_publishes(lambda t, p: got.append((t, p)), v5=v5,
                        puback=None if acks is None else acks.append)
    return got, sock._pos


def _holding(data: bytes) -> BufferedSocket:
    """A buffer that holds ``data`` as read (take_publishes never touches the socket)."""
    sock = BufferedSocket(None)
    sock._buf = data
    return sock


def test_with_puback_the_fast_path_takes_qos1_and_acknowledges_after_delivery() -> None:
    """QoS 1 (DUP either: a redelivery is delivered again, as paho does), each packet id
    acknowledged once its message was handed on; a packet id of 0 (not allowed) and QoS 2
    are left to paho; on MQTT 5 the id comes before the property length."""
    acks: list[int] = []
    one = _publish(b"t/1", b"one", qos=1, mid=7)
    again = _publish(b"t/1", b"one", qos=1, mid=7, dup=True)
    zero = _publish(b"t/2", b"x", qos=1, mid=0)
    empty = _publish(b"t/0", b"")
    assert _taken(one + again + empty + zero, acks=acks) == (
        [("t/1", b"one"), ("t/1", b"one"), ("t/0", b"")], 2 * len(one) + len(empty))
    assert acks == [7, 7]
    for left in (_publish(b"t/2", b"x", qos=2, mid=9), _publish(b"t/0", b"x", dup=True)):
        acks.clear()
        assert _taken(one + left + one, acks=acks) == ([("t/1", b"one")], len(one))
        assert acks == [7]
    v5 = _publish(b"t/5", b"five", qos=1, mid=300, v5=True)
    acks.clear()
    assert _taken(v5 + _publish(b"t/2", b"x", qos=2, mid=9, v5=True), v5=True, acks=acks) == (
        [("t/5", b"five")], len(v5))
    assert acks == [300]
    # the ack comes after the delivery, as paho sends it after its on_message
    order: list[str] = []
    _holding(one).take_publishes(lambda t, p: order.append("deliver"),
                                 puback=lambda mid: order.append(f"ack {mid}"))
    assert order == ["deliver", "ack 7"]


@pytest.mark.parametrize("size", [0, 1, 122, 123, 16_380, 16_381, 2_097_148, 2_097_149])
def test_the_fast_path_takes_a_qos0_publish_of_any_length(size: int) -> None:
    """Remaining lengths of 1 to 4 bytes (the sizes either side of each step), RETAIN
    either way: taken whole, byte for byte, and the position is past it."""
    payload = random.Random(size).randbytes(size)
    for retain in (False, True):
        packet = _publish(b"a/b", payload, retain=retain)
        assert _taken(packet + packet[:3]) == ([("a/b", payload)] * 1, len(packet))


_LEFT = {  # id: (bytes, whole - else only a start of a packet, at the end of the read)
    "qos1": (_publish(b"a/b", b"x", qos=1), True),
    "qos2": (_publish(b"a/b", b"x", qos=2), True),
    "dup-with-qos0": (_publish(b"a/b", b"x", dup=True), True),
    "empty-topic": (_publish(b"", b"xyz"), True),
    "topic-not-utf8": (_publish(b"\xff\xfe", b"x"), True),
    "topic-longer-than-packet": (b"\x30\x05\x00\x09abc", True),
    "too-short-for-a-topic": (b"\x30\x02\x00\x01", True),
    "length-of-5-bytes": (b"\x30\x80\x80\x80\x80\x01" + b"\x00" * 40, True),
    "pingresp": (b"\xd0\x00", True),
    "suback": (b"\x90\x03\x00\x01\x00", True),
    "body-not-whole": (_publish(b"a/b", b"x" * 300)[:200], False),
    "length-not-whole": (_publish(b"a/b", b"x" * 300)[:2], False),
    "topic-not-whole": (_publish(b"a/b", b"x")[:4], False),
}


@pytest.mark.parametrize("case", list(_LEFT))
def test_the_fast_path_leaves_anything_else_where_it_is(case: str) -> None:
    """After two good publishes: every other packet, and anything malformed or not yet
    whole (at the end of what was read), is left at its first byte for the client to
    handle (or reject) as it would have - with what comes after it."""
    bad, whole = _LEFT[case]
    good = _publish(b"t/1", b"one") + _publish(b"t/2", b"two")
    after = _publish(b"t/3", b"three") if whole else b""
    assert _taken(good + bad + after) == ([("t/1", b"one"), ("t/2", b"two")], len(good))


def test_the_fast_path_on_mqtt5_takes_only_publishes_without_properties() -> None:
    plain = _publish(b"t/1", b"one", v5=True)
    props = _publish(b"t/2", b"two", v5=True, props=b"\x01\x01")  # payload format: UTF-8
    assert _taken(plain + plain + props + plain, v5=True) == (
        [("t/1", b"one")] * 2, 2 * len(plain))
    # a v3 reading of a v5 packet would see the property length as payload: never mixed
    assert _taken(_publish(b"t/1", b"one"), v5=True) == ([], 0)


def _stream(rnd: random.Random, v5: bool) -> tuple[bytes, list[tuple[str, bytes]], list[int]]:
    """A broker's byte stream: publishes of QoS 0 and 1 (some with properties, RETAIN,
    payloads from 0 B to 300 kB), PINGRESPs and SUBACKs; the messages it carries, and
    the packet ids of its QoS 1 ones."""
    data, messages, qos1 = bytearray(), [], []
    for i in range(600):
        kind = rnd.random()
        if kind < 0.05:
            data += b"\xd0\x00"
            continue
        if kind < 0.08:
            data += b"\x90" + _varint(3) + (i % 65000 + 1).to_bytes(2, "big") + b"\x00"
            continue
        topic = f"plant/{rnd.choice(['gen-1', 'pump-2', 'ünïcode', 'x' * 300])}/{i}"
        payload = rnd.randbytes(rnd.choice([0, 1, 50, 2000, 10_000, 70_000, 300_000]))
        qos = 1 if rnd.random() < 0.2 else 0
        props = b"\x01\x00" if v5 and rnd.random() < 0.2 else b""
        data += _publish(topic.encode(), payload, qos=qos, mid=i % 65000 + 1,
                         retain=rnd.random() < 0.1, v5=v5, props=props)
        messages.append((topic, payload))
        if qos:
            qos1.append(i % 65000 + 1)
    return bytes(data), messages, qos1


@pytest.mark.parametrize("v5", [False, True])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_paho_client_with_the_fast_path_gets_the_stream_it_gets_without(
        v5: bool, seed: int) -> None:
    """Differential, against paho itself: a real paho client reads a broker's stream
    through a socket pair, written in random pieces (a packet split anywhere, a read
    callback as aiomqtt's), with the fast path. Every message arrives once, in order,
    intact - those paho reads (QoS 1, properties, split over reads) among those the fast
    path takes - and QoS 1 ones are acknowledged as paho does, once each, in order."""
    import types

    import paho.mqtt.client as mqtt

    rnd = random.Random(seed)
    data, messages, qos1 = _stream(rnd, v5)
    paho = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                       protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
    paho.on_message = lambda *_: None
    got: list[tuple[str, bytes]] = []
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    with a, b, fast_path_counted() as fast:
        assert deliver_directly(types.SimpleNamespace(_client=paho),  # type: ignore[arg-type]
                                lambda t, p: got.append((t, p)))
        paho._sock = BufferedSocket(b, chunk=rnd.choice([4096, 65536, 1 << 20]))
        acks = bytearray()
        pos = 0
        deadline = time.monotonic() + 60
        while len(got) < len(messages):
            assert time.monotonic() < deadline, (len(got), len(messages))
            if pos < len(data):
                piece = rnd.choice([1, 3, 100, 5000, 70_000, 400_000])
                with contextlib.suppress(BlockingIOError):
                    pos += a.send(data[pos:pos + piece])
            while True:  # aiomqtt's read callback
                assert paho.loop_read() == mqtt.MQTT_ERR_SUCCESS
                if paho._sock.pending() <= 0:
                    break
            with contextlib.suppress(BlockingIOError):
                acks += a.recv(1 << 20)
        with contextlib.suppress(BlockingIOError):
            acks += a.recv(1 << 20)
    assert got == messages
    # each QoS 1 publish acknowledged once, in order, whichever path took it
    assert bytes(acks) == b"".join(b"\x40\x02" + m.to_bytes(2, "big") for m in qos1)
    assert 0 < fast[0] < len(messages)  # both paths were taken


def test_publishes_taken_by_the_fast_path_count_for_the_keepalive() -> None:
    """paho closes a link that received nothing for a keepalive after its PINGREQ; a
    flood the fast path takes (paho reads no packet of it) is traffic all the same."""
    import types

    import paho.mqtt.client as mqtt

    paho = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    paho.on_message = lambda *_: None
    got: list[tuple[str, bytes]] = []
    assert deliver_directly(types.SimpleNamespace(_client=paho),  # type: ignore[arg-type]
                            lambda t, p: got.append((t, p)))
    a, b = socket.socketpair()
    with a, b:
        b.setblocking(False)
        paho._sock = BufferedSocket(b)
        first, rest = _publish(b"t/0", b"x"), _publish(b"t/1", b"y") * 50
        a.sendall(first + rest)
        select.select([b], [], [], 5)
        assert paho.loop_read() == mqtt.MQTT_ERR_SUCCESS  # the first, by paho: a chunk read
        paho._last_bytes_received = 0.0  # long ago
        while paho._sock.pending() > 0:
            assert paho.loop_read() == mqtt.MQTT_ERR_SUCCESS
        assert len(got) == 51
        assert paho._last_bytes_received > time.monotonic() - 5
