"""aiotflow contracts: the vocabulary edge and engine share.

The alert and reading schemas, alert ids, MQTT connection settings and the reconnect
loop, and the settings base. Both :mod:`aiotflow.edge` and the engine packages import
it; it imports neither.
"""

from .errors import ConfigError, ContractError, PayloadError
from .mqtt import LinkState, MqttSettings, reconnecting, sink_queue, wait_event
from .schema import (
    MAX_PAYLOAD_BYTES,
    MAX_READINGS_PER_MESSAGE,
    Alert,
    ChannelSummary,
    Reading,
    Severity,
    WireReading,
    alert_id_for,
    decode_readings,
)
from .settings import FileSettings, config_error

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "MAX_READINGS_PER_MESSAGE",
    "Alert",
    "ChannelSummary",
    "ConfigError",
    "ContractError",
    "FileSettings",
    "LinkState",
    "MqttSettings",
    "PayloadError",
    "Reading",
    "Severity",
    "WireReading",
    "alert_id_for",
    "config_error",
    "decode_readings",
    "reconnecting",
    "sink_queue",
    "wait_event",
]
