"""aiotflow edge runtime: MQTT telemetry -> sliding windows -> ONNX scores -> alerts.

What a gateway installs and runs (``pip install aiotflow``; ``aiotflow edge``). It
depends only on :mod:`aiotflow.contracts`: training, evaluation, the simulator, the demo
broker and the engine stack are packages beside it, never imported from here.
"""

from .baseline import OperatingPoint
from .bundle import META_KEY, BundleMeta, ChannelStats, ModelBundle
from .config import EdgeSettings, ScoringSettings
from .drift import DriftMonitor, DriftSettings, psi
from .errors import BundleError, EdgeError
from .features import FEATURES, WindowBuffer, feature_names, make_windows, window_features
from .outbox import Outbox, OutboxMessage
from .policy import AlertPolicy, PolicySettings, severity_for
from .runtime import EdgeRuntime, EdgeStats

__all__ = [
    "FEATURES",
    "META_KEY",
    "AlertPolicy",
    "BundleError",
    "BundleMeta",
    "ChannelStats",
    "DriftMonitor",
    "DriftSettings",
    "EdgeError",
    "EdgeRuntime",
    "EdgeSettings",
    "EdgeStats",
    "ModelBundle",
    "OperatingPoint",
    "Outbox",
    "OutboxMessage",
    "PolicySettings",
    "ScoringSettings",
    "WindowBuffer",
    "feature_names",
    "make_windows",
    "psi",
    "severity_for",
    "window_features",
]
