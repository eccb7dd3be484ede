"""The demo's MQTT broker: our embedded one against amqtt, a maintained asyncio broker.

Both run in the benchmark's own process and event loop, as the demo runs its broker.
Per broker and round: start-up (construct + start until a client connects), and one
aiomqtt publisher -> one aiomqtt subscriber for N ~120-byte messages at QoS 0 and at QoS 1
(end-to-end messages/s, messages lost). Rounds interleave (A B A B A B); medians reported.
Also the demo's own load (3 generators at 2 Hz, 4x speed: 24 msg/s) for 5 s, delivered
in order. Needs ``pip install amqtt`` for the comparison.

    python benchmarks/demo_broker.py [--messages 20000] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata as md
import json
import logging
import socket
import statistics
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt

from aiotflow.demo.broker import EmbeddedBroker

PAYLOAD = json.dumps({"ts": 1_700_000_000.5, "values": {
    "load_pct": 71.2, "coolant_temp_c": 88.1, "oil_pressure_bar": 4.1,
    "vibration_mm_s": 2.3}}).encode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def embedded() -> AsyncIterator[int]:
    async with EmbeddedBroker() as broker:
        yield broker.port


@contextlib.asynccontextmanager
async def amqtt_broker() -> AsyncIterator[int]:
    from amqtt.broker import Broker

    port = _free_port()
    broker = Broker({"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
                     "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                                 {"allow_anonymous": True}}})
    await broker.start()
    try:
        yield port
    finally:
        await broker.shutdown()


BROKERS: dict[str, Callable[[], contextlib.AbstractAsyncContextManager[int]]] = {
    "embedded": embedded, "amqtt": amqtt_broker}


async def _connect_ms(port: int, t0: float) -> float:
    while True:
        try:
            async with aiomqtt.Client("127.0.0.1", port):
                return (time.perf_counter() - t0) * 1000
        except aiomqtt.MqttError:
            await asyncio.sleep(0.001)


async def _flow(port: int, n: int, qos: int, rate_hz: float | None = None) -> dict[str, Any]:
    got: list[int] = []
    done = asyncio.Event()
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-sub") as sub, \
            aiomqtt.Client("127.0.0.1", port, identifier="bench-pub") as pub:
        await sub.subscribe("bench/#", qos=qos)
        await asyncio.sleep(0.1)

        async def receive() -> None:
            async for m in sub.messages:
                got.append(int(m.topic.value.rsplit("/", 1)[1]))
                if len(got) == n:
                    done.set()

        reader = asyncio.create_task(receive())
        t0 = time.perf_counter()
        sem = asyncio.Semaphore(100)

        async def send(i: int) -> None:
            async with sem:
                await pub.publish(f"bench/{i}", PAYLOAD, qos=qos)

        if rate_hz:
            for i in range(n):
                await pub.publish(f"bench/{i}", PAYLOAD, qos=qos)
                await asyncio.sleep(1 / rate_hz)
        else:
            await asyncio.gather(*(send(i) for i in range(n)))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(15):
                await done.wait()
        seconds = time.perf_counter() - t0
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return {"msg_per_s": round(len(got) / seconds), "lost": n - len(got),
            "in_order": got == sorted(got)}


async def one_round(name: str, n: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    async with BROKERS[name]() as port:
        start_ms = await _connect_ms(port, t0)
        q0 = await _flow(port, n, 0)
        q1 = await _flow(port, n, 1)
        demo = await _flow(port, 120, 1, rate_hz=24)
    return {"start_ms": round(start_ms, 1), "qos0_msg_s": q0["msg_per_s"],
            "qos0_lost": q0["lost"], "qos1_msg_s": q1["msg_per_s"], "qos1_lost": q1["lost"],
            "demo_load_lost": demo["lost"], "demo_load_in_order": demo["in_order"]}


def _footprint(dist: str) -> dict[str, Any]:
    """Installed size of a distribution and of what it requires (transitively)."""
    seen: set[str] = set()
    todo = [dist]
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        try:
            d = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        seen.add(key)
        for req in d.requires or []:
            if "extra ==" not in req:
                todo.append(req.split(";")[0].split("[")[0].split(">")[0].split("=")[0]
                            .split("<")[0].split("~")[0].split("!")[0].strip())
    size = 0
    for name in seen:
        for f in md.distribution(name).files or []:
            p = Path(str(f.locate()))
            if p.is_file():
                size += p.stat().st_size
    return {"distributions": sorted(seen), "mb": round(size / 2**20, 1)}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    logging.getLogger("amqtt").setLevel(logging.CRITICAL)
    names = ["embedded"]
    try:
        import amqtt  # noqa: F401

        names.append("amqtt")
    except ImportError:
        print("amqtt is not installed (pip install amqtt): measuring the embedded broker only")
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for _ in range(a.rounds):
        for name in names:  # interleaved: A B A B A B
            runs[name].append(await one_round(name, a.messages))
    result: dict[str, Any] = {"messages": a.messages, "rounds": a.rounds}
    for name, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) if isinstance(rs[0][k], float | int)
               and not isinstance(rs[0][k], bool) else all(r[k] for r in rs) for k in rs[0]}
        result[name] = med
    if "amqtt" in names:
        result["amqtt"]["install"] = _footprint("amqtt")
        for k in ("start_ms", "qos0_msg_s", "qos1_msg_s"):
            result[f"amqtt_vs_embedded_{k}"] = round(result["amqtt"][k] /
                                                     max(result["embedded"][k], 1e-9), 2)
    if a.json:
        print(json.dumps(result, indent=2))
    keys = ("start_ms", "qos0_msg_s", "qos0_lost", "qos1_msg_s", "qos1_lost", "demo_load_lost",
            "demo_load_in_order")
    print(f"{'median of ' + str(a.rounds):18}" + "".join(f"{n:>12}" for n in names))
    for k in keys:
        print(f"{k:18}" + "".join(f"{result[n][k]!s:>12}" for n in names))


if __name__ == "__main__":
    asyncio.run(main())
