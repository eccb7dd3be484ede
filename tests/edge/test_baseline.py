"""The operating point an alert carries: an EWMA of each asset's normal windows."""

import math

import numpy as np
import pytest

from aiotflow.edge.baseline import OperatingPoint

from .helpers import runs_of


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


def _reference(windows: list[tuple[str, float, list[float]]], tau: float) -> dict:
    """The operating point's definition, one window at a time, in plain Python."""
    level: dict[str, list[float]] = {}
    last: dict[str, float] = {}
    for key, ts, means in windows:
        if not all(math.isfinite(v) for v in means):
            continue
        if key not in level:
            level[key], last[key] = list(means), ts
            continue
        a = 1.0 - math.exp(-max(ts - last[key], 1.0) / tau)
        last[key] = max(ts, last[key])
        level[key] = [x + a * (v - x) for x, v in zip(level[key], means, strict=True)]
    return level


@pytest.mark.parametrize(("time_goes_back", "runs", "by_runs"), [
    (False, False, False), (True, False, False), (False, True, False), (True, True, False),
    (False, True, True), (True, True, True), (False, False, True)])
def test_a_batch_folds_in_as_its_windows_one_by_one(time_goes_back: bool, runs: bool,
                                                    by_runs: bool) -> None:
    """Windows of keys interleaved, or in runs of a key (as a batched message's windows
    come: a batch then often holds each key in one run, the path without a sort);
    ``by_runs``: handed over as the runtime does, a key and a length per run
    (``update_runs``)."""
    rng = np.random.default_rng(7)
    tau = 50.0
    windows: list[tuple[str, float, list[float]]] = []
    clock = {k: 1000.0 for k in "abcdef"}
    key, left = "a", 0
    for _ in range(2000):
        if not runs:
            key = "abcdef"[int(rng.integers(6))]
        elif left == 0:
            key, left = "abcdef"[int(rng.integers(6))], int(rng.integers(1, 60))
        left = max(left - 1, 0)
        step = float(rng.choice([0.0, 0.5, 1.0, 2.0, 300.0]))  # replays, gaps, long gaps
        if time_goes_back and rng.random() < 0.05:
            step = -20.0
        clock[key] += step
        means = rng.normal(50, 10, size=3).tolist()
        if rng.random() < (0.002 if runs else 0.03):
            means[int(rng.integers(3))] = float("nan")
        windows.append((key, clock[key], means))
    op = OperatingPoint(["x", "y", "z"], tau_s=tau)
    i, cut = 0, None
    while i < len(windows):  # batches of every size, 1 to 300
        n = int(rng.integers(1, 300))
        chunk = windows[i:i + n]
        if by_runs:
            run_keys, lengths = runs_of([w[0] for w in chunk])
            op.update_runs(run_keys, lengths, [w[1] for w in chunk], [w[2] for w in chunk])
        else:
            op.update_many([w[0] for w in chunk], [w[1] for w in chunk],
                           [w[2] for w in chunk])
        i += n
        if cut is None and i >= 600:  # "c" evicted: seen again, it starts over
            op.forget("c")
            cut = i
    assert cut is not None
    expected = _reference([w for w in windows[:cut] if w[0] != "c"] + windows[cut:], tau)
    assert len(op) == len(expected) == 6
    for key, level in expected.items():
        np.testing.assert_allclose(list(op.get(key).values()), level, rtol=1e-5)
        np.testing.assert_allclose(op._level[op._row[key]], level, rtol=1e-9, atol=1e-9)
