"""The SKAB scorer on small cases worked out by hand."""

import math

import pytest

from aiotflow.evaluation.metrics import BinaryCounts, NabTotals, changepoints, nab_file, nab_windows


def test_binary_counts_and_rates() -> None:
    c = BinaryCounts().add([1, 1, 0, 0], [1, 0, 1, 0])
    # TP 1, FN 1, FP 1, TN 1: F1 = 1 / (1 + (1 + 1) / 2) = 0.5, FAR = 1/2, MAR = 1/2
    assert (c.tp, c.tn, c.fp, c.fn) == (1, 1, 1, 1)
    assert (c.f1, c.far, c.mar) == (0.5, 50.0, 50.0)
    c.add([1, 1, 1], [1, 1, 1])  # summed over files: TP 4
    assert (c.f1, c.far, c.mar) == (0.8, 50.0, 20.0)  # 4 / (4 + 1), 1/2, 1/5
    with pytest.raises(ValueError):
        c.add([1], [1, 0])


def test_changepoints_of_a_prediction() -> None:
    assert changepoints([0, 1, 1, 0, 0]).tolist() == [0, 1, 0, 1, 0]
    assert changepoints([1, 1, 0]).tolist() == [1, 0, 1]  # first value 1 is a change


def test_windows_cut_on_the_right() -> None:
    assert nab_windows([0, 30, 200], 60) == [(0, 60), (60, 90), (200, 260)]


def score(times, true_cp, pred_cp, profile="standard"):  # type: ignore[no-untyped-def]
    return nab_file(times, true_cp, pred_cp, width=60).result(profile)


T = list(range(0, 121))  # one row per second, 0..120


def at(*idx: int) -> list[int]:
    return [1 if i in idx else 0 for i in T]


def test_detection_at_the_window_start_is_perfect() -> None:
    # reward A_tp = 1; S_null = -1, S_perfect = 1 -> 100 * (1 + 1) / 2
    assert score(T, at(10), at(10)) == 100.0


def test_detection_at_the_window_end_earns_a_fp() -> None:
    # event 1000 -> last point of the curve = A_fp: 100 * (-0.11 + 1) / 2 = 44.5
    assert score(T, at(10), at(70)) == 44.5
    assert score(T, at(10), at(70), "lowfp") == 39.0  # (-0.22 + 1) / 2


def test_detection_in_the_middle() -> None:
    # event 500: x = -pi/2 + 500 pi / 999; reward = 0.555 * (1 - tanh(x)/tanh(pi/2)) - 0.11
    x = -math.pi / 2 + 500 * math.pi / 999
    reward = 0.555 * (1 - math.tanh(x) / math.tanh(math.pi / 2)) - 0.11
    assert score(T, at(10), at(40)) == round(100 * (reward + 1) / 2, 2)
    assert 44.0 < score(T, at(10), at(40)) < 72.3


def test_miss_and_false_positives() -> None:
    assert score(T, at(10), at()) == 0.0  # FN: S = S_null
    assert score(T, at(10), at(10, 100)) == 94.5  # (1 - 0.11 + 1) / 2
    assert score(T, at(10), at(10, 100), "lowfn") == round(100 * (0.89 + 2) / 3, 2)
    # a detection before the window is a FP too; the first one inside still counts
    assert score(T, at(50), at(5, 50, 60)) == 94.5


def test_only_the_first_detection_in_a_window_counts() -> None:
    assert score(T, at(10), at(10, 20, 30)) == 100.0


def test_overlapping_windows_and_totals_over_files() -> None:
    # CPs at 0 and 30: windows [0, 60] and [60, 90]; a detection at 45 fits only the first
    tot = nab_file(T, at(0, 30), at(45), width=60)
    assert (tot.windows, tot.missed, tot.false_positives) == (2, 1, 0)
    assert tot.null["standard"] == -2 and tot.perfect["standard"] == 2
    nab_file(T, at(10), at(10), width=60, totals=tot)  # a second, perfect file
    assert tot.windows == 3 and isinstance(tot, NabTotals)
    assert 0 < tot.result("standard") < 100


def test_merging_per_file_results_equals_one_pass() -> None:
    t = [0.0, 10.0, 20.0, 30.0, 40.0]
    files = [([0, 1, 0, 0, 0], [0, 0, 1, 0, 1], [0, 1, 1, 0, 0]),
             ([0, 0, 0, 1, 0], [1, 0, 0, 0, 0], [0, 0, 0, 1, 1])]
    together, counts_together = NabTotals(), BinaryCounts()
    merged, counts_merged = NabTotals(), BinaryCounts()
    for cp, pred, label in files:
        nab_file(t, cp, changepoints(pred), width=15.0, totals=together)
        counts_together.add(label, pred)
        merged.merge(nab_file(t, cp, changepoints(pred), width=15.0))
        counts_merged.merge(BinaryCounts().add(label, pred))
    assert merged == together
    assert counts_merged == counts_together
    assert together.windows == 2 and together.false_positives > 0
    for profile in ("standard", "lowfp", "lowfn"):
        assert merged.result(profile) == together.result(profile)
