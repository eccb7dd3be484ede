"""The learning loop: a closed work order becomes an incident the next alert finds."""

import json
from pathlib import Path

import pytest

from aiotflow.agents.learning import close_and_learn
from aiotflow.cli import main
from aiotflow.tools.control import ControlStore
from aiotflow.tools.errors import ToolFailed
from aiotflow.tools.ops import OpsDatabase
from aiotflow.vectorstore import HistoryStore, Incident
from aiotflow.workflows.runs import RunLedger

from ..conftest import Mosquitto

EMB = [0.9, 0.1, 0.0, 0.2, 0.0, 0.0, 0.1, 0.0]


async def open_order(state: Path, alert_id: str = "alert-1") -> str:
    alert = {"id": alert_id, "asset": "gen-002", "asset_type": "generator", "site": "plant-1",
             "ts": 1_700_000_000.0, "embedding": EMB,
             "baseline": {"coolant_temp_c": 82.5, "load": 0.6}}
    async with ControlStore(state / "control.db") as control:
        ledger = RunLedger(control)
        await ledger.claim(thread_id=f"maintenance/{alert_id}", workflow="maintenance",
                           alert=alert)
    async with OpsDatabase(state / "ops.db") as ops:
        wo = await ops.create_work_order(
            asset="gen-002", site="plant-1", title="gen-002: suspected coolant pump failure",
            description="...", priority="high", technician_id="T-1", booking_id=None,
            evidence={"alert_id": alert_id, "diagnosis": "coolant_pump"}, key=f"wo/{alert_id}")
    return wo.id


async def test_closing_a_work_order_teaches_the_history(tmp_path: Path) -> None:
    wo_id = await open_order(tmp_path)
    async with OpsDatabase(tmp_path / "ops.db") as ops, \
            ControlStore(tmp_path / "control.db") as control, \
            HistoryStore(path=tmp_path / "history") as history:
        assert await history.count() == 0
        closed, incident = await close_and_learn(
            ops=ops, control=control, history=history, work_order=wo_id,
            failure_mode="thermostat", resolution="replaced the thermostat", by="ana")
        assert closed.status == "closed" and closed.failure_mode == "thermostat"
        assert closed.closed_by == "ana" and closed.closed is not None
        assert incident.system == "cooling" and incident.work_order == wo_id
        assert incident.context == {"coolant_temp_c": 82.5, "load": 0.6}  # operating point
        # closing again with the same finding writes nothing new
        await close_and_learn(ops=ops, control=control, history=history, work_order=wo_id,
                              failure_mode="thermostat", resolution="again", by="ana")
        assert await history.count() == 1 and await history.count("maintenance") == 1
        with pytest.raises(ToolFailed, match="closed as thermostat"):
            await close_and_learn(ops=ops, control=control, history=history,
                                  work_order=wo_id, failure_mode="injector",
                                  resolution="?", by="bob")
        hits = await history.similar(EMB, limit=3)
        assert [h.incident.id for h in hits] == [f"wo:{wo_id}"]
        assert hits[0].incident.failure_mode == "thermostat"
        last = await history.last_maintenance("gen-002", "cooling")
        assert last is not None and last.work_order == wo_id
        # a later correction keeps what it was and who changed it
        fixed = await history.correct(f"wo:{wo_id}", "coolant_pump", by="lead",
                                      reason="pump seal found leaking on re-inspection")
        assert fixed.failure_mode == "coolant_pump"
        assert fixed.corrections[0]["from"] == "thermostat" and fixed.corrections[0]["by"] == "lead"
        again = await history.get(f"wo:{wo_id}")
        assert again is not None and again.failure_mode == "coolant_pump"
        records = await control.audit_records()
        assert any(r.kind == "history.learned" and r.actor == "ana" for r in records)


