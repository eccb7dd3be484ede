"""The operating point an alert carries: an EWMA of each asset's normal windows."""

import math

import numpy as np
import pytest

from aiotflow.edge.baseline import OperatingPoint


def test_follows_normal_levels_per_asset_with_its_time_constant() -> None:
    op = OperatingPoint(["flow", "temp"], tau_s=100.0)
    assert op.get("a") == {} and len(op) == 0
    op.update("a", 0.0, [30.0, 70.0])
    assert op.get("a") == {"flow": 30.0, "temp": 70.0}  # the first window sets it
    op.update("a", 100.0, [40.0, 70.0])  # one time constant later
    assert op.get("a")["flow"] == pytest.approx(30 + 10 * (1 - math.exp(-1)), rel=1e-5)
    op.update("b", 5.0, [76.0, 92.0])
    assert op.get("b") == {"flow": 76.0, "temp": 92.0} and len(op) == 2
    before = op.get("a")
    op.update("a", 200.0, [np.nan, 70.0])  # a bad window is skipped, not folded in
    op.update("a", 200.0, [1.0])  # wrong shape too
    assert op.get("a") == before


def test_tracks_a_load_change_and_ignores_time_going_back() -> None:
    op = OperatingPoint(["load"], tau_s=60.0)
    for t in range(0, 600, 2):
        op.update("g", float(t), [0.4])
    for t in range(600, 1200, 2):
        op.update("g", float(t), [0.8])
    assert op.get("g")["load"] == pytest.approx(0.8, abs=1e-3)  # ten time constants on
    op.update("g", 10.0, [0.0])  # out of order: a tiny step, not a jump
    assert op.get("g")["load"] > 0.78
    with pytest.raises(ValueError):
        OperatingPoint(["x"], tau_s=0)
