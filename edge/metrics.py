"""The edge runtime's Prometheus metrics (``aiotflow edge --metrics-port``).

The counters are the runtime's own :class:`~aiotflow.edge.runtime.EdgeStats`, read when
``/metrics`` is scraped: counting a reading stays one integer addition on the hot path.
Only two histograms are recorded as things happen, once per scoring batch and once per
alert.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiotflow.metrics import LATENCY_BUCKETS, Registry

if TYPE_CHECKING:
    from .runtime import EdgeRuntime

__all__ = ["edge_registry"]


def edge_registry(rt: EdgeRuntime) -> Registry:
    """The families of runtime ``rt``; its histograms are recorded into it."""
    r = Registry()
    st = rt.stats
    meta = rt.bundle.meta

    def c(name: str, doc: str, attr: str) -> None:
        r.callback("counter", f"aiotflow_edge_{name}", doc, lambda: getattr(st, attr))

    def g(name: str, doc: str, fn: object) -> None:
        r.callback("gauge", f"aiotflow_edge_{name}", doc, fn)  # type: ignore[arg-type]

    r.callback("gauge", "aiotflow_edge_info", "The edge's model and site (value 1).",
               lambda: {(meta.name, meta.version, rt.settings.site or ""): 1.0},
               labels=("model", "version", "site"))
    c("messages_received", "Telemetry messages received.", "messages_received")
    c("readings_received", "Valid readings appended to the windows.", "readings_received")
    r.callback("counter", "aiotflow_edge_readings_invalid",
               "Messages or readings refused, by reason (dead-lettered with it).",
               lambda: {(k,): v for k, v in st.invalid_reasons.items()}, labels=("reason",))
    c("deadletters", "Dead letters written to the outbox.", "deadlettered")
    c("imputed_values", "Missing channel values filled in from the last sample.",
      "imputed_values")
    r.callback("counter", "aiotflow_edge_windows_scored",
               "Windows scored by the ONNX model.", lambda: st.windows_scored)
    r.callback("counter", "aiotflow_edge_windows_skipped",
               "Windows not scored: too many values missing.", lambda: rt.buffer.skipped)
    c("score_batches", "ONNX scoring calls.", "score_batches")
    r.callback("counter", "aiotflow_edge_alerts",
               "Alerts emitted, by kind and severity.",
               lambda: {tuple(k.split("/", 1)): v for k, v in st.alerts_by.items()},
               labels=("kind", "severity"))
    c("alerts_suppressed", "Anomalous windows inside an open episode (no new alert).",
      "alerts_suppressed")
    g("outbox_messages", "Messages in the outbox (alerts and dead letters).",
      lambda: rt._outbox.size)
    g("outbox_unacknowledged_messages",
      "Alerts sent and waiting for the engine's acknowledgement.",
      lambda: st.outbox_awaiting_ack)
    r.callback("counter", "aiotflow_edge_outbox_evicted",
               "Messages evicted from a full outbox for a more urgent one.",
               lambda: rt._outbox.evicted)
    r.callback("counter", "aiotflow_edge_outbox_dropped",
               "Messages dropped: too large, or the outbox full of more urgent ones.",
               lambda: rt._outbox.dropped)
    c("outbox_poison", "Messages the broker refused for good (removed).", "outbox_poison")
    c("published", "Messages published to the uplink broker (QoS 1, acknowledged).",
      "published")
    c("resent", "Alerts sent again because the engine had not acknowledged them.", "resent")
    c("acks_received", "Engine acknowledgements that removed an alert from the outbox.",
      "acks_received")
    c("acks_invalid", "Acknowledgement messages that named no alert.", "acks_invalid")
    links = {"telemetry": rt.telemetry_link, "uplink": rt.uplink_link}
    r.callback("gauge", "aiotflow_edge_link_up", "1 while the MQTT link is connected.",
               lambda: {(k,): float(v.connected) for k, v in links.items()}, labels=("link",))
    r.callback("counter", "aiotflow_edge_link_connects", "MQTT connections made.",
               lambda: {(k,): v.connects for k, v in links.items()}, labels=("link",))
    r.callback("counter", "aiotflow_edge_link_disconnects", "MQTT connections lost.",
               lambda: {(k,): v.disconnects for k, v in links.items()}, labels=("link",))
    g("drift_psi", "Population stability index of recent scores against training.",
      lambda: rt.drift.psi)
    c("drift_alerts", "Model-drift alerts emitted.", "drift_alerts")
    g("assets", "Assets with a window in memory.", lambda: len(rt.buffer))
    r.callback("counter", "aiotflow_edge_assets_evicted",
               "Idle assets whose windows were let go at max_assets.",
               lambda: rt.buffer.evicted)
    r.callback("counter", "aiotflow_edge_assets_refused",
               "Readings of new assets refused: every kept asset was live.",
               lambda: rt.buffer.refused)
    g("start_time_seconds", "When the runtime started (epoch s).", lambda: st.started)
    rt.batch_seconds = r.histogram(
        "aiotflow_edge_score_batch_duration_seconds",
        "One ONNX scoring call of a batch of windows (off the event loop).")
    rt.batch_windows = r.histogram(
        "aiotflow_edge_score_batch_windows", "Windows per scoring batch.",
        buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096))
    rt.reading_to_alert = r.histogram(
        "aiotflow_edge_reading_to_alert_seconds",
        "From the arrival of the reading that completed a window to its alert in the outbox.",
        buckets=LATENCY_BUCKETS)
    return r
