"""Edge runtime throughput, batching, latency and memory against a real Mosquitto.

Both consumers are measured in the same run, on the same broker and the same published
messages, interleaved (A B A B ...: the machine is shared and its speed drifts within
minutes): a bare aiomqtt subscriber that only decodes the JSON (the baseline: the best a
Python aiomqtt consumer does here) and the full edge runtime (validate -> window ->
features -> ONNX score -> alert policy -> outbox). Ratios are taken per round, and
reported as the median with min-max:

* ``ratio``: the edge against the baseline, one reading per message (the edge keeps up
  with the publisher here: a lower bound);
* ``batched_ratio``: the edge against the baseline decoding the same batched payloads
  (``--batch`` readings per message), both on one core (every thread of this process;
  the publisher and the broker on the others), ``--batched-repeats`` rounds;
* ``metrics_ratio``: in the same rounds (A B C), the batched edge serving ``/metrics``
  and scraped every ``--scrape-s`` (stricter than Prometheus' 15 s default; the scraper
  off the edge's core, as Prometheus would be) against the same edge without: measured
  where the edge is CPU-bound, so that what a scrape costs shows.

An edge run ends when every message is read and its windows are scored (all but the
last part-batch, which waits up to ``max_delay_ms`` for more): reading alone can run
ahead of the scoring.

    python benchmarks/edge_throughput.py [--json] [--messages 200000] [--assets 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _mqtt import Broker, broker_dropped, start_paced_publisher, start_publisher

from aiotflow.contracts.signing import open_alert
from aiotflow.edge.config import EdgeSettings
from aiotflow.edge.runtime import EdgeRuntime
from aiotflow.logging import configure_logging
from aiotflow.metrics import MetricsServer
from aiotflow.simulator.fleet import Fleet, parse_fault
from aiotflow.training.train import train_simulated


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def telemetry_lines(n: int, assets: int, *, batch: int = 1, seed: int = 0) -> bytes:
    """``topic payload`` lines: ``n`` messages of healthy simulated generators, round-robin
    over ``assets``, each carrying ``batch`` consecutive readings of one asset."""
    fleet = Fleet(assets, seed=seed, prefix="gen")
    steps = -(-n * batch // assets)
    per_asset: list[list[dict[str, Any]]] = [[] for _ in range(assets)]
    for k, (_, ts, values) in enumerate(fleet.run(steps, 2.0)):
        per_asset[k % assets].append({"ts": round(ts, 3), "values": values})
    out = []
    for i in range(n):
        a, j = i % assets, (i // assets) * batch
        chunk = per_asset[a][j:j + batch]
        body = chunk[0] if batch == 1 else chunk
        out.append(b"aiotflow/telemetry/plant-1/%s " % fleet.assets[a].name.encode()
                   + orjson.dumps(body))
    return b"\n".join(out) + b"\n"


async def wait_until(pred: Any, seconds: float, step: float = 0.002) -> float:
    deadline = time.perf_counter() + seconds
    while not pred():
        if time.perf_counter() > deadline:
            raise TimeoutError
        await asyncio.sleep(step)
    return time.perf_counter()


def spread(xs: list[float], digits: int = 3) -> dict[str, float]:
    """Median and min-max of per-round figures."""
    return {"median": round(statistics.median(xs), digits), "min": round(min(xs), digits),
            "max": round(max(xs), digits)}


def set_process_affinity(cpus: set[int]) -> None:
    """Every thread of this process on ``cpus`` (Linux sets one thread's affinity at a
    time: the edge's scoring and database threads, started before, are moved too;
    threads started after inherit it from the thread that starts them)."""
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(tid), cpus)


def pin(one_core: bool, pub: subprocess.Popen[bytes], broker: Broker,
        *others: subprocess.Popen[Any]) -> set[int]:
    """This process (all its threads) on one core, the publisher, the broker and
    ``others`` on the others."""
    cpus = os.sched_getaffinity(0)
    if one_core and len(cpus) > 1:
        mine, rest = min(cpus), cpus - {min(cpus)}
        set_process_affinity({mine})
        for proc in (pub, broker.proc, *others):
            os.sched_setaffinity(proc.pid, rest)
    return cpus


async def run_baseline(broker: Broker, lines: Path, n: int, *,
                       one_core: bool = False) -> dict[str, float]:
    """A bare aiomqtt consumer that decodes each payload; readings/s (a batched payload
    is a JSON list of readings)."""
    count = readings = first_readings = 0
    first = last = 0.0
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="bench-baseline") as c:
        await c.subscribe("aiotflow/telemetry/+/+", qos=1)
        pub = start_publisher(broker.port, lines)
        cpus = pin(one_core, pub, broker)
        try:
            async with asyncio.timeout(300):
                async for m in c.messages:
                    body = orjson.loads(m.payload)  # type: ignore[arg-type]
                    readings += len(body) if isinstance(body, list) else 1
                    count += 1
                    if count == 1:
                        first, first_readings = time.perf_counter(), readings
                    if count == n:
                        last = time.perf_counter()
                        break
        finally:
            pub.wait(60)
            set_process_affinity(cpus)
    return {"messages": count, "seconds": last - first,
            "rps": (readings - first_readings) / (last - first)}


SCRAPER = r"""
import sys, time, urllib.request
url, every = sys.argv[1], float(sys.argv[2])
n = 0
while True:
    time.sleep(every)
    with urllib.request.urlopen(url, timeout=5) as r:
        r.read()
    n += 1
    print(n, flush=True)
