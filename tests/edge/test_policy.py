import numpy as np
import pytest

from aiotflow.edge.policy import AlertPolicy, PolicySettings, severity_for

from .helpers import runs_of

T = 1.0


def feed(policy: AlertPolicy, scores: list[float], start: float = 0.0) -> list[float]:
    """Alert times for a sequence of scores one second apart."""
    out = []
    for i, s in enumerate(scores):
        ep = policy.update("a", start + i, s, T)
        if ep is not None:
            out.append(ep.ts)
    return out


def test_k_in_a_row_opens_one_alert_per_episode() -> None:
    p = AlertPolicy(PolicySettings(k=3, clear=2, cooldown_s=0))
    assert feed(p, [2, 2, 0, 2, 2, 2, 2, 2, 2]) == [5.0]


def test_episode_start_is_first_anomalous_window() -> None:
    p = AlertPolicy(PolicySettings(k=2, cooldown_s=0))
    ep = None
    for i, s in enumerate([0, 5, 5]):
        ep = p.update("a", float(i), s, T) or ep
    assert ep is not None and ep.start == 1.0 and ep.ts == 2.0


def test_hysteresis_keeps_episode_open_near_threshold() -> None:
    p = AlertPolicy(PolicySettings(k=1, clear=2, clear_ratio=0.5, cooldown_s=0))
    # 0.9 is below threshold but above 0.5*threshold: the episode stays open
    assert feed(p, [2, 0.9, 0.9, 0.9, 2]) == [0.0]
    # two clearly normal windows close it; the next anomaly alerts again
    assert feed(p, [0.1, 0.1, 2], start=10) == [12.0]


def test_cooldown_suppresses_second_episode() -> None:
    p = AlertPolicy(PolicySettings(k=1, clear=1, cooldown_s=100))
    assert feed(p, [2, 0, 2, 0, 2]) == [0.0]
    assert p.suppressed == 2
    assert feed(p, [0, 2], start=200) == [201.0]


def test_assets_are_independent() -> None:
    p = AlertPolicy(PolicySettings(k=2, cooldown_s=0))
    assert p.update("a", 0, 5, T) is None
    assert p.update("b", 0, 5, T) is None
    assert p.update("a", 1, 5, T) is not None
    assert p.in_episode("a") and not p.in_episode("b")


def test_severity() -> None:
    assert severity_for(1.5, 1) == "warning"
    assert severity_for(2.5, 1) == "major"
    assert severity_for(9, 1) == "critical"


@pytest.mark.parametrize("by_runs", [False, True])
def test_a_batch_decides_as_its_windows_one_by_one(by_runs: bool) -> None:
    """``update_many`` opens the same episodes at the same windows and calls the same
    windows normal as ``update`` then ``in_episode`` one window at a time; so does
    ``update_runs``, given a key and a length per run of windows as the runtime gives."""
    import random

    rnd = random.Random(5)
    settings = PolicySettings(k=2, clear=2, clear_ratio=0.8, cooldown_s=150.0)
    one, many = AlertPolicy(settings), AlertPolicy(settings)
    clock = 0.0
    windows = []
    for _ in range(6000):  # bursts of anomalies, scores at the threshold, many assets
        clock += 1.0
        key = f"a{rnd.randrange(5)}"
        hot = rnd.random() < (0.5 if int(clock) // 200 % 2 else 0.05)
        score = rnd.uniform(1.0, 3.0) if hot else rnd.choice([rnd.uniform(0, 0.79), 0.9, 1.0])
        windows.append((key, clock, score))
    expected_eps, expected_normal = [], []
    for i, (key, ts, score) in enumerate(windows):
        ep = one.update(key, ts, score, 1.0)
        if ep is not None:
            expected_eps.append((i, ep))
        if score < 1.0 and not one.in_episode(key):
            expected_normal.append(i)
    got_eps, got_normal = [], []
    i = 0
    while i < len(windows):
        chunk = windows[i:i + rnd.randrange(1, 200)]
        if by_runs:
            keys, lengths = runs_of([w[0] for w in chunk])
            eps, normal = many.update_runs(keys, lengths, [w[1] for w in chunk],
                                           np.array([w[2] for w in chunk]), 1.0)
        else:
            eps, normal = many.update_many([w[0] for w in chunk], [w[1] for w in chunk],
                                           [w[2] for w in chunk], 1.0)
        got_eps += [(i + j, ep) for j, ep in eps]
        got_normal += [i + j for j in normal]
        i += len(chunk)
    assert got_eps == expected_eps and len(expected_eps) > 10
    assert got_normal == expected_normal
    assert many.suppressed == one.suppressed > 0
