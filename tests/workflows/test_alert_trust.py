"""Strangers on the broker: forged, out-of-scope, moved and replayed alerts start nothing,
and a flood of junk leaves a bounded trace (counts, not one audit record per message)."""

from __future__ import annotations

import time
from pathlib import Path

import aiomqtt

from aiotflow.contracts.signing import AlertTrust, TrustedEdge, sign_alert
from aiotflow.edge.bundle import ModelBundle
from aiotflow.keys import generate_key
from aiotflow.vectorstore.models import Incident
from aiotflow.workflows import Engine

from ..conftest import Mosquitto
from .helpers import EDGE, make_alert, seed, settings_for, signed, wait_for
from .test_engine import maintenance_app


async def dropped(engine: Engine) -> dict[str, int]:
    """Drops by reason, summed over the audit's summaries."""
    out: dict[str, int] = {}
    for r in await engine.control.audit_records(kind="alerts.dropped"):
        for reason, n in r.detail["counts"].items():
            out[reason] = out.get(reason, 0) + n
    return out


async def _total(engine: Engine, n: int) -> dict[str, int] | None:
    counts = await dropped(engine)
    return counts if sum(counts.values()) == n else None


#: a second edge the engine trusts, for plant-2's gen-009 only
NARROW = generate_key("plant-2-gw")


async def test_forged_out_of_scope_moved_and_replayed_alerts_start_nothing(
    mosquitto: Mosquitto, bundle: ModelBundle, incidents: list[Incident], tmp_path: Path
) -> None:
    trust = AlertTrust(edges=[*settings_for(tmp_path, mosquitto.url).trust.edges,
                              TrustedEdge(name="plant-2-gw", public_key=NARROW.public_key,
                                          sites=["plant-2"], assets=["gen-009"])])
    settings = settings_for(tmp_path / "s", mosquitto.url).model_copy(update={"trust": trust})
    real = make_alert(bundle)  # critical-looking evidence for a healthy gen-002
    body = real.model_dump_json().encode()
    topic = f"aiotflow/alerts/{real.site}/{real.asset}"
    stranger = generate_key("mallory")
    attacks = {
        "unsigned": (topic, body),
        "unknown_key": (topic, sign_alert(stranger, topic, body)),
        # the trusted edge's signature, moved to another asset's topic
        "bad_signature": ("aiotflow/alerts/plant-1/gen-003",
                          sign_alert(EDGE, topic, body)),
        # captured an hour ago: a replay
        "stale": (topic, sign_alert(EDGE, topic, body, now=time.time() - 3600)),
        # a trusted key speaking for a site it does not hold
        "out_of_scope": (topic, sign_alert(NARROW, topic, body)),
    }
    async with Engine(maintenance_app(), settings) as engine:
        await seed(engine, incidents)
        await wait_for(engine.subscribed.is_set)
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as c:
            for t, payload in attacks.values():
                await c.publish(t, payload, qos=1)
            # then the real edge sends a real alert: when its run has started, the engine
            # has read everything before it (one connection: in order)
            legit = make_alert(bundle, asset="gen-001", seed=3)
            await c.publish(*signed(legit), qos=1)
        await wait_for(lambda: engine.stats.runs_started == 1, 20)
        runs = await engine.runs.list()
        assert [r.asset for r in runs] == ["gen-001"]  # none for the forged gen-002
        assert engine.stats.alerts_dropped == len(attacks)
        counts = await wait_for(lambda: _total(engine, len(attacks)), 5)
        assert counts == dict.fromkeys(attacks, 1)
        received = await engine.control.audit_records(kind="alert.received")
        assert [r.detail.get("alert_id") for r in received] == [legit.id]


async def test_a_flood_of_junk_leaves_counts_not_thousands_of_records(
    mosquitto: Mosquitto, bundle: ModelBundle, tmp_path: Path
) -> None:
    async with Engine(maintenance_app(), settings_for(tmp_path / "s", mosquitto.url)) as engine:
        await wait_for(engine.subscribed.is_set)
        long_topic = "aiotflow/alerts/" + "x" * 2000 + "/y"
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as c:
            for i in range(5000):
                await c.publish(long_topic, b"{junk %d" % i + b" " * 2000, qos=0)
            await c.publish(*signed(make_alert(bundle, asset="gen-001")), qos=1)
        await wait_for(lambda: engine.stats.runs_started == 1, 60)
        assert engine.stats.alerts_dropped == 5000
        counts = await wait_for(lambda: _total(engine, 5000), 5)
        assert counts == {"unsigned": 5000}
        reports = await engine.control.audit_records(kind="alerts.dropped")
        # a poll's summary each, not a record per message; each summary is small
        assert len(await engine.control.audit_records()) < 100
        assert all(len(s) < 400 for r in reports for s in r.detail["samples"])
        assert await engine.control.audit_records(kind="alert.invalid") == []
