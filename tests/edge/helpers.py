"""Publishing simulated telemetry fast (time-compressed) for tests; batches as runs."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Sequence

import aiomqtt
import orjson

from aiotflow.contracts.signing import open_alert
from aiotflow.simulator.fleet import Fleet


async def publish_simulated(
    port: int, fleet: Fleet, seconds: float, rate_hz: float, *, bad_every: int = 0,
    site: str = "plant-1",
) -> tuple[int, int]:
    """Publish ``seconds`` of fleet telemetry as fast as possible; every ``bad_every``-th
    message is followed by a malformed one. Returns (good, bad) message counts."""
    bad_payloads = [b"{not json", b'{"ts": 1}', b'{"ts": "x", "values": {"rpm": 1}}',
                    b'{"ts": 1, "values": {"rpm": "fast"}}', b"\xff\xfe\x00", b"[]",
                    b'{"ts": 1, "values": {}}']
    good = bad = 0
    async with aiomqtt.Client("127.0.0.1", port, max_queued_outgoing_messages=None) as client:
        # samples end "now", so alerts postdate the incident history they are compared with
        for asset, ts, values in fleet.run(seconds, rate_hz, start_ts=time.time() - seconds):
            await client.publish(f"aiotflow/telemetry/{site}/{asset}",
                                 orjson.dumps({"ts": ts, "values": values}), qos=1)
            good += 1
            if bad_every and good % bad_every == 0:
                await client.publish(f"aiotflow/telemetry/{site}/{asset}",
                                     bad_payloads[bad % len(bad_payloads)], qos=1)
                bad += 1
    return good, bad


@contextlib.asynccontextmanager
async def engine_acks(port: int, prefix: str = "aiotflow/acks") -> AsyncIterator[list[str]]:
    """Stand in for the engine on the broker: acknowledge every alert seen, as the engine
    does once it recorded one. Yields the ids acknowledged, in order."""
    acked: list[str] = []
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe("aiotflow/alerts/#", qos=1)

        async def run() -> None:
            async for m in client.messages:
                alert = orjson.loads(open_alert(m.payload).body)  # type: ignore[arg-type]
                await client.publish(f"{prefix}/{alert['site']}/{alert['asset']}",
                                     orjson.dumps({"id": alert["id"]}), qos=1)
                acked.append(alert["id"])

        task = asyncio.create_task(run())
        try:
            yield acked
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def runs_of(keys: Sequence[str]) -> tuple[list[str], list[int]]:
    """Consecutive equal keys as runs: a key and a length per run, as the runtime hands
    a batch of blocks to the policy and the operating point."""
    groups = [(k, len(list(g))) for k, g in itertools.groupby(keys)]
    return [k for k, _ in groups], [n for _, n in groups]
