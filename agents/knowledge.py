"""Domain knowledge of the maintenance agent: failure modes, systems, skills, actions.

Kept as data so a deployment can extend it without touching the graph.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["FAILURE_MODES", "FailureMode", "failure_mode"]


class FailureMode(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str
    title: str
    system: str
    skill: str
    action: str
    hours: float = 4.0
    #: channels whose deviation corroborates this mode, with the expected sign of z
    signature: dict[str, int] = {}
    #: running on risks a breakdown: the machine should be stopped (by a person's decision)
    stop_required: bool = False
    #: if it runs to failure: repair cost and unplanned downtime (for cost-of-stopping)
    breakdown_cost_usd: float = 0.0
    breakdown_downtime_h: float = 0.0
    #: the condition channel and its alarm limit, for time-to-limit estimates
    alarm_channel: str | None = None
    alarm_limit: float | None = None


FAILURE_MODES: dict[str, FailureMode] = {
    m.key: m
    for m in (
        FailureMode(
            key="coolant_pump", title="coolant pump failure", system="cooling", skill="cooling",
            action="inspect the coolant pump (impeller, mechanical seal, drive belt), check "
                   "coolant flow and level, replace the pump if flow is low",
            signature={"coolant_temp_c": +1, "oil_pressure_bar": -1},
            breakdown_cost_usd=12_000, breakdown_downtime_h=48),
        FailureMode(
            key="thermostat", title="stuck thermostat", system="cooling", skill="cooling",
            action="test and replace the thermostat", hours=2.0,
            signature={"coolant_temp_c": +1}),
        FailureMode(
            key="bearing_wear", title="bearing wear", system="mechanical", skill="mechanical",
            action="vibration survey, inspect and replace alternator/engine bearings",
            hours=6.0, signature={"vibration_mm_s": +1},
            breakdown_cost_usd=30_000, breakdown_downtime_h=120,
            # ISO 10816-3, group 1 machines on rigid foundations: zone C/D boundary
            alarm_channel="vibration_mm_s", alarm_limit=7.1),
        FailureMode(
            key="injector", title="injector fault", system="fuel", skill="fuel_systems",
            action="cylinder balance test, replace or recalibrate the faulty injector",
            signature={"exhaust_temp_c": +1, "fuel_rate_lph": +1}),
        FailureMode(
            key="sensor_dropout", title="sensor drop-out", system="instrumentation",
            skill="instrumentation", action="check the transmitter loop wiring and replace "
                                            "the sensor", hours=2.0,
            signature={"oil_pressure_bar": -1}),
        FailureMode(
            key="oil_starvation", title="lubricating oil loss", system="lubrication",
            skill="mechanical", action="stop the engine, find and repair the oil leak (lines, "
            "fittings, seals), refill, inspect the main bearings before restart", hours=4.0,
            signature={"oil_pressure_bar": -1}, stop_required=True,
            breakdown_cost_usd=85_000, breakdown_downtime_h=336),
        FailureMode(
            key="none", title="no fault found", system="none", skill="general",
            action="no action", hours=0.0),
    )
}


def failure_mode(key: str | None) -> FailureMode | None:
    return FAILURE_MODES.get(key or "")
