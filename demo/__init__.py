"""aiotflow demo: the whole product on embedded defaults (``make demo``).

Demo tooling, not part of a deployment: the in-process MQTT broker (amqtt), the seeded roster,
maintenance logs and incident history, and the run that ties edge, engine and console
together. Needs every extra (``pip install 'aiotflow[all]'``).
"""

from aiotflow.extras import require as _require

_require("engine", "train", feature="aiotflow.demo")

from .broker import DemoBroker
from .run import DemoOptions, demo_app, run_demo
from .seed import history_incidents, seed_all, seed_maintenance, seed_roster

__all__ = [
    "DemoBroker",
    "DemoOptions",
    "demo_app",
    "history_incidents",
    "run_demo",
    "seed_all",
    "seed_maintenance",
    "seed_roster",
]
