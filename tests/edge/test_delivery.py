"""No alert lost: uplink broker killed and restarted, edge process killed with -9."""

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sqlite3
import sys
from pathlib import Path

import aiomqtt

from aiotflow.contracts.schema import Alert
from aiotflow.contracts.signing import open_alert
from aiotflow.edge.bundle import ModelBundle
from aiotflow.edge.config import EdgeSettings
from aiotflow.edge.runtime import EdgeRuntime
from aiotflow.simulator.fleet import Fleet, parse_fault

from ..conftest import Mosquitto
from ..workflows.helpers import wait_for
from .helpers import engine_acks, publish_simulated

OUTAGE_S = float(os.environ.get("AIOTFLOW_OUTAGE_S", "3"))


async def consume(port: int, got: list[str], stop: asyncio.Event) -> None:
    """An operator's consumer: persistent session, reconnects on its own."""
    while not stop.is_set():
        try:
            async with aiomqtt.Client("127.0.0.1", port, identifier="ops-console",
                                      clean_session=False) as c:
                await c.subscribe("aiotflow/alerts/#", qos=1)
                async for m in c.messages:
                    got.append(json.loads(open_alert(m.payload).body)["id"])  # type: ignore[arg-type]
        except aiomqtt.MqttError:
            await asyncio.sleep(0.2)


async def test_uplink_killed_and_restarted_loses_nothing(
    mosquitto: Mosquitto, bundle: ModelBundle, tmp_path: Path
) -> None:
    uplink = Mosquitto(tmp_path / "uplink", persistence=True)
    uplink.start()
    n_assets = 24
    faults = [parse_fault(f"gen-{i + 1:03d}:bearing_wear@{40 + 5 * i}", ramp=10)
              for i in range(n_assets)]
    readings = list(Fleet(n_assets, seed=8, faults=faults).run(40 + 5 * n_assets + 40, 2.0))
    # about the broker: delivery ends at its PUBACK here (the engine's acknowledgement is
    # attacked in the tests below and in the crash matrix)
    s = EdgeSettings(model=bundle.path, mqtt={"url": mosquitto.url}, outbox=tmp_path / "ob.db",
                     uplink={"url": uplink.url, "reconnect_max_s": 0.5}, ack={"required": False})
    rt = EdgeRuntime(s, bundle=bundle)
    produced: list[str] = []
    rt.add_alert_listener(lambda a: produced.append(a.id))
    got: list[str] = []
    stop = asyncio.Event()
    consumer = asyncio.create_task(consume(uplink.port, got, stop))
    try:
        async with rt:
            await asyncio.sleep(1.5)  # the consumer's session is autosaved by the broker
            third = len(readings) // 3
            for i, (asset, ts, values) in enumerate(readings):
                if i == third:
                    await asyncio.sleep(0.5)
                    uplink.kill()
                    outage_from = len(produced)
                if i == 2 * third:
                    # the scorer runs behind the handler (more so on a loaded machine):
                    # wait, with a deadline, until it alerted on this third's faults
                    await wait_for(lambda n=outage_from: len(produced) > n, 15)
                    during = len(produced) - outage_from
                    await asyncio.sleep(OUTAGE_S)
                    assert rt.stats.outbox_depth >= during > 0
                    uplink.start()
                rt.handle(f"aiotflow/telemetry/plant-1/{asset}",
                          json.dumps({"ts": ts, "values": values}).encode())
                if i % 200 == 0:
                    await asyncio.sleep(0)  # let the scorer and publisher run
            for _ in range(200):
                if len(set(got)) >= len(produced) and rt.stats.outbox_depth == 0:
                    break
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        uplink.stop()
    assert len(produced) == n_assets
    first_seen = list(dict.fromkeys(got))
    assert first_seen == produced  # every alert, in order; duplicates only as redeliveries
    assert rt.stats.uplink_disconnects >= 1 and rt.stats.outbox_dropped == 0


