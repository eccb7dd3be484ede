"""``aiotflow status``: is every edge and engine healthy and keeping up - a terminal view
for people, ``--json`` for scripts, and the exit code for health checks (0 healthy, 1 not,
with the reasons; 2 nothing to look at).

Sources, any mix of them:

* ``--stats-file FILE`` (an edge's ``--stats-file``) and ``--edge URL`` (its ``/metrics``);
* ``--engine URL`` (``aiotflow run --metrics-port``): links, runs in flight, breakers;
* ``--state-dir`` / ``--state-url`` (the engine's state): workers and their heartbeats,
  runs by state, approvals waiting with their age, LLM spend today.

``--watch S`` redraws every S seconds until Ctrl-C; rates are per second between two
looks (the first look shows averages since start).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiotflow.terminal import printable

from ._common import add_state_options, command
from .output import console, is_tty, table

__all__ = ["Health", "register"]


@dataclass
class Health:
    """What one look found: per source figures, problems (unhealthy) and warnings."""

    edges: list[dict[str, Any]] = field(default_factory=list)
    engines: list[dict[str, Any]] = field(default_factory=list)
    state: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    at: float = field(default_factory=time.time)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"healthy": self.healthy}


# ---------------------------------------------------------------------- reading sources
def _scrape(url: str, timeout: float = 5.0) -> dict[str, list[tuple[dict[str, str], float]]]:
    """``/metrics`` as {sample name: [(labels, value)]}."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=timeout) as r:
        text = r.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def _sum(m: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for ls, v in m.get(name, []) if labels.items() <= ls.items())


def edge_from_metrics(url: str) -> dict[str, Any]:
    m = _scrape(url)
    info = next((ls for ls, _ in m.get("aiotflow_edge_info", [])), {})
    return {
        "source": url, "site": info.get("site") or "-",
        "model": f"{info.get('model', '?')}@{info.get('version', '?')}",
        "updated": time.time(), "started": _sum(m, "aiotflow_edge_start_time_seconds"),
        "readings_received": _sum(m, "aiotflow_edge_readings_received_total"),
        "invalid": _sum(m, "aiotflow_edge_readings_invalid_total"),
        "alerts_emitted": _sum(m, "aiotflow_edge_alerts_total", kind="anomaly"),
        "telemetry_connected": bool(_sum(m, "aiotflow_edge_link_up", link="telemetry")),
        "uplink_connected": bool(_sum(m, "aiotflow_edge_link_up", link="uplink")),
        "outbox_depth": _sum(m, "aiotflow_edge_outbox_messages"),
        "outbox_awaiting_ack": _sum(m, "aiotflow_edge_outbox_unacknowledged_messages"),
        "outbox_evicted": _sum(m, "aiotflow_edge_outbox_evicted_total"),
        "outbox_dropped": _sum(m, "aiotflow_edge_outbox_dropped_total"),
        "drift_psi": _sum(m, "aiotflow_edge_drift_psi") if "aiotflow_edge_drift_psi" in m
        else None,
        "rss_mb": round(_sum(m, "process_resident_memory_bytes") / 2**20, 1),
    }


def edge_from_file(path: Path) -> dict[str, Any]:
    st = json.loads(path.read_text())
    if not isinstance(st, dict) or "readings_received" not in st:
        raise ValueError(f"{path} is not an edge stats file")
    # site and model since 2026-12-07; an older edge's file has neither
    return st | {"source": str(path), "site": st.get("site") or "-",
                 "model": st.get("model") or "-"}


def engine_from_metrics(url: str) -> dict[str, Any]:
    m = _scrape(url)
    breakers = {ls["tool"]: {0.0: "closed", 1.0: "half_open", 2.0: "open"}.get(v, "?")
                for ls, v in m.get("aiotflow_tool_breaker_state", [])}
    return {
        "source": url,
        "alerts_received": _sum(m, "aiotflow_engine_alerts_received_total"),
        "alerts_dropped": _sum(m, "aiotflow_engine_alerts_dropped_total"),
        "forgeries": _sum(m, "aiotflow_engine_forgeries_total"),
        "in_flight": _sum(m, "aiotflow_engine_runs_in_flight"),
        "paused": bool(_sum(m, "aiotflow_engine_paused")),
        "alert_link_up": bool(_sum(m, "aiotflow_engine_alert_link_up")),
        "tool_failures": _sum(m, "aiotflow_tool_calls_total") - _sum(
            m, "aiotflow_tool_calls_total", outcome="ok"),
        "breakers": breakers,
        "llm_usd": round(_sum(m, "aiotflow_llm_cost_usd_total"), 6),
        "started": _sum(m, "aiotflow_engine_start_time_seconds"),
    }