"""


class Scraper:
    """A Prometheus in miniature, in a process of its own as Prometheus is: GET ``url``
    every ``every_s``."""

    def __init__(self, url: str, every_s: float) -> None:
        self.scrapes = 0
        self.proc = subprocess.Popen([sys.executable, "-c", SCRAPER, url, str(every_s)],
                                     stdout=subprocess.PIPE, text=True)

    def stop(self) -> None:
        self.proc.terminate()
        out, _ = self.proc.communicate(10)
        self.scrapes = len(out.split())


async def run_edge(broker: Broker, lines: Path, n: int, readings: int, model: Path,
                   tmp: Path, *, one_core: bool = False,
                   scrape_s: float | None = None) -> dict[str, Any]:
    """The edge runtime on the published lines; with ``scrape_s``, serving ``/metrics``
    in this process and scraped that often while it works."""
    s = EdgeSettings(model=model, mqtt={"url": broker.url, "client_id": "bench-edge"},
                     outbox=tmp / f"outbox-{time.time_ns()}.db", stats_interval_s=60)
    rt = EdgeRuntime(s)
    server = MetricsServer(0, rt.metrics) if scrape_s is not None else None
    scraper = Scraper(server.url, scrape_s) if server is not None and scrape_s else None
    async with rt:
        await wait_until(rt.subscribed.is_set, 10)
        pub = start_publisher(broker.port, lines)
        # the edge (this process, ONNX thread included) on one core
        cpus = pin(one_core, pub, broker, *([scraper.proc] if scraper is not None else []))
        first = await wait_until(lambda: rt.stats.messages_received > 0, 120, 0.0005)
        got_first = rt.stats.readings_received
        # every message read and its windows scored, but the last part-batch (which
        # waits up to max_delay_ms for more)
        last = await wait_until(lambda: rt.stats.messages_received >= n
                                and rt.pending_count < rt.settings.scoring.max_batch, 300,
                                0.0005)
        pub.wait(60)
        set_process_affinity(cpus)
        await asyncio.sleep(0.2)
        stats = rt.stats.as_dict()
    scrapes = 0
    if scraper is not None:
        scraper.stop()
        scrapes = scraper.scrapes
    if server is not None:
        server.close()
    processed = stats["readings_received"] + stats["invalid"]
    return {"messages": stats["messages_received"], "readings": stats["readings_received"],
            "seconds": last - first, "scrapes": scrapes,
            "rps": (stats["readings_received"] - got_first) / (last - first),
            "dropped": readings - processed, "windows_scored": stats["windows_scored"],
            "stats": stats}


async def throughput(args: argparse.Namespace, model: Path, tmp: Path) -> dict[str, Any]:
    lines = tmp / "single.txt"
    lines.write_bytes(telemetry_lines(args.messages, args.assets))
    broker = Broker()
    try:
        base, edge = [], []
        for r in range(args.repeats):  # A B, A B, ...: each round's ratio
            base.append(await run_baseline(broker, lines, args.messages))
            log(f"baseline run {r}: {base[-1]['rps']:,.0f} msg/s")
            edge.append(await run_edge(broker, lines, args.messages, args.messages, model, tmp))
            log(f"edge run {r}: {edge[-1]['rps']:,.0f} readings/s, "
                f"dropped {edge[-1]['dropped']}")
        dropped = await broker_dropped(broker.port)
    finally:
        broker.stop()
    ratios = spread([e["rps"] / b["rps"] for b, e in zip(base, edge, strict=True)])
    return {"baseline_rps": round(statistics.median(x["rps"] for x in base)),
            "edge_rps": round(statistics.median(x["rps"] for x in edge)),
            "ratio": ratios["median"], "ratio_spread": ratios,
            "broker_dropped": dropped,
            "edge_dropped": max(x["dropped"] for x in edge),
            "windows_scored": edge[-1]["windows_scored"],
            "baseline_runs": [round(x["rps"]) for x in base],
            "edge_runs": [round(x["rps"]) for x in edge]}


async def batched(args: argparse.Namespace, model: Path, tmp: Path) -> dict[str, Any]:
    n_msgs = args.batch_readings // args.batch
    lines = tmp / "batched.txt"
    lines.write_bytes(telemetry_lines(n_msgs, args.assets, batch=args.batch, seed=1))
    broker = Broker()
    base, runs, observed = [], [], []
    try:
        for r in range(args.batched_repeats):  # A B C, A B C, ...
            base.append(await run_baseline(broker, lines, n_msgs, one_core=True))
            log(f"batched baseline run {r}: {base[-1]['rps']:,.0f} readings/s")
            runs.append(await run_edge(broker, lines, n_msgs, n_msgs * args.batch, model, tmp,
                                       one_core=True))
            log(f"batched edge run {r}: {runs[-1]['rps']:,.0f} readings/s")
            observed.append(await run_edge(broker, lines, n_msgs, n_msgs * args.batch, model,
                                           tmp, one_core=True, scrape_s=args.scrape_s))
            log(f"batched edge+metrics run {r}: {observed[-1]['rps']:,.0f} readings/s, "
                f"{observed[-1]['scrapes']} scrapes")
    finally:
        broker.stop()
    ratios = spread([e["rps"] / b["rps"] for b, e in zip(base, runs, strict=True)])
    with_metrics = spread([o["rps"] / e["rps"] for e, o in zip(runs, observed, strict=True)])
    rps = spread([r["rps"] for r in runs], 0)
    return {"batched_rps": round(rps["median"]), "batched_rps_spread": rps,
            "batched_baseline_rps": round(statistics.median(b["rps"] for b in base)),
            "batched_ratio": ratios["median"], "batched_ratio_spread": ratios,
            "batched_edge_cores": 1,
            "batch_size": args.batch,
            "batched_dropped": max(r["dropped"] for r in (*runs, *observed)),
            "metrics_ratio": with_metrics["median"], "metrics_ratio_spread": with_metrics,
            "batched_metrics_rps": round(statistics.median(o["rps"] for o in observed)),
            "metrics_scrape_s": args.scrape_s,
            "metrics_scrapes": [o["scrapes"] for o in observed]}


def latency_lines(assets: int, samples: int, faulty: int, seed: int = 3) -> tuple[bytes, list[
        tuple[str, float]]]:
    """Round-robin telemetry of ``assets`` generators, ``faulty`` of them developing a
    bearing fault at staggered times; returns the lines and each line's (asset, ts)."""
    faults = [parse_fault(f"gen-{i + 1:03d}:bearing_wear@{25 + (i % 40)}", ramp=4)
              for i in range(faulty)]
    fleet = Fleet(assets, seed=seed, faults=faults)
    start = time.time()
    lines, keys = [], []
    for asset, ts, values in fleet.run(samples / 2.0, 2.0, start_ts=start):
        ts = round(ts, 3)
        lines.append(b"aiotflow/telemetry/plant-1/%s " % asset.encode()
                     + orjson.dumps({"ts": ts, "values": values}))
        keys.append((asset, ts))
    return b"\n".join(lines) + b"\n", keys


