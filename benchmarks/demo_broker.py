"""The demo's MQTT broker (amqtt, in the demo's process and event loop) against
Mosquitto (the production broker, its own process) as the baseline.

Per broker and round: start-up (start until a client connects; Mosquitto's includes the
process start), one aiomqtt publisher -> one aiomqtt subscriber for N ~120-byte messages
at QoS 0 and at QoS 1 (end-to-end messages/s, messages lost), and the demo's own load (3
generators at 2 Hz, 4x speed: 24 msg/s) for 5 s: complete and in order? Rounds
interleave (A B A B A B); medians reported.

This is how the demo broker was chosen: aiotflow's own in-process MQTT 3.1.1 broker
(230 lines, removed) against amqtt in the same run, 3 rounds: start 11.8 vs 30.2 ms,
QoS 0 4,546 vs 2,539 msg/s, QoS 1 3,510 vs 1,400 msg/s, the demo's load complete and in
order on both. amqtt serves the demo as well, so the demo uses it.

    python benchmarks/demo_broker.py [--messages 20000] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata as md
import json
import logging
import re
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt

sys.path.insert(0, str(Path(__file__).parent))
from _mqtt import Broker as Mosquitto

from aiotflow.demo.broker import DemoBroker

PAYLOAD = json.dumps({"ts": 1_700_000_000.5, "values": {
    "load_pct": 71.2, "coolant_temp_c": 88.1, "oil_pressure_bar": 4.1,
    "vibration_mm_s": 2.3}}).encode()


@contextlib.asynccontextmanager
async def mosquitto() -> AsyncIterator[int]:
    broker = await asyncio.to_thread(Mosquitto)
    try:
        yield broker.port
    finally:
        await asyncio.to_thread(broker.stop)


@contextlib.asynccontextmanager
async def demo() -> AsyncIterator[int]:
    async with DemoBroker() as broker:
        yield broker.port


BROKERS: dict[str, Callable[[], contextlib.AbstractAsyncContextManager[int]]] = {
    "mosquitto": mosquitto, "demo": demo}


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


def _closure(dist: str, *, extras: frozenset[str] = frozenset()) -> set[str]:
    """``dist`` and what it requires, transitively (with those of its own ``extras``)."""
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
            marker = re.search(r"extra == [\"']([\w-]+)", req)
            if marker is None or (name == dist and marker.group(1) in extras):
                todo.append(re.split(r"[\s;\[<>=~!(]", req, maxsplit=1)[0])
    return seen


def _footprint(dist: str, *, besides: str) -> dict[str, Any]:
    """Installed size of what ``dist`` adds to ``besides`` with its engine and train extras."""
    seen = _closure(dist) - _closure(besides, extras=frozenset({"engine", "train"}))
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
    names = list(BROKERS)
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for _ in range(a.rounds):
        for name in names:  # interleaved: A B A B A B
            runs[name].append(await one_round(name, a.messages))
    result: dict[str, Any] = {"messages": a.messages, "rounds": a.rounds}
    for name, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) if isinstance(rs[0][k], float | int)
               and not isinstance(rs[0][k], bool) else all(r[k] for r in rs) for k in rs[0]}
        result[name] = med
    result["demo"]["install"] = _footprint("amqtt", besides="aiotflow")
    for k in ("start_ms", "qos0_msg_s", "qos1_msg_s"):
        result[f"demo_vs_mosquitto_{k}"] = round(result["demo"][k] /
                                                 max(result["mosquitto"][k], 1e-9), 2)
    if a.json:
        print(json.dumps(result, indent=2))
    keys = ("start_ms", "qos0_msg_s", "qos0_lost", "qos1_msg_s", "qos1_lost", "demo_load_lost",
            "demo_load_in_order")
    print(f"{'median of ' + str(a.rounds):18}" + "".join(f"{n:>12}" for n in names))
    for k in keys:
        print(f"{k:18}" + "".join(f"{result[n][k]!s:>12}" for n in names))


if __name__ == "__main__":
    asyncio.run(main())
