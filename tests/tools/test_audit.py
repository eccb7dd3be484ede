"""The hash-chained audit trail: any edit, deletion or insertion is found."""

import asyncio
import json
import sqlite3
import sys
from pathlib import Path

import pytest

from aiotflow.cli import main
from aiotflow.tools.control import ControlStore

from ..conftest import Mosquitto


async def write_story(db: Path) -> None:
    async with ControlStore(db) as c:
        await c.audit("alert.received", actor="engine", thread_id="maintenance/A-1",
                      alert_id="A-1", asset="gen-002", severity="major", score=7.5)
        await c.audit("diagnosis", actor="maintenance", thread_id="maintenance/A-1",
                      failure_mode="coolant_pump", confidence=0.8,
                      evidence=["16 of 20 similar events ended in coolant pump failure"])
        await c.audit("alert.received", actor="engine", thread_id="maintenance/B_2",
                      alert_id="B_2", asset="gen-003")
        await c.audit("approval.approved", actor="ana", thread_id="maintenance/A-1",
                      approval_id="ap-1", comment="go")
        await c.audit("tool.ok", actor="maintenance", thread_id="maintenance/A-1",
                      tool="create_work_order", output={"id": "WO-000001"})


def tamper(db: Path, sql: str, *args: object) -> None:
    con = sqlite3.connect(db)
    con.execute(sql, args)
    con.commit()
    con.close()


async def verify(db: Path) -> list[str]:
    async with ControlStore(db) as c:
        report = await c.verify_audit()
    assert report.ok == (not report.problems)
    return report.problems


@pytest.mark.parametrize("attack, expected", [
    ("UPDATE audit SET detail = json_set(detail, '$.comment', 'no') WHERE seq = 4",
     "record 4 (approval.approved): content does not match its hash"),
    ("UPDATE audit SET actor = 'mallory' WHERE seq = 4", "record 4 (approval.approved)"),
    ("DELETE FROM audit WHERE seq = 2", "records 2..2 are missing"),
    ("DELETE FROM audit WHERE seq = 5", "records were removed from the end"),
    ("DELETE FROM audit", "the chain ends at record 0"),
])
async def test_any_tampering_is_detected(tmp_path: Path, attack: str, expected: str) -> None:
    db = tmp_path / "control.db"
    await write_story(db)
    assert await verify(db) == []
    tamper(db, attack)
    problems = await verify(db)
    assert any(expected in p for p in problems), problems


async def test_rewriting_a_record_with_a_fresh_hash_breaks_the_link(tmp_path: Path) -> None:
    from aiotflow.tools.control import audit_hash

    db = tmp_path / "control.db"
    await write_story(db)
    con = sqlite3.connect(db)
    prev, ts, thread = con.execute("SELECT prev, ts, thread_id FROM audit WHERE seq = 2").fetchone()
    detail = json.dumps({"failure_mode": "none"}, sort_keys=True)
    forged = audit_hash(prev, 2, ts, thread, "diagnosis", "maintenance", detail)
    con.execute("UPDATE audit SET detail = ?, hash = ? WHERE seq = 2", (detail, forged))
    con.commit()
    con.close()
    problems = await verify(db)
    assert any("record 3: does not follow record 2" in p for p in problems), problems


APPEND = """
import asyncio, sys
from aiotflow.tools.control import ControlStore

async def main():
    async with ControlStore(sys.argv[1]) as c:
        for i in range(150):
            await c.audit("load", actor=sys.argv[2], n=i)
asyncio.run(main())
"""


async def test_concurrent_writers_in_several_processes_keep_one_chain(tmp_path: Path) -> None:
    db = tmp_path / "control.db"
    async with ControlStore(db) as c:
        await c.audit("start", actor="test")
    procs = [await asyncio.create_subprocess_exec(sys.executable, "-c", APPEND, str(db), f"p{i}")
             for i in range(3)]
    async with ControlStore(db) as c:  # and this process at the same time
        for i in range(50):
            await c.audit("load", actor="main", n=i)
    assert [await p.wait() for p in procs] == [0, 0, 0]
    async with ControlStore(db) as c:
        report = await c.verify_audit()
        assert report.ok, report.problems
        assert report.records == 1 + 3 * 150 + 50


