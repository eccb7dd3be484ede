"""The store's units of work, attacked with concurrency on both engines (a SQLite file
and a real PostgreSQL): many tasks appending audit records, claiming runs and deciding
one approval at once, while other units fail half-way and roll back; two stores (two
processes' connections, as two workers have) racing for the same runs, resumes, slots and
keys. Nothing is lost, nothing claimed twice, no half unit."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from aiotflow.tools import ControlStore, OpsDatabase
from aiotflow.tools.control import MIGRATIONS
from aiotflow.tools.database import SchemaError, open_database, upgrade
from aiotflow.workflows.runs import RunLedger

Target = str | Path


def ops_target(target: Target) -> Target:
    """The ops store beside a control store: its own SQLite file, or the same database."""
    return target.parent / "ops.db" if isinstance(target, Path) else target


class Injected(Exception):
    """A failure injected in the middle of a unit of work."""


async def _failing_unit(control: ControlStore, i: int) -> None:
    """Writes an effect and an audit-looking row, yields to the other tasks, then fails:
    none of it may survive, and it must not take anybody else's writes with it."""
    async with control.unit() as db:
        await db.execute("INSERT INTO effects(key, tool, thread_id, input, output, ts)"
                         " VALUES (?, 't', NULL, '{}', '{}', 0)", (f"doomed-{i}",))
        await asyncio.sleep(random.random() / 1000)
        raise Injected(i)


async def test_audit_appends_survive_concurrent_rollbacks(state_target: Target) -> None:
    random.seed(7)
    async with ControlStore(state_target) as control, ControlStore(state_target) as other:
        # two stores: on PostgreSQL two pools, like two workers appending to one chain
        jobs = [(control if i % 2 else other).audit("test.append", actor=f"a{i}", n=i)
                for i in range(200)]
        jobs += [_failing_unit(control, i) for i in range(100)]
        random.shuffle(jobs)
        results = await asyncio.gather(*jobs, return_exceptions=True)
        assert sum(isinstance(r, Injected) for r in results) == 100
        assert all(r is None or isinstance(r, Injected) for r in results), [
            r for r in results if r is not None and not isinstance(r, Injected)][:3]
        records = await control.audit_records(kind="test.append")
        assert sorted(r.detail["n"] for r in records) == list(range(200))
        report = await control.verify_audit()
        assert report.ok and report.records == 200, report.problems
        async with control.read() as db:
            doomed = list(await db.all("SELECT key FROM effects WHERE key LIKE 'doomed-%'"))
        assert doomed == []


async def test_runs_are_claimed_once_under_concurrency_and_rollbacks(
    state_target: Target,
) -> None:
    random.seed(11)
    async with ControlStore(state_target) as control, ControlStore(state_target) as other:
        ledgers = [RunLedger(control), RunLedger(other)]

        async def claim(n: int) -> Any:
            await asyncio.sleep(random.random() / 1000)
            result, _ = await ledgers[n % 2].claim(
                thread_id=f"wf/alert-{n % 20}", workflow="wf", owner=f"w{n % 2}",
                alert={"id": f"alert-{n % 20}", "asset": f"a{n % 20}"})
            return result

        jobs = [claim(n) for n in range(200)] + [_failing_unit(control, i) for i in range(50)]
        random.shuffle(jobs)
        results = await asyncio.gather(*jobs, return_exceptions=True)
        assert results.count("claimed") == 20  # each thread claimed exactly once
        assert results.count("duplicate") == 180
        assert len(await ledgers[0].list(status="running")) == 20


async def test_single_flight_holds_across_stores(state_target: Target) -> None:
    """Alerts for one asset claimed by two workers at once: one run is active, the rest
    coalesce into it; after it finishes the next alert starts a run again."""
    async with ControlStore(state_target) as control, ControlStore(state_target) as other:
        ledgers = [RunLedger(control), RunLedger(other)]
        results = await asyncio.gather(*(
            ledgers[n % 2].claim(thread_id=f"wf/alert-{n}", workflow="wf", owner=f"w{n % 2}",
                                 alert={"id": f"alert-{n}", "asset": "gen-1"},
                                 single_flight=True) for n in range(40)))
        claimed = [tid for r, tid in results if r == "claimed"]
        assert len(claimed) == 1
        assert {tid for r, tid in results if r == "coalesced"} == set(claimed)
        await ledgers[0].set_status(claimed[0], "completed")
        result, _ = await ledgers[1].claim(thread_id="wf/alert-next", workflow="wf",
                                           alert={"id": "alert-next", "asset": "gen-1"},
                                           single_flight=True)
        assert result == "claimed"


