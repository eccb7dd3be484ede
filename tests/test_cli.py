"""The command line end to end: `aiotflow edge` + `aiotflow simulate` on Mosquitto, and
`aiotflow demo` unattended."""

import asyncio
import json
import signal
import sys
from pathlib import Path

import aiomqtt

from aiotflow.contracts.schema import Alert
from aiotflow.contracts.signing import open_alert
from aiotflow.edge.bundle import ModelBundle

from .conftest import Mosquitto
from .edge.helpers import engine_acks
from .workflows.helpers import wait_for


async def test_edge_and_simulate_with_malformed_payloads(
    mosquitto: Mosquitto, bundle_path: Path, tmp_path: Path
) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f'model = "{bundle_path}"\noutbox = "{tmp_path / "outbox.db"}"\n'
                   f"stats_interval_s = 0.3\n[mqtt]\nurl = \"{mosquitto.url}\"\n"
                   "[policy]\nk = 3\n")
    stats_file = tmp_path / "stats.json"
    edge = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiotflow", "edge", "--config", str(cfg),
        "--stats-file", str(stats_file), stderr=asyncio.subprocess.PIPE)
    alerts: list[Alert] = []
    try:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as sub, \
                engine_acks(mosquitto.port) as acked:
            await sub.subscribe("aiotflow/alerts/#", qos=1)
            for _ in range(200):
                if stats_file.exists() and json.loads(stats_file.read_text())["connects"]:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # subscription follows the connection
            sim = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "aiotflow", "simulate", "--broker", mosquitto.url,
                "--assets", "4", "--rate", "2", "--speed", "25", "--duration", "160",
                "--fault", "gen-003:coolant_pump@60", "--fault", "gen-004:bearing_wear@70",
                "--ramp", "40", stderr=asyncio.subprocess.PIPE)
            garbage = [b"{oops", b'{"ts": "soon", "values": {}}', b"\x00\x01\xff",
                       b'{"ts": 1, "values": {"rpm": null}}', b"[]", b'"text"']
            async with aiomqtt.Client("127.0.0.1", mosquitto.port) as pub:
                for i in range(1000):
                    await pub.publish(f"aiotflow/telemetry/plant-1/gen-00{i % 4 + 1}",
                                      garbage[i % len(garbage)], qos=1)
                    if i % 50 == 0:
                        await asyncio.sleep(0.02)
            _, sim_err = await asyncio.wait_for(sim.communicate(), 60)
            assert sim.returncode == 0, sim_err.decode()
            try:
                async with asyncio.timeout(3):
                    async for m in sub.messages:
                        alerts.append(Alert.model_validate_json(open_alert(m.payload).body))  # type: ignore[arg-type]
            except TimeoutError:
                pass
            await wait_for(lambda: len(acked) >= 2 and json.loads(stats_file.read_text())
                           ["acks_received"] == 2, 15)
    finally:
        edge.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(edge.communicate(), 30)
    assert edge.returncode == 0, err.decode()[-2000:]
    stats = json.loads(stats_file.read_text())
    assert stats["invalid"] == 1000 and stats["deadlettered"] == 1000
    assert stats["readings_received"] == 4 * 2 * 160
    assert sorted(a.asset for a in alerts) == ["gen-003", "gen-004"]
    assert stats["alerts_emitted"] == 2 and stats["outbox_depth"] == 0
    bundle = ModelBundle(bundle_path)  # the file says which edge: any site, this model
    assert stats["site"] is None and stats["model"] == f"{bundle.name}@{bundle.version}"


