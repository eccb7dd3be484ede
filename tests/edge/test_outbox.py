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
