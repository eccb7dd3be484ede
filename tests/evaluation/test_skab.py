"""The SKAB protocol end to end on small recordings made here (the real data stays out)."""

import csv
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aiotflow.edge.errors import ConfigError
from aiotflow.evaluation.skab import TRAIN_ROWS, evaluate, load_file

COLS = ["Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure", "Temperature",
        "Thermocouple", "Voltage", "Volume Flow RateRMS"]


#: the default anomaly: vibration rises, pressure drops (channel, shift in raw units)
PUMP_FAULT = ((0, 0.01), (3, -0.4))
NOISE = np.array([0.001, 0.001, 0.05, 0.05, 0.2, 0.05, 1.5, 0.3])


def write_recording(path: Path, seed: int, start: int, end: int, rows: int = 800,
                    fault: tuple[tuple[int, float], ...] = PUMP_FAULT) -> None:
    """A pump recording in SKAB's format with one anomaly [start, end): ``fault`` shifts."""
    rng = np.random.default_rng(seed)
    base = np.array([0.027, 0.04, 1.3, 0.3, 79.0, 26.0, 233.0, 32.0])
    t0 = dt.datetime(2020, 3, 9, 10, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, delimiter=";")
        w.writerow(["datetime", *COLS, "anomaly", "changepoint"])
        for i in range(rows):
            x = base + NOISE * rng.standard_normal(8)
            anomalous = start <= i < end
            if anomalous:
                for ch, shift in fault:
                    x[ch] += shift
            cp = 1.0 if i in (start, end) else 0.0
            w.writerow([(t0 + dt.timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S"),
                        *[f"{v:.6f}" for v in x], float(anomalous), cp])


@pytest.fixture
def skab_dir(tmp_path: Path) -> Path:
    write_recording(tmp_path / "valve1" / "0.csv", 1, 500, 650)
    write_recording(tmp_path / "other" / "1.csv", 2, 600, 700)
    write_recording(tmp_path / "anomaly-free" / "anomaly-free.csv", 3, 10**6, 10**6)
    return tmp_path


def test_protocol_detects_the_anomalies(skab_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred"
    r = evaluate(skab_dir, "pca", predictions=out)
    assert r["files"] == 2  # anomaly-free/ is not evaluated
    assert r["rows"] == 2 * (800 - TRAIN_ROWS)
    assert r["f1"] >= 0.9 and r["far"] <= 5 and r["mar"] <= 10
    assert r["nab_standard"] > 30 and r["true_cps"] == 4
    rows = list(csv.reader((out / "valve1" / "0.csv").open(), delimiter=";"))
    assert rows[0] == ["datetime", "anomaly_pred"] and len(rows) == 1 + 800 - TRAIN_ROWS
    assert rows[1][0] == "2020-03-09 10:06:40"  # row 400
    preds = [int(p) for _, p in rows[1:]]
    assert sum(preds[100:250]) > 140 and sum(preds[:90]) == 0


def test_cli_json_and_bad_dir(skab_dir: Path, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "aiotflow", "eval", "skab", str(skab_dir),
                          "--json"], capture_output=True, check=True, timeout=120)
    r = json.loads(out.stdout)
    for key in ("f1", "far", "mar", "nab_standard", "nab_lowfp", "nab_lowfn", "files",
                "detector"):
        assert key in r
    with pytest.raises(ConfigError):
        evaluate(tmp_path / "empty", "pca")
    with pytest.raises(ConfigError):
        evaluate(skab_dir, "no-such-detector")
    bad = tmp_path / "bad.csv"
    bad.write_text("a;b\n1;2\n")
    with pytest.raises(ConfigError):
        load_file(bad)
