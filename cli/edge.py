"""``aiotflow edge`` (the gateway runtime) and ``aiotflow simulate`` (test telemetry)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ._common import (
    add_metrics_options,
    add_mqtt_options,
    command,
    mqtt_overrides,
    observed,
    stop_event,
)

__all__ = ["register"]


async def _edge(a: argparse.Namespace) -> int:
    from aiotflow.edge.config import EdgeSettings
    from aiotflow.edge.runtime import EdgeRuntime

    if a.action == "keygen":
        return _keygen(a)
    if not a.config:
        print("error: aiotflow edge needs --config", file=sys.stderr)
        return 2
    settings = EdgeSettings.load(a.config)
    stop = stop_event()
    runtime = EdgeRuntime(settings, stats_file=a.stats_file)
    with observed(a, "aiotflow-edge", runtime.metrics):
        stats = await runtime.run_until(stop)
    print(json.dumps({k: v for k, v in stats.as_dict().items() if k != "invalid_reasons"}),
          file=sys.stderr)
    return 0


def _keygen(a: argparse.Namespace) -> int:
    """The edge's key (its file, 0600) and the engine's trust-list entry for it."""
    from pathlib import Path

    from aiotflow.keys import load_or_create_key

    path = Path(a.out)
    existed = path.exists()
    key = load_or_create_key(path, a.name or a.site or "edge")
    print(f"# {'the existing' if existed else 'a new'} key in {path}; for the engine:",
          file=sys.stderr)
    site = a.site or "SITE"
    print(f'[[engine.trust.edges]]\nname = "{key.name}"\nsites = ["{site}"]\n'
          f'public_key = "{key.public_key}"')
    return 0


async def _simulate(a: argparse.Namespace) -> int:
    from aiotflow.contracts.mqtt import MqttSettings
    from aiotflow.simulator import Fleet, parse_fault, publish_fleet

    mqtt = MqttSettings(**mqtt_overrides(a))
    faults = [parse_fault(f, ramp=a.ramp) for f in a.fault]
    fleet = Fleet(a.assets, site=a.site, seed=a.seed, faults=faults)
    sent = await publish_fleet(fleet, mqtt=mqtt, rate_hz=a.rate,
                               duration=a.duration, speed=a.speed, stop=stop_event())
    print(json.dumps({"published": sent, "assets": a.assets,
                      "faults": [f.__dict__ for f in faults]}), file=sys.stderr)
    return 0


def register(sub: Any) -> None:
    e = sub.add_parser("edge", help="run the edge runtime (what a gateway runs); "
                                    "`edge keygen` makes its signing key")
    e.add_argument("action", nargs="?", choices=["run", "keygen"], default="run")
    e.add_argument("--config", help="TOML file (see README); needed to run")
    e.add_argument("--out", default="edge.key", help="keygen: the key file (default edge.key)")
    e.add_argument("--site", help="keygen: the site this edge speaks for")
    e.add_argument("--name", help="keygen: the edge's name (default: the site)")
    e.add_argument("--stats-file", help="write a JSON summary here (periodically and at exit)")
    add_metrics_options(e)
    command(e, _edge)

    s = sub.add_parser("simulate", help="publish simulated generator telemetry")
    add_mqtt_options(s, default="mqtt://127.0.0.1:1883")
    s.add_argument("--assets", type=int, default=3)
    s.add_argument("--rate", type=float, default=2.0, help="readings per second per asset")
    s.add_argument("--fault", action="append", default=[], metavar="ASSET:MODE@SECONDS")
    s.add_argument("--ramp", type=float, default=60.0, help="seconds to full fault severity")
    s.add_argument("--duration", type=float, help="simulated seconds (default: until Ctrl-C)")
    s.add_argument("--speed", type=float, default=1.0, help="simulated time per wall second")
    s.add_argument("--site", default="plant-1")
    s.add_argument("--seed", type=int, default=7)
    command(s, _simulate)
