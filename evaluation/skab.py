"""The SKAB evaluation protocol, through the same path as the edge runtime.

For each recording with anomalies (every CSV under the root except ``anomaly-free/``):
the detector is fitted on the first 400 rows only and exported as a model bundle
(skl2onnx), the bundle is loaded by ONNX Runtime, every row is streamed through the
runtime's :class:`~aiotflow.edge.features.WindowBuffer`, windows are scored by the bundle and
turned into episodes by the runtime's :class:`~aiotflow.edge.policy.AlertPolicy`. A test row is
predicted anomalous when it lies inside an episode (from the episode's first anomalous
window, which the alert reports as ``episode_start``). Metrics: :mod:`aiotflow.evaluation.metrics`.
"""

from __future__ import annotations

import csv
import datetime as dt
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from aiotflow.contracts.errors import ConfigError
from aiotflow.edge.baseline import OperatingPoint
from aiotflow.edge.bundle import ModelBundle
from aiotflow.edge.features import WindowBuffer
from aiotflow.edge.policy import AlertPolicy, PolicySettings
from aiotflow.training.presets import DETECTORS, DetectorConfig
from aiotflow.training.train import train_bundle

from .metrics import BinaryCounts, NabTotals, changepoints, nab_file

__all__ = [
    "FileScore",
    "SkabFile",
    "evaluate",
    "load_file",
    "score_file",
    "skab_files",
    "stream",
    "summarise",
    "training_rows",
]

TRAIN_ROWS = 400


@dataclass
class SkabFile:
    name: str
    times: npt.NDArray[np.float64]  # epoch seconds
    channels: list[str]
    x: npt.NDArray[np.float64]  # [rows, channels]
    anomaly: npt.NDArray[np.int8]
    changepoint: npt.NDArray[np.int8]


def load_file(path: Path, root: Path | None = None) -> SkabFile:
    """Read one SKAB CSV (``;``-separated, ``datetime`` first, labels last)."""
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh, delimiter=";"))
    if not rows or rows[0][0] != "datetime" or rows[0][-2:] != ["anomaly", "changepoint"]:
        raise ConfigError("not a SKAB file (datetime; ...; anomaly; changepoint)",
                          field=str(path))
    body = [r for r in rows[1:] if r]
    times = np.array([dt.datetime.fromisoformat(r[0]).timestamp() for r in body])
    data = np.array([[float(v) for v in r[1:]] for r in body])
    return SkabFile(name=str(path.relative_to(root)) if root else path.name, times=times,
                    channels=rows[0][1:-2], x=data[:, :-2],
                    anomaly=data[:, -2].astype(np.int8), changepoint=data[:, -1].astype(np.int8))


def skab_files(root: Path) -> list[Path]:
    """Every recording with anomalies under ``root`` (``anomaly-free/`` excluded)."""
    files = sorted(p for p in root.rglob("*.csv") if "anomaly-free" not in p.parts)
    if not files:
        raise ConfigError("no SKAB recordings (*.csv) found", field=str(root))
    return files


def _fit_bundle(cfg: DetectorConfig, train: npt.NDArray[np.float64], channels: list[str],
                out: Path) -> ModelBundle:
    return train_bundle([train], channels=channels, out=out, window=cfg.window, hop=1,
                        sample_rate_hz=1.0, features=cfg.features, name=f"skab-{cfg.name}",
                        version="eval", asset_type="pump", margin=cfg.margin,
                        quantile=cfg.quantile, variance=cfg.variance, detector=cfg.kind,
                        embedding=cfg.embedding)


@dataclass
class Scored:
    """One recording streamed through the edge path."""

    rows: npt.NDArray[np.int64]  # row index at each scored window's end
    embeddings: npt.NDArray[np.float32]  # [windows, D], the bundle's embedding
    scores: npt.NDArray[np.float32]
    alerts: list[int]  # rows at which an episode opened (an alert was raised)
    pred: npt.NDArray[np.int8]  # 0/1 per test row (rows after the first 400)
    #: the asset's operating point at each scored window (as the runtime publishes it)
    baselines: list[dict[str, float]]


def training_rows(f: SkabFile, *, normal_only: bool = False) -> npt.NDArray[np.float64]:
    """The first 400 rows (SKAB's training segment), or those of them labelled normal."""
    train = f.x[:TRAIN_ROWS]
    return train[f.anomaly[:TRAIN_ROWS] == 0] if normal_only else train


