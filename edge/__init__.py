"""aiotflow edge runtime: MQTT telemetry -> sliding windows -> ONNX scores -> alerts.

Depends on none of aiotflow's other packages.
"""

from .broker import EmbeddedBroker, topic_matches
from .bundle import BundleMeta, ChannelStats, ModelBundle, save_bundle
from .config import EdgeSettings, MqttSettings, ScoringSettings
from .drift import DriftMonitor, DriftSettings, psi
from .errors import BundleError, ConfigError, EdgeError, PayloadError
from .features import FEATURES, WindowBuffer, feature_names, window_features
from .outbox import Outbox, OutboxMessage
from .policy import AlertPolicy, PolicySettings, severity_for
from .runtime import EdgeRuntime, EdgeStats
from .schema import Alert, ChannelSummary, Reading, alert_id_for, decode_readings
from .simulator import CHANNELS, FAULT_MODES, FaultSpec, Fleet, parse_fault, publish_fleet

# Training pulls in scikit-learn and skl2onnx (~60 MB): imported on first use, so that a
# gateway running only the runtime never loads them.
_LAZY = {"load_csv", "make_windows", "train_bundle", "train_simulated"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        from . import training

        return getattr(training, name)
    raise AttributeError(f"module 'edge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY)


__all__ = [
    "CHANNELS",
    "FAULT_MODES",
    "FEATURES",
    "Alert",
    "AlertPolicy",
    "BundleError",
    "BundleMeta",
    "ChannelStats",
    "ChannelSummary",
    "ConfigError",
    "DriftMonitor",
    "DriftSettings",
    "EdgeError",
    "EdgeRuntime",
    "EdgeSettings",
    "EdgeStats",
    "EmbeddedBroker",
    "FaultSpec",
    "Fleet",
    "ModelBundle",
    "MqttSettings",
    "Outbox",
    "OutboxMessage",
    "PayloadError",
    "PolicySettings",
    "Reading",
    "ScoringSettings",
    "WindowBuffer",
    "alert_id_for",
    "decode_readings",
    "feature_names",
    "load_csv",
    "make_windows",
    "parse_fault",
    "psi",
    "publish_fleet",
    "save_bundle",
    "severity_for",
    "topic_matches",
    "train_bundle",
    "train_simulated",
    "window_features",
]
