"""Edge runtime configuration: frozen pydantic models loaded from TOML and environment.

Environment variables override the file: ``AIOTFLOW_EDGE_MQTT__URL=mqtt://host:1883``.
A bad file fails at start-up with :class:`~edge.errors.ConfigError` naming the field.
"""

from __future__ import annotations

import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from .drift import DriftSettings
from .errors import ConfigError
from .policy import PolicySettings

__all__ = ["EdgeSettings", "FileSettings", "MqttSettings", "ScoringSettings", "config_error"]

_FILE_DATA: ContextVar[dict[str, Any] | None] = ContextVar("_FILE_DATA", default=None)


class MqttSettings(BaseModel):
    """One MQTT broker connection."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field("mqtt://127.0.0.1:1883", description="mqtt://[user:pass@]host[:port]")
    client_id: str | None = Field(None, description="Client id; generated when unset.")
    keepalive: int = Field(30, ge=5, description="Keep-alive interval in seconds.")
    reconnect_max_s: float = Field(10.0, gt=0, description="Longest pause between reconnects.")
    persistent_session: bool = Field(
        False, description="Keep the broker session across reconnects (clean session off): "
                           "QoS 1 messages sent while briefly disconnected are delivered "
                           "after. Needs a fixed client_id.")

    @model_validator(mode="after")
    def _persistent_needs_id(self) -> MqttSettings:
        if self.persistent_session and not self.client_id:
            raise ValueError("persistent_session needs a fixed client_id")
        return self

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
            raise ValueError("must look like mqtt://host:1883")
        return v

    @property
    def hostname(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 1883

    @property
    def username(self) -> str | None:
        return urlsplit(self.url).username

    @property
    def password(self) -> str | None:
        return urlsplit(self.url).password

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`aiomqtt.Client`."""
        return {
            "hostname": self.hostname,
            "port": self.port,
            "username": self.username,
            "password": self.password,
            "identifier": self.client_id,
            "keepalive": self.keepalive,
            "clean_session": not self.persistent_session,
        }


class ScoringSettings(BaseModel):
    """Micro-batching of window scoring."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_batch: int = Field(512, ge=1, le=65536, description="Windows per ONNX call at most.")
    max_delay_ms: float = Field(
        20.0, gt=0, le=1000, description="Longest a due window waits for its batch."
    )


class FileSettings(BaseSettings):
    """Settings read from a TOML file, overridden by environment, overridden by code."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        file_source = InitSettingsSource(settings_cls, init_kwargs=_FILE_DATA.get() or {})
        return (init_settings, env_settings, file_source)

    @classmethod
    def load(
        cls, path: str | Path | None = None, *, table: str | None = None, **overrides: Any
    ) -> Any:
        """Load ``path`` (TOML; only its ``[table]`` if given), then environment, then
        ``overrides``. Raises :class:`ConfigError` naming the bad field."""
        data: dict[str, Any] = {}
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise ConfigError("no such config file", field=str(p))
            try:
                data = tomllib.loads(p.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"not valid TOML: {exc}", field=str(p)) from None
            if table is not None:
                data = data.get(table, {})
        token = _FILE_DATA.set(data)
        try:
            return cls(**overrides)
        except ValidationError as exc:
            raise config_error(exc) from None
        finally:
            _FILE_DATA.reset(token)


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
    deadletter_prefix: str = Field(
        "aiotflow/deadletter", description="Rejected payloads go to PREFIX/{site}/{asset}."
    )
    outbox: Path = Field(Path("edge-outbox.db"), description="SQLite store-and-forward outbox.")
    outbox_max: int = Field(
        100_000, ge=1, description="Messages the outbox holds; when full, lower severities "
                                   "(dead letters first) make room for higher ones.")
    scoring: ScoringSettings = Field(default_factory=ScoringSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    stats_interval_s: float = Field(2.0, gt=0, description="How often the stats file is rewritten.")
    max_impute: int = Field(
        3, ge=0, description="Samples a missing channel is carried forward; beyond that "
                             "windows holding the gap are skipped, never scored.")
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


def config_error(exc: ValidationError) -> ConfigError:
    """A :class:`ConfigError` naming the first bad field of a validation error."""
    err = exc.errors(include_url=False)[0]
    return ConfigError(err["msg"], field=".".join(str(p) for p in err["loc"]) or None)
