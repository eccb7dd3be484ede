"""Fit the default detector on normal data and export a model bundle.

Data comes from the fleet simulator or from CSV files (one file per asset run, a column
per channel). Windows are cut exactly as the runtime cuts them, features come from the
same :func:`~aiotflow.edge.features.window_features`, so training and scoring cannot drift apart.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx

from aiotflow.contracts.errors import ConfigError
from aiotflow.edge.bundle import META_KEY, BundleMeta, ChannelStats, ModelBundle
from aiotflow.edge.features import FEATURES, make_windows, window_features
from aiotflow.simulator.fleet import CHANNELS, Fleet

from .detectors import DETECTOR_KINDS, PCAResidualDetector, to_onnx_bytes

__all__ = ["load_csv", "save_bundle", "train_bundle", "train_from_csv", "train_simulated"]

DEFAULT_FEATURES: tuple[str, ...] = FEATURES


def save_bundle(onnx_model: bytes, meta: BundleMeta, path: str | Path) -> Path:
    """Write ``onnx_model`` with ``meta`` embedded, atomically, and return the path."""
    model = onnx.load_from_string(onnx_model)
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key = META_KEY
    entry.value = meta.model_dump_json()
    model.doc_string = f"aiotflow model bundle {meta.name} {meta.version}"
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_bytes(model.SerializeToString())
    tmp.replace(out)
    return out


def train_bundle(
    series: Sequence[npt.NDArray[np.float64]],
    *,
    channels: Sequence[str],
    out: str | Path,
    window: int = 30,
    hop: int = 2,
    sample_rate_hz: float = 2.0,
    features: Sequence[str] = DEFAULT_FEATURES,
    name: str = "generator-pca",
    version: str | None = None,
    asset_type: str = "generator",
    margin: float = 1.5,
    quantile: float = 99.9,
    variance: float = 0.95,
    detector: str = "pca",
    embedding: str = "residual",
    trained_on: str = "",
) -> ModelBundle:
    """Fit on normal ``series`` (each ``[T, C]``), export to ``out`` and load it back.

    The threshold is ``margin`` times the ``quantile``-th percentile of the training
    scores. ``embedding`` (PCA only): ``residual`` for one model shared by a fleet,
    ``standardised`` for one model per asset (see :class:`PCAResidualDetector`).
    """
    arrays = [np.asarray(s, dtype=np.float64) for s in series]
    if not arrays or any(a.ndim != 2 or a.shape[1] != len(channels) for a in arrays):
        raise ConfigError(f"each series must be [samples, {len(channels)}]", field="data")
    windows = np.concatenate([make_windows(a, window, hop) for a in arrays])
    if len(windows) < 30:
        raise ConfigError(f"only {len(windows)} training windows; need at least 50", field="data")
    x = window_features(windows, features)
    if detector not in DETECTOR_KINDS:
        raise ConfigError(f"unknown detector; one of {sorted(DETECTOR_KINDS)}", field="detector")
    model = (PCAResidualDetector(variance=variance, embedding=embedding) if detector == "pca"
             else DETECTOR_KINDS[detector]()).fit(x)
    scores = model.score_samples(x)
    threshold = float(margin * np.percentile(scores, quantile))
    raw = np.concatenate(arrays)
    stats = {
        c: ChannelStats(
            mean=float(raw[:, i].mean()),
            std=float(raw[:, i].std()),
            min=float(raw[:, i].min()),
            max=float(raw[:, i].max()),
        )
        for i, c in enumerate(channels)
    }
    meta = BundleMeta(
        name=name,
        version=version or time.strftime("%Y%m%d%H%M%S"),
        asset_type=asset_type,
        channels=list(channels),
        window=window,
        hop=hop,
        sample_rate_hz=sample_rate_hz,
        features=list(features),
        threshold=threshold,
        train_stats=stats,
        score_quantiles=[float(q) for q in np.quantile(scores, np.linspace(0, 1, 11))],
        trained_on=trained_on or f"{len(windows)} windows",
    )
    path = save_bundle(to_onnx_bytes(model, x.shape[1]), meta, out)
    return ModelBundle(path)


def train_simulated(
    out: str | Path,
    *,
    assets: int = 8,
    seconds: float = 1800.0,
    sample_rate_hz: float = 2.0,
    window: int = 30,
    hop: int = 2,
    seed: int = 1234,
    version: str | None = None,
) -> ModelBundle:
    """Train the generator model on healthy simulated fleet data."""
    fleet = Fleet(assets, seed=seed)
    series = list(fleet.matrix(seconds, sample_rate_hz).values())
    return train_bundle(
        series,
        channels=CHANNELS,
        out=out,
        window=window,
        hop=hop,
        sample_rate_hz=sample_rate_hz,
        version=version,
        trained_on=f"simulator: {assets} healthy generators x {seconds:.0f} s, seed {seed}",
    )


def load_csv(
    path: str | Path,
    *,
    channels: Sequence[str] | None = None,
    sep: str = ",",
    skip: Sequence[str] = ("datetime", "timestamp", "ts", "time", "anomaly", "changepoint"),
) -> tuple[list[str], npt.NDArray[np.float64]]:
    """Read a CSV of samples: ``(channels, [T, C] array)``.

    Without ``channels``, every column not in ``skip`` is a channel. A non-numeric cell
    fails with its line and column.
    """
    p = Path(path)
    with p.open(newline="") as fh:
        reader = csv.reader(fh, delimiter=sep)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ConfigError("empty CSV file", field=str(p)) from None
        wanted = list(channels) if channels else [h for h in header if h.lower() not in skip]
        missing = [c for c in wanted if c not in header]
        if missing:
            raise ConfigError(f"columns {missing} not in header {header}", field=str(p))
        idx = [header.index(c) for c in wanted]
        rows: list[list[float]] = []
        for line, row in enumerate(reader, start=2):
            try:
                rows.append([float(row[i]) for i in idx])
            except (ValueError, IndexError):
                raise ConfigError(f"line {line}: non-numeric or missing value",
                                  field=str(p)) from None
    return wanted, np.asarray(rows, dtype=np.float64)


def train_from_csv(
    paths: Sequence[str | Path],
    *,
    out: str | Path,
    detector: str = "pca",
    channels: Sequence[str] | None = None,
    sep: str = ",",
    window: int | None = None,
    hop: int = 1,
    sample_rate_hz: float = 2.0,
    name: str | None = None,
    asset_type: str = "generator",
) -> ModelBundle:
    """Fit one of the :data:`~aiotflow.training.presets.DETECTORS` presets on CSV files
    of normal operation (every file with the same channels) and write its bundle.

    ``window`` defaults to the preset's. Raises :class:`ConfigError` for an unknown
    detector or files whose channels differ."""
    from .presets import DETECTORS

    if detector not in DETECTORS:
        raise ConfigError(f"must be one of {sorted(DETECTORS)}", field="detector")
    cfg = DETECTORS[detector]
    series, names = [], None
    for path in paths:
        chans, data = load_csv(path, channels=channels, sep=sep)
        if names is not None and chans != names:
            raise ConfigError(f"has channels {chans}, expected {names}", field=str(path))
        names = chans
        series.append(data)
    if names is None:
        raise ConfigError("no CSV files given", field="csv")
    return train_bundle(series, channels=names, out=out, window=window or cfg.window, hop=hop,
                        sample_rate_hz=sample_rate_hz, features=cfg.features,
                        quantile=cfg.quantile, margin=cfg.margin, detector=cfg.kind,
                        embedding=cfg.embedding, name=name or f"{asset_type}-{cfg.name}",
                        asset_type=asset_type, trained_on=", ".join(str(p) for p in paths))
