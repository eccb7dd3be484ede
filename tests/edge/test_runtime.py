import asyncio
import json
from pathlib import Path

import aiomqtt
import pytest

from aiotflow.contracts.mqtt import READ_CHUNK
from aiotflow.contracts.schema import Alert
from aiotflow.contracts.signing import open_alert
from aiotflow.edge.bundle import ModelBundle
from aiotflow.edge.config import EdgeSettings
from aiotflow.edge.runtime import EdgeRuntime
from aiotflow.simulator.fleet import Fleet, parse_fault

from ..conftest import Mosquitto
from ..workflows.helpers import wait_for
from .helpers import engine_acks, publish_simulated


def settings(tmp_path: Path, bundle: ModelBundle, url: str, **kw: object) -> EdgeSettings:
    return EdgeSettings(model=bundle.path, mqtt={"url": url}, outbox=tmp_path / "outbox.db",
                        stats_interval_s=0.2, **kw)


async def collect(sub: aiomqtt.Client, done, seconds: float = 15.0) -> list[aiomqtt.Message]:
    got: list[aiomqtt.Message] = []
    try:
        async with asyncio.timeout(seconds):
            async for m in sub.messages:
                got.append(m)
                if done(got):
                    break
    except TimeoutError:
        pass
    return got


async def test_faulted_asset_alerts_and_bad_payloads_are_dead_lettered(
    mosquitto: Mosquitto, bundle: ModelBundle, tmp_path: Path
) -> None:
    rt = EdgeRuntime(settings(tmp_path, bundle, mosquitto.url), bundle=bundle,
                     stats_file=tmp_path / "stats.json")
    fleet = Fleet(4, seed=21, faults=[parse_fault("gen-003:coolant_pump@60", ramp=30)])
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as sub, \
            engine_acks(mosquitto.port) as acked:
        await sub.subscribe("aiotflow/alerts/#", qos=1)
        await sub.subscribe("aiotflow/deadletter/#", qos=1)
        async with rt:
            await asyncio.wait_for(rt.subscribed.wait(), 10)
            good, bad = await publish_simulated(mosquitto.port, fleet, 200, 2.0, bad_every=10)

            def done(msgs: list[aiomqtt.Message]) -> bool:
                return len(msgs) >= bad + 1 and any("alerts" in str(m.topic) for m in msgs)

            got = await collect(sub, done)
            await wait_for(lambda: rt.stats.acks_received == 1, 10)
    alerts = [Alert.model_validate_json(open_alert(m.payload).body) for m in got  # type: ignore[arg-type]
              if str(m.topic).startswith("aiotflow/alerts/")]
    letters = [json.loads(m.payload) for m in got  # type: ignore[arg-type]
               if str(m.topic).startswith("aiotflow/deadletter/")]
    assert [a.asset for a in alerts] == ["gen-003"]
    a = alerts[0]
    assert a.site == "plant-1" and a.score >= a.threshold and len(a.embedding) == 48
    assert max(a.summary, key=lambda c: a.summary[c].contribution) == "coolant_temp_c"
    # the operating point before the episode: normal levels, below the heating window's
    assert set(a.baseline) == set(bundle.meta.channels)
    assert a.baseline["coolant_temp_c"] < a.summary["coolant_temp_c"].mean
    assert len(letters) == bad
    assert {lt["reason"] for lt in letters} >= {"not_json", "invalid", "empty_batch"}
    assert all(lt["topic"].startswith("aiotflow/telemetry/plant-1/") for lt in letters)
    assert any(lt["payload_base64"] for lt in letters)  # binary garbage kept, not lost
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["readings_received"] == good
    assert stats["invalid"] == bad and stats["deadlettered"] == bad
    assert stats["alerts_emitted"] == 1 and stats["outbox_depth"] == 0
    assert acked == [a.id] and stats["acks_received"] == 1
    assert stats["windows_scored"] > 0


