"""aiotflow simulator: a diesel-generator fleet with physically plausible failure modes.

Tooling beside the edge runtime: it publishes live telemetry (``aiotflow simulate``) and
makes the training data and synthetic incident history of the demo and the tests.
"""

from .fleet import CHANNELS, FAULT_MODES, FaultSpec, Fleet, GeneratorSim, parse_fault, publish_fleet

__all__ = [
    "CHANNELS",
    "FAULT_MODES",
    "FaultSpec",
    "Fleet",
    "GeneratorSim",
    "parse_fault",
    "publish_fleet",
]
