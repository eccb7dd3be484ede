"""Observability end to end, as an operator runs it: `aiotflow edge --metrics-port`,
`aiotflow simulate` with a fault and `aiotflow run --metrics-port`, each in its own
process on a real Mosquitto, exporting spans by OTLP to a receiver on loopback, the LLM a
scripted server on loopback. Both `/metrics` parse with Prometheus' own text parser and
move as readings, alerts, runs and tool calls happen; the alert's trace goes from the
edge's detection to the work order, across the three processes' spans."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
from prometheus_client.parser import text_string_to_metric_families

from .agents.test_planner import BOOK, ORDER, PLAN
from .conftest import Mosquitto, free_port
from .fakes import ChatCompletionsService, OtlpReceiver, calls, turns
from .workflows.helpers import cli, wait_for

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str) -> Samples:
    """``/metrics`` as {(sample name, labels): value}, through Prometheus' parser."""
    async with httpx.AsyncClient(timeout=5) as c:
        r = await c.get(url)
    r.raise_for_status()
    assert r.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[s.name, frozenset(s.labels.items())] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


@contextmanager
def process(log: Path, *args: str, env: dict[str, str]) -> Iterator[Any]:
    """``python -m aiotflow ARGS`` with stderr to ``log`` (a pipe left unread would fill
    up and stop it); SIGTERM at the end, and it must exit 0."""
    import subprocess

    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "aiotflow", *args], stderr=err,
                                env=os.environ | env)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
    assert proc.returncode == 0, log.read_text()[-3000:]


