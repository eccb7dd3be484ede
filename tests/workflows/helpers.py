"""Alerts made the way the edge makes them, and engine set-up for workflow tests."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiotflow.contracts.schema import Alert, alert_id_for
from aiotflow.contracts.signing import AlertTrust, TrustedEdge, sign_alert
from aiotflow.demo.seed import seed_maintenance, seed_roster
from aiotflow.edge.bundle import ModelBundle
from aiotflow.edge.features import make_windows
from aiotflow.edge.policy import AlertPolicy, severity_for
from aiotflow.keys import generate_key, save_key
from aiotflow.simulator.fleet import CHANNELS, Fleet, parse_fault
from aiotflow.vectorstore.models import Incident
from aiotflow.workflows.engine import Engine
from aiotflow.workflows.settings import EngineSettings


def make_alert(bundle: ModelBundle, mode: str = "coolant_pump", *, asset: str = "gen-002",
               seed: int = 1) -> Alert:
    meta = bundle.meta
    fleet = Fleet(2, seed=seed, faults=[parse_fault(f"{asset}:{mode}@60", ramp=40)])
    series = fleet.matrix(220, meta.sample_rate_hz)[asset][:, [CHANNELS.index(c)
                                                               for c in meta.channels]]
    windows = make_windows(series, meta.window, meta.hop)
    emb, scores = bundle.score_windows(windows)
    policy = AlertPolicy()
    now = time.time() - len(scores)
    for i, s in enumerate(scores):
        ep = policy.update(asset, now + i, float(s), meta.threshold)
        if ep is not None:
            return Alert(
                id=alert_id_for("plant-1", asset, ep.start, meta.version), site="plant-1",
                asset=asset, ts=ep.ts, episode_start=ep.start,
                severity=severity_for(float(s), meta.threshold), score=float(s),
                threshold=meta.threshold, embedding=[float(v) for v in emb[i]],
                summary=bundle.summarize(windows[i], emb[i]), model_name=meta.name,
                model_version=meta.version)
    raise AssertionError("the simulated fault was not detected")


#: the tests' edge: its alerts are signed with this key, which the engines trust for plant-1
EDGE = generate_key("test-edge")
TRUST = AlertTrust(edges=[TrustedEdge(name="test-edge", public_key=EDGE.public_key,
                                      sites=["plant-1"])])


def signed(alert: Alert, prefix: str = "aiotflow/alerts") -> tuple[str, bytes]:
    """``(topic, payload)`` of ``alert`` as the tests' edge publishes it."""
    topic = f"{prefix}/{alert.site}/{alert.asset}"
    return topic, sign_alert(EDGE, topic, alert.model_dump_json().encode())


def edge_key_file(directory: Path) -> Path:
    """The tests' edge key as a file, for an EdgeRuntime (``key_file``)."""
    return save_key(EDGE, directory / "edge.key")


def trust_toml() -> str:
    """The ``[engine.trust]`` entry of the tests' edge, for an engine config file."""
    return (f'[[engine.trust.edges]]\nname = "test-edge"\nsites = ["plant-1"]\n'
            f'public_key = "{EDGE.public_key}"\n')


def settings_for(state: Path, broker_url: str) -> EngineSettings:
    return EngineSettings(state_dir=state, mqtt={"url": broker_url}, approval_poll_s=0.1,
                          engine_id=f"engine-{state.name}", trust=TRUST)


async def seed(engine: Engine, incidents: list[Incident]) -> None:
    await seed_roster(engine.ops)
    await seed_maintenance(engine.ops, ["gen-001", "gen-002", "gen-003"], stale=["gen-002"])
    if not await engine.history.count():
        await engine.history.add(incidents)


async def wait_for(predicate: Callable[[], Any], seconds: float = 20.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def cli(*args: str, stdin: bytes | None = None,
              env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``python -m aiotflow ARGS`` in a second process (no terminal: PINs are read
    from ``stdin``), with ``env`` added to the environment."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiotflow", *args, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=os.environ | (env or {}), start_new_session=True)
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
