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


FAILURE_MODES: dict[str, FailureMode] = {
    m.key: m
    for m in (
        FailureMode(
            key="coolant_pump", title="coolant pump failure", system="cooling", skill="cooling",
            action="inspect the coolant pump (impeller, mechanical seal, drive belt), check "
                   "coolant flow and level, replace the pump if flow is low",
            signature={"coolant_temp_c": +1, "oil_pressure_bar": -1}),
        FailureMode(
            key="thermostat", title="stuck thermostat", system="cooling", skill="cooling",
            action="test and replace the thermostat", hours=2.0,
            signature={"coolant_temp_c": +1}),
        FailureMode(
            key="bearing_wear", title="bearing wear", system="mechanical", skill="mechanical",
            action="vibration survey, inspect and replace alternator/engine bearings",
            hours=6.0, signature={"vibration_mm_s": +1}),
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
            key="none", title="no fault found", system="none", skill="general",
            action="no action", hours=0.0),
    )
}


def failure_mode(key: str | None) -> FailureMode | None:
    return FAILURE_MODES.get(key or "")