async def test_out_of_order_and_wrong_site_are_rejected(
    mosquitto: Mosquitto, bundle: ModelBundle, tmp_path: Path
) -> None:
    rt = EdgeRuntime(settings(tmp_path, bundle, mosquitto.url, site="plant-1"), bundle=bundle)
    async with rt:
        rt.handle("aiotflow/telemetry/plant-1/g1", b'{"ts": 10, "values": {"rpm": 1}}')
        rt.handle("aiotflow/telemetry/plant-1/g1", b'{"ts": 9, "values": {"rpm": 1}}')
        rt.handle("aiotflow/telemetry/plant-9/g1", b'{"ts": 11, "values": {"rpm": 1}}')
        rt.handle("nositeasset", b'{"ts": 11, "values": {"rpm": 1}}')
    assert rt.stats.readings_received == 1
    assert rt.stats.invalid_reasons == {"out_of_order": 1, "wrong_site": 1, "bad_topic": 1}
    assert rt.stats.deadlettered == 3


async def test_alert_survives_uplink_outage(
    mosquitto: Mosquitto, bundle: ModelBundle, tmp_path: Path
) -> None:
    uplink = Mosquitto(tmp_path / "uplink", persistence=True)
    uplink.start()
    try:
        # An operator's subscriber with a persistent session on the uplink broker.
        async with aiomqtt.Client("127.0.0.1", uplink.port, identifier="ops-console",
                                  clean_session=False) as sub:
            await sub.subscribe("aiotflow/alerts/#", qos=1)
        s = settings(tmp_path, bundle, mosquitto.url, uplink={"url": uplink.url,
                                                              "reconnect_max_s": 0.5},
                     ack={"timeout_s": 0.5})
        rt = EdgeRuntime(s, bundle=bundle)
        fleet = Fleet(2, seed=4, faults=[parse_fault("gen-001:bearing_wear@60", ramp=20)])
        async with rt:
            await asyncio.wait_for(rt.subscribed.wait(), 10)
            uplink.stop()
            await publish_simulated(mosquitto.port, fleet, 150, 2.0)
            for _ in range(100):
                if rt.stats.alerts_emitted:
                    break
                await asyncio.sleep(0.1)
            assert rt.stats.alerts_emitted == 1
            await asyncio.sleep(1.0)
            assert rt.stats.published == 0 and rt.stats.outbox_depth == 1
            uplink.start()
            await wait_for(lambda: rt.stats.published, 10)
            # the broker has it; the alert stays until the engine acknowledges it
            assert rt.stats.published == 1 and rt.stats.outbox_depth == 1
            async with engine_acks(uplink.port):
                await wait_for(lambda: rt.stats.outbox_depth == 0, 20)
        async with aiomqtt.Client("127.0.0.1", uplink.port, identifier="ops-console",
                                  clean_session=False) as sub:
            got = await collect(sub, lambda m: len(m) >= 1, 10)
        assets = {Alert.model_validate_json(open_alert(m.payload).body).asset  # type: ignore[arg-type]
                  for m in got}
        assert assets == {"gen-001"}
    finally:
        uplink.stop()


async def test_outbox_is_published_after_restart(bundle: ModelBundle, tmp_path: Path,
                                                 mosquitto: Mosquitto) -> None:
    from aiotflow.edge.outbox import Outbox

    async with Outbox(tmp_path / "outbox.db") as ob:
        await ob.put_many([("k1", "aiotflow/alerts/s/a", b"{}", 1), ("k1", "x", b"dup", 1)])
        assert await ob.depth() == 1
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as sub:
        await sub.subscribe("aiotflow/alerts/#", qos=1)
        rt = EdgeRuntime(settings(tmp_path, bundle, mosquitto.url), bundle=bundle)
        async with rt:
            got = await collect(sub, lambda m: len(m) >= 1, 10)
    assert [str(m.topic) for m in got] == ["aiotflow/alerts/s/a"]
    assert rt.stats.outbox_depth == 0


async def test_persistent_session_keeps_readings_sent_while_away(
    mosquitto: Mosquitto, bundle: ModelBundle, tmp_path: Path
) -> None:
    s = settings(tmp_path, bundle, mosquitto.url).model_copy(update={"mqtt": EdgeSettings(
        mqtt={"url": mosquitto.url, "client_id": "gw-1", "persistent_session": True}).mqtt})
    async with EdgeRuntime(s, bundle=bundle) as first:
        await asyncio.wait_for(first.subscribed.wait(), 10)
    # the edge is away (a restart, a reconnect); QoS 1 readings keep coming
    fleet = Fleet(2, seed=3)
    good, _ = await publish_simulated(mosquitto.port, fleet, 20, 2.0)
    async with EdgeRuntime(s, bundle=bundle) as second:
        for _ in range(100):
            if second.stats.readings_received == good:
                break
            await asyncio.sleep(0.05)
    assert second.stats.readings_received == good