async def state_summary(a: argparse.Namespace) -> dict[str, Any] | None:
    """Workers, runs, approvals and today's LLM spend from the engine's state (None when
    there is none to read)."""
    from ._common import engine_settings

    s = engine_settings(a)
    if s.state_url is None and not await asyncio.to_thread(os.path.exists, s.control_db):
        return None
    from aiotflow.agents.costs import LLM_KINDS
    from aiotflow.tools import ControlStore
    from aiotflow.workflows.runs import RunLedger

    now = time.time()
    midnight = dt.datetime.now().replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    async with ControlStore(s.control_target) as control:
        ledger = RunLedger(control)
        workers = await ledger.workers()
        runs = await ledger.counts()
        pending = await control.approvals(status="pending")
        spend = 0.0
        for kind in LLM_KINDS:
            for r in await control.audit_records(kind=kind):
                if r.ts >= midnight:
                    spend += float(r.detail.get("cost_usd") or 0.0)
    by_state: dict[str, int] = {}
    for (_wf, st), n in runs.items():
        by_state[st] = by_state.get(st, 0) + n
    return {
        "source": (s.state_url and "postgresql") or str(s.state_dir),
        "lease_s": s.lease_s,
        "workers": [{"id": w["id"], "heartbeat_age_s": round(now - w["heartbeat"], 1),
                     "stopped": w["stopped"] is not None} for w in workers],
        "runs": by_state,
        "approvals": [{"id": r.id, "asset": r.asset, "risk": r.risk, "title": r.title,
                       "age_s": round(now - r.requested_at, 1),
                       "escalate_after_s": s.policy.rule(r.risk).escalate_after_s,
                       "expires_s": s.policy.rule(r.risk).expires_s} for r in pending],
        "llm_usd_today": round(spend, 6),
    }


# ---------------------------------------------------------------------- judging
def judge(h: Health, *, stale_s: float, previous: Health | None = None) -> None:
    """Fill ``h.problems`` and ``h.warnings``; rates from ``previous`` when given."""
    before = {e["source"]: e for e in (previous.edges if previous else [])}
    for e in h.edges:
        name = f"edge {e['source']}"
        age = h.at - float(e.get("updated") or 0.0)
        prev = before.get(e["source"])
        if prev is not None and e["updated"] > prev["updated"]:
            span = e["updated"] - prev["updated"]
            e["readings_per_s"] = round((e["readings_received"] - prev["readings_received"])
                                        / span, 1)
        else:
            span = max(float(e.get("updated") or 0) - float(e.get("started") or 0), 1e-9)
            e["readings_per_s"] = round(e["readings_received"] / span, 1)
        e["age_s"] = round(age, 1)
        if age > stale_s:
            h.problems.append(f"{name}: no update for {age:.0f} s (stopped or stuck?)")
            continue
        for link in ("telemetry", "uplink"):
            if not e.get(f"{link}_connected"):
                h.problems.append(f"{name}: {link} link down")
        lost = int(e.get("outbox_evicted") or 0) + int(e.get("outbox_dropped") or 0)
        if lost:
            h.warnings.append(f"{name}: {lost} outbox messages evicted or dropped (full)")
        psi = e.get("drift_psi")
        if psi is not None and psi > 0.25:
            h.warnings.append(f"{name}: model drift, PSI {psi:.2f}")
    for g in h.engines:
        name = f"engine {g['source']}"
        if g.get("error"):
            h.problems.append(f"{name}: unreachable ({g['error']})")
            continue
        if g["paused"]:
            h.problems.append(f"{name}: paused, the database is out of reach")
        if not g["alert_link_up"]:
            h.problems.append(f"{name}: alert link down")
        for tool, state in g["breakers"].items():
            if state == "open":
                h.problems.append(f"{name}: circuit open for tool {tool}")
        if g["forgeries"]:
            h.warnings.append(f"{name}: {g['forgeries']:.0f} forged decisions refused")
    st = h.state
    if st is not None:
        live = [w for w in st["workers"] if not w["stopped"]]
        dead = [w for w in live if w["heartbeat_age_s"] > st["lease_s"]]
        for w in dead:
            h.problems.append(f"engine worker {w['id']}: no heartbeat for "
                              f"{w['heartbeat_age_s']:.0f} s (lease {st['lease_s']:g} s)")
        if not live or len(dead) == len(live):
            h.problems.append("engine: no worker running on this state")
        for r in st["approvals"]:
            if r["expires_s"] and r["age_s"] > r["expires_s"] + 60:
                h.problems.append(f"approval {r['id']}: past its expiry and not swept "
                                  "(is an engine running?)")
            elif r["escalate_after_s"] and r["age_s"] > r["escalate_after_s"]:
                h.warnings.append(f"approval {r['id']} ({r['risk']}, {r['asset']}) waiting "
                                  f"{_age(r['age_s'])}")
        if st["runs"].get("failed"):
            h.warnings.append(f"{st['runs']['failed']} failed runs (aiotflow audit verify, "
                              "aiotflow audit show ALERT)")


