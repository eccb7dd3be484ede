"""Publishing simulated telemetry fast (time-compressed) for tests."""

from __future__ import annotations

import time

import aiomqtt
import orjson

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
