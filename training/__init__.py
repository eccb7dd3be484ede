"""aiotflow training: fit detectors with scikit-learn and export ONNX model bundles.

Tooling beside the edge runtime (``pip install 'aiotflow[train]'``): a gateway only
loads the bundles this package writes (:class:`aiotflow.edge.ModelBundle`).
"""

from aiotflow.extras import require as _require

_require("train", feature="aiotflow.training")

from .detectors import (
    DETECTOR_KINDS,
    AutoencoderDetector,
    IsolationForestDetector,
    PCAResidualDetector,
    to_onnx_bytes,
)
from .presets import DETECTORS, DetectorConfig
from .train import load_csv, save_bundle, train_bundle, train_from_csv, train_simulated

__all__ = [
    "DETECTORS",
    "DETECTOR_KINDS",
    "AutoencoderDetector",
    "DetectorConfig",
    "IsolationForestDetector",
    "PCAResidualDetector",
    "load_csv",
    "save_bundle",
    "to_onnx_bytes",
    "train_bundle",
    "train_from_csv",
    "train_simulated",
]