async def test_edge_killed_with_minus_9_keeps_its_outbox(
    mosquitto: Mosquitto, bundle_path: Path, tmp_path: Path
) -> None:
    uplink = Mosquitto(tmp_path / "uplink")  # port reserved, broker not running yet
    cfg = tmp_path / "edge.toml"
    outbox = tmp_path / "outbox.db"
    cfg.write_text(f'model = "{bundle_path}"\noutbox = "{outbox}"\nstats_interval_s = 0.2\n'
                   f'[mqtt]\nurl = "{mosquitto.url}"\n'
                   f'[uplink]\nurl = "{uplink.url}"\nreconnect_max_s = 0.5\n')
    stats = tmp_path / "stats.json"

    async def start_edge() -> asyncio.subprocess.Process:
        if stats.exists():
            stats.unlink()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "aiotflow", "edge", "--config", str(cfg),
            "--stats-file", str(stats), stderr=asyncio.subprocess.DEVNULL)
        for _ in range(300):
            if stats.exists() and json.loads(stats.read_text())["telemetry_connected"]:
                return proc
            await asyncio.sleep(0.05)
        raise AssertionError("edge did not connect")

    edge = await start_edge()
    await asyncio.sleep(0.3)
    fleet = Fleet(4, seed=12, faults=[parse_fault("gen-002:bearing_wear@60", ramp=10),
                                      parse_fault("gen-004:injector@70", ramp=10)])
    await publish_simulated(mosquitto.port, fleet, 160, 2.0)
    for _ in range(200):
        if json.loads(stats.read_text())["alerts_emitted"] == 2:
            break
        await asyncio.sleep(0.05)
    edge.send_signal(signal.SIGKILL)
    await edge.wait()
    with sqlite3.connect(outbox) as db:
        rows = db.execute("SELECT key, topic FROM outbox ORDER BY seq").fetchall()
    assert [t for _, t in rows] == ["aiotflow/alerts/plant-1/gen-002",
                                    "aiotflow/alerts/plant-1/gen-004"]
    uplink.start()
    try:
        async with aiomqtt.Client("127.0.0.1", uplink.port) as sub, \
                engine_acks(uplink.port) as acked:
            await sub.subscribe("aiotflow/alerts/#", qos=1)
            edge = await start_edge()
            got: list[Alert] = []
            async with asyncio.timeout(15):
                async for m in sub.messages:
                    got.append(Alert.model_validate_json(open_alert(m.payload).body))  # type: ignore[arg-type]
                    if len(got) == 2:
                        break
            assert [a.id for a in got] == [k for k, _ in rows]
            await wait_for(lambda: json.loads(stats.read_text())["acks_received"] == 2, 15)
        assert acked == [k for k, _ in rows]
    finally:
        edge.send_signal(signal.SIGTERM)
        assert await edge.wait() == 0
        uplink.stop()
    assert json.loads(stats.read_text())["outbox_depth"] == 0


async def test_alert_is_sent_again_until_the_engine_acknowledges_it(
    mosquitto: Mosquitto, bundle: ModelBundle, tmp_path: Path
) -> None:
    """The broker's PUBACK does not end an alert's delivery: it is sent again, with
    backoff, until an acknowledgement naming it arrives; a malformed or foreign one
    changes nothing."""
    s = EdgeSettings(model=bundle.path, mqtt={"url": mosquitto.url}, outbox=tmp_path / "ob.db",
                     ack={"timeout_s": 0.4, "max_interval_s": 1.6})
    rt = EdgeRuntime(s, bundle=bundle)
    fleet = Fleet(2, seed=4, faults=[parse_fault("gen-001:bearing_wear@60", ramp=20)])
    arrivals: list[tuple[float, str]] = []
    loop = asyncio.get_running_loop()
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as sub:
        await sub.subscribe("aiotflow/alerts/#", qos=1)

        async def watch() -> None:
            async for m in sub.messages:
                arrivals.append((loop.time(), json.loads(open_alert(m.payload).body)["id"]))  # type: ignore[arg-type]

        watcher = asyncio.create_task(watch())
        try:
            async with rt:
                await asyncio.wait_for(rt.subscribed.wait(), 10)
                await publish_simulated(mosquitto.port, fleet, 150, 2.0)
                await wait_for(lambda: len(arrivals) >= 4, 20)
                assert {i for _, i in arrivals} == {arrivals[0][1]}  # one alert, resent
                times = [t for t, _ in arrivals]
                gaps = [b - a for a, b in itertools.pairwise(times)]
                assert gaps[0] >= 0.3 and gaps[2] >= 1.2, gaps  # 0.4, 0.8, 1.6: backoff
                assert rt.stats.outbox_depth == 1 and rt.stats.resent >= 3
                alert_id = arrivals[0][1]
                async with aiomqtt.Client("127.0.0.1", mosquitto.port) as engine:
                    for bad in (b"{oops", b'{"id": 7}', b'{"id": "someone-else"}'):
                        await engine.publish("aiotflow/acks/plant-1/gen-001", bad, qos=1)
                    await wait_for(lambda: rt.stats.acks_invalid == 2, 10)
                    assert rt.stats.outbox_depth == 1  # nothing confirmed by those
                    await engine.publish("aiotflow/acks/plant-1/gen-001",
                                         json.dumps({"id": alert_id}), qos=1)
                    await wait_for(lambda: rt.stats.acks_received == 1, 10)
                assert rt.stats.outbox_depth == 0
                sent = len(arrivals)
                await asyncio.sleep(2.0)  # longer than the longest retry interval
                assert len(arrivals) == sent  # not sent again once acknowledged
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
