"""``aiotflow demo``: the whole product on embedded defaults, in one process.

An in-process MQTT broker (amqtt; or ``--broker``), a few simulated generators of which one
develops a fault (the scenario's: a coolant pump failure by default), the edge runtime
scoring them with an ONNX model, the workflow engine running the scenario's agent against
a seeded incident history, roster, parts stock and calendar, and a console prompt asking
you to approve what the agent proposes.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiotflow.contracts.errors import ConfigError
from aiotflow.contracts.mqtt import MqttSettings
from aiotflow.contracts.signing import AlertTrust, TrustedEdge
from aiotflow.demo.broker import DemoBroker
from aiotflow.edge.bundle import ModelBundle
from aiotflow.edge.config import EdgeSettings
from aiotflow.edge.policy import PolicySettings
from aiotflow.edge.runtime import EdgeRuntime
from aiotflow.keys import load_or_create_key
from aiotflow.simulator.fleet import Fleet, parse_fault, publish_fleet
from aiotflow.tools.control import Decision
from aiotflow.tools.scheduling import HttpScheduling
from aiotflow.training.train import train_simulated
from aiotflow.workflows.app import App
from aiotflow.workflows.console import review_pending
from aiotflow.workflows.engine import Engine
from aiotflow.workflows.settings import EngineSettings

from .scenarios import SCENARIOS, scenario_app
from .seed import seed_all

__all__ = ["DemoOptions", "run_demo"]


@dataclass
class DemoOptions:
    broker: str | None = None
    approve: str | None = None  # "yes", "no" or None (ask at the console)
    duration: float = 110.0
    json: bool = False
    assets: int = 3
    faulty: str = "gen-002"
    scenario: str = "coolant"
    fault_mode: str | None = None  # the scenario's
    fault_at: float = 30.0
    ramp: float = 60.0
    speed: float = 4.0
    state_dir: Path | None = None
    scheduling_down: bool = False
    user: str = "operator"
    input_fn: Callable[[str], str] = field(default=input)


def demo_app(scenario: str = "coolant") -> App:
    """The generator fleet app of ``scenario``: its agent for every generator alert."""
    return scenario_app(scenario)


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


class _Progress:
    def __init__(self, quiet_stdout: bool) -> None:
        self.out = sys.stderr if quiet_stdout else sys.stdout
        self.t0 = time.monotonic()

    def __call__(self, msg: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {msg}", file=self.out, flush=True)


async def run_demo(opts: DemoOptions) -> dict[str, Any]:
    """Run the demo and return its summary."""
    say = _Progress(opts.json)
    if opts.scenario not in SCENARIOS:
        raise ConfigError(f"unknown scenario {opts.scenario!r}; one of "
                          f"{', '.join(SCENARIOS)}", field="scenario")
    scenario = SCENARIOS[opts.scenario]
    fault_mode = opts.fault_mode or scenario.fault_mode
    state = opts.state_dir or Path(tempfile.mkdtemp(prefix="aiotflow-demo-"))
    state.mkdir(parents=True, exist_ok=True)
    say(f"scenario {scenario.name}: {scenario.shows}")
    say(f"state in {state}")
    fault = parse_fault(f"{opts.faulty}:{fault_mode}@{opts.fault_at}", ramp=opts.ramp)
    model_path = state / "model.onnx"
    if model_path.is_file():
        bundle = ModelBundle(model_path)
    else:
        say("training the generator model on healthy simulated data (scikit-learn -> ONNX)")
        bundle = await asyncio.to_thread(train_simulated, model_path)
    say(f"model {bundle.name}@{bundle.version}: {len(bundle.meta.channels)} channels, "
        f"window {bundle.meta.window} samples, threshold {bundle.meta.threshold:.2f}")

    app = demo_app(scenario.name)
    approvals_q: asyncio.Queue[str] = asyncio.Queue()
    alerts_by_asset: dict[str, int] = {}
    terminal: set[str] = set()
    started: set[str] = set()
    last_event = time.monotonic()

    def on_event(kind: str, data: dict[str, Any]) -> None:
        nonlocal last_event
        last_event = time.monotonic()
        if kind == "alert.received":
            a = data["alert"]
            alerts_by_asset[a.asset] = alerts_by_asset.get(a.asset, 0) + 1
            ch, top = max(a.summary.items(), key=lambda kv: kv[1].contribution)
            say(f"ALERT {a.severity} on {a.asset}: score {a.score:.1f} > {a.threshold:.1f}; "
                f"{ch} {top.last:g} carries {top.contribution:.0%} of the anomaly")
        elif kind == "run.started":
            started.add(data["thread_id"])
            say(f"workflow {data['workflow']} started for {data['alert'].asset}")
        elif kind == "run.waiting_approval":
            say(f"approval requested: {data['title']}")
            approvals_q.put_nowait(data["approval_id"])
        elif kind == "run.completed":
            terminal.add(data["thread_id"])
            r = data["values"].get("result", {})
            say(f"workflow finished: {r.get('status')}"
                + (f", ran {', '.join(r['actions_executed'])}" if r.get("actions_executed")
                   else "")
                + (f", work order {r['work_order']}" if r.get("work_order") else "")
                + (f", technician {r['technician']}" if r.get("technician") else "")
                + (f", operator notified ({r['notification']})" if r.get("notification") else ""))
        elif kind == "run.failed":
            terminal.add(data["thread_id"])
            say(f"workflow FAILED: {data['error']}")
        elif kind in ("alert.duplicate", "alert.coalesced"):
            say(f"{kind.split('.')[1]} alert ignored for {data['alert'].asset}")

    left_pending = 0
    t_start = time.monotonic()
    async with AsyncExitStack() as stack:
        if opts.broker:
            mqtt = MqttSettings(url=opts.broker)
        else:
            broker = await stack.enter_async_context(DemoBroker())
            mqtt = MqttSettings(url=broker.url)
            say(f"demo MQTT broker (amqtt) on {broker.url}")
        # the demo's edge signs its alerts with its own key; the engine trusts it for the
        # demo fleet's site only
        edge_key = load_or_create_key(state / "keys" / "edge.key", "demo-edge")
        trust = AlertTrust(edges=[TrustedEdge(name="demo-edge", public_key=edge_key.public_key,
                                              sites=["plant-1"])])  # the fleet's site
        settings = EngineSettings(state_dir=state, mqtt=mqtt, approval_poll_s=0.2,
                                  engine_id=f"aiotflow-demo-{state.name}", trust=trust)
        if scenario.policy is not None:
            settings = settings.model_copy(update={"policy": scenario.policy})
        scheduling = HttpScheduling("http://127.0.0.1:9", timeout=1.0) \
            if opts.scheduling_down else None
        if scheduling is not None:
            stack.push_async_callback(scheduling.aclose)
        engine = Engine(app, settings, scheduling=scheduling)
        engine.add_listener(on_event)
        await stack.enter_async_context(engine)
        fleet = Fleet(opts.assets, faults=[fault], seed=2024)
        names = [a.name for a in fleet.assets]
        n = await seed_all(engine.ops, engine.history, bundle, assets=names,
                           stale=[opts.faulty], rare_modes=scenario.rare_modes,
                           wearing=[opts.faulty] if scenario.wearing else [])
        say(f"seeded roster, maintenance logs and {n or await engine.history.count()} "
            "past incidents")
        edge_settings = EdgeSettings(
            model=model_path, mqtt=mqtt, outbox=state / "edge-outbox.db",
            key_file=state / "keys" / "edge.key",
            policy=PolicySettings(k=3, cooldown_s=600), drain_timeout_s=2.0)
        edge = EdgeRuntime(edge_settings, bundle=bundle, stats_file=state / "edge-stats.json")
        await stack.enter_async_context(edge)
        async with asyncio.timeout(10):
            await asyncio.gather(edge.subscribed.wait(), engine.subscribed.wait())
        say(f"simulating {opts.assets} generators at {bundle.meta.sample_rate_hz:g} Hz "
            f"(time x{opts.speed:g}); {opts.faulty} develops {_article(fault_mode)} "
            f"{fault_mode.replace('_', ' ')} failure {opts.fault_at:g} s in")
        stop_sim = asyncio.Event()
        sim = asyncio.create_task(publish_fleet(
            fleet, mqtt=mqtt, rate_hz=bundle.meta.sample_rate_hz,
            duration=opts.duration * opts.speed, speed=opts.speed, stop=stop_sim),
            name="demo-simulator")

        async def approver() -> None:
            nonlocal left_pending
            while True:
                aid = await approvals_q.get()
                if opts.approve in ("yes", "no"):
                    decision: Decision = "approved" if opts.approve == "yes" else "rejected"
                    await engine.control.decide(aid, decision, by=opts.user,
                                                comment="unattended demo answer",
                                                signer=engine.key)
                    say(f"{decision} by {opts.user} (--approve {opts.approve})")
                else:
                    counts = await review_pending(engine.control, user=opts.user,
                                                  approval_id=aid, input_fn=opts.input_fn,
                                                  local_key=engine.key)
                    left_pending += counts["left_pending"] + counts["skipped"]

        approve_task = asyncio.create_task(approver(), name="demo-approver")
        # Done when the faulty asset's run(s) ended and nothing happened for a while,
        # or the duration is up, or an approval was left pending at the prompt.
        sim_time_needed = (opts.fault_at + opts.ramp) / opts.speed
        while time.monotonic() - t_start < opts.duration:
            await asyncio.sleep(0.25)
            quiet = time.monotonic() - last_event > 3.0
            if left_pending:
                break
            if (started and started <= terminal and quiet
                    and time.monotonic() - t_start > min(sim_time_needed, opts.duration)):
                break
        stop_sim.set()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(sim, 5)
        approve_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await approve_task
        await engine.drain(10)
        summary = await _summary(engine, edge, opts, alerts_by_asset, state,
                                 time.monotonic() - t_start, left_pending)
    return summary


async def _summary(engine: Engine, edge: EdgeRuntime, opts: DemoOptions,
                   alerts_by_asset: dict[str, int], state: Path, seconds: float,
                   left_pending: int) -> dict[str, Any]:
    control = engine.control
    approvals = await control.approvals(status=None)
    audit = await control.audit_records()
    orders = await engine.ops.work_orders()
    notes = await engine.ops.notifications()
    executed = sorted({r.detail["tool"] for r in audit if r.kind == "tool.ok"
                       and r.detail.get("tool") in engine.executor.registry
                       and engine.executor.tier(r.detail["tool"], r.detail.get("input"))
                       in ("high", "critical")})
    return {
        "scenario": opts.scenario,
        "actions_executed": executed,
        "readings": edge.stats.readings_received,
        "invalid_readings": edge.stats.invalid,
        "windows_scored": edge.stats.windows_scored,
        "alerts": edge.stats.alerts_emitted,
        "alerts_by_asset": alerts_by_asset,
        "faulty_assets": [opts.faulty],
        "workflows_started": engine.stats.runs_started,
        "workflows_completed": engine.stats.runs_completed,
        "workflows_failed": engine.stats.runs_failed,
        "approvals_requested": len(approvals),
        "approved": sum(a.status == "approved" for a in approvals),
        "rejected": sum(a.status == "rejected" for a in approvals),
        "approvals_pending": sum(a.status == "pending" for a in approvals),
        "work_orders": len(orders),
        "work_orders_by_asset": {o.asset: sum(x.asset == o.asset for x in orders)
                                 for o in orders},
        "work_order_ids": [o.id for o in orders],
        "bookings": len(await engine.ops.bookings()),
        "part_orders": len(await engine.ops.part_orders()),
        "asset_commands": [f"{c.command} {c.asset}" for c in await engine.ops.commands()],
        "notifications": len(notes),
        "audit_records": len(audit),
        "audit_rejections": sum(r.kind == "approval.rejected" for r in audit),
        "tool_calls": engine.executor.calls,
        "state_dir": str(state),
        "seconds": round(seconds, 1),
    }