async def test_audit_cli_verify_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    await write_story(tmp_path / "control.db")
    state = ["--state-dir", str(tmp_path)]

    async def cli(*argv: str) -> int:
        return await asyncio.to_thread(main, [*argv, *state])

    assert await cli("audit", "verify") == 0
    assert "audit chain intact: 5 records" in capsys.readouterr().out
    assert await cli("audit", "show", "A-1") == 0
    story = capsys.readouterr().out
    assert story.startswith("Alert A-1: 4 audit records")
    assert "16 of 20 similar events" in story and "by ana" in story and "WO-000001" in story
    assert "gen-003" not in story  # B_2 is another alert (and _ is not a wildcard)
    assert await cli("audit", "show", "A_1") == 1  # LIKE wildcards are escaped
    capsys.readouterr()
    tamper(tmp_path / "control.db", "UPDATE audit SET actor = 'bob' WHERE seq = 4")
    assert await cli("audit", "verify") == 1
    out = capsys.readouterr().out
    assert "BROKEN" in out and "record 4 (approval.approved)" in out
    assert await asyncio.to_thread(main, ["audit", "verify", "--state-dir",
                                          str(tmp_path / "nope")]) == 2


def rehash_from(db: Path, seq: int) -> None:
    """What an attacker with the database file does after editing record ``seq``: every
    hash from there on recomputed, the head moved, so the plain chain verifies again."""
    from aiotflow.tools.control import audit_hash

    con = sqlite3.connect(db)
    prev = con.execute("SELECT hash FROM audit WHERE seq = ?", (seq - 1,)).fetchone()
    prev = prev[0] if prev else ""
    rows = con.execute("SELECT seq, ts, thread_id, kind, actor, detail FROM audit"
                       " WHERE seq >= ? ORDER BY seq", (seq,)).fetchall()
    for s, ts, tid, kind, actor, detail in rows:
        h = audit_hash(prev, s, ts, tid, kind, actor, detail)
        con.execute("UPDATE audit SET prev = ?, hash = ? WHERE seq = ?", (prev, h, s))
        prev = h
    con.execute("UPDATE audit_head SET hash = ? WHERE id = 1", (prev,))
    con.commit()
    con.close()


async def test_signed_checkpoints_catch_a_rehashed_chain_and_a_cut_off_tail(
    tmp_path: Path,
) -> None:
    from aiotflow.keys import generate_key

    engine, mallory = generate_key("engine"), generate_key("engine")
    db = tmp_path / "control.db"
    await write_story(db)  # records 1..5
    async with ControlStore(db) as c:
        first = await c.checkpoint_audit(engine, every=100)
        assert first is None  # fewer records than `every` since the last one
        first = await c.checkpoint_audit(engine)
        assert first is not None and first.seq == 5
        await c.audit("tool.ok", actor="maintenance", tool="book_technician")
        await c.audit("workflow.completed", actor="maintenance")
        anchor = await c.checkpoint_audit(engine)
        assert anchor is not None and anchor.seq == 7
        report = await c.verify_audit(public_key=engine.public_key, anchor=anchor)
        assert report.ok and report.checkpoints == 2 and report.unsigned_tail == 0

    # 1. record 4 (ana's approval) rewritten to mallory, the chain re-hashed after it
    tamper(db, "UPDATE audit SET actor = 'mallory' WHERE seq = 4")
    rehash_from(db, 4)
    async with ControlStore(db) as c:
        assert (await c.verify_audit()).ok  # the plain chain is fooled ...
        report = await c.verify_audit(public_key=engine.public_key, anchor=anchor)
        assert not report.ok  # ... the signed checkpoints are not
        assert any("record 5 is not the record signed" in p and "re-hashed" in p
                   for p in report.problems), report.problems
        # nor can the attacker sign checkpoints of their own
        async with c.unit() as tx:
            await tx.execute("DELETE FROM audit_checkpoints")
        await c.checkpoint_audit(mallory)
        report = await c.verify_audit(public_key=engine.public_key)
        assert any("not the engine's (forged checkpoint)" in p for p in report.problems)

    # 2. a clean copy, then the last records cut off together with their checkpoint
    db2 = tmp_path / "c2.db"
    await write_story(db2)
    async with ControlStore(db2) as c:
        await c.checkpoint_audit(engine)
        await c.audit("tool.ok", actor="maintenance", tool="book_technician")
        anchor = await c.checkpoint_audit(engine)
    tamper(db2, "DELETE FROM audit WHERE seq > 5")
    tamper(db2, "DELETE FROM audit_checkpoints WHERE seq > 5")
    tamper(db2, "UPDATE audit_head SET seq = 5, hash = (SELECT hash FROM audit WHERE seq = 5)")
    async with ControlStore(db2) as c:
        assert (await c.verify_audit(public_key=engine.public_key)).ok  # the DB alone: fooled
        report = await c.verify_audit(public_key=engine.public_key, anchor=anchor)
        assert [p for p in report.problems if "cut off (truncated)" in p and "6..6" in p]