async def test_bad_config_names_the_field(tmp_path: Path) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text('[policy]\nk = 0\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiotflow", "edge", "--config", str(cfg),
        stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2 and "policy.k" in err.decode()


async def test_demo_approve_yes(tmp_path: Path, bundle_path: Path) -> None:
    """The CLI path of `aiotflow demo` (its scenarios run in-process in tests/demo)."""
    import shutil

    (tmp_path / "yes").mkdir()
    shutil.copy(bundle_path, tmp_path / "yes" / "model.onnx")  # the demo reuses it
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiotflow", "demo", "--scenario", "coolant", "--approve", "yes",
        "--speed", "8", "--json", "--state-dir", str(tmp_path / "yes"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode == 0, err.decode()[-3000:]
    s = json.loads(out)
    assert "approval requested" in err.decode()  # progress is shown while it runs
    assert s["scenario"] == "coolant"
    assert s["actions_executed"] == ["book_technician", "create_work_order"]
    assert s["alerts"] >= 1 and set(s["alerts_by_asset"]) == set(s["faulty_assets"])
    assert s["work_orders"] >= 1 and set(s["work_orders_by_asset"]) == {"gen-002"}
    assert s["approved"] >= 1 and s["readings"] > 0 and s["audit_records"] > 0
    assert s["seconds"] < 120


async def test_demo_unknown_scenario_is_refused(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiotflow", "demo", "--scenario", "meltdown",
        stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2 and "invalid choice: 'meltdown'" in err.decode()


def test_bundle_fixture_is_real(bundle: ModelBundle) -> None:
    assert bundle.path.stat().st_size > 1000


async def test_run_app_with_approval_from_another_terminal(
    mosquitto: Mosquitto, bundle: ModelBundle, bundle_path: Path, tmp_path: Path
) -> None:
    """`aiotflow run` in one process, `aiotflow approvals/approve` in others."""
    import sqlite3

    from .workflows.helpers import cli, make_alert, signed, trust_toml, wait_for

    state = str(tmp_path / "state")
    trusting = tmp_path / "engine.toml"
    trusting.write_text("[engine]\n" + trust_toml())
    code, out, err = await cli("seed", "--model", str(bundle_path), "--incidents", "30",
                               "--state-dir", state)
    assert code == 0, err
    assert json.loads(out)["incidents_added"] == 30
    run = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiotflow", "run", "examples.generator_fleet:app",
        "--config", str(trusting), "--state-dir", state, "--broker", mosquitto.url,
        stderr=asyncio.subprocess.PIPE)
    try:
        assert run.stderr is not None
        async with asyncio.timeout(60):  # start-up: open stores, compile, subscribe
            while b"engine.subscribed" not in await run.stderr.readline():
                pass
        alert = make_alert(bundle)
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as c:
            await c.publish(*signed(alert), qos=1)

        async def waiting() -> list[dict]:  # type: ignore[type-arg]
            _, listing, _ = await cli("approvals", "--json", "--state-dir", state)
            return json.loads(listing)  # type: ignore[no-any-return]

        [req] = await wait_for(waiting, 30)
        code, out, err = await cli("approve", "--state-dir", state, "--user", "gina",
                                   stdin=b"a\n\n")
        assert code == 0, err

        def work_orders() -> list[tuple[str, str]]:
            with sqlite3.connect(Path(state) / "ops.db") as db:
                return db.execute("SELECT asset, title FROM work_orders").fetchall()

        [(asset, title)] = await wait_for(work_orders, 30)
        assert asset == "gen-002" and "coolant pump" in title
        assert req["asset"] == "gen-002"
    finally:
        run.send_signal(signal.SIGTERM)
        _, err_b = await asyncio.wait_for(run.communicate(), 30)
    assert run.returncode == 0, err_b.decode()[-2000:]


async def test_train_from_csv_uses_the_evaluated_detector(tmp_path: Path) -> None:
    from .evaluation.test_skab import write_recording
    from .workflows.helpers import cli

    csv_file = tmp_path / "normal.csv"
    write_recording(csv_file, 7, 10**6, 10**6, rows=300)
    for detector, kind_window in (("pca", 8), ("autoencoder", 8)):
        out = tmp_path / f"{detector}.onnx"
        code, _, err = await cli("train", "--out", str(out), "--csv", str(csv_file), "--sep", ";",
                                 "--rate", "1", "--asset-type", "pump", "--detector", detector)
        assert code == 0, err
        meta = ModelBundle(out).meta
        assert (meta.window, meta.features, meta.name) == (kind_window, ["mean", "std"],
                                                           f"pump-{detector}")
        assert meta.channels[0] == "Accelerometer1RMS" and "anomaly" not in meta.channels
    code, _, err = await cli("train", "--out", str(tmp_path / "x.onnx"), "--csv", str(csv_file),
                             "--sep", ";", "--detector", "nope")
    assert code == 2 and "detector: must be one of" in err and "pca" in err


async def test_bad_configs_are_refused_by_name_without_a_traceback(tmp_path: Path) -> None:
    from .workflows.helpers import cli

    misspelt = tmp_path / "engin.toml"
    misspelt.write_text("[engin]\nmax_concurrent_runs = 2\n")
    stray = tmp_path / "stray.toml"
    stray.write_text("state_dir = \"/tmp/x\"\n[engine]\n")
    bad_port = tmp_path / "edge.toml"
    bad_port.write_text('[mqtt]\nurl = "mqtt://127.0.0.1:99999"\n')
    cases = [
        (("run", "examples.generator_fleet:app", "--config", str(misspelt),
          "--state-dir", str(tmp_path / "s")), "engin", "only [engine]"),
        (("run", "examples.generator_fleet:app", "--config", str(stray),
          "--state-dir", str(tmp_path / "s")), "state_dir", "only [engine]"),
        (("run", "examples.generator_fleet:app", "--broker", "mqtt://127.0.0.1:99999",
          "--state-dir", str(tmp_path / "s")), "mqtt.url", "1 to 65535"),
        (("edge", "--config", str(bad_port)), "mqtt.url", "1 to 65535"),
        (("simulate", "--broker", "mqtt://127.0.0.1:99999", "--duration", "1"),
         "url", "1 to 65535"),
    ]
    for args, field, words in cases:
        code, _out, err = await cli(*args)
        assert code == 2, (args, err)
        assert "Traceback" not in err and field in err and words in err, (args, err)


async def test_simulate_reconnects_when_the_broker_restarts(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    got: list[bytes] = []
    sim = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiotflow", "simulate", "--broker", mosquitto.url,
        "--assets", "1", "--rate", "20", "--duration", "12", stderr=asyncio.subprocess.PIPE)
    try:
        async def collect() -> None:
            while True:
                try:
                    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as sub:
                        await sub.subscribe("aiotflow/telemetry/#")
                        async for m in sub.messages:
                            got.append(m.payload)  # type: ignore[arg-type]
                except aiomqtt.MqttError:
                    await asyncio.sleep(0.1)

        reader = asyncio.create_task(collect())
        from .workflows.helpers import wait_for

        await wait_for(lambda: len(got) > 5, 20)
        mosquitto.stop()  # the broker restarts under the simulator
        await asyncio.sleep(1.0)
        mosquitto.start()
        before = len(got)
        await wait_for(lambda: len(got) > before + 5, 20)  # it is back, publishing
        reader.cancel()
        _, err = await asyncio.wait_for(sim.communicate(), 60)
        assert sim.returncode == 0, err.decode()
        assert b"Traceback" not in err and b"mqtt.disconnected" in err
    finally:
        if sim.returncode is None:
            sim.kill()


async def test_state_and_edge_files_are_private_under_umask_022(
    mosquitto: Mosquitto, bundle_path: Path, tmp_path: Path
) -> None:
    import os
    import stat

    from .workflows.helpers import cli, wait_for

    state, edge_dir = tmp_path / "state", tmp_path / "edge"
    edge_dir.mkdir()
    old = os.umask(0o022)  # what a shell gives: files 0644, directories 0755
    try:
        code, _, err = await cli("seed", "--model", str(bundle_path), "--incidents", "5",
                                 "--state-dir", str(state))
        assert code == 0, err
        cfg = edge_dir / "edge.toml"
        cfg.write_text(f'model = "{bundle_path}"\noutbox = "{edge_dir / "outbox.db"}"\n'
                       f'stats_interval_s = 0.2\n[mqtt]\nurl = "{mosquitto.url}"\n')
        procs = [await asyncio.create_subprocess_exec(
            sys.executable, "-m", "aiotflow", *args, stderr=asyncio.subprocess.PIPE)
            for args in (("run", "examples.generator_fleet:app", "--state-dir", str(state),
                          "--broker", mosquitto.url),
                         ("edge", "--config", str(cfg), "--stats-file",
                          str(edge_dir / "stats.json")))]
        try:
            await wait_for(lambda: (state / "checkpoints.db").exists()
                           and (edge_dir / "stats.json").exists(), 90)
        finally:
            for p in procs:  # never left running for the tests after this one
                if p.returncode is None:
                    p.send_signal(signal.SIGTERM)
            logs = [(await asyncio.wait_for(p.communicate(), 30))[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], logs
    finally:
        os.umask(old)
    seen = []
    for root in (state, edge_dir):
        assert stat.S_IMODE(root.stat().st_mode) == 0o700, root
        for p in root.rglob("*"):
            if p == cfg:
                continue  # the operator's own file
            mode = stat.S_IMODE(p.stat().st_mode)
            assert not mode & 0o077, f"{p} is {oct(mode)}"
            seen.append(p.name)
    for name in ("control.db", "ops.db", "checkpoints.db", "engine.key",
                 "outbox.db", "edge.key", "stats.json"):
        assert name in seen, name