async def test_metrics_and_one_trace_from_detection_to_work_order(
    mosquitto: Mosquitto, bundle_path: Path, tmp_path: Path
) -> None:
    state, edge_dir = tmp_path / "state", tmp_path / "edge"
    edge_dir.mkdir()
    code, trust, err = await cli("edge", "keygen", "--out", str(edge_dir / "edge.key"),
                                 "--site", "plant-1")
    assert code == 0, err
    (tmp_path / "engine.toml").write_text("[engine]\n" + trust)
    (edge_dir / "edge.toml").write_text(
        f'model = "{bundle_path}"\noutbox = "{edge_dir / "outbox.db"}"\nsite = "plant-1"\n'
        f'[mqtt]\nurl = "{mosquitto.url}"\n[policy]\nk = 3\n')
    code, _, err = await cli("seed", "--model", str(bundle_path), "--incidents", "30",
                             "--state-dir", str(state))
    assert code == 0, err
    script = turns(calls(("maintenance_history", {"asset": "gen-002", "system": "cooling"})),
                   calls(("book_technician", BOOK), ("create_work_order", ORDER)),
                   calls(("submit_plan", PLAN)))
    edge_port, engine_port = free_port(), free_port()
    edge_url = f"http://127.0.0.1:{edge_port}/metrics"
    engine_url = f"http://127.0.0.1:{engine_port}/metrics"
    with OtlpReceiver() as otlp, ChatCompletionsService(script) as llm:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url, "OTEL_BSP_SCHEDULE_DELAY": "200"}
        with process(tmp_path / "engine.log", "--log-json", "run",
                     "examples.maintenance_agents:coolant",
                     "--config", str(tmp_path / "engine.toml"), "--state-dir", str(state),
                     "--broker", mosquitto.url, "--metrics-port", str(engine_port),
                     env=env | {"OPENAI_BASE_URL": llm.url, "AIOTFLOW_LLM_MODEL": "small"}), \
                process(tmp_path / "edge.log", "edge", "--config", str(edge_dir / "edge.toml"),
                        "--metrics-port", str(edge_port), env=env):

            async def up(url: str, gauge: str, n: float, **labels: str) -> Samples | None:
                """The scrape once ``gauge`` (with ``labels``) reads ``n``."""
                try:
                    got = await scrape(url)
                except httpx.HTTPError:
                    return None
                return got if value(got, gauge, **labels) == n else None

            await wait_for(lambda: up(edge_url, "aiotflow_edge_link_up", 2), 60)
            engine0 = await wait_for(lambda: up(engine_url, "aiotflow_engine_alert_link_up",
                                                1), 90)
            edge0 = await scrape(edge_url)
            assert value(edge0, "aiotflow_edge_readings_received_total") == 0
            assert value(edge0, "aiotflow_edge_info", version="test", site="plant-1") == 1
            assert value(engine0, "aiotflow_engine_alerts_received_total") == 0
            assert value(engine0, "process_resident_memory_bytes") > 0  # device health

            async with aiomqtt.Client("127.0.0.1", mosquitto.port) as pub:
                for junk in (b"{oops", b'{"ts": "soon", "values": {}}', b"\xff\x00"):
                    await pub.publish("aiotflow/telemetry/plant-1/gen-001", junk, qos=1)
                await pub.publish("aiotflow/telemetry/plant-9/gen-001", b"{}", qos=1)
            code, _, err = await cli(
                "simulate", "--broker", mosquitto.url, "--assets", "2", "--rate", "2",
                "--speed", "25", "--duration", "160", "--fault", "gen-002:coolant_pump@60",
                "--ramp", "40")
            assert code == 0, err

            async def pending() -> list[Any]:
                _, listing, _ = await cli("approvals", "--json", "--state-dir", str(state))
                return json.loads(listing)  # type: ignore[no-any-return]

            [req] = await wait_for(pending, 60)
            waiting = await wait_for(lambda: up(engine_url, "aiotflow_engine_approvals_pending",
                                                1), 30)
            assert value(waiting, "aiotflow_engine_approval_oldest_age_seconds") >= 0
            # the operator's view: both processes and the state, healthy, the approval waits
            code, screen, err = await cli("status", "--edge", edge_url, "--engine", engine_url,
                                          "--state-dir", str(state))
            assert code == 0, screen + err
            assert "HEALTHY" in screen and req["id"][:8] in screen and "up" in screen
            code, doc, _ = await cli("status", "--json", "--edge", edge_url, "--engine",
                                     engine_url, "--state-dir", str(state))
            health = json.loads(doc)
            assert code == 0 and health["healthy"] and health["problems"] == []
            assert health["edges"][0]["readings_received"] == 2 * 2 * 160
            assert [r["id"] for r in health["state"]["approvals"]] == [req["id"]]
            assert health["state"]["workers"][0]["heartbeat_age_s"] < 10
            code, _, err = await cli("approve", "--state-dir", str(state), "--user", "gina",
                                     stdin=b"a\n\n")
            assert code == 0, err

            def work_orders() -> list[tuple[str, str]]:
                with sqlite3.connect(state / "ops.db") as db:
                    return db.execute("SELECT asset, title FROM work_orders").fetchall()

            [(asset, _title)] = await wait_for(work_orders, 30)
            assert asset == "gen-002"
            engine1 = await wait_for(lambda: up(  # the database gauges are refreshed
                engine_url, "aiotflow_engine_runs", 1, state="completed"), 30)
            edge1 = await scrape(edge_url)
        log = (tmp_path / "engine.log").read_text()
        await wait_for(lambda: any(s["name"] == "execute_tool create_work_order"
                                   for s in otlp.spans), 20)
        spans = list(otlp.spans)

    # with both stopped, the health check fails and says why
    code, doc, _ = await cli("status", "--json", "--edge", edge_url, "--engine", engine_url,
                             "--state-dir", str(state))
    health = json.loads(doc)
    assert code == 1 and not health["healthy"]
    assert any(p.startswith(f"edge {edge_url}: unreachable") for p in health["problems"])
    assert any(p.startswith(f"engine {engine_url}: unreachable") for p in health["problems"])
    assert "engine: no worker running on this state" in health["problems"]

    # the edge: readings, refusals by reason, windows, batches, alerts, its outbox, links
    assert value(edge1, "aiotflow_edge_readings_received_total") == 2 * 2 * 160
    assert value(edge1, "aiotflow_edge_readings_invalid_total", reason="not_json") == 2
    assert value(edge1, "aiotflow_edge_readings_invalid_total", reason="wrong_site") == 1
    assert value(edge1, "aiotflow_edge_readings_invalid_total") == 4
    assert value(edge1, "aiotflow_edge_deadletters_total") == 4
    assert value(edge1, "aiotflow_edge_windows_scored_total") > 0
    batches = value(edge1, "aiotflow_edge_score_batch_duration_seconds_count")
    assert batches == value(edge1, "aiotflow_edge_score_batches_total") > 0
    assert value(edge1, "aiotflow_edge_score_batch_duration_seconds_bucket", le="+Inf") == batches
    assert value(edge1, "aiotflow_edge_alerts_total", kind="anomaly") == 1
    assert value(edge1, "aiotflow_edge_reading_to_alert_seconds_count") == 1
    assert value(edge1, "aiotflow_edge_acks_received_total") == 1
    assert value(edge1, "aiotflow_edge_outbox_messages") == 0
    assert value(edge1, "aiotflow_edge_outbox_unacknowledged_messages") == 0
    assert value(edge1, "aiotflow_edge_link_connects_total", link="uplink") >= 1
    assert value(edge1, "process_cpu_seconds_total") > 0
    # the engine: the alert, the run through its states, the approval, tools, history, LLM
    assert value(engine1, "aiotflow_engine_alerts_received_total") == 1
    assert value(engine1, "aiotflow_engine_acks_sent_total") == 1
    assert value(engine1, "aiotflow_engine_runs", workflow="maintenance", state="completed") == 1
    for state_ in ("started", "waiting_approval", "resumed", "completed"):
        assert value(engine1, "aiotflow_engine_run_transitions_total", state=state_) == 1, state_
    assert value(engine1, "aiotflow_engine_run_duration_seconds_count") == 2  # start, resume
    assert value(engine1, "aiotflow_engine_approval_wait_seconds_count", risk="high",
                 status="approved") == 1
    assert value(engine1, "aiotflow_engine_approvals_pending") == 0
    # the maintenance log: read by the evidence node, and by the model
    assert value(engine1, "aiotflow_tool_calls_total", tool="maintenance_history",
                 outcome="ok") == 2
    for tool in ("book_technician", "create_work_order"):
        assert value(engine1, "aiotflow_tool_calls_total", tool=tool, outcome="ok") == 1, tool
        assert value(engine1, "aiotflow_tool_call_duration_seconds_count", tool=tool) == 1
    calls_ok = value(engine1, "aiotflow_tool_calls_total", outcome="ok")
    assert value(engine1, "aiotflow_history_query_duration_seconds_count",
                 operation="diagnose") >= 1
    assert value(engine1, "aiotflow_history_cache_requests_total") >= 1
    assert value(engine1, "aiotflow_llm_requests_total", model="small", outcome="llm") >= 3
    assert value(engine1, "aiotflow_llm_tokens_total", site="plant-1", model="small",
                 type="input") > 0
    assert value(engine1, "aiotflow_llm_cost_usd_total", site="plant-1", model="small") > 0

    # one trace: the edge's create span is its root; every engine span is under it
    [create] = [s for s in spans if s["name"] == "create aiotflow/alerts/plant-1/gen-002"]
    assert create["service"] == "aiotflow-edge" and create["parent"] is None
    assert create["attributes"]["messaging.system"] == "mqtt"
    trace = [s for s in spans if s["trace_id"] == create["trace_id"]]
    by_id = {s["span_id"]: s for s in trace}

    def root_of(s: dict[str, Any]) -> dict[str, Any]:
        while s["parent"] is not None:
            s = by_id[s["parent"]]
        return s

    assert all(root_of(s) is create for s in trace)  # nothing dangles
    # waiting for a person (the approval node's interrupt) is not an error
    assert [s["name"] for s in trace if s["status"] == 2] == []
    assert any(s["name"] == "node approval" for s in trace), sorted(
        {s["name"] for s in trace})
    names = [s["name"] for s in trace]
    [process_] = [s for s in trace if s["name"].startswith("process ")]
    assert process_["parent"] == create["span_id"] and process_["service"] == "aiotflow-engine"
    assert process_["attributes"]["messaging.operation.type"] == "process"
    agents = [s for s in trace if s["name"] == "invoke_agent maintenance"]
    assert len(agents) == 2  # the run, and its resume after the approval
    assert {s["attributes"]["aiotflow.run.status"] for s in agents} == {
        "waiting_approval", "completed"}
    assert "node gather_evidence" in names and "diagnose incidents" in names
    order = next(s for s in trace if s["name"] == "execute_tool create_work_order")
    assert order["attributes"]["gen_ai.tool.name"] == "create_work_order"
    assert order["attributes"]["aiotflow.tool.outcome"] == "ok"
    chats = [s for s in trace if s["name"] == "chat small"]
    assert len(chats) >= 3
    assert all(s["attributes"]["gen_ai.usage.input_tokens"] > 0 for s in chats)
    assert {s["attributes"]["gen_ai.operation.name"] for s in chats} == {"chat"}
    # the spans of the run are the engine's; their trace id is the one the audit shows
    alert_id = req["thread_id"].split("/", 1)[1]
    assert process_["attributes"]["messaging.message.id"] == alert_id
    code, story, err = await cli("audit", "show", alert_id, "--state-dir", str(state))
    assert code == 0, err
    assert f"Trace {create['trace_id']}" in story
    # and so do the engine's log lines of the alert, with its thread
    lines = [json.loads(ln) for ln in log.splitlines() if ln.startswith("{")]
    tool_ok = [ln for ln in lines if ln.get("event") == "tool.ok"]
    assert len(tool_ok) == calls_ok and all(
        ln["trace_id"] == create["trace_id"] and ln["alert_id"] == alert_id
        and ln["thread_id"] == f"maintenance/{alert_id}" for ln in tool_ok)