def test_persistent_session_needs_a_client_id() -> None:
    import pytest

    from aiotflow.edge.errors import ConfigError

    with pytest.raises(ConfigError, match="client_id"):
        EdgeSettings.load(None, mqtt={"persistent_session": True})


async def test_200k_invented_asset_names_leave_memory_bounded_and_real_assets_scored(
    mosquitto: Mosquitto, bundle: ModelBundle, tmp_path: Path
) -> None:
    import tracemalloc

    meta = bundle.meta
    rt = EdgeRuntime(settings(tmp_path, bundle, mosquitto.url, max_assets=1000,
                              asset_idle_s=0.5), bundle=bundle)
    fleet = Fleet(2, seed=4)
    t = 1_700_000_000.0

    def real(n: int) -> None:
        nonlocal t
        for _ in range(n):
            t += 1.0 / meta.sample_rate_hz
            for a in fleet.assets:
                rt.handle(f"aiotflow/telemetry/plant-1/{a.name}",
                          json.dumps({"ts": t, "values": a.step(1.0)}).encode())

    async with rt:
        real(meta.window)
        tracemalloc.start()
        base, _ = tracemalloc.get_traced_memory()
        for i in range(200_000):  # a stranger invents a new asset name per message
            rt.handle(f"aiotflow/telemetry/plant-1/x{i:06d}",
                      b'{"ts": 1700000000.0, "values": {"rpm": 1.0}}')
            if i % 1000 == 0:
                real(1)  # the real generators keep talking
        grown, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert len(rt.buffer) <= 1000
        # each invented name was refused, or took the place of one idle for asset_idle_s
        assert rt.buffer.refused + rt.buffer.evicted >= 199_000
        assert rt.stats.invalid_reasons["too_many_assets"] == rt.buffer.refused > 0
        # a route cache of 100k topics at most, 1000 rings of a few kB: bounded, not 200k
        assert grown - base < 60_000_000, grown - base
        await wait_for(lambda: rt.stats.windows_scored > 0, 10)  # real assets still scored
        await asyncio.sleep(0.6)  # the invented ones go idle ...
        real(1)
        rt.handle("aiotflow/telemetry/plant-1/new-one",
                  b'{"ts": 1700000000.0, "values": {"rpm": 1.0}}')
        assert rt.buffer.evicted >= 1  # ... and are evicted for a new asset
        rt.write_stats()
        assert rt.stats.assets_evicted == rt.buffer.evicted
        assert rt.stats.assets_refused == rt.buffer.refused


async def test_large_junk_with_the_uplink_down_leaves_the_outbox_bounded_in_bytes(
    mosquitto: Mosquitto, bundle: ModelBundle, tmp_path: Path
) -> None:
    import hashlib

    from aiotflow.edge.outbox import Outbox

    s = settings(tmp_path, bundle, mosquitto.url, uplink={"url": "mqtt://127.0.0.1:1"},
                 outbox_max_bytes=256 * 1024)
    junk = b'{"ts": 1, "values": {"x": "' + b"A" * (4 * 2**20) + b'"}}'
    async with EdgeRuntime(s, bundle=bundle) as rt:
        for i in range(100):
            rt.handle(f"aiotflow/telemetry/plant-1/gen-{i % 3}", junk)
        await wait_for(lambda: rt.stats.deadlettered == 100, 20)
    assert (tmp_path / "outbox.db").stat().st_size < 4 * 2**20  # not 100 x 4 MB
    async with Outbox(tmp_path / "outbox.db") as ob:
        [letter, *_] = await ob.peek(1)
    doc = json.loads(letter.payload)
    assert doc["size"] == len(junk) and doc["truncated"] and len(doc["payload"]) <= 1024
    assert doc["sha256"] == hashlib.sha256(junk).hexdigest()


