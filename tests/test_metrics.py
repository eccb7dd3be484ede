"""The metric families and the trace context on their own: exposition through
prometheus-client's parser, bounded label sets, nothing imported or recorded when off."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from aiotflow import metrics, tracing
from aiotflow.contracts.schema import Alert


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_families_expose_as_prometheus_text() -> None:
    r = metrics.Registry()
    c = r.counter("t_events", "Events.", ("kind",))
    h = r.histogram("t_seconds", "Latency.", buckets=(0.1, 1.0))
    state = {"n": 3.0}
    r.callback("gauge", "t_depth", "Depth.", lambda: state["n"])
    r.callback("gauge", "t_none", "Nothing yet.", lambda: None)
    c.inc("a")
    c.inc("a", n=2)
    c.inc("b")
    for v in (0.05, 0.1, 0.5, 7.0):
        h.observe(v)
    server = metrics.MetricsServer(0, r)
    try:
        got = parse(server.text())
    finally:
        server.close()
    assert got["t_events_total", (("kind", "a"),)] == 3
    assert got["t_events_total", (("kind", "b"),)] == 1
    # cumulative buckets, "le" inclusive, +Inf = count
    assert [got["t_seconds_bucket", (("le", le),)] for le in ("0.1", "1.0", "+Inf")] == [2, 3, 4]
    assert got["t_seconds_count", ()] == 4 and got["t_seconds_sum", ()] == pytest.approx(7.65)
    assert got["t_depth", ()] == 3
    assert not any(n == "t_none" for n, _ in got)
    assert got["process_resident_memory_bytes", ()] > 0


def test_a_flood_of_label_values_stays_bounded() -> None:
    r = metrics.Registry()
    c = r.counter("t_by_site", "Per site.", ("site",))
    for i in range(metrics.MAX_SERIES * 3):
        c.inc(f"site-{i}")
    assert len(c.values) == metrics.MAX_SERIES + 1
    assert c.get("_other") == metrics.MAX_SERIES * 2
    with pytest.raises(ValueError, match="takes labels"):
        c.inc("a", "b")
    with pytest.raises(ValueError, match="registered differently"):
        r.histogram("t_by_site", "again", ("site",))


def test_the_edge_imports_neither_prometheus_nor_opentelemetry_until_asked() -> None:
    """A gateway without --metrics-port or an OTLP endpoint pays for neither."""
    code = ("import sys, aiotflow.edge.runtime, aiotflow.tools.registry;"
            "print([m for m in ('prometheus_client', 'opentelemetry') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PATH": ""})
    assert json.loads(out.stdout.replace("'", '"')) == []


def test_trace_context_without_a_tracer() -> None:
    assert not tracing.enabled()
    tp = tracing.new_traceparent()
    assert tracing.valid_traceparent(tp) and tracing.trace_id(tp) == tp[3:35]
    with tracing.span("nothing") as s:
        assert s is None
    assert tracing.current_traceparent() is None
    for bad in ("00-" + "0" * 32 + "-" + "1" * 16 + "-01", "01-xyz", "", None):
        assert tracing.trace_id(bad) is None  # type: ignore[arg-type]


def test_an_alert_refuses_a_traceparent_that_is_not_one() -> None:
    base = {"id": "a", "site": "s", "asset": "x", "ts": 1.0, "episode_start": 1.0,
            "severity": "warning", "score": 1.0, "threshold": 0.5, "embedding": [],
            "summary": {}, "model_name": "m", "model_version": "1"}
    assert Alert.model_validate(base).traceparent is None
    good = tracing.new_traceparent()
    assert Alert.model_validate(base | {"traceparent": good}).traceparent == good
    for junk in ("00-abc", good + "\n", "x" * 10_000, good.upper()):
        with pytest.raises(ValidationError, match="traceparent"):
            Alert.model_validate(base | {"traceparent": junk})


def test_spans_nest_and_a_benign_exception_is_not_an_error() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    parent = tracing.new_traceparent()

    class Waiting(Exception):
        pass

    assert tracing.configure("test", provider=provider)
    try:
        with tracing.span("outer", parent=parent):
            with pytest.raises(Waiting), tracing.span("asks", benign=(Waiting,)):
                raise Waiting
            with pytest.raises(KeyError), tracing.span("fails"):
                raise KeyError("x")
            tracing.annotate(done=True)
    finally:
        tracing.configure("test", env={})  # off again
    spans = {s.name: s for s in exporter.get_finished_spans()}
    outer = spans["outer"]
    assert f"{outer.context.trace_id:032x}" == tracing.trace_id(parent)
    assert f"{outer.parent.span_id:016x}" == parent[36:52]
    assert spans["asks"].parent.span_id == outer.context.span_id
    assert spans["asks"].status.is_unset and not spans["fails"].status.is_ok
    assert spans["fails"].attributes["error.type"] == "KeyError"
    assert outer.attributes["done"] is True


def test_every_metric_the_dashboard_queries_exists(bundle_path: Path, tmp_path: Path) -> None:
    """examples/grafana/aiotflow.json asks only for what an edge and an engine serve."""
    import re

    import aiotflow.agents.llm
    import aiotflow.vectorstore.store  # noqa: F401
    from aiotflow.edge.config import EdgeSettings
    from aiotflow.edge.runtime import EdgeRuntime
    from aiotflow.workflows import App, Engine
    from aiotflow.workflows.settings import EngineSettings

    root = Path(__file__).resolve().parents[1] / "examples" / "grafana"
    dashboard = json.loads((root / "aiotflow.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 25
    edge = EdgeRuntime(EdgeSettings(model=bundle_path, outbox=tmp_path / "o.db"))
    engine = Engine(App("x"), EngineSettings(state_dir=tmp_path / "s"))
    served: set[str] = set()
    for server in (metrics.MetricsServer(0, edge.metrics),
                   metrics.MetricsServer(0, engine.metrics.registry)):
        try:
            for fam in text_string_to_metric_families(server.text()):
                suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                            "gauge": ("",)}.get(fam.type, ("",))
                served |= {fam.name + s for s in suffixes}
        finally:
            server.close()
    words = {"by", "le", "rate", "sum", "max", "min", "histogram_quantile", "increase",
             "instance", "job", "result", "hit"}
    asked = {w for e in exprs for w in re.findall(r"[a-z_][a-z0-9_]*", e)
             if w.startswith(("aiotflow_", "process_"))}
    assert len(asked) >= 25 and asked - words
    missing = sorted(asked - served)
    assert not missing, missing
    # and the scrape config names the two jobs the dashboard tells apart
    scrape = (root / "prometheus.yml").read_text()
    assert "job_name: aiotflow-edge" in scrape and "job_name: aiotflow-engine" in scrape


async def test_status_judges_an_edge_by_its_stats_file(tmp_path: Path) -> None:
    """Fresh and connected: healthy (exit 0); stale or a link down: exit 1, with why."""
    import time

    from .workflows.helpers import cli

    stats = {"readings_received": 1000, "invalid": 3, "alerts_emitted": 1,
             "telemetry_connected": True, "uplink_connected": True, "outbox_depth": 0,
             "outbox_awaiting_ack": 0, "outbox_evicted": 2, "outbox_dropped": 0,
             "drift_psi": 0.4, "started": time.time() - 100, "updated": time.time()}
    f = tmp_path / "stats.json"
    f.write_text(json.dumps(stats))
    code, out, err = await cli("status", "--stats-file", str(f), "--state-dir",
                               str(tmp_path / "none"))
    assert code == 0, out + err
    assert "HEALTHY" in out and "2 outbox messages evicted or dropped" in out
    assert "model drift, PSI 0.40" in out
    f.write_text(json.dumps(stats | {"uplink_connected": False}))
    code, out, _ = await cli("status", "--json", "--stats-file", str(f))
    assert code == 1 and json.loads(out)["problems"] == [f"edge {f}: uplink link down"]
    f.write_text(json.dumps(stats | {"updated": time.time() - 120}))
    code, out, _ = await cli("status", "--stats-file", str(f), "--stale-s", "30")
    assert code == 1 and "no update for 120 s" in out and "UNHEALTHY" in out
    f.write_text("[1, 2]")
    code, out, _ = await cli("status", "--stats-file", str(f))
    assert code == 1 and "is not an edge stats file" in out
    # a file names its edge's site and model (an older one neither: "-")
    f.write_text(json.dumps(stats | {"site": "plant-7", "model": "gen@3"}))
    code, out, _ = await cli("status", "--json", "--stats-file", str(f))
    edge = json.loads(out)["edges"][0]
    assert code == 0 and (edge["site"], edge["model"]) == ("plant-7", "gen@3")
