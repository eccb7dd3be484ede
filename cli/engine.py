"""``aiotflow run APP``: run an app's workflows for the alerts on the broker."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ._common import add_state_options, command, engine_settings, stop_event

__all__ = ["register"]


async def _run(a: argparse.Namespace) -> int:
    from aiotflow.workflows import Engine, load_app

    app = load_app(a.app)
    settings = engine_settings(a)
    stop = stop_event()
    async with Engine(app, settings) as engine:
        print(f"aiotflow: running {app.name} ({', '.join(app.workflows)}); "
              f"approve with: aiotflow approve --state-dir {settings.state_dir}",
              file=sys.stderr)
        await stop.wait()
        await engine.drain(10)
    print(json.dumps(engine.stats.as_dict() | {"history": engine.history.stats()}),
          file=sys.stderr)
    return 0


def register(sub: Any) -> None:
    r = sub.add_parser("run", help="run an app's workflows for alerts")
    r.add_argument("app", help="module:attribute, e.g. examples.generator_fleet:app")
    r.add_argument("--broker")
    add_state_options(r)
    command(r, _run, "engine")