async def test_work_order_without_alert_is_refused(tmp_path: Path) -> None:
    async with OpsDatabase(tmp_path / "ops.db") as ops:
        wo = await ops.create_work_order(
            asset="gen-1", site="s", title="by hand", description="", priority="low",
            technician_id=None, booking_id=None, evidence={}, key="manual-1")
    async with OpsDatabase(tmp_path / "ops.db") as ops, \
            ControlStore(tmp_path / "control.db") as control, \
            HistoryStore(path=tmp_path / "history") as history:
        with pytest.raises(ToolFailed, match="nothing to learn from"):
            await close_and_learn(ops=ops, control=control, history=history, work_order=wo.id,
                                  failure_mode="none", resolution="", by="ana")
        with pytest.raises(ToolFailed, match="no work order"):
            await close_and_learn(ops=ops, control=control, history=history,
                                  work_order="WO-000099", failure_mode="none", resolution="",
                                  by="ana")
        assert (await ops.work_order(wo.id)).status == "open"  # type: ignore[union-attr]


async def test_workorder_close_from_the_command_line(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    wo_id = await open_order(tmp_path, "alert-7")
    state = ["--state-dir", str(tmp_path)]
    rc = await _run(["workorder", "close", wo_id, "--failure-mode", "coolant_pump",
                     "--resolution", "pump replaced", "--user", "ana", *state])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"work_order": wo_id, "status": "closed", "failure_mode": "coolant_pump",
                   "incident": f"wo:{wo_id}", "history": "written"}
    assert await _run(["history", "query", "--asset", "gen-002", *state]) == 0
    table = capsys.readouterr().out
    assert "coolant_pump" in table and wo_id in table
    assert await _run(["workorder", "list", *state]) == 0
    assert "closed" in capsys.readouterr().out
    assert await _run(["workorder", "close", "WO-000042", "--failure-mode", "x",
                       "--resolution", "y", *state]) == 2
    assert "no work order WO-000042" in capsys.readouterr().err


async def _run(argv: list[str]) -> int:
    import asyncio

    return await asyncio.to_thread(main, argv)


async def test_while_the_engine_holds_the_history_writes_are_queued(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    from aiotflow.workflows import App, Engine

    from ..workflows.helpers import cli, settings_for, wait_for

    wo_id = await open_order(tmp_path, "alert-9")
    state = ["--state-dir", str(tmp_path)]
    async with HistoryStore(path=tmp_path / "history") as held:  # e.g. a running engine
        await held.add([Incident(id="INC-1", asset="gen-002", ts=1.0, failure_mode="injector",
                                 embedding=EMB)])
        code, out, err = await cli("workorder", "close", wo_id, "--failure-mode",
                                   "coolant_pump", "--resolution", "pump replaced",
                                   "--user", "ana", *state)
        assert code == 0, err
        assert json.loads(out)["history"] == "queued for the engine"
        code, out, err = await cli("history", "correct", "INC-1", "--failure-mode",
                                   "thermostat", "--user", "lead", *state)
        assert code == 0 and json.loads(out)["queued"] == 2, err
        code, out, err = await cli("history", "query", *state)
        assert code == 2 and "open in another process" in err
        assert await held.count() == 1  # nothing written behind the holder's back
    settings = settings_for(tmp_path, mosquitto.url)
    async with Engine(App("empty"), settings) as engine:  # the engine applies the queue
        await wait_for(lambda: engine.history.count(), 10)
        await wait_for(lambda: _applied(engine), 10)
        learned = await engine.history.get(f"wo:{wo_id}")
        assert learned is not None and learned.failure_mode == "coolant_pump"
        fixed = await engine.history.get("INC-1")
        assert fixed is not None and fixed.failure_mode == "thermostat"
        assert await engine.control.pending_history() == []
        assert len(await engine.control.audit_records(kind="history.applied")) == 2


async def _applied(engine: object) -> bool:
    return len(await engine.control.audit_records(kind="history.applied")) == 2  # type: ignore[attr-defined]