async def test_a_waiting_run_is_resumed_by_one_worker_and_a_dead_ones_run_taken_once(
    state_target: Target,
) -> None:
    async with ControlStore(state_target) as control, ControlStore(state_target) as other:
        a, b = RunLedger(control), RunLedger(other)
        await a.claim(thread_id="wf/x", workflow="wf", owner="dead",
                      alert={"id": "x", "asset": "g"})
        await a.set_status("wf/x", "waiting_approval")
        wins = await asyncio.gather(*(ledger.take_for_resume("wf/x", f"w{i}")
                                      for i, ledger in enumerate([a, b] * 10)))
        assert wins.count(True) == 1
        # the resumer dies: its lease (here 0 s old, the worker never registered) is over
        await a.claim(thread_id="wf/y", workflow="wf", owner="dead",
                      alert={"id": "y", "asset": "g2"})
        await control.receive("z", topic="t", payload="{}", owner="dead")
        me = await a.register("alive-a"), await b.register("alive-b")
        assert all(me)
        runs, alerts = await a.orphans("alive-a", lease_s=10)
        assert {r.thread_id for r in runs} == {"wf/x", "wf/y"}
        assert alerts == [("z", "dead")]
        taken = await asyncio.gather(*(
            (a if i % 2 else b).take_over(r.thread_id, was=r.owner,
                                          me="alive-a" if i % 2 else "alive-b")
            for i in range(10) for r in runs))
        assert taken.count(True) == 2  # each run taken by exactly one
        got = await asyncio.gather(*((a if i % 2 else b).take_over_alert(
            "z", was="dead", me=f"w{i}") for i in range(10)))
        assert sum(p is not None for p in got) == 1
        # a live worker's runs are nobody else's
        assert (await b.orphans("alive-b", lease_s=10))[0] == [
            r for r in await b.list(status="running") if r.owner == "alive-b"]


async def test_site_slots_bound_runs_across_stores_and_die_with_their_worker(
    state_target: Target,
) -> None:
    async with ControlStore(state_target) as control, ControlStore(state_target) as other:
        a, b = RunLedger(control), RunLedger(other)
        await a.register("wa")
        await b.register("wb")
        got = await asyncio.gather(*(
            (a if i % 2 else b).acquire_slot("site-1", thread_id=f"t{i}",
                                             owner="wa" if i % 2 else "wb", limit=3)
            for i in range(20)))
        assert sorted(s for s in got if s is not None) == [0, 1, 2]
        # worker wb stops beating: its slots are freed, wa's stay
        held_by_b = sum(1 for i, s in enumerate(got) if s is not None and i % 2 == 0)
        async with control.unit() as db:
            await db.execute("UPDATE workers SET heartbeat = 0 WHERE id = 'wb'")
        assert await a.free_slots(lease_s=10) == held_by_b
        assert await a.acquire_slot("site-1", thread_id="t-new", owner="wa",
                                    limit=3) is not None or held_by_b == 0


async def test_one_approval_decided_by_many_at_once_has_one_decision(
    state_target: Target,
) -> None:
    async with ControlStore(state_target) as control, ControlStore(state_target) as other:
        rec = await control.request_approval(thread_id="wf/a", workflow="wf", title="t",
                                             request={}, tools=["book_technician"])
        people = [f"op{i}" for i in range(30)]
        jobs = [(control if i % 3 else other).decide(rec.id, "approved" if i % 2 else
                                                     "rejected", by=p)
                for i, p in enumerate(people)]
        jobs += [_failing_unit(control, i) for i in range(20)]
        random.shuffle(jobs)
        results = await asyncio.gather(*jobs, return_exceptions=True)
        decided = {(r.status, r.decided_by) for r in results if not isinstance(r, Exception)}
        assert len(decided) == 1  # everybody sees the same, first decision
        [(status, who)] = decided
        kinds = [r.kind for r in await control.audit_records(thread_id="wf/a")]
        assert kinds == ["approval.requested", f"approval.{status}"]
        assert (await control.approval(rec.id)).decided_by == who  # type: ignore[union-attr]


async def test_a_cancelled_unit_rolls_back_and_the_store_goes_on(state_target: Target) -> None:
    async with ControlStore(state_target) as control:
        started = asyncio.Event()

        async def slow() -> None:
            async with control.unit() as db:
                await db.execute("INSERT INTO effects(key, tool, thread_id, input, output, ts)"
                                 " VALUES ('cancelled', 't', NULL, '{}', '{}', 0)")
                started.set()
                await asyncio.sleep(30)

        task = asyncio.create_task(slow())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await control.effect("cancelled") is None
        await control.record_effect("after", tool="t", thread_id=None, input={}, output={"ok": 1})
        assert await control.effect("after") == {"ok": 1}


