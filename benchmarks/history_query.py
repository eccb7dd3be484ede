"""Incident history speed: similar-incident search at 100k points through HistoryStore.

Ours: ``HistoryStore.similar`` / ``diagnose`` (the code the agent calls) on the embedded
default (Qdrant Edge on a temporary directory), or on a Qdrant server with ``--url``.
Baselines, same run, same data: exact search in numpy (one matrix product over all
points, filter as a mask), which also gives the recall@10 of our answers; and
qdrant-client's local mode on a sample of the queries (it scans in Python).

Diagnosis: ``diagnose`` end to end (k=20 distinct events, filtered by asset type, cache
off), and the filtered search again on a history that also weighs an 8-channel operating
point (vector = embedding + context part, see ``vectorstore.context``).

Alert storm: one asset whose score hovers at its threshold for 10 minutes (2 Hz, the
edge's AlertPolicy with k=1, clear=1 and no cooldown, so every crossing is an alert);
each alert asks ``diagnose`` with an embedding that wobbles around the same fault. The
answer cache should keep the store queries to a handful.

    python benchmarks/history_query.py [--n 100000] [--dim 48] [--queries 2000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from aiotflow.edge.policy import AlertPolicy, PolicySettings
from aiotflow.vectorstore import ContextSettings, HistorySettings, HistoryStore, Incident

MODES = ("coolant_pump", "thermostat", "bearing_wear", "injector", "sensor_dropout", "none")
ASSET_TYPES = [f"type-{i:02d}" for i in range(50)]  # a filter on one matches ~2 %


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_data(n: int, dim: int, seed: int = 7) -> tuple[np.ndarray, list[Incident]]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(MODES), dim))
    mode = rng.integers(len(MODES), size=n)
    vecs = centres[mode] + rng.normal(0, 0.6, size=(n, dim))
    types = rng.integers(len(ASSET_TYPES), size=n)
    incidents = [
        Incident(id=f"INC-{i:07d}", asset=f"asset-{i % 5000:04d}", asset_type=ASSET_TYPES[t],
                 site=f"site-{i % 20:02d}", ts=1.6e9 + i * 60.0, failure_mode=MODES[m],
                 system="cooling" if m < 2 else "other", embedding=v.tolist())
        for i, (v, m, t) in enumerate(zip(vecs, mode, types, strict=True))
    ]
    return vecs, incidents


def pct(xs: list[float], q: float) -> float:
    return round(float(np.percentile(xs, q)), 3)


async def timed(store: HistoryStore, queries: np.ndarray, flt: list[str | None]
                ) -> tuple[list[float], list[list[str]]]:
    lat, ids = [], []
    for q, t in zip(queries, flt, strict=True):
        t0 = time.perf_counter()
        hits = await store.similar(q.tolist(), limit=10, asset_type=t)
        lat.append((time.perf_counter() - t0) * 1000)
        ids.append([h.incident.id for h in hits])
    return lat, ids


def exact(vecs: np.ndarray, types: np.ndarray, queries: np.ndarray, flt: list[str | None]
          ) -> tuple[list[float], list[list[int]]]:
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    lat, ids = [], []
    for q, t in zip(queries, flt, strict=True):
        t0 = time.perf_counter()
        sims = unit @ (q / np.linalg.norm(q))
        if t is not None:
            sims = np.where(types == t, sims, -np.inf)
        top = np.argpartition(-sims, 10)[:10]
        top = top[np.argsort(-sims[top])]
        lat.append((time.perf_counter() - t0) * 1000)
        ids.append(top.tolist())
    return lat, ids


async def timed_diagnose(store: HistoryStore, queries: np.ndarray, flt: list[str | None],
                         contexts: list[dict[str, float]] | None = None
                         ) -> tuple[list[float], float]:
    """Latency of diagnose (each query a new asset: no cache) and engine queries each."""
    lat = []
    before = store.queries
    for i, (q, t) in enumerate(zip(queries, flt, strict=True)):
        t0 = time.perf_counter()
        await store.diagnose(q.tolist(), asset=f"bench-{i}", asset_type=t,
                             context=contexts[i] if contexts else None)
        lat.append((time.perf_counter() - t0) * 1000)
    return lat, (store.queries - before) / len(queries)


CHANNELS = [f"ch{i}" for i in range(8)]


def contexts_for(n: int, seed: int) -> list[dict[str, float]]:
    """Operating points: 50 asset types, each around its own levels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(50, 10, size=(len(ASSET_TYPES), len(CHANNELS)))
    t = rng.integers(len(ASSET_TYPES), size=n)
    pts = centres[t] + rng.normal(0, 2, size=(n, len(CHANNELS)))
    return [dict(zip(CHANNELS, map(float, p), strict=True)) for p in pts]