async def test_the_outbox_is_bounded_in_bytes_by_priority(tmp_path: Path) -> None:
    from aiotflow.edge.outbox import Outbox

    async with Outbox(tmp_path / "o.db", max_bytes=10_000) as ob:
        await ob.put_many([(f"dl-{i}", "dl", b"x" * 1000, 0) for i in range(10)])
        assert ob.size == 10
        await ob.put_many([("crit", "a", b"y" * 3000, 3)])  # three dead letters make room
        assert ob.size == 8 and ob.evicted == 3
        await ob.put_many([("more-junk", "dl", b"z" * 1000, 0)])
        assert ob.dropped == 0 and ob.evicted == 4  # the oldest junk goes, not the alert
        await ob.put_many([("huge", "a", b"h" * 20_000, 3)])  # larger than the whole bound
        assert ob.dropped == 1
        keys = [m.key for m in await ob.peek(100)]
        assert "crit" in keys and "huge" not in keys


async def test_batched_messages_decide_as_single_readings(
    mosquitto: Mosquitto, bundle: ModelBundle, tmp_path: Path
) -> None:
    """The same telemetry, one reading per message or in batches of 1 to 40 (the batch
    fast path, with a reading lacking a channel and one out of order among them), the
    batches scored 7 windows at a time (blocks split across scoring batches): the same
    windows, the same alerts with the same operating point, the same rejections."""
    import random

    import orjson

    fleet = Fleet(3, seed=8, faults=[parse_fault("gen-001:coolant_pump@80", ramp=20)])
    per_asset: dict[str, list[dict[str, object]]] = {}
    for asset, ts, values in fleet.run(400, 2.0, start_ts=1.7e9):
        per_asset.setdefault(asset, []).append({"ts": ts, "values": values})
    gen2 = per_asset["gen-002"]
    del gen2[100]["values"]["rpm"]  # type: ignore[attr-defined]  # imputed
    gen2[200]["ts"] = gen2[150]["ts"]  # out of order: rejected
    singles = [(a, [r]) for rs in zip(*per_asset.values(), strict=True)
               for a, r in zip(per_asset, rs, strict=True)]
    rnd = random.Random(2)
    batches: list[tuple[str, list[dict[str, object]]]] = []
    cursor = dict.fromkeys(per_asset, 0)
    while any(cursor[a] < len(rs) for a, rs in per_asset.items()):
        a = rnd.choice([a for a, rs in per_asset.items() if cursor[a] < len(rs)])
        n = rnd.randint(1, 40)
        batches.append((a, per_asset[a][cursor[a]:cursor[a] + n]))
        cursor[a] += n
    results = []
    for i, messages in enumerate((singles, batches)):
        # batches go through the scorer 7 windows at a time: a message's block is split
        rt = EdgeRuntime(settings(tmp_path / str(i), bundle, mosquitto.url,
                                  ack={"required": False},
                                  scoring={"max_batch": 512 if i == 0 else 7}), bundle=bundle)
        alerts: list[Alert] = []
        rt.add_alert_listener(alerts.append)
        async with rt:
            for n, (asset, rs) in enumerate(messages):
                rt.handle(f"aiotflow/telemetry/plant-1/{asset}",
                          orjson.dumps(rs[0] if i == 0 else rs))
                if n % 50 == 0:
                    await asyncio.sleep(0)
            await wait_for(lambda rt=rt: not rt._pending and rt.stats.windows_scored > 0, 10)
        results.append((alerts, rt.stats, rt.buffer))
    (a1, s1, b1), (a2, s2, b2) = results
    assert len(batches) < len(singles) / 5 and max(len(b[1]) for b in batches) > 30
    assert [a.id for a in a2] == [a.id for a in a1] and [a.asset for a in a1] == ["gen-001"]
    for x, y in zip(a1, a2, strict=True):
        assert (x.ts, x.episode_start, x.severity) == (y.ts, y.episode_start, y.severity)
        assert abs(x.score - y.score) < 1e-4 * x.score
        assert x.baseline.keys() == y.baseline.keys()
        assert all(abs(x.baseline[c] - y.baseline[c]) <= 2e-6 * abs(x.baseline[c]) + 1e-9
                   for c in x.baseline)
    assert (s2.readings_received, s2.windows_scored, s2.invalid, s2.invalid_reasons) == (
        s1.readings_received, s1.windows_scored, s1.invalid, s1.invalid_reasons)
    assert s1.invalid_reasons == {"out_of_order": 1} and s1.windows_scored > 500
    assert s2.score_batches >= s2.windows_scored / 7
    assert (b2.imputed, b2.skipped) == (b1.imputed, b1.skipped) and b1.imputed == 1