async def latency(args: argparse.Namespace, model: Path, tmp: Path) -> dict[str, Any]:
    """Publish-to-alert latency under a steady ``--rate`` of single-reading messages."""
    samples = int(args.latency_seconds * args.rate / args.assets)
    data, keys = latency_lines(args.assets, samples, args.assets // 10)
    index = {k: i for i, k in enumerate(keys)}
    lines, times = tmp / "latency.txt", tmp / "latency.times"
    lines.write_bytes(data)
    broker = Broker()
    received: list[tuple[str, float, float]] = []
    try:
        s = EdgeSettings(model=model, mqtt={"url": broker.url},
                         outbox=tmp / "latency-outbox.db", stats_interval_s=60,
                         policy={"k": 3, "cooldown_s": 3600},
                         scoring={"max_delay_ms": args.max_delay_ms})
        rt = EdgeRuntime(s)
        created: dict[tuple[str, float], float] = {}
        rt.add_alert_listener(lambda a: created.__setitem__((a.asset, round(a.ts, 3)),
                                                            time.time()))
        async with rt, aiomqtt.Client("127.0.0.1", broker.port) as sub:
            await sub.subscribe("aiotflow/alerts/#", qos=1)
            await wait_until(rt.subscribed.is_set, 10)
            # the harness's own 150k-line index must not make the runtime's GC pauses
            # longer than in a real edge process: move it out of the collector's sight
            gc.freeze()
            pub = start_paced_publisher(broker.port, lines, args.rate, times)

            async def collect() -> None:  # as the engine: first arrival, acknowledged
                seen: set[str] = set()
                async for m in sub.messages:
                    t = time.time()
                    a = json.loads(open_alert(m.payload).body)  # type: ignore[arg-type]
                    if a["id"] not in seen:
                        seen.add(a["id"])
                        received.append((a["asset"], round(a["ts"], 3), t))
                    await sub.publish(f"aiotflow/acks/{a['site']}/{a['asset']}",
                                      json.dumps({"id": a["id"]}), qos=1)

            task = asyncio.create_task(collect())
            await asyncio.to_thread(pub.wait)
            await asyncio.sleep(1.0)
            task.cancel()
            gc.unfreeze()
            stats = rt.stats.as_dict()
        dropped = await broker_dropped(broker.port)
    finally:
        broker.stop()
    sent = np.fromfile(times, dtype=np.float64)
    lat = np.array([(t - sent[index[(a, ts)]]) * 1000 for a, ts, t in received
                    if (a, ts) in index])
    # where the time goes: publish -> alert created (ingest, batching, ONNX, policy) and
    # created -> received (outbox commit, QoS 1 publish, broker, subscriber)
    edge_part = np.array([(created[(a, ts)] - sent[index[(a, ts)]]) * 1000
                          for a, ts, _ in received if (a, ts) in index and (a, ts) in created])
    deliver = np.array([(t - created[(a, ts)]) * 1000 for a, ts, t in received
                        if (a, ts) in created])
    return {"latency_p50_ms": round(float(np.percentile(lat, 50)), 2),
            "latency_p99_ms": round(float(np.percentile(lat, 99)), 2),
            "latency_alerts": len(lat), "latency_rate": args.rate,
            "latency_detect_p99_ms": round(float(np.percentile(edge_part, 99)), 2),
            "latency_deliver_p99_ms": round(float(np.percentile(deliver, 99)), 2),
            "latency_readings": stats["readings_received"],
            "latency_broker_dropped": dropped,
            "latency_max_delay_ms": s.scoring.max_delay_ms}


MEMORY = r'''
import asyncio, json, sys, time
from pathlib import Path
from aiotflow.logging import configure_logging
from aiotflow.edge.config import EdgeSettings
from aiotflow.edge.runtime import EdgeRuntime
model, url, outbox, assets = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

async def main():
    before = rss_mb()
    rt = EdgeRuntime(EdgeSettings(model=model, mqtt={"url": url}, outbox=outbox,
                                  stats_interval_s=60))
    names = [f"aiotflow/telemetry/plant-1/gen-{i:05d}" for i in range(assets)]
    vals = {"load_pct": 60.0, "coolant_temp_c": 85.0, "oil_pressure_bar": 4.4,
            "vibration_mm_s": 3.1, "current_a": 360.0, "exhaust_temp_c": 460.0,
            "rpm": 1500.0, "fuel_rate_lph": 65.0}
    async with rt:
        w = rt.bundle.meta.window
        for k in range(w + 2):
            for topic in names:
                rt.handle(topic, json.dumps({"ts": 1.7e9 + k, "values": vals}).encode())
            while rt._pending:
                await rt._score_once()
        print(json.dumps({"rss_mb": round(rss_mb(), 1), "rss_mb_before": round(before, 1),
                          "assets": len(rt.buffer), "window": w,
                          "readings": rt.stats.readings_received,
                          "sklearn_loaded": "sklearn" in sys.modules}))
asyncio.run(main())
'''


def memory(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """RSS of an edge process holding 10,000 assets x 8 channels x 60-sample windows."""
    model = tmp / "model60.onnx"
    train_simulated(model, assets=4, seconds=900, window=60)
    broker = Broker()
    try:
        out = subprocess.run([sys.executable, "-c", MEMORY, str(model), broker.url,
                              str(tmp / "mem-outbox.db"), str(args.memory_assets)],
                             capture_output=True, check=True, timeout=600)
    finally:
        broker.stop()
    m = json.loads([ln for ln in out.stdout.decode().splitlines() if ln.startswith('{"rss')][-1])
    return {"rss_mb_10k_assets": m["rss_mb"], "memory_assets": m["assets"],
            "memory_window": m["window"], "rss_mb_at_start": m["rss_mb_before"]}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true", help="print only the JSON result")
    ap.add_argument("--messages", type=int, default=150_000)
    ap.add_argument("--assets", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--batch-readings", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batched-repeats", type=int, default=7,
                    help="batched_ratio, metrics_ratio: rounds of A B C (baseline, edge, "
                         "edge scraped; a round takes seconds)")
    ap.add_argument("--scrape-s", type=float, default=0.25,
                    help="metrics_ratio: how often /metrics is scraped")
    ap.add_argument("--rate", type=float, default=5000.0, help="latency: readings/s")
    ap.add_argument("--latency-seconds", type=float, default=30.0)
    ap.add_argument("--max-delay-ms", type=float, default=20.0,
                    help="latency: the runtime's micro-batch window")
    ap.add_argument("--memory-assets", type=int, default=10_000)
    ap.add_argument("--skip", default="", help="comma list: throughput,batched,latency,memory")
    args = ap.parse_args()
    configure_logging("WARNING")  # logs to stderr: stdout is the result
    skip = set(filter(None, args.skip.split(",")))
    result: dict[str, Any] = {"benchmark": "edge_throughput"}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        model = tmp / "model.onnx"
        train_simulated(model, assets=4, seconds=600)
        if "throughput" not in skip:
            result |= await throughput(args, model, tmp)
        if "batched" not in skip:
            result |= await batched(args, model, tmp)
        if "latency" not in skip:
            result |= await latency(args, model, tmp)
        if "memory" not in skip:
            result |= memory(args, tmp)
    print(json.dumps(result))
    if not args.json:
        print()
        for k, v in result.items():
            print(f"{k:24} {v}")


if __name__ == "__main__":
    asyncio.run(main())
