"""A TLS-only Mosquitto that requires client certificates and passwords: the edge, the
engine and the simulator all connect to it; plain, certificate-less and untrusted clients
are refused; and the password shows in no log, stats file or process title."""

from __future__ import annotations

import asyncio
import getpass
import json
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from aiotflow.contracts.mqtt import MqttSettings
from aiotflow.edge.bundle import ModelBundle
from aiotflow.vectorstore.models import Incident
from aiotflow.workflows import Engine

from .conftest import Mosquitto, free_port
from .tls import CertificateAuthority, Issued
from .workflows.helpers import edge_key_file, seed, settings_for, wait_for
from .workflows.test_engine import maintenance_app

PASSWORD = "Tr0ub4dor-and-3"  # what must never be seen


class TlsBroker:
    """Mosquitto with one listener: TLS 1.2+, client certificate required, passwords."""

    def __init__(self, root: Path) -> None:
        self.ca = CertificateAuthority(root / "ca")
        self.server = self.ca.issue("broker", server=True)
        self.port = free_port()
        self.passwords = root / "mosquitto.passwd"
        subprocess.run(["mosquitto_passwd", "-b", "-c", str(self.passwords), "fleet", PASSWORD],
                       check=True, capture_output=True)
        self.broker = Mosquitto(root)
        self.broker.conf.write_text(
            f"user {getpass.getuser()}\nper_listener_settings false\n"
            f"listener {self.port} 127.0.0.1\n"
            f"cafile {self.ca.ca_file}\ncertfile {self.server.cert}\n"
            f"keyfile {self.server.key}\nrequire_certificate true\ntls_version tlsv1.2\n"
            f"allow_anonymous false\npassword_file {self.passwords}\n"
            "persistence false\nmax_queued_messages 100000\n")
        self.broker.port = self.port

    @property
    def url(self) -> str:
        return f"mqtts://127.0.0.1:{self.port}"

    def client(self, cn: str) -> Issued:
        return self.ca.issue(cn)


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[TlsBroker]:
    b = TlsBroker(tmp_path / "broker")
    b.broker.start()
    yield b
    b.broker.stop()


async def _refused(**kwargs: object) -> str:
    """Connect and return the error (the test fails if the connection is accepted)."""
    try:
        async with aiomqtt.Client("127.0.0.1", timeout=3, **kwargs):  # type: ignore[arg-type]
            pass
    except (aiomqtt.MqttError, ssl.SSLError, OSError) as exc:
        return str(exc) or type(exc).__name__
    raise AssertionError(f"the broker accepted {kwargs}")


async def test_strangers_are_refused_by_the_tls_broker(tls_broker: TlsBroker,
                                                       tmp_path: Path) -> None:
    port = tls_broker.port
    good = tls_broker.client("engine")

    def ctx(cert: Issued | None, ca: Path | None = tls_broker.ca.ca_file) -> ssl.SSLContext:
        c = ssl.create_default_context(cafile=str(ca) if ca else None)
        if cert is not None:
            c.load_cert_chain(str(cert.cert), str(cert.key))
        return c

    await _refused(port=port, username="fleet", password=PASSWORD)  # plain MQTT
    await _refused(port=port, username="fleet", password=PASSWORD, tls_context=ctx(None))
    other = CertificateAuthority(tmp_path / "other-ca", "mallory-ca")
    await _refused(port=port, username="fleet", password=PASSWORD,
                   tls_context=ctx(other.issue("mallory")))  # a certificate nobody trusts
    await _refused(port=port, username="fleet", password="guess", tls_context=ctx(good))
    # ... and the broker itself is checked: a client that does not trust its CA refuses
    await _refused(port=port, username="fleet", password=PASSWORD,
                   tls_context=ctx(good, other.ca_file))
    settings = MqttSettings(url=tls_broker.url, username="fleet",
                            password=PASSWORD, ca_file=tls_broker.ca.ca_file,  # type: ignore[arg-type]
                            cert_file=good.cert, key_file=good.key)
    async with aiomqtt.Client(**settings.client_kwargs()) as c:  # the right one gets in
        await c.publish("aiotflow/ping", b"1", qos=1)


async def test_edge_engine_and_simulator_run_over_mutual_tls_and_keep_the_password_secret(
    tls_broker: TlsBroker, bundle: ModelBundle, incidents: list[Incident], tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    ca = tls_broker.ca.ca_file
    pw_file = tmp_path / "mqtt.pw"
    pw_file.write_text(PASSWORD + "\n")
    eng = tls_broker.client("engine")
    engine_mqtt = MqttSettings(url=tls_broker.url, username="fleet", password_file=pw_file,
                               ca_file=ca, cert_file=eng.cert, key_file=eng.key)
    settings = settings_for(tmp_path / "state", "mqtt://127.0.0.1:1").model_copy(
        update={"mqtt": engine_mqtt})
    edge_cert = tls_broker.client("plant-1")
    stats = tmp_path / "edge-stats.json"
    cfg = tmp_path / "edge.toml"
    # the edge's password in its URL, as careless configs have it: it must not leak either
    cfg.write_text(
        f'model = "{bundle.path}"\noutbox = "{tmp_path / "outbox.db"}"\n'
        f'key_file = "{edge_key_file(tmp_path)}"\nstats_interval_s = 0.2\n'
        f'[mqtt]\nurl = "mqtts://fleet:{PASSWORD}@127.0.0.1:{tls_broker.port}"\n'
        f'ca_file = "{ca}"\ncert_file = "{edge_cert.cert}"\nkey_file = "{edge_cert.key}"\n')
    sim_cert = tls_broker.client("simulator")
    async with Engine(maintenance_app(), settings) as engine:
        await seed(engine, incidents)
        await wait_for(engine.subscribed.is_set, 20)
        edge = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "aiotflow", "edge", "--config", str(cfg),
            "--stats-file", str(stats), stderr=asyncio.subprocess.PIPE)
        try:
            await wait_for(lambda: stats.exists() and json.loads(stats.read_text())[
                "telemetry_connected"], 30)
            cmdline = Path(f"/proc/{edge.pid}/cmdline").read_bytes()
            sim = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "aiotflow", "simulate", "--broker", tls_broker.url,
                "--username", "fleet", "--password-file", str(pw_file), "--ca-file", str(ca),
                "--cert-file", str(sim_cert.cert), "--key-file", str(sim_cert.key),
                "--assets", "3", "--speed", "25", "--duration", "150",
                "--fault", "gen-002:coolant_pump@50", "--ramp", "30",
                stderr=asyncio.subprocess.PIPE)
            sim_cmdline = Path(f"/proc/{sim.pid}/cmdline").read_bytes()
            _, sim_err = await asyncio.wait_for(sim.communicate(), 90)
            assert sim.returncode == 0, sim_err.decode()
            await wait_for(lambda: engine.stats.runs_started >= 1, 60)  # alert, over TLS
            assert engine.stats.alerts_dropped == 0
        finally:
            edge.terminate()
            _, edge_err = await asyncio.wait_for(edge.communicate(), 30)
    assert edge.returncode == 0, edge_err.decode()
    seen = {"edge log": edge_err.decode(), "simulator log": sim_err.decode(),
            "stats file": stats.read_text(), "edge process title": cmdline.decode(),
            "simulator process title": sim_cmdline.decode(),
            "engine log": "".join(capfd.readouterr())}
    assert "mqtt.connected" in seen["edge log"] and "mqtts://127.0.0.1" in seen["edge log"]
    for where, text in seen.items():
        assert PASSWORD not in text, where