async def test_the_engine_anchors_its_audit_and_the_cli_finds_a_cut_off_tail(
    tmp_path: Path,
) -> None:
    from aiotflow.workflows import App, Engine, EngineSettings

    from ..workflows.helpers import cli

    state = tmp_path / "s"
    settings = EngineSettings(state_dir=state, mqtt={"url": "mqtt://127.0.0.1:1"})
    async with Engine(App("empty"), settings, consume_alerts=False) as engine:
        for i in range(3):
            await engine.control.audit("test.step", actor="t", step=i)
    assert settings.audit_anchor_file.exists()  # signed at shutdown, kept outside the DB
    code, out, err = await cli("audit", "verify", "--state-dir", str(state))
    assert code == 0 and "intact" in out and "1 signed checkpoints" in out, out + err
    db = state / "control.db"
    tamper(db, "DELETE FROM audit WHERE seq >= (SELECT MAX(seq) FROM audit)")
    tamper(db, "DELETE FROM audit_checkpoints")
    tamper(db, "UPDATE audit_head SET seq = (SELECT MAX(seq) FROM audit),"
               " hash = (SELECT hash FROM audit ORDER BY seq DESC LIMIT 1)")
    code, out, _ = await cli("audit", "verify", "--state-dir", str(state))
    assert code == 1 and "BROKEN" in out and "the anchor was signed at record" in out, out


async def test_the_engine_publishes_its_audit_anchor_retained_off_the_host(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    import aiomqtt

    from aiotflow.keys import verify_signature
    from aiotflow.tools.control import AuditCheckpoint
    from aiotflow.workflows import App, Engine, EngineSettings

    settings = EngineSettings(state_dir=tmp_path / "s", mqtt={"url": mosquitto.url},
                              engine_id="anchored", audit_checkpoint_s=0.2,
                              approval_poll_s=0.1)
    from ..workflows.helpers import wait_for

    async with Engine(App("empty"), settings) as engine:
        await wait_for(engine.subscribed.is_set)
        await engine.control.audit("test.step", actor="t")
        public = engine.key.public_key
        await wait_for(settings.audit_anchor_file.exists, 10)
    # a subscriber that comes later (an auditor, another host) still gets the head
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as sub:
        await sub.subscribe("aiotflow/audit/anchored", qos=1)
        async with asyncio.timeout(10):
            msg = await anext(aiter(sub.messages))
    assert msg.retain
    cp = AuditCheckpoint.model_validate_json(msg.payload)  # type: ignore[arg-type]
    assert cp.seq >= 1 and verify_signature(public, cp.signed_bytes(), cp.signature)
