"""Detector presets: model, window features, threshold and episode rule, as measured on
SKAB with ``aiotflow eval skab`` (the default of ``aiotflow train --csv`` is the best there).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DETECTORS", "DetectorConfig"]


class DetectorConfig(BaseModel):
    """One detector configuration: model, window features, threshold and episode rule.

    Everything here is fitted or applied per recording on its training rows only; no
    value depends on the test rows or on which recording it is.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    kind: str = Field("pca", description="pca (T² + SPE), autoencoder (MLP) or iforest")
    window: int = 10
    features: tuple[str, ...] = ("mean", "std")
    variance: float = 0.95
    margin: float = 1.0
    quantile: float = 99.0
    embedding: str = Field("standardised", description="PCA embedding: one model per "
                                                       "recording, so standardised features")
    k: int = 3
    clear: int = 5
    clear_ratio: float = 0.8


DETECTORS: dict[str, DetectorConfig] = {
    d.name: d for d in (
        # T² + SPE on 8-second windows of mean and spread; the threshold is 4x the 99th
        # percentile of the training scores; 3 windows in a row open an episode, 5 below
        # 0.8 x threshold close it. Chosen on the 22 local recordings over a small grid of
        # general settings (window, features, threshold, debounce), never per file.
        DetectorConfig(name="pca", window=8, features=("mean", "std"), quantile=99.0,
                       margin=4.0, k=3, clear=5),
        # an MLP autoencoder (16-4-16, tanh) on the same features; it fits the 400 training
        # rows closely, hence the wider threshold margin
        DetectorConfig(name="autoencoder", kind="autoencoder", window=8,
                       features=("mean", "std"), quantile=99.0, margin=6.0, k=3, clear=5),
        # Isolation Forest (100 trees) on the same features; threshold at the training p99
        DetectorConfig(name="iforest", kind="iforest", window=8, features=("mean", "std"),
                       quantile=99.0, margin=1.0, k=3, clear=5),
        # the PCA detector with the runtime's generator defaults, for comparison
        DetectorConfig(name="pca-wide", window=30, features=("mean", "std", "min", "max",
                                                             "last", "slope"),
                       quantile=99.9, margin=1.5, k=3, clear=5),
    )
}
