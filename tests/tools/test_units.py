"""Units of work on the shared SQLite connection, attacked with concurrency: many tasks
appending audit records, claiming runs and deciding one approval at once, while other
units fail half-way and roll back. Nothing is lost, nothing claimed twice, no half unit."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from aiotflow.tools import ControlStore, OpsDatabase
from aiotflow.workflows.runs import RunLedger


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


async def test_audit_appends_survive_concurrent_rollbacks(tmp_path: Path) -> None:
    random.seed(7)
    async with ControlStore(tmp_path / "control.db") as control:
        jobs = [control.audit("test.append", actor=f"a{i}", n=i) for i in range(200)]
        jobs += [_failing_unit(control, i) for i in range(100)]
        random.shuffle(jobs)
        results = await asyncio.gather(*jobs, return_exceptions=True)
        assert sum(isinstance(r, Injected) for r in results) == 100
        assert all(r is None or isinstance(r, Injected) for r in results)
        records = await control.audit_records(kind="test.append")
        assert sorted(r.detail["n"] for r in records) == list(range(200))
        report = await control.verify_audit()
        assert report.ok and report.records == 200, report.problems
        async with control.read() as db:
            doomed = list(await db.execute_fetchall(
                "SELECT key FROM effects WHERE key LIKE 'doomed-%'"))
        assert doomed == []


async def test_runs_are_claimed_once_under_concurrency_and_rollbacks(tmp_path: Path) -> None:
    random.seed(11)
    async with ControlStore(tmp_path / "control.db") as control:
        ledger = RunLedger(control)
        await ledger.setup()

        async def claim(n: int) -> bool:
            await asyncio.sleep(random.random() / 1000)
            return await ledger.claim(thread_id=f"wf/alert-{n % 20}", workflow="wf",
                                      alert={"id": f"alert-{n % 20}", "asset": f"a{n % 20}"})

        jobs = [claim(n) for n in range(200)] + [_failing_unit(control, i) for i in range(50)]
        random.shuffle(jobs)
        results = await asyncio.gather(*jobs, return_exceptions=True)
        assert sum(r is True for r in results) == 20  # each thread claimed exactly once
        assert sum(r is False for r in results) == 180
        assert len(await ledger.list(status="running")) == 20


async def test_one_approval_decided_by_many_at_once_has_one_decision(tmp_path: Path) -> None:
    async with ControlStore(tmp_path / "control.db") as control:
        rec = await control.request_approval(thread_id="wf/a", workflow="wf", title="t",
                                             request={}, tools=["book_technician"])
        people = [f"op{i}" for i in range(30)]
        jobs = [control.decide(rec.id, "approved" if i % 2 else "rejected", by=p)
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


async def test_a_cancelled_unit_rolls_back_and_the_store_goes_on(tmp_path: Path) -> None:
    async with ControlStore(tmp_path / "control.db") as control:
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


async def test_one_effect_per_key_across_two_processes_stores(tmp_path: Path) -> None:
    """Two stores (two connections, as two processes have) insert the same keys at once:
    one row each, the same row returned to both."""
    async with OpsDatabase(tmp_path / "ops.db") as a, OpsDatabase(tmp_path / "ops.db") as b:
        jobs = [(a if i % 2 else b).notify(recipient="op", priority="high", subject=f"s{i % 10}",
                                           message="m", key=f"k{i % 10}") for i in range(60)]
        notes = await asyncio.gather(*jobs)
        by_key: dict[str, set[str]] = {}
        for i, n in enumerate(notes):
            by_key.setdefault(f"k{i % 10}", set()).add(n.id)
        assert all(len(ids) == 1 for ids in by_key.values())
        assert len(await a.notifications()) == 10
