import asyncio
import json
from pathlib import Path

import numpy as np

from aiotflow.contracts.schema import Alert
from aiotflow.edge.bundle import ModelBundle
from aiotflow.edge.config import EdgeSettings
from aiotflow.edge.drift import DriftMonitor, DriftSettings, psi
from aiotflow.edge.runtime import EdgeRuntime
from aiotflow.simulator.fleet import Fleet

from ..conftest import Mosquitto


def test_psi() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(size=20000)
    edges = np.quantile(train, np.linspace(0, 1, 11))[1:-1]
    same, shares = psi(rng.normal(size=5000), edges)
    assert same < 0.02 and abs(sum(shares) - 1) < 1e-6
    moved, _ = psi(rng.normal(0.8, 1, size=5000), edges)
    assert moved > 0.25


def test_monitor_reports_once_and_rearms() -> None:
    q = list(np.linspace(0, 10, 11))
    m = DriftMonitor(q, DriftSettings(window=200, every=100))
    rng = np.random.default_rng(1)
    assert m.update(rng.uniform(0, 10, 200)) is None and m.psi is not None and m.psi < 0.1
    assert m.update(rng.uniform(8, 10, 200)) is not None  # everything in the top bins
    assert m.update(rng.uniform(8, 10, 200)) is None and m.drifting  # reported once
    m.update(rng.uniform(0, 10, 200))
    assert not m.drifting and m.reports == 1


def test_monitor_compares_exactly_the_last_window_of_scores() -> None:
    """Chunks of any size, some larger than the window: each PSI is that of the last
    ``window`` scores of the stream."""
    import random

    rnd = random.Random(4)
    rng = np.random.default_rng(4)
    q = list(np.linspace(0, 10, 11))
    m = DriftMonitor(q, DriftSettings(window=300, every=10))
    stream: list[float] = []
    checked = 0
    for _ in range(200):
        chunk = rng.uniform(0, rnd.choice([4, 10]), rnd.choice([1, 7, 50, 299, 300, 301, 777]))
        stream.extend(chunk.tolist())
        before = m.psi
        m.update(chunk)
        if m.psi is not before:  # computed at this update
            assert m.psi == psi(stream[-300:], q[1:-1])[0]
            checked += 1
        assert m.filled == min(len(stream), 300)
    assert checked > 50


async def feed(rt: EdgeRuntime, offset: float, seconds: float) -> None:
    for asset, ts, values in Fleet(20, seed=33).run(seconds, 2.0):
        values["vibration_mm_s"] += offset  # e.g. every sensor re-calibrated
        rt.handle(f"aiotflow/telemetry/plant-1/{asset}",
                  json.dumps({"ts": ts, "values": values}).encode())
        while rt.pending_count >= 64:
            await rt._score_once()
    while rt._pending:
        await rt._score_once()


async def test_drift_alert_when_the_plant_moves_away_from_training(
    mosquitto: Mosquitto, bundle: ModelBundle, tmp_path: Path
) -> None:
    assert len(bundle.meta.score_quantiles) == 11
    drift = {"window": 1000, "every": 200}
    steady = EdgeRuntime(EdgeSettings(model=bundle.path, mqtt={"url": mosquitto.url},
                                      outbox=tmp_path / "a.db", drift=drift), bundle=bundle)
    async with steady:
        await feed(steady, 0.0, 120)
    assert steady.stats.drift_alerts == 0 and steady.stats.drift_psi is not None
    assert steady.stats.drift_psi < 0.25

    moved = EdgeRuntime(EdgeSettings(model=bundle.path, mqtt={"url": mosquitto.url},
                                     outbox=tmp_path / "b.db", drift=drift), bundle=bundle)
    alerts: list[Alert] = []
    moved.add_alert_listener(alerts.append)
    async with moved:
        await feed(moved, 0.6, 120)
        await asyncio.sleep(0.2)
    [d] = [a for a in alerts if a.kind == "model_drift"]
    assert d.detail["psi"] >= 0.25 and d.asset == bundle.meta.name
    assert moved.stats.drift_alerts == 1 and moved.stats.drift_psi >= 0.25