def stream(f: SkabFile, cfg: DetectorConfig, workdir: Path, *,
           normal_only: bool = False) -> Scored:
    """Fit on the first 400 rows, export, and stream every row through the runtime path.

    ``normal_only``: fit on the rows of those 400 labelled normal (SKAB's protocol fits on
    all of them; a few recordings have a fault inside, e.g. other/2 from row 104).
    """
    bundle = _fit_bundle(cfg, training_rows(f, normal_only=normal_only), f.channels,
                         workdir / "model.onnx")
    meta = bundle.meta
    buf = WindowBuffer(meta.channels, meta.window, 1)
    ring = buf.ring("asset")
    assert ring is not None  # no asset limit: always made
    due_rows, windows = [], []
    for i, row in enumerate(f.x):
        if buf.push(ring, float(f.times[i]), dict(zip(meta.channels, row.tolist(),
                                                      strict=True))):
            due_rows.append(i)
            windows.append(buf.window(ring))
    stacked = np.stack(windows)
    emb, scores = bundle.score_windows(stacked)
    means = stacked.mean(axis=1)
    policy = AlertPolicy(PolicySettings(k=cfg.k, clear=cfg.clear, clear_ratio=cfg.clear_ratio,
                                        cooldown_s=0))
    point = OperatingPoint(meta.channels)
    pred = np.zeros(len(f.x), dtype=np.int8)
    alerts = []
    baselines = []
    for n, (i, s) in enumerate(zip(due_rows, scores, strict=True)):
        if policy.update("asset", float(i), float(s), meta.threshold) is not None:
            alerts.append(i)
        point.observe(policy, "asset", float(f.times[i]), float(s), meta.threshold, means[n])
        baselines.append(point.get("asset"))
        start = policy.episode_start("asset")
        if start is not None:
            pred[int(start):i + 1] = 1
    return Scored(rows=np.asarray(due_rows), embeddings=emb, scores=scores, alerts=alerts,
                  pred=pred[TRAIN_ROWS:], baselines=baselines)


def predict(f: SkabFile, cfg: DetectorConfig, workdir: Path) -> npt.NDArray[np.int8]:
    """0/1 prediction for the test rows of ``f`` (rows after the first 400)."""
    return stream(f, cfg, workdir).pred


@dataclass
class FileScore:
    """One recording's outcome: point-wise counts, NAB sums and the prediction."""

    name: str
    counts: BinaryCounts
    nab: NabTotals
    pred: npt.NDArray[np.int8]


def score_file(f: SkabFile, cfg: DetectorConfig, workdir: Path) -> FileScore:
    """Fit, export, score and threshold one recording; its metrics' raw sums."""
    pred = predict(f, cfg, workdir)
    test = slice(TRAIN_ROWS, None)
    return FileScore(name=f.name, counts=BinaryCounts().add(f.anomaly[test], pred),
                     nab=nab_file(f.times[test], f.changepoint[test], changepoints(pred),
                                  width=60.0),
                     pred=pred)


def summarise(scores: list[FileScore]) -> dict[str, Any]:
    """The leaderboard's figures over several recordings together."""
    counts, nab = BinaryCounts(), NabTotals()
    for s in scores:
        counts.merge(s.counts)
        nab.merge(s.nab)
    return {
        "files": len(scores),
        "f1": counts.f1, "far": counts.far, "mar": counts.mar,
        "nab_standard": nab.result("standard"), "nab_lowfp": nab.result("lowfp"),
        "nab_lowfn": nab.result("lowfn"),
        "missed_cps": nab.missed, "fp_cps": nab.false_positives, "true_cps": nab.windows,
        "rows": counts.tp + counts.tn + counts.fp + counts.fn,
    }


def evaluate(root: Path, detector: str | DetectorConfig = "pca", *,
             predictions: Path | None = None) -> dict[str, Any]:
    """Run the protocol over ``root``; the leaderboard's figures plus counts.

    ``detector`` is the name of one of :data:`DETECTORS` or a configuration of its own.
    """
    if isinstance(detector, DetectorConfig):
        cfg = detector
    elif detector in DETECTORS:
        cfg = DETECTORS[detector]
    else:
        raise ConfigError(f"unknown detector; one of {sorted(DETECTORS)}", field="detector")
    started = time.perf_counter()
    paths = skab_files(root)
    scores = []
    with tempfile.TemporaryDirectory() as d:
        for path in paths:
            f = load_file(path, root)
            scores.append(score_file(f, cfg, Path(d)))
            if predictions is not None:
                _write_predictions(predictions, f, scores[-1].pred)
    return {"detector": cfg.name} | summarise(scores) | {
        "seconds": round(time.perf_counter() - started, 1), "config": cfg.model_dump()}


def _write_predictions(out: Path, f: SkabFile, pred: npt.NDArray[np.int8]) -> None:
    target = out / Path(f.name).with_suffix(".csv")
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="") as fh:
        w = csv.writer(fh, delimiter=";")
        w.writerow(["datetime", "anomaly_pred"])
        for t, p in zip(f.times[TRAIN_ROWS:], pred, strict=True):
            w.writerow([dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S"), int(p)])

