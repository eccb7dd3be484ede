import sqlite3
from pathlib import Path

from aiotflow.edge.outbox import PRIORITY, Outbox

DL, WARN, MAJOR, CRIT = (PRIORITY[k] for k in ("deadletter", "warning", "major", "critical"))


async def test_full_outbox_keeps_the_highest_severity(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "o.db", max_messages=3) as ob:
        await ob.put_many([("d1", "t", b"", DL), ("w1", "t", b"", WARN), ("m1", "t", b"", MAJOR)])
        await ob.put_many([("c1", "t", b"", CRIT)])  # evicts the dead letter
        await ob.put_many([("w2", "t", b"", WARN)])  # evicts the older warning
        await ob.put_many([("d2", "t", b"", DL)])  # lower than everything: dropped
        assert [m.key for m in await ob.peek()] == ["m1", "c1", "w2"]
        assert (ob.evicted, ob.dropped, ob.size) == (2, 1, 3)
        await ob.put_many([("c2", "t", b"", CRIT), ("c3", "t", b"", CRIT)])
        assert [m.key for m in await ob.peek()] == ["c1", "c2", "c3"]
        assert await ob.depth() == ob.size == 3
    async with Outbox(tmp_path / "o.db", max_messages=3) as ob:  # bound holds after restart
        assert ob.size == 3
        await ob.put_many([("w3", "t", b"", WARN)])
        assert ob.dropped == 1


async def test_keys_are_stored_once_and_ack_deletes(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "o.db") as ob:
        assert await ob.put_many([("a", "t", b"1", 1), ("a", "t", b"2", 1)]) == 1
        [m] = await ob.peek()
        await ob.ack([m.seq])
        assert ob.size == 0 and await ob.peek() == []


async def test_awaiting_messages_wait_for_confirmation_and_old_files_open(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with sqlite3.connect(path) as db:  # an outbox written before acknowledgements existed
        db.execute("CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT"
                   " NULL UNIQUE, topic TEXT NOT NULL, payload BLOB NOT NULL, priority INTEGER"
                   " NOT NULL DEFAULT 1, created REAL NOT NULL)")
        db.execute("INSERT INTO outbox(key, topic, payload, created) VALUES ('old', 't', x'', 0)")
    async with Outbox(path) as ob:
        assert [m.key for m in await ob.peek()] == ["old"]  # kept, delivered as before
        await ob.put_many([("a1", "t", b"", WARN)], await_ack=True)
        [old, a1] = await ob.peek()
        assert (old.await_ack, a1.await_ack, a1.attempts) == (False, True, 0)
        await ob.ack([old.seq])
        await ob.sent([(a1.seq, 1000.0)])
        assert await ob.peek(now=999.0) == [] and await ob.waiting() == (1000.0, 1)
        [again] = await ob.peek(now=1000.0)
        assert again.attempts == 1 and (await ob.waiting())[1] == 1
        assert await ob.confirm(["someone-else", "a1", "a1"]) == 1
        assert ob.size == 0 and await ob.waiting() == (None, 0)
        await ob.put_many([("d1", "t", b"", DL)])
        assert await ob.confirm(["d1"]) == 0  # only what waits for a confirmation
