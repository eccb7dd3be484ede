"""`aiotflow demo --scenario NAME` end to end on Mosquitto: with --approve yes each
scenario executes its actions, with --approve no no high or critical tool runs.

Both answers of a scenario run at once, each on its own broker, to keep the suite short.
"""

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from aiotflow.demo import DemoOptions, run_demo
from aiotflow.demo.scenarios import SCENARIOS

from ..conftest import Mosquitto

EXPECTED = {
    "coolant": ["book_technician", "create_work_order"],
    "line-stop": ["create_work_order", "stop_asset"],
    "bearing": ["book_technician", "create_work_order", "order_part"],
}


@pytest.fixture(scope="module")
def seeded_history(bundle_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An incident history as every scenario seeds it, made once: each run starts from a
    copy instead of simulating 72 past faults again (the demo seeds what is missing)."""
    from aiotflow.demo.seed import history_incidents
    from aiotflow.edge.bundle import ModelBundle
    from aiotflow.vectorstore.store import HistoryStore

    path = tmp_path_factory.mktemp("history") / "history"
    bundle = ModelBundle(bundle_path)
    made = history_incidents(bundle, 60) + history_incidents(bundle, 12, seed=1000,
                                                             modes={"oil_leak": 1.0})

    async def store() -> None:
        async with HistoryStore(path=path) as h:
            await h.add(made)

    asyncio.run(store())
    return path


async def run(tmp_path: Path, bundle_path: Path, history: Path, scenario: str, answer: str
              ) -> dict[str, Any]:
    state = tmp_path / f"{scenario}-{answer}"
    state.mkdir()
    shutil.copy(bundle_path, state / "model.onnx")  # the session's model: no training here
    shutil.copytree(history, state / "history")
    broker = Mosquitto(tmp_path / f"broker-{answer}")
    broker.start()
    try:
        return await run_demo(DemoOptions(
            broker=broker.url, approve=answer, scenario=scenario, json=True, assets=2,
            speed=10.0, fault_at=10.0, ramp=40.0, duration=90.0, state_dir=state,
            user="demo-user"))
    finally:
        broker.stop()


def test_cli_offers_every_scenario() -> None:
    from aiotflow.cli.demo import SCENARIO_NAMES

    assert SCENARIO_NAMES == list(SCENARIOS) == list(EXPECTED)


@pytest.mark.parametrize("scenario", list(EXPECTED))
async def test_scenario_yes_executes_its_actions_and_no_executes_nothing_risky(
    scenario: str, tmp_path: Path, bundle_path: Path, seeded_history: Path
) -> None:
    yes, no = await asyncio.gather(
        run(tmp_path, bundle_path, seeded_history, scenario, "yes"),
        run(tmp_path, bundle_path, seeded_history, scenario, "no"))
    for s in (yes, no):
        assert s["scenario"] == scenario and s["alerts_by_asset"].get("gen-002", 0) >= 1
        assert set(s["alerts_by_asset"]) == {"gen-002"} and s["workflows_failed"] == 0
    assert yes["actions_executed"] == EXPECTED[scenario], yes
    assert yes["approved"] >= 1 and yes["work_orders"] >= 1
    assert no["actions_executed"] == [] and no["rejected"] >= 1, no
    assert no["work_orders"] == 0 and no["bookings"] == 0 and no["part_orders"] == 0
    if scenario == "line-stop":
        # the reversible mitigation ran on its own both times; the stop only when approved
        assert yes["asset_commands"] == ["derate gen-002", "stop gen-002"]
        assert no["asset_commands"] == ["derate gen-002"] and no["notifications"] >= 1
    if scenario == "bearing":
        assert yes["part_orders"] == 1 and yes["bookings"] == 1
