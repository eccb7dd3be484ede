import numpy as np
import pytest

from aiotflow.edge.errors import ConfigError
from aiotflow.simulator.fleet import CHANNELS, Fleet, parse_fault


def test_parse_fault() -> None:
    f = parse_fault("gen-002:coolant_pump@20", ramp=10)
    assert (f.asset, f.mode, f.at, f.ramp) == ("gen-002", "coolant_pump", 20.0, 10)
    assert f.severity(19) == 0 and f.severity(25) == 0.5 and f.severity(99) == 1
    for bad in ("gen-002", "gen-002:melting@3", "gen-002:injector@soon", ":injector@1"):
        with pytest.raises(ConfigError):
            parse_fault(bad)


def test_unknown_fault_asset() -> None:
    with pytest.raises(ConfigError):
        Fleet(2, faults=[parse_fault("gen-009:injector@1")])


@pytest.mark.parametrize(("mode", "channel", "sign"), [
    ("coolant_pump", "coolant_temp_c", +1),
    ("bearing_wear", "vibration_mm_s", +1),
    ("injector", "fuel_rate_lph", +1),
    ("sensor_dropout", "oil_pressure_bar", -1),
])
def test_fault_moves_its_channel(mode: str, channel: str, sign: int) -> None:
    healthy = Fleet(1, seed=3).matrix(300, 2)["gen-001"]
    faulty = Fleet(1, seed=3, faults=[parse_fault(f"gen-001:{mode}@30", ramp=30)]
                   ).matrix(300, 2)["gen-001"]
    i = CHANNELS.index(channel)
    before = np.abs(faulty[:50, i] - healthy[:50, i]).max()
    after = (faulty[-100:, i] - healthy[-100:, i]).mean() * sign
    assert before < 1e-9  # identical until the fault starts
    assert after > 0.5
