"""Edge runtime configuration: frozen pydantic models loaded from TOML and environment.

Environment variables override the file: ``AIOTFLOW_EDGE_MQTT__URL=mqtt://host:1883``.
A bad file fails at start-up with :class:`~aiotflow.contracts.ConfigError` naming the field.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import SettingsConfigDict

from aiotflow.contracts.mqtt import MqttSettings
from aiotflow.contracts.settings import FileSettings

from .drift import DriftSettings
from .policy import PolicySettings

__all__ = ["AckSettings", "EdgeSettings", "ScoringSettings"]


class ScoringSettings(BaseModel):
    """Micro-batching of window scoring."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_batch: int = Field(512, ge=1, le=65536, description="Windows per ONNX call at most.")
    max_delay_ms: float = Field(
        20.0, gt=0, le=1000, description="Longest a due window waits for its batch."
    )


class AckSettings(BaseModel):
    """End-to-end acknowledgement: an alert leaves the outbox only when the engine says it
    has durably recorded it (a message on ``PREFIX/{site}/{asset}`` naming the alert id),
    not when the broker has it; until then it is sent again with exponential backoff."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    required: bool = Field(
        True, description="Wait for the engine's acknowledgement; off: the broker's PUBACK "
                          "ends delivery (an engine crash can then lose an alert).")
    prefix: str = Field("aiotflow/acks", description="Acknowledgements arrive on "
                                                     "PREFIX/{site}/{asset}.")
    timeout_s: float = Field(10.0, gt=0, description="Send again when not acknowledged "
                                                     "this long after sending...")
    max_interval_s: float = Field(300.0, gt=0, description="... doubling each time, up to "
                                                           "this interval.")

    def retry_in(self, attempts: int) -> float:
        """Seconds until a message sent ``attempts`` times is sent again."""
        return float(min(self.timeout_s * 2 ** max(attempts - 1, 0), self.max_interval_s))


class EdgeSettings(FileSettings):
    """Settings of ``aiotflow edge`` (a TOML file, overridden by AIOTFLOW_EDGE_* variables)."""

    model_config = SettingsConfigDict(
        env_prefix="AIOTFLOW_EDGE_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    model: Path = Field(Path("model.onnx"), description="Model bundle (.onnx) to score with.")
    site: str | None = Field(None, description="Only accept telemetry of this site if set.")
    mqtt: MqttSettings = Field(default_factory=MqttSettings, description="Telemetry broker.")
    uplink: MqttSettings | None = Field(
        None, description="Broker that receives alerts; the telemetry broker when unset."
    )
    telemetry_topic: str = Field(
        "aiotflow/telemetry/+/+",
        description="Subscription; the last two topic levels are {site}/{asset}.",
    )
    alert_prefix: str = Field("aiotflow/alerts", description="Alerts go to PREFIX/{site}/{asset}.")
    ack: AckSettings = Field(default_factory=AckSettings,
                             description="The engine's end-to-end acknowledgement of alerts.")
    deadletter_prefix: str = Field(
        "aiotflow/deadletter", description="Rejected payloads go to PREFIX/{site}/{asset}."
    )
    outbox: Path = Field(Path("edge-outbox.db"), description="SQLite store-and-forward outbox.")
    key_file: Path | None = Field(
        None, description="This edge's Ed25519 key (default: edge.key beside the outbox; "
                          "made on first start, 0600): it signs every alert, and the "
                          "engine's trust list has its public half (`aiotflow edge keygen` "
                          "prints the entry).")
    outbox_max: int = Field(
        100_000, ge=1, description="Messages the outbox holds; when full, lower severities "
                                   "(dead letters first) make room for higher ones.")
    outbox_max_bytes: int = Field(
        64 * 2**20, ge=1024, description="Payload bytes the outbox holds, the same way.")
    deadletter_max_bytes: int = Field(
        1024, ge=0, description="A dead letter keeps this much of the refused payload, "
                                "with its size and sha256.")
    scoring: ScoringSettings = Field(default_factory=ScoringSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    stats_interval_s: float = Field(2.0, gt=0, description="How often the stats file is rewritten.")
    max_impute: int = Field(
        3, ge=0, description="Samples a missing channel is carried forward; beyond that "
                             "windows holding the gap are skipped, never scored.")
    max_assets: int = Field(
        10_000, ge=1, description="Assets this edge keeps windows for; asset names come from "
                                  "topics and payloads, so the memory they take is bounded.")
    asset_idle_s: float = Field(
        3600.0, gt=0, description="When max_assets is reached, the least recently seen "
                                  "asset is evicted if it sent nothing this long; otherwise "
                                  "the new asset's readings are refused (both counted).")
    drain_timeout_s: float = Field(
        5.0, ge=0, description="On shutdown, how long to keep publishing the outbox."
    )

    @property
    def uplink_mqtt(self) -> MqttSettings:
        """The uplink connection; on the telemetry broker, under its own client id."""
        if self.uplink is not None:
            return self.uplink
        if self.mqtt.client_id is None:
            return self.mqtt
        return self.mqtt.model_copy(update={"client_id": f"{self.mqtt.client_id}-uplink"})

    @property
    def signing_key_file(self) -> Path:
        return self.key_file or self.outbox.with_name("edge.key")
