"""``aiotflow run APP``: run an app's workflows for the alerts on the broker."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from ._common import (
    add_metrics_options,
    add_mqtt_options,
    add_state_options,
    command,
    engine_settings,
    observed,
    stop_event,
)

__all__ = ["register"]


async def _run(a: argparse.Namespace) -> int:
    from aiotflow.workflows import load_app

    app = load_app(a.app)
    settings = engine_settings(a)
    stop = stop_event()
    with observed(a, "aiotflow-engine") as server:
        return await _serve(app, settings, stop, server)


async def _serve(app: Any, settings: Any, stop: asyncio.Event, server: Any) -> int:
    from aiotflow.workflows import Engine

    engine = Engine(app, settings)
    if server is not None:
        server.registry.register(engine.metrics.registry)
    async with engine:
        where = (f"--state-url {engine.control.database.name}" if settings.state_url
                 else f"--state-dir {settings.state_dir}")
        print(f"aiotflow: running {app.name} ({', '.join(app.workflows)}) as worker "
              f"{engine.worker_id}; approve with: aiotflow approve {where}", file=sys.stderr)
        superseded = asyncio.ensure_future(engine.superseded.wait())
        await asyncio.wait([asyncio.ensure_future(stop.wait()), superseded],
                           return_when=asyncio.FIRST_COMPLETED)
        await engine.drain(10)
    if engine.superseded.is_set():
        print(f"aiotflow: another process registered as worker {engine.worker_id}; "
              "it has this worker's runs now: exiting", file=sys.stderr)
        return 3
    print(json.dumps(engine.stats.as_dict() | {"history": engine.history.stats()}),
          file=sys.stderr)
    return 0


def register(sub: Any) -> None:
    r = sub.add_parser("run", help="run an app's workflows for alerts")
    r.add_argument("app", help="module:attribute, e.g. examples.generator_fleet:app")
    add_mqtt_options(r)
    r.add_argument("--worker-id", help="this worker's name among several on one --state-url "
                                       "(default: generated from host and pid)")
    add_state_options(r)
    add_metrics_options(r)
    command(r, _run, "engine")