async def storm(store: HistoryStore, dim: int, seconds: float = 600.0, hz: float = 2.0
                ) -> dict[str, Any]:
    rng = np.random.default_rng(3)
    now = [0.0]
    assert store.cache is not None
    store.cache.clock = lambda: now[0]  # simulated time: 10 minutes in a moment
    store.cache.clear()
    policy = AlertPolicy(PolicySettings(k=1, clear=1, clear_ratio=1.0, cooldown_s=0))
    fault = rng.normal(size=dim)
    before, hits0, misses0 = store.queries, store.cache.hits, store.cache.misses
    alerts = 0
    for i in range(int(seconds * hz)):
        now[0] = i / hz
        score = 1.0 + rng.normal(0, 0.08)  # hovering at the threshold (1.0)
        if policy.update("gen-storm", now[0], score, 1.0) is not None:
            alerts += 1
            emb = fault + rng.normal(0, 0.05 * np.linalg.norm(fault) / np.sqrt(dim), dim)
            await store.diagnose(emb.tolist(), asset="gen-storm", asset_type=ASSET_TYPES[0])
    hits, misses = store.cache.hits - hits0, store.cache.misses - misses0
    return {"storm_alerts": alerts, "storm_queries": store.queries - before,
            "storm_cache_hit_rate": round(hits / max(1, hits + misses), 3)}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=48)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--local-queries", type=int, default=10,
                    help="queries against qdrant-client local mode (slow)")
    ap.add_argument("--url", help="a Qdrant server instead of the embedded engine")
    ap.add_argument("--api-key")
    ap.add_argument("--json", action="store_true", help="JSON only")
    a = ap.parse_args()

    vecs, incidents = make_data(a.n, a.dim)
    types = np.array([i.asset_type for i in incidents])
    rng = np.random.default_rng(11)
    queries = vecs[rng.integers(a.n, size=a.queries)] + rng.normal(0, 0.3, (a.queries, a.dim))
    flt_types: list[str | None] = [ASSET_TYPES[int(i)] for i in
                                   rng.integers(len(ASSET_TYPES), size=a.queries)]
    none: list[str | None] = [None] * a.queries
    out: dict[str, Any] = {"n": a.n, "dim": a.dim, "queries": a.queries}
    with tempfile.TemporaryDirectory() as d:
        settings = (HistorySettings(url=a.url, api_key=a.api_key, prefix="bench_")
                    if a.url else HistorySettings(path=Path(d) / "h"))
        async with HistoryStore(settings=settings) as store:
            out["engine"] = store.engine
            rss_data = rss_mb()
            t0 = time.perf_counter()
            await store.add(incidents, batch=1000)
            out["insert_per_s"] = round(a.n / (time.perf_counter() - t0))
            out["rss_mb"] = round(rss_mb(), 1)  # the whole process, test data included
            out["rss_mb_store"] = round(rss_mb() - rss_data, 1)  # grown while inserting
            await timed(store, queries[:50], none[:50])  # warm-up
            lat, _ = await timed(store, queries, none)
            lat_f, ids_f = await timed(store, queries, flt_types)
            out |= {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
                    "p50_filtered_ms": pct(lat_f, 50), "p99_filtered_ms": pct(lat_f, 99)}
            base_lat, base_ids = exact(vecs, types, queries, flt_types)
            recall = statistics.fmean(
                len({incidents[j].id for j in b} & set(o)) / 10
                for b, o in zip(base_ids, ids_f, strict=True))
            out |= {"recall_at_10_filtered": round(recall, 4),
                    "numpy_exact_p50_filtered_ms": pct(base_lat, 50),
                    "numpy_exact_p99_filtered_ms": pct(base_lat, 99)}
            dq = min(a.queries, 500)
            lat_d, rounds = await timed_diagnose(store, queries[:dq], flt_types[:dq])
            out |= {"diagnose_p50_ms": pct(lat_d, 50), "diagnose_p99_ms": pct(lat_d, 99),
                    "diagnose_engine_queries_each": round(rounds, 2)}
            out |= await storm(store, a.dim)
            if a.url:
                for c in ("incidents",):
                    await store.backend._client.delete_collection(  # type: ignore[attr-defined]
                        settings.prefix + c)
    if not a.url:  # the same data weighing an operating point: engine vector dim + 8
        ctx = contexts_for(a.n, 5)
        scale = ContextSettings(channels={c: (50.0, 10.0) for c in CHANNELS})
        with_ctx = [i.model_copy(update={"context": c}) for i, c in zip(incidents, ctx,
                                                                         strict=True)]
        qctx = contexts_for(a.queries, 6)
        with tempfile.TemporaryDirectory() as d:
            async with HistoryStore(settings=HistorySettings(path=Path(d) / "h",
                                                             context=scale)) as store:
                await store.add(with_ctx, batch=1000)
                await timed(store, queries[:50], none[:50])
                lat_c = []
                for q, t, c in zip(queries, flt_types, qctx, strict=True):
                    t0 = time.perf_counter()
                    await store.similar(q.tolist(), limit=10, asset_type=t, context=c)
                    lat_c.append((time.perf_counter() - t0) * 1000)
                lat_dc, _ = await timed_diagnose(store, queries[:dq], flt_types[:dq], qctx)
                out |= {"p50_filtered_context_ms": pct(lat_c, 50),
                        "p99_filtered_context_ms": pct(lat_c, 99),
                        "diagnose_context_p99_ms": pct(lat_dc, 99)}
        del with_ctx
    if a.local_queries:
        async with HistoryStore(location=":memory:") as local:
            t0 = time.perf_counter()
            await local.add(incidents, batch=1000)
            out["client_local_insert_per_s"] = round(a.n / (time.perf_counter() - t0))
            k = a.local_queries
            lat_l, _ = await timed(local, queries[:k], flt_types[:k])
            out["client_local_p50_filtered_ms"] = pct(lat_l, 50)
    out["speedup_vs_numpy_p99_filtered"] = round(
        out["numpy_exact_p99_filtered_ms"] / out["p99_filtered_ms"], 1)
    if "client_local_p50_filtered_ms" in out:
        out["speedup_vs_client_local_p50_filtered"] = round(
            out["client_local_p50_filtered_ms"] / out["p50_filtered_ms"], 1)
    print(json.dumps(out, indent=2))
    if a.json:
        return
    rows = [("ours filtered", out["p50_filtered_ms"], out["p99_filtered_ms"]),
            ("ours unfiltered", out["p50_ms"], out["p99_ms"]),
            ("ours diagnose (k=20 events)", out["diagnose_p50_ms"], out["diagnose_p99_ms"])]
    if "p99_filtered_context_ms" in out:
        rows.append(("ours filtered + context", out["p50_filtered_context_ms"],
                     out["p99_filtered_context_ms"]))
    rows += [
             ("numpy exact filtered", out["numpy_exact_p50_filtered_ms"],
              out["numpy_exact_p99_filtered_ms"])]
    if "client_local_p50_filtered_ms" in out:
        rows.append(("qdrant-client local filt.", out["client_local_p50_filtered_ms"], "-"))
    print(f"\n{'top-10 at ' + str(a.n) + ' points':28}{'p50 ms':>10}{'p99 ms':>10}",
          file=sys.stderr)
    for label, p50, p99 in rows:
        print(f"{label:28}{p50!s:>10}{p99!s:>10}", file=sys.stderr)
    print(f"insert {out['insert_per_s']}/s, recall@10 {out['recall_at_10_filtered']}, "
          f"storm: {out['storm_alerts']} alerts -> {out['storm_queries']} store queries",
          file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
