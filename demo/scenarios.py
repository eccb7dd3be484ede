"""The demo's scenarios: which fault the simulator injects, which agent answers it, and
what the plant is seeded with (``aiotflow demo --scenario NAME``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aiotflow.agents.bearing import register_bearing_agent
from aiotflow.agents.line_stop import register_line_stop_agent
from aiotflow.agents.maintenance import register_maintenance_agent
from aiotflow.tools.policy import Policy, TierRule
from aiotflow.workflows.app import App
from aiotflow.workflows.filters import AlertFilter

__all__ = ["SCENARIOS", "Scenario", "scenario_app"]


@dataclass(frozen=True)
class Scenario:
    name: str
    fault_mode: str
    shows: str
    register: Callable[[App], None]
    #: the engine's policy for this scenario (None: the default one)
    policy: Policy | None = None
    #: incidents of rare patterns added to the seeded history
    rare_modes: dict[str, int] = field(default_factory=dict)
    #: the faulty asset's vibration surveys rise (slow wear)
    wearing: bool = False


def _line_stop_policy() -> Policy:
    default = Policy()
    return default.model_copy(update={"tiers": default.tiers | {
        "critical": TierRule(mode="approval", approvers=["manager"], escalate_after_s=600,
                             escalate_to=["plant_manager"], expires_s=3600)}})


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("coolant", "coolant_pump",
             "similar incidents -> diagnosis with evidence -> approval -> the on-call cooling "
             "technician booked and a work order opened (--scheduling-down: an operator is "
             "notified instead)",
             lambda app: register_maintenance_agent(app)),
    Scenario("line-stop", "oil_leak",
             "oil loss: the agent derates the machine on its own (reversible, bounded) and "
             "asks a manager to approve the stop, with the cost of stopping against running "
             "on; the request escalates and expires by policy",
             lambda app: register_line_stop_agent(
                 app, when=AlertFilter(asset_types=["generator"])),
             policy=_line_stop_policy(), rare_modes={"oil_leak": 12}),
    Scenario("bearing", "bearing_wear",
             "slow bearing wear: time to the alarm limit from the survey trend, the spare "
             "part ordered (out of stock; above the spend limit, so it is in the approval), "
             "the job booked into the next planned downtime window",
             lambda app: register_bearing_agent(app), wearing=True),
)}


def scenario_app(name: str) -> App:
    """The app of scenario ``name``: its agent for every generator alert."""
    app = App(f"generator-fleet-{name}")
    SCENARIOS[name].register(app)
    return app
