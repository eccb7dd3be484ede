"""The engine's Prometheus metrics (``aiotflow run APP --metrics-port``).

Counters are the engine's :class:`~aiotflow.workflows.engine.EngineStats`, read at scrape
time; the run and approval histograms are recorded as runs end and approvals are resumed.
The gauges of the database (runs by state, pending approvals) are refreshed by the
engine's poll loop at most every ``refresh_s``: with many workers on one database each
reports the same numbers (aggregate them with ``max``, not ``sum``). Tool calls, history
queries and LLM spend are in :data:`aiotflow.metrics.METRICS` (served beside these).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aiotflow.metrics import HUMAN_BUCKETS, LATENCY_BUCKETS, Registry

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["BREAKER_STATES", "EngineMetrics"]

#: the value of ``aiotflow_tool_breaker_state`` for each breaker state
BREAKER_STATES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


class EngineMetrics:
    """The families of one engine, and the database gauges' last refresh."""

    def __init__(self, engine: Engine, *, refresh_s: float = 5.0) -> None:
        self.engine = engine
        self.refresh_s = refresh_s
        self._refreshed = float("-inf")
        #: (workflow, status) -> runs, from the run ledger
        self.runs_by_state: dict[tuple[str, str], int] = {}
        #: risk -> (pending approvals, age of the oldest in seconds)
        self.pending: dict[str, tuple[int, float]] = {}
        #: reason -> alerts dropped unread since start (the audit gets them per poll)
        self.dropped: dict[str, int] = {}
        r = self.registry = Registry()
        st = engine.stats

        def c(name: str, doc: str, attr: str) -> None:
            r.callback("counter", f"aiotflow_engine_{name}", doc, lambda: getattr(st, attr))

        c("alerts_received", "Alerts whose workflows were started (or matched none).",
          "alerts_received")
        c("alerts_invalid", "Signed alerts that did not validate (audited, acknowledged).",
          "alerts_invalid")
        c("alerts_repeated", "Deliveries of an alert already recorded (not run again).",
          "alerts_repeated")
        r.callback("counter", "aiotflow_engine_alerts_dropped",
                   "Messages on the alert topics dropped unread, by reason (unsigned, "
                   "bad signature, replayed, out of scope, ...).",
                   lambda: {(k,): v for k, v in self.dropped.items()}, labels=("reason",))
        c("alerts_unmatched", "Alerts no workflow matched.", "unmatched")
        c("alerts_coalesced", "Alerts folded into the active run on their asset.",
          "coalesced")
        c("alerts_duplicate", "Alerts whose run had been claimed before.", "duplicates")
        c("acks_sent", "Acknowledgements sent to edges after recording an alert.",
          "acks_sent")
        c("forgeries", "Decisions refused at resume: not signed by whom the policy allows.",
          "forgeries")
        c("taken_over", "Runs and alerts taken over from dead workers.", "taken_over")
        c("pauses", "Times this worker lost the database and let its work go.", "paused")
        r.callback("gauge", "aiotflow_engine_paused", "1 while the worker takes no work.",
                   lambda: float(engine.paused))
        r.callback("gauge", "aiotflow_engine_alert_link_up",
                   "1 while the alert subscription's MQTT link is connected.",
                   lambda: float(engine.subscribed.is_set()))
        r.callback("gauge", "aiotflow_engine_runs_in_flight",
                   "Alerts and runs this worker is processing now.",
                   lambda: len(engine._inflight))
        r.callback("gauge", "aiotflow_engine_runs",
                   "Runs in the state database, by workflow and state (refreshed by the "
                   "poll loop).", lambda: {k: float(v) for k, v in self.runs_by_state.items()},
                   labels=("workflow", "state"))
        r.callback("gauge", "aiotflow_engine_approvals_pending",
                   "Approvals waiting for a person, by risk tier.",
                   lambda: {(k,): float(v[0]) for k, v in self.pending.items()},
                   labels=("risk",))
        r.callback("gauge", "aiotflow_engine_approval_oldest_age_seconds",
                   "Age of the oldest pending approval, by risk tier.",
                   lambda: {(k,): v[1] for k, v in self.pending.items()}, labels=("risk",))
        r.callback("gauge", "aiotflow_tool_breaker_state",
                   "Circuit breaker of each tool that has one: 0 closed, 1 half open, 2 open.",
                   self._breakers, labels=("tool",))
        r.callback("counter", "aiotflow_tool_breaker_opened",
                   "Times each tool's circuit breaker opened.",
                   lambda: {(k,): float(b.opened) for k, b in self._breaker_items()},
                   labels=("tool",))
        r.callback("gauge", "aiotflow_engine_start_time_seconds",
                   "When the engine started (epoch s).", lambda: self.started)
        self.started = time.time()
        self.run_transitions = r.counter(
            "aiotflow_engine_run_transitions",
            "Runs that reached a state, by workflow (started, waiting_approval, resumed, "
            "completed, failed).", ("workflow", "state"))
        self.run_seconds = r.histogram(
            "aiotflow_engine_run_duration_seconds",
            "One stretch of a run, from its start or resume to its end or its next "
            "interrupt, by workflow and how it ended.", ("workflow", "outcome"),
            buckets=LATENCY_BUCKETS)
        self.approval_wait = r.histogram(
            "aiotflow_engine_approval_wait_seconds",
            "From an approval's request to its decision (or expiry), by risk and status.",
            ("risk", "status"), buckets=HUMAN_BUCKETS)

    def _breaker_items(self) -> list[tuple[str, Any]]:
        executor = getattr(self.engine, "executor", None)
        return list(executor._breakers.items()) if executor is not None else []

    def _breakers(self) -> dict[tuple[str, ...], float]:
        return {(k,): BREAKER_STATES.get(b.state, 0.0) for k, b in self._breaker_items()}

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    async def refresh(self, *, force: bool = False) -> None:
        """Read the database gauges again (at most every ``refresh_s``)."""
        now = time.monotonic()
        if not force and now - self._refreshed < self.refresh_s:
            return
        self._refreshed = now
        e = self.engine
        self.runs_by_state = await e.runs.counts()
        pending: dict[str, tuple[int, float]] = {}
        wall = time.time()
        for rec in await e.control.approvals(status="pending"):
            n, oldest = pending.get(rec.risk, (0, 0.0))
            pending[rec.risk] = (n + 1, max(oldest, wall - rec.requested_at))
        self.pending = pending