async def test_one_effect_per_key_across_two_processes_stores(state_target: Target) -> None:
    """Two stores (two connections, as two processes have) insert the same keys at once:
    one row each, the same row returned to both."""
    target = ops_target(state_target)
    async with OpsDatabase(target) as a, OpsDatabase(target) as b:
        jobs = [(a if i % 2 else b).notify(recipient="op", priority="high", subject=f"s{i % 10}",
                                           message="m", key=f"k{i % 10}") for i in range(60)]
        notes = await asyncio.gather(*jobs)
        by_key: dict[str, set[str]] = {}
        for i, n in enumerate(notes):
            by_key.setdefault(f"k{i % 10}", set()).add(n.id)
        assert all(len(ids) == 1 for ids in by_key.values())
        assert len(await a.notifications()) == 10


async def test_migrations_run_once_when_many_start_together(state_target: Target) -> None:
    """Ten processes' worth of upgrades at once: each migration applied by exactly one,
    the others wait for the lock and find nothing to do."""
    target = state_target
    if isinstance(target, Path):
        target = target.parent / "fresh.db"
    else:  # a database without the schema
        import psycopg
        name = "m_" + str(abs(hash(target)))[:10]
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        target = target.rsplit("/", 1)[0] + "/" + name
    dbs = [await open_database(target) for _ in range(10)]
    try:
        applied = await asyncio.gather(*(upgrade(db, "control", MIGRATIONS) for db in dbs))
        assert sorted(v for a in applied for v in a) == [m.version for m in MIGRATIONS]
        if isinstance(target, str):  # PostgreSQL: a store refuses an older schema
            async with dbs[0].unit() as tx:
                await tx.execute("DELETE FROM aiotflow_schema WHERE version = ?",
                                 (MIGRATIONS[-1].version,))
            with pytest.raises(SchemaError, match="aiotflow db upgrade"):
                async with ControlStore(target):
                    pass
    finally:
        for db in dbs:
            await db.close()


async def test_a_control_database_of_an_earlier_release_is_upgraded_in_place(
    tmp_path: Path,
) -> None:
    """A SQLite file made before schemas were versioned (no audit chain columns, no
    approval tiers, no run owners): opened, it is migrated without losing a row, and its
    interrupted run is one a worker takes up."""
    import sqlite3

    path = tmp_path / "control.db"
    with sqlite3.connect(path) as db:
        db.executescript("""
            CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL,
                thread_id TEXT, kind TEXT NOT NULL, actor TEXT NOT NULL, detail TEXT NOT NULL);
            CREATE TABLE approvals (id TEXT PRIMARY KEY, thread_id TEXT NOT NULL,
                workflow TEXT NOT NULL, asset TEXT NOT NULL DEFAULT '', title TEXT NOT NULL,
                request TEXT NOT NULL, tools TEXT NOT NULL,
                status TEXT NOT NULL DEFAULT 'pending', decided_by TEXT, comment TEXT,
                requested_at REAL NOT NULL, decided_at REAL, resumed_at REAL);
            CREATE TABLE runs (thread_id TEXT PRIMARY KEY, workflow TEXT NOT NULL,
                alert_id TEXT NOT NULL, asset TEXT NOT NULL, status TEXT NOT NULL,
                alert TEXT NOT NULL, result TEXT, error TEXT, created REAL NOT NULL,
                updated REAL NOT NULL);
            INSERT INTO approvals(id, thread_id, workflow, title, request, tools, requested_at)
                VALUES ('ap-1', 'wf/old', 'wf', 'old', '{}', '["book_technician"]', 1.0);
            INSERT INTO runs VALUES ('wf/old', 'wf', 'old', 'g', 'running',
                '{"id": "old", "asset": "g"}', NULL, NULL, 1.0, 1.0);
        """)
    async with ControlStore(path) as control:
        assert await control.upgrade() == []  # done at open
        rec = await control.approval("ap-1")
        assert rec is not None and rec.risk == "high" and rec.status == "pending"
        ledger = RunLedger(control)
        runs, _ = await ledger.orphans("w1", lease_s=10)
        assert [r.thread_id for r in runs] == ["wf/old"]
        assert await ledger.take_over("wf/old", was=None, me="w1")
        await control.audit("test.after_upgrade", actor="t")
        report = await control.verify_audit()
        assert report.ok and report.records == 1, report.problems
        async with control.read() as db:
            versions = [r[0] for r in await db.all(
                "SELECT version FROM aiotflow_schema WHERE component = 'control'")]
        assert versions == [m.version for m in MIGRATIONS]
