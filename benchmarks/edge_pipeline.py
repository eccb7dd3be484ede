"""Edge pipeline throughput, in process: our path vs bare JSON decoding, same run.

Baseline: ``orjson.loads`` of every telemetry payload (what any consumer must do).
Ours: ``EdgeRuntime.handle`` (pydantic validation, per-asset windows) for every payload,
then the runtime's own scoring step (features, ONNX micro-batches, alert policy, outbox).
MQTT receive is excluded here: it costs the same for both and is measured with a real
Mosquitto in the edge throughput benchmark of the edge-speed issue.

    python benchmarks/edge_pipeline.py [--assets 500] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import orjson

from aiotflow.demo.broker import DemoBroker
from aiotflow.edge.config import EdgeSettings
from aiotflow.edge.runtime import EdgeRuntime
from aiotflow.simulator.fleet import Fleet, parse_fault
from aiotflow.training.train import train_simulated


def messages(assets: int, seconds: float) -> list[tuple[str, bytes]]:
    fleet = Fleet(assets, seed=1, faults=[parse_fault("gen-002:coolant_pump@20", ramp=20)])
    return [(f"aiotflow/telemetry/plant-1/{a}", orjson.dumps({"ts": ts, "values": v}))
            for a, ts, v in fleet.run(seconds, 2.0)]


async def run_ours(msgs: list[tuple[str, bytes]], model: Path, tmp: Path, broker: str) -> float:
    settings = EdgeSettings(model=model, mqtt={"url": broker}, outbox=tmp / "ob.db",
                            stats_interval_s=60)
    rt = EdgeRuntime(settings)
    async with rt:
        t0 = time.perf_counter()
        for i, (topic, payload) in enumerate(msgs):
            rt.handle(topic, payload)
            if len(rt._pending) >= settings.scoring.max_batch or i == len(msgs) - 1:
                while rt._pending:
                    await rt._score_once()
        elapsed = time.perf_counter() - t0
    assert rt.stats.readings_received == len(msgs), rt.stats
    return elapsed


def run_baseline(msgs: list[tuple[str, bytes]]) -> float:
    t0 = time.perf_counter()
    for _topic, payload in msgs:
        orjson.loads(payload)
    return time.perf_counter() - t0


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--assets", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    msgs = messages(a.assets, a.seconds)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        model = tmp / "m.onnx"
        train_simulated(model, assets=4, seconds=600)
        base, ours = [], []
        async with DemoBroker() as broker:
            for r in range(a.repeats):
                base.append(run_baseline(msgs))
                run_dir = tmp / f"r{r}"
                run_dir.mkdir()
                ours.append(await run_ours(msgs, model, run_dir, broker.url))
    n = len(msgs)
    b_rate, o_rate = n / statistics.median(base), n / statistics.median(ours)
    result = {"benchmark": "edge_pipeline", "readings": n, "assets": a.assets,
              "baseline_orjson_readings_per_s": round(b_rate),
              "edge_pipeline_readings_per_s": round(o_rate),
              "ratio_edge_to_baseline": round(o_rate / b_rate, 4),
              "repeats": a.repeats}
    print(json.dumps(result))
    print(f"\n{'path':34} {'readings/s':>12}")
    print(f"{'baseline: orjson.loads':34} {b_rate:12,.0f}")
    print(f"{'edge: validate+window+ONNX+policy':34} {o_rate:12,.0f}")
    print(f"{'ratio':34} {o_rate / b_rate:12.3f}")


if __name__ == "__main__":
    asyncio.run(main())
