"""``aiotflow demo`` (the whole product on embedded defaults) and ``aiotflow seed``."""

from __future__ import annotations

import argparse
import getpass
import json
from pathlib import Path
from typing import Any

from ._common import add_state_options, command, engine_settings
from .output import print_json, table

__all__ = ["SCENARIO_NAMES", "register"]

#: aiotflow.demo.scenarios.SCENARIOS's names (not imported here: the CLI stays light)
SCENARIO_NAMES = ["coolant", "line-stop", "bearing"]

_SUMMARY = ("scenario", "actions_executed", "readings", "alerts", "alerts_by_asset",
            "workflows_started", "approvals_requested",
            "approved", "rejected", "approvals_pending", "work_orders", "work_orders_by_asset",
            "work_order_ids", "bookings", "notifications", "audit_records", "state_dir")


async def _demo(a: argparse.Namespace) -> int:
    from aiotflow.demo import DemoOptions, run_demo

    opts = DemoOptions(broker=a.broker, approve=a.approve, scenario=a.scenario,
                       duration=a.duration, json=a.json, assets=a.assets, speed=a.speed,
                       state_dir=Path(a.state_dir) if a.state_dir else None,
                       scheduling_down=a.scheduling_down, user=a.user)
    summary = await run_demo(opts)
    if a.json:
        print_json(summary)
        return 0
    print()
    table(("", ""), [[k, ", ".join(summary[k]) if isinstance(summary[k], list) else summary[k]]
                     for k in _SUMMARY], title="Summary")
    print(f"\nInspect: aiotflow approvals --state-dir {summary['state_dir']} --all")
    return 0


async def _seed(a: argparse.Namespace) -> int:
    from aiotflow.demo import seed_all
    from aiotflow.edge import ModelBundle
    from aiotflow.tools import OpsDatabase
    from aiotflow.vectorstore import HistoryStore

    s = engine_settings(a)
    bundle = ModelBundle(a.model)
    async with OpsDatabase(s.ops_target) as ops, \
            HistoryStore(settings=s.history_settings) as history:
        n = await seed_all(ops, history, bundle, assets=a.assets.split(","),
                           stale=a.stale.split(",") if a.stale else [], incidents=a.incidents)
    print(json.dumps({"incidents_added": n, "state_dir": str(s.state_dir)}))
    return 0


def register(sub: Any) -> None:
    d = sub.add_parser("demo", help="run the end-to-end demo on embedded defaults")
    d.add_argument("--scenario", choices=SCENARIO_NAMES, default="coolant",
                   help="coolant: diagnosis, approval, on-call booking and work order; "
                        "line-stop: derate on its own, a manager approves the stop; "
                        "bearing: time to the alarm limit, spare part, planned downtime")
    d.add_argument("--broker", help="use this MQTT broker (mqtt://host:port) instead")
    d.add_argument("--approve", choices=["yes", "no"], help="answer approvals unattended")
    d.add_argument("--duration", type=float, default=110.0, help="upper bound, seconds")
    d.add_argument("--json", action="store_true", help="print the summary as JSON")
    d.add_argument("--assets", type=int, default=3)
    d.add_argument("--speed", type=float, default=4.0, help="simulated time per wall second")
    d.add_argument("--state-dir", help="keep state here (default: a new temporary folder)")
    d.add_argument("--scheduling-down", action="store_true",
                   help="point scheduling at a dead service to show the fallback")
    d.add_argument("--user", default=getpass.getuser())
    command(d, _demo, "engine", "train", "demo")

    sd = sub.add_parser("seed", help="seed roster, maintenance logs and incident history")
    sd.add_argument("--model", required=True)
    sd.add_argument("--assets", default="gen-001,gen-002,gen-003")
    sd.add_argument("--stale", default="gen-002", help="assets without recent cooling service")
    sd.add_argument("--incidents", type=int, default=60)
    add_state_options(sd)
    command(sd, _seed, "engine", "train")
