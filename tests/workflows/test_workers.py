"""Two workers on one PostgreSQL and one Mosquitto, attacked the way a plant loses them:
``kill -9`` of a worker while its run waits for approval and between two tool calls, a
decision taken while both run, and the database itself stopped under a running worker.
Every time: the run finishes on a live worker, with exactly one booking and one work order,
and the decision is resumed once."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, TypedDict

import aiomqtt
import pytest

from aiotflow.contracts.schema import Alert
from aiotflow.demo.seed import seed_maintenance, seed_roster
from aiotflow.edge.bundle import ModelBundle
from aiotflow.keys import load_key
from aiotflow.tools.control import ControlStore
from aiotflow.tools.ops import OpsDatabase
from aiotflow.vectorstore.models import Incident
from aiotflow.vectorstore.store import HistoryStore
from aiotflow.workflows.runs import RunLedger

from ..conftest import Mosquitto
from ..postgres import Postgres
from .helpers import make_alert, signed, trust_toml, wait_for

LEASE_S = 2.0


class SlowState(TypedDict, total=False):
    alert: dict[str, Any]


class Worker:
    """``aiotflow run`` as a worker process of its own."""

    def __init__(self, name: str, url: str, broker: str, root: Path,
                 failpoint: str | None = None) -> None:
        self.name, self.url, self.broker, self.failpoint = name, url, broker, failpoint
        self.state = root / name  # its own embedded incident history
        self.config = root / f"{name}.toml"
        # the workers of one deployment share the engine key (it signs the decisions of
        # the local console here: no operators configured)
        self.config.write_text(f"[engine]\nlease_s = {LEASE_S}\napproval_poll_s = 0.1\n"
                               f"key_file = \"{root / 'engine.key'}\"\n" + trust_toml())
        self.proc: asyncio.subprocess.Process | None = None
        self.log = bytearray()  # what it wrote to stderr (its log)

    async def start(self) -> Worker:
        env = {k: v for k, v in os.environ.items() if k != "AIOTFLOW_FAILPOINTS"}
        if self.failpoint:
            env["AIOTFLOW_FAILPOINTS"] = self.failpoint
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "aiotflow", "run", "examples.generator_fleet:app",
            "--config", str(self.config), "--state-dir", str(self.state), "--state-url",
            self.url, "--worker-id", self.name, "--broker", self.broker, env=env,
            stderr=asyncio.subprocess.PIPE)
        assert self.proc.stderr is not None
        async with asyncio.timeout(60):
            while b"engine.subscribed" not in (line := await self.proc.stderr.readline()):
                assert line, f"worker {self.name} exited during start-up"
        asyncio.get_running_loop().create_task(self._drain(self.proc.stderr))
        return self

    async def _drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            self.log += chunk

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.proc.wait(), 30)


async def prepare(url: str, root: Path, incidents: list[Incident], names: list[str]) -> None:
    async with OpsDatabase(url) as ops:
        await seed_roster(ops)
        await seed_maintenance(ops, ["gen-001", "gen-002", "gen-003"], stale=["gen-002"])
    for name in names:
        async with HistoryStore(path=root / name / "history") as history:
            await history.add(incidents)


async def send(broker: Mosquitto, alert: Alert) -> None:
    async with aiomqtt.Client("127.0.0.1", broker.port) as c:
        await c.publish(*signed(alert), qos=1)


async def pending(url: str) -> list[str]:
    async with ControlStore(url) as control:
        return [r.id for r in await control.approvals(status="pending")]


async def approve_all(url: str, root: Path) -> None:
    key = load_key(root / "engine.key")
    async with ControlStore(url) as control:
        for rec in await control.approvals(status="pending"):
            await control.decide(rec.id, "approved", by="ops-lead", signer=key)


async def effects(url: str) -> tuple[int, int]:
    async with OpsDatabase(url) as ops:
        return len(await ops.bookings()), len(await ops.work_orders())


async def run_of(url: str, thread_id: str) -> tuple[str, str | None]:
    async with ControlStore(url) as control:
        run = await RunLedger(control).get(thread_id)
    assert run is not None
    return run.status, run.owner


async def assert_once(url: str, thread_id: str) -> None:
    await asyncio.sleep(1.0)  # anything that would run twice has had time to
    assert await effects(url) == (1, 1)
    async with ControlStore(url) as control:
        kinds = [r.kind for r in await control.audit_records(thread_id=thread_id)]
        assert kinds.count("workflow.completed") == 1, kinds
        assert kinds.count("approval.approved") == 1
        run = await RunLedger(control).get(thread_id)
        assert run is not None and run.status == "completed"
    async with OpsDatabase(url) as ops:
        [booking], [wo] = await ops.bookings(), await ops.work_orders()
        assert wo.booking_id == booking.id


@pytest.fixture
def names() -> list[str]:
    return ["w1", "w2"]


async def test_a_worker_killed_while_its_run_waits_for_approval_the_other_resumes_once(
    pg_url: str, mosquitto: Mosquitto, bundle: ModelBundle, incidents: list[Incident],
    tmp_path: Path, names: list[str],
) -> None:
    await prepare(pg_url, tmp_path, incidents, names)
    workers = [await Worker(n, pg_url, mosquitto.url, tmp_path).start() for n in names]
    try:
        alert = make_alert(bundle)
        tid = f"maintenance/{alert.id}"
        await send(mosquitto, alert)
        await wait_for(lambda: pending(pg_url), 60)
        _, owner = await run_of(pg_url, tid)
        [victim] = [w for w in workers if w.name == owner]
        [survivor] = [w for w in workers if w is not victim]
        victim.kill()  # kill -9 while the run is paused for approval
        await approve_all(pg_url, tmp_path)
        await wait_for(lambda: _effects_at_least(pg_url, 1), 60)
        await wait_for(lambda: _status_is(pg_url, tid, "completed"), 30)
        assert (await run_of(pg_url, tid))[1] == survivor.name
        await assert_once(pg_url, tid)
    finally:
        for w in workers:
            await w.stop()


async def test_a_worker_killed_between_two_tool_calls_its_run_finishes_on_the_other(
    pg_url: str, mosquitto: Mosquitto, bundle: ModelBundle, incidents: list[Incident],
    tmp_path: Path, names: list[str],
) -> None:
    await prepare(pg_url, tmp_path, incidents, names)
    # w1 dies right after the booking is recorded, before the work order
    w1 = await Worker("w1", pg_url, mosquitto.url, tmp_path,
                      failpoint="tool.recorded:book_technician").start()
    w2 = Worker("w2", pg_url, mosquitto.url, tmp_path)
    try:
        alert = make_alert(bundle)
        tid = f"maintenance/{alert.id}"
        await send(mosquitto, alert)
        await wait_for(lambda: pending(pg_url), 60)
        await approve_all(pg_url, tmp_path)
        assert w1.proc is not None
        await asyncio.wait_for(w1.proc.wait(), 60)
        assert w1.proc.returncode == -signal.SIGKILL
        assert await effects(pg_url) == (1, 0)  # booked, no work order yet
        killed = time.monotonic()
        await w2.start()
        await wait_for(lambda: _status_is(pg_url, tid, "completed"), 60)
        failover = time.monotonic() - killed
        assert (await run_of(pg_url, tid))[1] == "w2"
        await assert_once(pg_url, tid)
        assert failover < 30, failover
    finally:
        await w2.stop()


async def test_a_decision_taken_while_both_workers_run_is_resumed_once(
    pg_url: str, mosquitto: Mosquitto, bundle: ModelBundle, incidents: list[Incident],
    tmp_path: Path, names: list[str],
) -> None:
    await prepare(pg_url, tmp_path, incidents, names)
    workers = [await Worker(n, pg_url, mosquitto.url, tmp_path).start() for n in names]
    try:
        alerts = [make_alert(bundle, asset=a) for a in ("gen-001", "gen-002")]
        for a in alerts:
            await send(mosquitto, a)
        await wait_for(lambda: _count_at_least(pending(pg_url), 2), 60)
        await approve_all(pg_url, tmp_path)  # both workers poll; each decision must resume once
        for a in alerts:
            await wait_for(lambda a=a: _status_is(pg_url, f"maintenance/{a.id}", "completed"),
                           60)
        await asyncio.sleep(1.0)
        async with ControlStore(pg_url) as control:
            for a in alerts:
                kinds = [r.kind for r in await control.audit_records(
                    thread_id=f"maintenance/{a.id}")]
                assert kinds.count("workflow.completed") == 1, kinds
        async with OpsDatabase(pg_url) as ops:
            assert sorted(w.asset for w in await ops.work_orders()) == ["gen-001", "gen-002"]
            assert len(await ops.bookings()) == 2
    finally:
        for w in workers:
            await w.stop()


async def test_a_worker_that_loses_the_database_pauses_and_finishes_once_it_is_back(
    mosquitto: Mosquitto, bundle: ModelBundle, incidents: list[Incident], tmp_path: Path,
) -> None:
    """PostgreSQL is stopped (immediate, like a crash) while a worker's run waits for
    approval and a second alert arrives; it comes back: nothing lost, nothing twice."""
    from ..conftest import upgraded

    pg = Postgres()
    pg.start()
    try:
        url = await upgraded(pg.create_database())
        await prepare(url, tmp_path, incidents, ["w1"])
        w1 = await Worker("w1", url, mosquitto.url, tmp_path).start()
        try:
            first = make_alert(bundle, asset="gen-002")
            await send(mosquitto, first)
            await wait_for(lambda: pending(url), 60)
            pg.stop("immediate")
            second = make_alert(bundle, asset="gen-001")
            await send(mosquitto, second)  # nobody can record it: not acknowledged
            await wait_for(lambda: b"engine.paused" in w1.log, 30)  # it stops taking work
            pg.start()
            # its next heartbeat finds the database: only then does it take alerts again
            # (one sent before is ignored, not acknowledged: a real edge sends it again)
            await wait_for(lambda: b"engine.resumed_work" in w1.log, 30)
            await send(mosquitto, second)  # the edge re-sends what was not acknowledged
            await wait_for(lambda: _count_at_least(pending(url), 2), 60)
            await approve_all(url, tmp_path)
            for a in (first, second):
                await wait_for(lambda a=a: _status_is(url, f"maintenance/{a.id}", "completed"),
                               60)
            await asyncio.sleep(1.0)
            async with OpsDatabase(url) as ops:
                assert sorted(w.asset for w in await ops.work_orders()) == ["gen-001", "gen-002"]
                assert len(await ops.bookings()) == 2
        finally:
            await w1.stop()
    finally:
        pg.close()


async def _effects_at_least(url: str, n: int) -> bool:
    return (await effects(url))[1] >= n


async def _status_is(url: str, tid: str, status: str) -> bool:
    return (await run_of(url, tid))[0] == status


async def _count_at_least(coro: object, n: int) -> bool:
    return len(await coro) >= n  # type: ignore[misc, arg-type]


async def test_a_second_process_with_the_same_worker_id_supersedes_the_first(
    pg_url: str, mosquitto: Mosquitto, bundle: ModelBundle, incidents: list[Incident],
    tmp_path: Path,
) -> None:
    """Started twice by mistake (or restarted while the old one hangs): the newer process
    has the worker's runs; the older finds its registration gone and exits (status 3)
    instead of running the same runs beside it or fighting for the MQTT client id."""
    await prepare(pg_url, tmp_path, incidents, ["w1", "w1b"])
    old = await Worker("w1", pg_url, mosquitto.url, tmp_path).start()
    new = Worker("w1", pg_url, mosquitto.url, tmp_path)
    new.state = tmp_path / "w1b"  # the same id, another process and history replica
    try:
        await new.start()
        assert old.proc is not None
        await asyncio.wait_for(old.proc.wait(), 30)
        assert old.proc.returncode == 3
        assert b"worker.superseded" in old.log
        alert = make_alert(bundle)
        await send(mosquitto, alert)  # the newer one works on
        await wait_for(lambda: pending(pg_url), 60)
        assert (await run_of(pg_url, f"maintenance/{alert.id}"))[1] == "w1"
    finally:
        await new.stop()
        await old.stop()


async def test_db_status_and_upgrade_on_a_new_database(postgres: Postgres) -> None:
    from .helpers import cli

    url = postgres.create_database()
    code, out, err = await cli("db", "status", "--state-url", url)
    assert code == 1 and "aiotflow db upgrade" in err
    code, out, err = await cli("run", "examples.generator_fleet:app", "--state-url", url,
                               "--broker", "mqtt://127.0.0.1:1")
    assert code == 2 and "aiotflow db upgrade" in err and "Traceback" not in err
    assert (await cli("db", "upgrade", "--state-url", url))[0] == 0
    code, out, _ = await cli("db", "status", "--json", "--state-url", url)
    assert code == 0 and '"version": 3, "expected": 3' in out
    assert (await cli("db", "upgrade", "--state-url", url))[0] == 0  # again: nothing to do
    code, out, _ = await cli("approvals", "--state-url", url)
    assert code == 0


async def test_site_limit_and_single_flight_hold_across_two_engines(
    pg_url: str, bundle: ModelBundle, tmp_path: Path,
) -> None:
    """Two engines (workers w1, w2) on one database get alerts for one site at once: no
    more than ``max_runs_per_site`` runs execute together across both, and alerts for
    one asset start one run between them, the others coalesced into it."""
    from langgraph.graph import END, START, StateGraph

    from aiotflow import App
    from aiotflow.workflows import Engine, EngineSettings

    running = peak = 0
    gate = asyncio.Event()

    async def work(state: SlowState) -> SlowState:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await asyncio.sleep(0.15)
            await gate.wait()
        finally:
            running -= 1
        return {}

    def build() -> StateGraph[Any, Any, Any, Any]:
        g = StateGraph(SlowState)
        g.add_node("work", work)
        g.add_edge(START, "work")
        g.add_edge("work", END)
        return g

    app = App("limits")
    app.workflow(name="slow")(build)
    base = make_alert(bundle)

    def settings(name: str) -> EngineSettings:
        return EngineSettings(state_dir=tmp_path / name, state_url=pg_url, worker_id=name,
                              max_runs_per_site=2, max_concurrent_runs=8,
                              mqtt={"url": "mqtt://127.0.0.1:1"})

    async with Engine(app, settings("w1"), consume_alerts=False) as e1, \
            Engine(app, settings("w2"), consume_alerts=False) as e2:
        alerts = [base.model_copy(update={"id": f"L-{i}", "asset": f"pump-{i}"})
                  for i in range(8)]
        same = [base.model_copy(update={"id": f"S-{i}", "asset": "pump-x"}) for i in range(6)]
        tasks = [asyncio.create_task((e1 if i % 2 else e2).submit(a))
                 for i, a in enumerate(alerts + same)]
        await asyncio.sleep(1.0)
        assert peak == 2, peak  # two run, the others wait for a slot, in either engine
        gate.set()
        outcomes = [o for t in tasks for o in await t]
    by_status = [o.status for o in outcomes]
    assert by_status.count("completed") == 9  # 8 assets + one run for pump-x
    assert by_status.count("coalesced") == 5
    assert peak == 2


async def test_a_worker_stopped_cleanly_takes_no_share_of_later_alerts(
    pg_url: str, mosquitto: Mosquitto, bundle: ModelBundle, incidents: list[Incident],
    tmp_path: Path, names: list[str],
) -> None:
    """Mosquitto keeps queueing a share of the group's messages to a disconnected member
    whose session lives on (#1747). A worker that stops cleanly leaves the group first:
    alerts sent after it stopped (by a sender that never re-sends) all reach the other."""
    await prepare(pg_url, tmp_path, incidents, names)
    w1, w2 = [await Worker(n, pg_url, mosquitto.url, tmp_path).start() for n in names]
    try:
        await w2.stop()
        alerts = [make_alert(bundle, asset=a) for a in ("gen-001", "gen-002")]
        alerts += [a.model_copy(update={"id": f"{a.id}-b", "asset": f"{a.asset}-b"})
                   for a in alerts]
        for a in alerts:
            await send(mosquitto, a)
        await wait_for(lambda: _count_at_least(pending(pg_url), 4), 30)
    finally:
        await w1.stop()
