"""Settings of the workflow engine (``aiotflow run``), from TOML and ``AIOTFLOW_*``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from aiotflow.contracts.mqtt import MqttSettings
from aiotflow.contracts.settings import FileSettings
from aiotflow.contracts.signing import AlertTrust
from aiotflow.tools.policy import Policy
from aiotflow.vectorstore.store import HistorySettings

__all__ = ["EngineSettings"]


class EngineSettings(FileSettings):
    """Where the engine keeps its state and which services it talks to."""

    model_config = SettingsConfigDict(
        env_prefix="AIOTFLOW_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    state_dir: Path = Field(Path(".aiotflow"), description="Checkpoints, control and ops DBs.")
    state_url: str | None = Field(
        None, description="postgresql://user@host/db: the control and ops tables and the "
                          "LangGraph checkpoints in PostgreSQL, shared by many workers "
                          "(schema made by `aiotflow db upgrade`); SQLite files in state_dir "
                          "when unset.", pattern=r"^postgres(ql)?://")
    worker_id: str | None = Field(
        None, description="This worker's name among several on one state_url (generated "
                          "from host and pid when unset there); its MQTT client id is "
                          "ENGINE_ID-WORKER_ID.", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    share_group: str = Field(
        "aiotflow", description="Workers receive alerts through the MQTT 5 shared "
                                "subscription $share/GROUP/ALERT_TOPIC.",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    lease_s: float = Field(
        10.0, gt=0, description="A worker beats every lease/3; its runs and alerts are taken "
                                "over by another when it has not beaten for this long.")
    session_expiry_s: int = Field(
        30, ge=0, description="Workers: how long the broker keeps a crashed worker's "
                              "session, queueing its share of alerts (Mosquitto #1747: the "
                              "edge re-sends them, unacknowledged, to the others); a worker "
                              "that stops cleanly leaves the share group first.")
    mqtt: MqttSettings = Field(default_factory=MqttSettings, description="Broker with alerts.")
    alert_topic: str = Field("aiotflow/alerts/#", description="Subscription for alerts.")
    ack_prefix: str = Field(
        "aiotflow/acks", description="Each alert, once recorded, is acknowledged to its edge "
                                     "on PREFIX/{site}/{asset}; the edge keeps it until then.")
    engine_id: str = Field(
        "aiotflow-engine",
        description="MQTT client id; a persistent session keeps alerts sent while it is down.",
    )
    history: HistorySettings = Field(
        default_factory=HistorySettings,
        description="Incident history: embedded at history.path (default state_dir/history) "
                    "or a Qdrant server at history.url; diagnosis evidence and answer cache.")
    scheduling_url: str | None = Field(
        None, description="Customer scheduling REST service; the built-in roster when unset."
    )
    key_file: Path | None = Field(
        None, description="The engine's own Ed25519 key (default state_dir/keys/engine.key, "
                          "made on first start, 0600): it signs the audit chain's "
                          "checkpoints and, with no operators in the policy, the decisions "
                          "of the local console. Workers of one deployment share it.")
    audit_checkpoint_every: int = Field(
        100, ge=1, description="The engine signs the audit chain's head every this many "
                               "records ...")
    audit_checkpoint_s: float = Field(
        10.0, gt=0, description="... or this often when it moved, and at shutdown: records "
                                "after the last checkpoint are covered by the hash chain only.")
    audit_anchor: Path | None = Field(
        None, description="Where the last signed checkpoint is also written, outside the "
                          "database (default state_dir/audit.anchor; keep it on other "
                          "storage or ship it off the host): `aiotflow audit verify` finds a "
                          "tail cut off with its checkpoints against it.")
    audit_anchor_topic: str | None = Field(
        "aiotflow/audit", description="Each checkpoint is also published, retained, on "
                                      "TOPIC/ENGINE_ID: the anchor leaves the host (give "
                                      "the broker a subscriber that keeps them, or read it "
                                      "back at verification). Unset: the file only.")
    personal_data_days: float | None = Field(
        365.0, gt=0, description="Retention: after this many days the free text of work "
                                 "orders and notifications and the comments of decisions "
                                 "are redacted (once an hour); unset keeps them. The audit "
                                 "chain keeps its records.")
    trust: AlertTrust = Field(
        default_factory=AlertTrust,
        description="The edges whose signed alerts count, each limited to its sites and "
                    "assets ([[engine.trust.edges]]); anything else on the alert topics is "
                    "dropped and counted.")
    policy: Policy = Field(
        default_factory=Policy,
        description="Tool risk tiers, who may approve what, operators ([engine.policy]).")
    approval_poll_s: float = Field(0.5, gt=0, description="How often decisions are picked up.")
    max_concurrent_runs: int = Field(8, ge=1)
    max_runs_per_site: int = Field(
        4, ge=1, description="Workflow steps running at once for one site (others queue).")
    tool_attempts: int = Field(3, ge=1, description="Attempts per tool call (tenacity).")
    tool_timeout_s: float = Field(10.0, gt=0, description="Per attempt, remote tools.")
    breaker_failures: int = Field(
        5, ge=1, description="Failures in a row that open a remote tool's circuit.")
    breaker_reset_s: float = Field(30.0, gt=0, description="Open this long, then one probe.")

    @property
    def workers(self) -> bool:
        """Several workers share the state: a worker id, a shared subscription."""
        return self.state_url is not None or self.worker_id is not None

    @property
    def control_target(self) -> str | Path:
        """Where the control store lives: the PostgreSQL URL or the SQLite file."""
        return self.state_url or self.control_db

    @property
    def ops_target(self) -> str | Path:
        return self.state_url or self.ops_db

    @property
    def engine_key_file(self) -> Path:
        return self.key_file or self.state_dir / "keys" / "engine.key"

    @property
    def audit_anchor_file(self) -> Path:
        return self.audit_anchor or self.state_dir / "audit.anchor"

    @property
    def control_db(self) -> Path:
        return self.state_dir / "control.db"

    @property
    def ops_db(self) -> Path:
        return self.state_dir / "ops.db"

    @property
    def checkpoint_db(self) -> Path:
        return self.state_dir / "checkpoints.db"

    @property
    def history_settings(self) -> HistorySettings:
        """The history settings with the embedded path resolved under ``state_dir``."""
        h = self.history
        if h.url is None and h.path is None:
            return h.model_copy(update={"path": self.state_dir / "history"})
        return h