async def look(a: argparse.Namespace, previous: Health | None = None) -> Health:
    h = Health()
    for f in a.stats_file:
        try:
            h.edges.append(edge_from_file(Path(f)))
        except (OSError, ValueError) as exc:
            h.problems.append(f"edge {f}: {exc}")
    for url in a.edge:
        try:
            h.edges.append(await asyncio.to_thread(edge_from_metrics, url))
        except Exception as exc:  # unreachable, not Prometheus text, ...
            h.problems.append(f"edge {url}: unreachable ({type(exc).__name__}: {exc})")
    for url in a.engine:
        try:
            h.engines.append(await asyncio.to_thread(engine_from_metrics, url))
        except Exception as exc:
            h.engines.append({"source": url, "error": f"{type(exc).__name__}: {exc}"})
    if a.state_dir or a.state_url or a.config or not (a.stats_file or a.edge or a.engine):
        h.state = await state_summary(a)
    judge(h, stale_s=a.stale_s, previous=previous)
    return h


# ---------------------------------------------------------------------- showing
def _age(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    return f"{s // 60}m" if s < 7200 else f"{s // 3600}h{s % 3600 // 60:02d}m"


def _yes(v: object) -> str:
    return "up" if v else "DOWN"


def show(h: Health) -> None:
    when = dt.datetime.fromtimestamp(h.at).strftime("%Y-%m-%d %H:%M:%S")
    verdict = "HEALTHY" if h.healthy else "UNHEALTHY"
    if is_tty():
        c = console()
        c.print(f"[bold]aiotflow status[/bold]  {when}  "
                f"[{'green' if h.healthy else 'red'}]{verdict}[/]")
    else:
        print(f"aiotflow status  {when}  {verdict}")
    if h.edges:
        print("\nEdges")
        table(("source", "site", "readings/s", "invalid", "alerts", "telemetry", "uplink",
               "outbox", "unacked", "age"),
              [[printable(str(e["source"]))[-40:], e.get("site", "-"),
                f"{e.get('readings_per_s', 0):,.1f}", int(e.get("invalid") or 0),
                int(e.get("alerts_emitted") or 0), _yes(e.get("telemetry_connected")),
                _yes(e.get("uplink_connected")), int(e.get("outbox_depth") or 0),
                int(e.get("outbox_awaiting_ack") or 0), _age(e.get("age_s", 0))]
               for e in h.edges])
    if h.engines:
        print("\nEngines")
        table(("source", "alerts", "dropped", "in flight", "link", "breakers open",
               "tool failures", "LLM USD"),
              [[g["source"], "-", "-", "-", "unreachable", "-", "-", "-"] if g.get("error")
               else [g["source"], int(g["alerts_received"]), int(g["alerts_dropped"]),
                     int(g["in_flight"]), _yes(g["alert_link_up"]),
                     ", ".join(t for t, s in g["breakers"].items() if s == "open") or "none",
                     int(g["tool_failures"]), f"{g['llm_usd']:.4f}"]
               for g in h.engines])
    st = h.state
    if st is not None:
        print(f"\nState {st['source']}")
        table(("worker", "heartbeat", "stopped"),
              [[w["id"], f"{_age(w['heartbeat_age_s'])} ago", "yes" if w["stopped"] else "no"]
               for w in st["workers"]], empty="No workers registered.")
        runs = ", ".join(f"{k} {v}" for k, v in sorted(st["runs"].items())) or "none"
        print(f"Runs: {runs}   LLM spend today: {st['llm_usd_today']:.4f} USD")
        print("\nWaiting for approval")
        table(("id", "asset", "risk", "waiting", "title"),
              [[r["id"][:8], r["asset"], r["risk"], _age(r["age_s"]), printable(r["title"])]
               for r in st["approvals"]], empty="Nothing waits for a person.")
    for title, items in (("Problems", h.problems), ("Warnings", h.warnings)):
        if items:
            print(f"\n{title}")
            for p in items:
                print(f"  - {printable(p)}")


async def _status(a: argparse.Namespace) -> int:
    previous: Health | None = None
    while True:
        h = await look(a, previous)
        if not (h.edges or h.engines or h.state is not None or h.problems):
            print("aiotflow status: nothing to look at: no --stats-file, --edge or --engine, "
                  "and no engine state in the state directory", file=sys.stderr)
            return 2
        if a.json:
            print(json.dumps(h.as_dict(), default=str))
        else:
            if a.watch and is_tty():
                print("\033[2J\033[H", end="")
            show(h)
        if not a.watch:
            return 0 if h.healthy else 1
        previous = h
        await asyncio.sleep(a.watch)


def register(sub: Any) -> None:
    p = sub.add_parser("status", help="health of edges and engines (exit 0 when healthy)")
    p.add_argument("--stats-file", action="append", default=[], metavar="FILE",
                   help="an edge's --stats-file (repeatable)")
    p.add_argument("--edge", action="append", default=[], metavar="URL",
                   help="an edge's /metrics URL (repeatable)")
    p.add_argument("--engine", action="append", default=[], metavar="URL",
                   help="an engine's /metrics URL (repeatable)")
    add_state_options(p)
    p.add_argument("--stale-s", type=float, default=30.0,
                   help="an edge not updated for this long is unhealthy (default 30)")
    p.add_argument("--watch", type=float, metavar="S", help="redraw every S seconds")
    p.add_argument("--json", action="store_true", help="one JSON object per look")
    command(p, _status)
