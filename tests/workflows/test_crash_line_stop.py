"""kill -9 of the engine around each effect of the line-stop agent, then restart: the
machine is derated once, stopped once (after the approval) and one work order opened."""

import asyncio
import signal
from pathlib import Path

import aiomqtt
import pytest

from aiotflow.demo.seed import history_incidents
from aiotflow.edge.bundle import ModelBundle
from aiotflow.tools.control import ControlStore
from aiotflow.tools.ops import OpsDatabase
from aiotflow.vectorstore.models import Incident

from ..conftest import Mosquitto
from .helpers import make_alert, signed, wait_for
from .test_crash_matrix import approve_pending, seed_state, start_engine, until_killed

APP = "examples.maintenance_agents:line_stop"
# (the engine's own steps - receiving, claimed, waiting, the last checkpoint - are the
# same for every workflow and killed at in test_crash_matrix)
POINTS = [
    "tool.done:derate_asset",        # derated, effect not yet recorded
    "tool.done:stop_asset",          # stop sent, effect not yet recorded
]


@pytest.fixture(scope="module")
def oil_incidents(bundle: ModelBundle) -> list[Incident]:
    return history_incidents(bundle, 10, seed=1000, modes={"oil_leak": 1.0})


@pytest.mark.parametrize("point", POINTS)
async def test_kill_9_around_each_effect_then_each_runs_once(
    point: str, mosquitto: Mosquitto, bundle: ModelBundle, incidents: list[Incident],
    oil_incidents: list[Incident], tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    await seed_state(state, incidents + oil_incidents)
    alert = make_alert(bundle, "oil_leak")
    proc = await start_engine(state, mosquitto.url, point, APP)
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as edge:
        await edge.publish(*signed(alert), qos=1)
        await until_killed(proc, state, point)
    await approve_pending(state)
    proc = await start_engine(state, mosquitto.url, None, APP)
    try:
        async def done() -> bool:
            await approve_pending(state)
            async with OpsDatabase(state / "ops.db") as ops:
                return len(await ops.work_orders()) >= 1

        await wait_for(done, 60)
        await asyncio.sleep(1.0)  # anything that would run twice has had time to
        async with ControlStore(state / "control.db") as control:
            async with control.read() as db:
                runs = await db.all("SELECT status FROM runs")
            assert [r[0] for r in runs] == ["completed"]
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
    async with OpsDatabase(state / "ops.db") as ops:
        assert [c.command for c in await ops.commands()] == ["derate", "stop"], point
        assert len(await ops.work_orders()) == 1