def test_a_batch_of_a_refused_asset_counts_every_reading(
    bundle: ModelBundle, tmp_path: Path
) -> None:
    import orjson

    rt = EdgeRuntime(settings(tmp_path, bundle, "mqtt://127.0.0.1:1", max_assets=1),
                     bundle=bundle)
    values = dict.fromkeys(bundle.meta.channels, 1.0)
    for asset in ("a", "b"):  # "a" holds the only slot and is live: "b" is refused
        rt.handle(f"aiotflow/telemetry/plant-1/{asset}", orjson.dumps(
            [{"ts": 1.7e9 + i, "values": values} for i in range(5)]))
    assert rt.stats.readings_received == 5 and rt.stats.invalid == 5
    assert rt.stats.invalid_reasons == {"too_many_assets": 5} and rt.buffer.refused == 5


@pytest.mark.parametrize("qos", [0, 1])
async def test_a_model_slower_than_the_telemetry_leaves_the_waiting_windows_bounded(
    mosquitto: Mosquitto, bundle: ModelBundle, tmp_path: Path, qos: int
) -> None:
    """A model that scores 16 windows in 3 ms against a burst of batched telemetry that
    brings them faster: the scorer falls behind, then scores on the event loop (no
    message read meanwhile, the broker keeps them) until it caught up. The windows
    waiting stay within a few batches and a read - without that they grew to most of
    the burst's (7k of 15k here at QoS 1, 14.7k at QoS 0) - and every reading is still
    scored, none lost."""
    import time

    import orjson

    slow = ModelBundle(bundle.path)
    score_windows = slow.score_windows

    def slow_score(*args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(0.003)
        return score_windows(*args, **kwargs)

    slow.score_windows = slow_score  # type: ignore[method-assign]
    rt = EdgeRuntime(settings(tmp_path, slow, mosquitto.url, ack={"required": False},
                              scoring={"max_batch": 16}), bundle=slow)
    most = 0
    handle = rt.handle

    def counting(topic: str, payload: object) -> None:
        nonlocal most
        handle(topic, payload)
        most = max(most, rt.pending_count)

    rt.handle = counting  # type: ignore[method-assign]
    fleet = Fleet(3, seed=4)
    per_asset: dict[str, list[dict[str, object]]] = {}
    for asset, ts, values in fleet.run(5000, 2.0, start_ts=1.7e9):
        per_asset.setdefault(asset, []).append({"ts": ts, "values": values})
    messages = [(a, rs[i:i + 50]) for i in range(0, 10_000, 50) for a, rs in per_asset.items()]
    async with rt:
        await asyncio.wait_for(rt.subscribed.wait(), 10)
        async with aiomqtt.Client("127.0.0.1", mosquitto.port,
                                  max_queued_outgoing_messages=0) as pub:
            for i in range(0, len(messages), 10):
                await asyncio.gather(*(pub.publish(f"aiotflow/telemetry/plant-1/{a}",
                                                   orjson.dumps(rs), qos=qos)
                                       for a, rs in messages[i:i + 10]))
        await wait_for(lambda: rt.stats.readings_received == 30_000 and not rt._pending, 60)
    meta = slow.meta
    assert rt.stats.windows_scored == 3 * len(range(meta.window - 1, 10_000, meta.hop))
    assert rt.stats.invalid == 0
    # messages whole in a read of up to READ_CHUNK bytes are taken at once: what waits
    # is a read's more (a read and the next, when a header straddles the two)
    per_read = 2 * (READ_CHUNK // min(len(orjson.dumps(rs)) for _, rs in messages)
                    + 1) * -(-50 // meta.hop)
    assert 4 * 16 <= most < 1500 + per_read, (most, per_read)  # without: most of 15k
