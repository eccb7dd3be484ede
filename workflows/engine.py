"""The workflow engine: alerts in, LangGraph runs out, approvals resumed.

``async with Engine(app, settings) as engine:`` opens, in one ``AsyncExitStack``, the
control database (audit, approvals, runs, effects), the operations database, the
incident history, the checkpointer and the app's services - SQLite files in the state
dir, or PostgreSQL at ``state_url`` - compiles every workflow; and, in a TaskGroup,
consumes alerts from MQTT (a persistent QoS 1 session, so alerts published while the
engine is down are delivered when it returns) and resumes workflows whose approval was
decided - by this process or any other.

Each (workflow, alert) runs once: the run ledger claims the thread id
``{workflow}/{alert id}`` before the graph starts, and the checkpointer keeps its state
across restarts. A run that was interrupted by a crash is continued at start-up.

**Many workers** (``state_url`` or ``worker_id`` set) share one database and one broker:
alerts arrive through an MQTT 5 shared subscription (``$share/GROUP/...``, one client id
per worker); each worker registers and beats a lease; the runs and recorded alerts of a
worker whose lease expired are taken over by one other worker (compare-and-set in the run
ledger), each decided approval is resumed by the one worker that moves its run from
waiting to running, and single-flight and the per-site limit are held by the database. A
worker that cannot reach the database stops taking work and lets its runs go until it
can beat again; none of it is lost or run twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import socket
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Any

import aiomqtt
import structlog
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.errors import GraphBubbleUp
from langgraph.types import Command
from pydantic import ValidationError

from aiotflow import tracing
from aiotflow.contracts.mqtt import reap, reconnecting
from aiotflow.contracts.schema import Alert
from aiotflow.contracts.signing import Untrusted
from aiotflow.files import private_db, private_dir, write_private
from aiotflow.keys import load_or_create_key
from aiotflow.tools.builtin import register_builtin_tools
from aiotflow.tools.control import ApprovalRecord, ControlStore
from aiotflow.tools.database import is_transient
from aiotflow.tools.decisions import ForgedDecision
from aiotflow.tools.failpoints import failpoint
from aiotflow.tools.failsafe import BreakerSettings
from aiotflow.tools.ops import OpsDatabase
from aiotflow.tools.registry import Principal, RetrySettings, ToolExecutor, ToolRegistry
from aiotflow.tools.scheduling import HttpScheduling, SchedulingBackend
from aiotflow.vectorstore.errors import HistoryError
from aiotflow.vectorstore.store import HistoryStore

from .app import App, WorkflowSpec
from .context import WorkflowContext
from .metrics import EngineMetrics
from .runs import RunLedger, RunRecord, RunStatus
from .settings import EngineSettings

__all__ = ["Engine", "EngineStats", "RunOutcome"]

log = structlog.get_logger("aiotflow.engine")

Listener = Callable[[str, dict[str, Any]], Any]


@dataclass
class EngineStats:
    alerts_received: int = 0
    alerts_invalid: int = 0
    #: deliveries of an alert already recorded (acknowledged again, not run again)
    alerts_repeated: int = 0
    acks_sent: int = 0
    duplicates: int = 0
    coalesced: int = 0
    unmatched: int = 0
    runs_started: int = 0
    runs_completed: int = 0
    runs_failed: int = 0
    waiting_approval: int = 0
    resumed: int = 0
    forgeries: int = 0
    #: messages on the alert topics dropped unread: unsigned, unknown or bad signature,
    #: replayed, out of the signer's scope (by reason in the audit's alerts.dropped)
    alerts_dropped: int = 0
    #: runs and recorded alerts of dead workers (or of a crash) this worker took over
    taken_over: int = 0
    #: times this worker could not reach the database for a lease and let its work go
    paused: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class RunOutcome:
    """What happened to one (workflow, alert) pair."""

    thread_id: str
    workflow: str
    status: RunStatus | str
    values: dict[str, Any] = field(default_factory=dict)
    approval_id: str | None = None
    error: str | None = None


class Engine:
    """Runs an :class:`App`'s workflows for alerts; an async context manager."""

    def __init__(
        self,
        app: App,
        settings: EngineSettings | None = None,
        *,
        consume_alerts: bool = True,
        scheduling: SchedulingBackend | None = None,
    ) -> None:
        self.app = app
        self.settings = settings or EngineSettings()
        self.consume_alerts = consume_alerts
        self._scheduling = scheduling
        self.stats = EngineStats()
        self.subscribed = asyncio.Event()
        self._listeners: list[Listener] = []
        self._stack: AsyncExitStack | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._graphs: dict[str, Any] = {}
        self._thread_locks: dict[str, asyncio.Lock] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._inflight: set[asyncio.Task[Any]] = set()
        #: alerts being processed by this engine (a repeated delivery does not start them)
        self._submitting: set[str] = set()
        #: approvals whose run this engine is resuming now
        self._resuming: set[str] = set()
        #: threads this worker is running now (its own: never taken over from itself)
        self._running: set[str] = set()
        self._slots = asyncio.Semaphore(self.settings.max_concurrent_runs)
        s = self.settings
        #: this worker's name in the run ledger; alone on SQLite it is the engine id, so a
        #: restart recovers the runs of the process that crashed at once
        self.worker_id = s.worker_id or (
            f"{socket.gethostname()}-{os.getpid()}" if s.state_url else s.engine_id)
        self._incarnation = ""
        #: not taking work: the database was out of reach for a lease (or another
        #: process registered with this worker id)
        self.paused = False
        #: set when another process registered with this worker id: it has the work now,
        #: and this one should exit (``aiotflow run`` does, with status 3)
        self.superseded = asyncio.Event()
        self._lease: asyncio.Task[None]
        self._leaked_slots: list[tuple[str, int, str]] = []
        self._site_slots: dict[str, asyncio.Semaphore] = {}
        #: alerts dropped unread since the last audit summary: reason -> count
        self._drops: dict[str, int] = {}
        self._drop_samples: list[str] = []
        self._checkpointed = time.monotonic()
        self._retained = float("-inf")
        self._link: aiomqtt.Client | None = None  # the alert link, while connected
        self.control: ControlStore
        self.ops: OpsDatabase
        self.history: HistoryStore
        self.executor: ToolExecutor
        self.runs: RunLedger
        self.services: dict[str, Any] = {}
        #: Prometheus families of this engine (``aiotflow run --metrics-port``)
        self.metrics = EngineMetrics(self)

    def add_listener(self, fn: Listener) -> None:
        """Call ``fn(kind, data)`` on engine events (progress display, tests)."""
        self._listeners.append(fn)

    def _emit(self, kind: str, **data: Any) -> None:
        for fn in self._listeners:
            try:
                fn(kind, data)
            except Exception:  # a broken listener must not break the engine
                log.exception("engine.listener_failed", kind=kind)

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Engine:
        if self._stack is not None:
            raise RuntimeError("Engine is not re-entrant")
        s = self.settings
        private_dir(s.state_dir)
        #: signs audit checkpoints and, with no operators, the local console's decisions
        self.key = load_or_create_key(s.engine_key_file, s.engine_id)
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            self.control = await stack.enter_async_context(ControlStore(s.control_target))
            self.ops = await stack.enter_async_context(OpsDatabase(s.ops_target))
            store = HistoryStore(settings=s.history_settings)
            self.history = await stack.enter_async_context(store)
            saver = await stack.enter_async_context(_checkpointer(s))
            scheduling = self._scheduling
            if scheduling is None and s.scheduling_url:
                http = HttpScheduling(s.scheduling_url)
                stack.push_async_callback(http.aclose)
                scheduling = http
            # built-ins bound to this engine's databases; the app's own tools win
            registry = register_builtin_tools(
                ToolRegistry(), self.ops, scheduling=scheduling,
                retry=RetrySettings(attempts=s.tool_attempts),
                breaker=BreakerSettings(failures=s.breaker_failures, reset_s=s.breaker_reset_s),
                timeout_s=s.tool_timeout_s)
            self.executor = ToolExecutor(registry.update(self.app.tools), self.control,
                                         policy=s.policy, engine_key=self.key.public_key)
            self.runs = RunLedger(self.control)
            self._incarnation = await self.runs.register(self.worker_id)
            stack.push_async_callback(self._deregister)  # after the runs drained
            for name, factory in self.app.services.items():
                value: Any = factory(s)
                if hasattr(value, "__aenter__"):
                    value = await stack.enter_async_context(value)
                self.services[name] = value
            for spec in self.app.workflows.values():
                builder = spec.build()
                if tracing.enabled():
                    _trace_nodes(builder, spec.name)
                self._graphs[spec.name] = builder.compile(checkpointer=saver)
            self._tg = await stack.enter_async_context(asyncio.TaskGroup())
            self._stack = stack
        except BaseException:
            await stack.aclose()
            raise
        await self._take_over()
        self._loops.append(self._tg.create_task(self._resume_loop(), name="engine-resume"))
        self._lease = self._tg.create_task(self._lease_loop(), name="engine-lease")
        if self.consume_alerts:
            self._loops.append(self._tg.create_task(self._consume(), name="engine-consume"))
        log.info("engine.started", app=self.app.name, workflows=list(self._graphs),
                 state=self.control.database.name, worker=self.worker_id,
                 trusted_edges=[e.name for e in s.trust.edges])
        if s.trust.allow_unsigned:
            log.warning("engine.unsigned_alerts_accepted",
                        why="trust.allow_unsigned: anyone on the broker can start workflows")
        elif self.consume_alerts and not s.trust.edges:
            log.warning("engine.no_trusted_edges",
                        why="no [[engine.trust.edges]]: every alert from the broker is dropped")
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._stack is not None and self._tg is not None
        for task in self._loops:  # background loops end with the engine; runs finish
            task.cancel()
        try:
            if e is None and self._inflight:
                # drained under a live lease: nobody takes over runs that are finishing
                await asyncio.wait(list(self._inflight))
        finally:
            self._lease.cancel()
        await reap([*self._loops, self._lease])  # a loop that lost its cancel: again
        with contextlib.suppress(Exception):  # what was dropped since the last poll
            await self._report_drops()
        try:  # the chain's head as it is now, signed
            await self._checkpoint_audit(final=True)
        except Exception:
            log.exception("engine.audit_checkpoint_failed")
        try:
            await self._stack.__aexit__(t, e, tb)
        finally:
            self._stack = None
            self._tg = None

    # ------------------------------------------------------------------ alerts
    async def _consume(self) -> None:
        s = self.settings
        topic = f"$share/{s.share_group}/{s.alert_topic}" if s.workers else s.alert_topic

        async def body(client: aiomqtt.Client) -> None:
            await client.subscribe(topic, qos=1)
            self._link = client
            self.subscribed.set()
            log.info("engine.subscribed", topic=topic, worker=self.worker_id)
            try:
                async for message in client.messages:
                    try:
                        ack = await self.accept(message.payload, topic=str(message.topic))
                    except Exception as exc:  # not recorded: not acknowledged, re-sent
                        log.warning("engine.accept_failed", topic=str(message.topic),
                                    error=f"{type(exc).__name__}: {exc}")
                        continue
                    if ack is not None:
                        failpoint("engine.received")  # recorded, not yet acknowledged
                        suffix, alert_id = ack
                        await client.publish(f"{self.settings.ack_prefix}/{suffix}",
                                             json.dumps({"id": alert_id}), qos=1)
                        self.stats.acks_sent += 1
            finally:
                self._link = None
                self.subscribed.clear()
                if s.workers:  # leave the share group now, or the broker keeps queueing
                    # this worker's share of alerts to its session (Mosquitto #1747)
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(2):
                            await client.unsubscribe(topic)

        if not s.workers:
            await reconnecting("alerts", s.mqtt, body, client_id=s.engine_id,
                               clean_session=False)
            return
        # MQTT 5: one client id per worker, its session kept session_expiry_s after a
        # disconnect (a restarted worker gets its queue; a dead one's ends)
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = s.session_expiry_s
        await reconnecting("alerts", s.mqtt, body, client_id=f"{s.engine_id}-{self.worker_id}",
                           protocol=aiomqtt.ProtocolVersion.V5, clean_session=None,
                           clean_start=False, properties=props)

    async def accept(self, payload: Any, *, topic: str = "") -> tuple[str, str] | None:
        """Record one alert message durably and start its workflows in the background;
        returns ``(site/asset, alert id)`` to acknowledge to its edge, which keeps the
        alert until then (None: nothing to acknowledge, the payload names no alert).

        An alert recorded before (a repeated delivery: our acknowledgement was lost, or a
        crash came first) is acknowledged again and, if it was not processed, processed;
        the run ledger makes that run each workflow once. A payload that names an alert
        but does not validate is audited with its error and acknowledged, so that its
        edge does not send it for ever. A worker that is paused (no database) records
        nothing and acknowledges nothing: the edge sends the alert again."""
        if self.paused:
            return None
        raw = bytes(payload) if isinstance(payload, (bytes, bytearray)) else (
            payload.encode() if isinstance(payload, str) else str(payload).encode())
        try:
            body, edge = self.settings.trust.verify(raw, topic)
        except Untrusted as exc:
            self._drop(exc, topic)
            return None
        text = body.decode("utf-8", "replace")
        try:
            alert = Alert.model_validate_json(body)
        except ValidationError as exc:
            if edge is None:  # anyone's junk (unsigned accepted): counted, not audited
                self._drop(Untrusted("invalid", str(exc.errors()[0]["msg"])), topic)
                return None
            self.stats.alerts_invalid += 1
            named = _named_alert(text)
            await self.control.audit("alert.invalid", actor="engine", topic=topic,
                                     alert_id=named, payload=text[:4096],
                                     error=exc.errors(include_url=False)[0]["msg"])
            log.warning("engine.alert_invalid", topic=topic)
            # alert topics end with {site}/{asset}, like the acknowledgement's
            return ("/".join(topic.split("/")[-2:]), named) if named else None
        try:
            self.settings.trust.check_scope(edge, alert.site, alert.asset, topic,
                                            drift=alert.kind == "model_drift")
        except Untrusted as exc:
            self._drop(exc, topic)
            return None
        failpoint("engine.receiving")  # validated, not yet recorded
        mine = alert.id not in self._submitting
        # reserved before the record commits, so that a take-over pass that sees the new
        # row does not start it a second time
        self._submitting.add(alert.id)
        try:
            new = await self.control.receive(alert.id, topic=topic, payload=text,
                                             owner=self.worker_id)
            self.stats.alerts_repeated += not new
            start = mine and (new or not await self.control.is_processed(alert.id))
        except BaseException:
            if mine:
                self._submitting.discard(alert.id)
            raise
        if start:
            self._spawn_submit(alert)
        elif mine:
            self._submitting.discard(alert.id)
        return alert.topic_suffix, alert.id

    def _drop(self, exc: Untrusted, topic: str) -> None:
        """Count a message dropped unread (no record, no ack): memory stays bounded, the
        audit gets one summary per poll (:meth:`_report_drops`), the log one line per
        reason per summary."""
        self.stats.alerts_dropped += 1
        self.metrics.drop(exc.reason)
        first = exc.reason not in self._drops
        self._drops[exc.reason] = self._drops.get(exc.reason, 0) + 1
        if len(self._drop_samples) < 3:
            self._drop_samples.append(f"{exc.reason} on {topic[:120]}: {exc.detail[:120]}")
        if first:
            log.warning("engine.alert_dropped", reason=exc.reason, topic=topic[:120],
                        detail=exc.detail[:120])

    async def _checkpoint_audit(self, *, final: bool = False) -> None:
        """Sign the audit chain's head (every ``audit_checkpoint_every`` records, every
        ``audit_checkpoint_s`` when it moved, and at shutdown) and anchor it in a file
        outside the database."""
        s = self.settings
        due = final or time.monotonic() - self._checkpointed >= s.audit_checkpoint_s
        cp = await self.control.checkpoint_audit(
            self.key, every=1 if due else s.audit_checkpoint_every)
        if due:
            self._checkpointed = time.monotonic()
        if cp is None:
            return
        doc = cp.model_dump_json()
        # fsynced: off the event loop
        await asyncio.to_thread(write_private, s.audit_anchor_file, (doc + "\n").encode())
        link = self._link
        if link is not None and s.audit_anchor_topic:  # and off the host, retained
            try:
                async with asyncio.timeout(2):
                    await link.publish(f"{s.audit_anchor_topic}/{s.engine_id}", doc, qos=1,
                                       retain=True)
            except (aiomqtt.MqttError, TimeoutError) as exc:  # the file still has it
                log.warning("engine.anchor_not_published", error=str(exc))

    async def _retention(self, *, now: float | None = None, force: bool = False) -> None:
        """Redact personal data older than ``personal_data_days`` (at most hourly)."""
        days = self.settings.personal_data_days
        if days is None or (not force and time.monotonic() - self._retained < 3600):
            return
        self._retained = time.monotonic()
        before = (time.time() if now is None else now) - days * 86400
        ops = await self.ops.redact_personal(before)
        approvals = await self.control.redact_personal(before)
        if approvals or any(ops.values()):
            await self.control.audit("retention.redacted", actor=self.worker_id,
                                     before=before, approvals=approvals,
                                     work_orders=ops["work_orders"],
                                     notifications=ops["notifications"])

    async def _report_drops(self) -> None:
        """One audit record for everything dropped since the last one."""
        if not self._drops:
            return
        counts, samples = self._drops, self._drop_samples
        self._drops, self._drop_samples = {}, []
        await self.control.audit("alerts.dropped", actor=self.worker_id, counts=counts,
                                 samples=samples, total=sum(counts.values()))

    def _spawn_submit(self, alert: Alert) -> None:
        self._submitting.add(alert.id)
        self._spawn(self._guarded_submit(alert), f"alert-{alert.id[:8]}")

    async def _failed(self, kind: str, exc: Exception, *, thread_id: str | None = None,
                      **detail: Any) -> None:
        """A background step failed: logged, and audited as ``kind`` (if the audit fails
        too, the log line is all there is); the engine goes on."""
        log.exception(f"engine.{kind}", thread_id=thread_id, **detail)
        with contextlib.suppress(Exception):
            await self.control.audit(kind, actor="engine", thread_id=thread_id,
                                     error=f"{type(exc).__name__}: {exc}", **detail)

    def _spawn(self, coro: Any, name: str) -> None:
        assert self._tg is not None
        task = self._tg.create_task(coro, name=name)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _guarded_submit(self, alert: Alert) -> None:
        """Process a recorded alert; then it needs no recovery. A failure leaves it
        unprocessed (audited): the next start of an engine processes it again; while the
        database is out of reach it is this worker's to take up again."""
        try:
            await self.submit(alert)
            await self.control.processed(alert.id)
        except Exception as exc:
            if is_transient(exc):
                log.warning("engine.submit_interrupted", alert_id=alert.id, error=str(exc))
                return
            await self._failed("alert.submit_failed", exc, alert_id=alert.id)
        finally:
            self._submitting.discard(alert.id)

    async def submit(self, alert: Alert) -> list[RunOutcome]:
        """Run every matching workflow for ``alert`` (once per workflow, ever).

        The alert's processing continues the trace its edge started (a consumer span
        whose parent is the alert's ``traceparent``); log lines of it carry the alert
        and trace ids."""
        s = self.settings
        topic = f"{s.alert_topic.rstrip('#').rstrip('/')}/{alert.topic_suffix}"
        with structlog.contextvars.bound_contextvars(
                alert_id=alert.id, trace_id=tracing.trace_id(alert.traceparent)), \
                tracing.span(f"process {topic}", kind="consumer", parent=alert.traceparent,
                             attributes={
                                 "messaging.system": "mqtt",
                                 "messaging.operation.type": "process",
                                 "messaging.operation.name": "process",
                                 "messaging.destination.name": topic,
                                 "messaging.message.id": alert.id,
                                 "messaging.consumer.group.name":
                                     s.share_group if s.workers else None,
                                 "aiotflow.site": alert.site, "aiotflow.asset": alert.asset,
                                 "aiotflow.alert.severity": alert.severity,
                                 "aiotflow.worker": self.worker_id}):
            return await self._submit(alert)

    async def _submit(self, alert: Alert) -> list[RunOutcome]:
        self.stats.alerts_received += 1
        self._emit("alert.received", alert=alert)
        specs = self.app.matching(alert)
        if not specs:
            self.stats.unmatched += 1
            await self.control.audit("alert.unmatched", actor="engine", alert_id=alert.id,
                                     asset=alert.asset)
            return []
        outcomes = await asyncio.gather(*(self._start(spec, alert) for spec in specs))
        return list(outcomes)

    async def _start(self, spec: WorkflowSpec, alert: Alert) -> RunOutcome:
        tid = f"{spec.name}/{alert.id}"
        if tid in self._running:  # this worker is on it already
            return RunOutcome(tid, spec.name, "duplicate")
        self._running.add(tid)
        try:
            return await self._claim_and_run(spec, alert, tid)
        finally:
            self._running.discard(tid)

    async def _claim_and_run(self, spec: WorkflowSpec, alert: Alert, tid: str) -> RunOutcome:
        alert_json = alert.model_dump(mode="json")
        # one statement decides, across workers: new, a repeat, or coalesced into the
        # active run on the asset (the single-flight index)
        received = {"alert_id": alert.id, "trace_id": tracing.trace_id(alert.traceparent),
                    "asset": alert.asset, "site": alert.site,
                    "severity": alert.severity, "score": alert.score,
                    "threshold": alert.threshold,
                    "model": f"{alert.model_name}@{alert.model_version}",
                    "summary": {k: v.model_dump() for k, v in alert.summary.items()}}
        claim, active = await self.runs.claim(
            thread_id=tid, workflow=spec.name, alert=alert_json, owner=self.worker_id,
            single_flight=spec.single_flight, audit=("alert.received", "engine", received))
        if claim == "coalesced":
            self.stats.coalesced += 1
            await self.control.audit("alert.coalesced", actor="engine", thread_id=active,
                                     alert_id=alert.id, severity=alert.severity,
                                     score=alert.score)
            self._emit("alert.coalesced", thread_id=active, alert=alert)
            return RunOutcome(active, spec.name, "coalesced")
        if claim == "duplicate":
            self.stats.duplicates += 1
            await self.control.audit("alert.duplicate", actor="engine", thread_id=tid,
                                     alert_id=alert.id)
            self._emit("alert.duplicate", thread_id=tid, alert=alert)
            return RunOutcome(tid, spec.name, "duplicate")
        self.stats.runs_started += 1
        self.metrics.run_transitions.inc(spec.name, "started")
        self._emit("run.started", thread_id=tid, workflow=spec.name, alert=alert)
        failpoint("engine.claimed")
        return await self._invoke(spec, alert, tid, {"alert": alert_json})

    # ------------------------------------------------------------------ running
    def _context(self, spec: WorkflowSpec, alert: Alert, tid: str) -> WorkflowContext:
        return WorkflowContext(
            thread_id=tid, workflow=spec.name, alert=alert,
            principal=Principal(name=f"workflow:{spec.name}", scopes=spec.scopes),
            executor=self.executor, control=self.control, history=self.history,
            services=self.services,
        )

    async def _invoke(self, spec: WorkflowSpec, alert: Alert, tid: str, inp: Any) -> RunOutcome:
        """Run (or resume) the graph: an ``invoke_agent`` span in the alert's trace, timed
        by how it ended, its log lines bound to the thread."""
        resuming = isinstance(inp, Command)
        t0 = time.perf_counter()
        outcome = "error"
        with structlog.contextvars.bound_contextvars(
                alert_id=alert.id, thread_id=tid, trace_id=tracing.trace_id(alert.traceparent)
                ), tracing.span(f"invoke_agent {spec.name}", parent=alert.traceparent,
                                attributes={"gen_ai.operation.name": "invoke_agent",
                                            "gen_ai.agent.name": spec.name,
                                            "gen_ai.conversation.id": tid,
                                            "aiotflow.thread_id": tid,
                                            "aiotflow.resumed": resuming,
                                            "aiotflow.worker": self.worker_id}) as sp:
            try:
                result = await self._invoke_graph(spec, alert, tid, inp)
                outcome = str(result.status)
                tracing.set_attributes(sp, aiotflow__run__status=outcome,
                                       aiotflow__approval_id=result.approval_id)
                return result
            finally:
                self.metrics.run_seconds.observe(time.perf_counter() - t0, spec.name, outcome)
                if outcome in ("completed", "failed", "waiting_approval"):
                    self.metrics.run_transitions.inc(spec.name, outcome)

    async def _invoke_graph(self, spec: WorkflowSpec, alert: Alert, tid: str, inp: Any
                            ) -> RunOutcome:
        graph = self._graphs[spec.name]
        config = {"configurable": {"thread_id": tid}}
        lock = self._thread_locks.setdefault(tid, asyncio.Lock())
        site = self._site_slots.setdefault(
            alert.site, asyncio.Semaphore(self.settings.max_runs_per_site))
        async with site, self._slots, lock:
            started = time.perf_counter()
            slot = await self._site_slot(alert.site, tid)
            try:
                out = await graph.ainvoke(inp, config, context=self._context(spec, alert, tid))
            except Exception as exc:
                if is_transient(exc):  # the database, not the workflow: taken up again
                    raise
                self.stats.runs_failed += 1
                error = f"{type(exc).__name__}: {exc}"
                await self.runs.set_status(tid, "failed", error=error, audit=(
                    "workflow.failed", spec.name, {"error": error}))
                log.exception("engine.run_failed", thread_id=tid)
                self._emit("run.failed", thread_id=tid, error=str(exc))
                return RunOutcome(tid, spec.name, "failed", error=str(exc))
            finally:
                await self._release_slot(alert.site, slot, tid)
            # the run's last values and its pending interrupts come with the answer (no
            # second read of the checkpoint); a state that is not a dict is read back
            if isinstance(out, dict):
                values = {k: v for k, v in out.items() if k != "__interrupt__"}
                interrupts = list(out.get("__interrupt__") or ())
            else:
                snap = await graph.aget_state(config)
                values, interrupts = dict(snap.values or {}), list(snap.interrupts)
        if interrupts:
            payload = interrupts[0].value
            aid = payload.get("approval_id") if isinstance(payload, dict) else None
            self.stats.waiting_approval += 1
            await self.runs.set_status(tid, "waiting_approval")
            failpoint("engine.waiting")
            self._emit("run.waiting_approval", thread_id=tid, approval_id=aid,
                       title=payload.get("title") if isinstance(payload, dict) else None)
            return RunOutcome(tid, spec.name, "waiting_approval", values, approval_id=aid)
        self.stats.runs_completed += 1
        result = values.get("result") if isinstance(values.get("result"), dict) else None
        await self.runs.set_status(tid, "completed", result=result, audit=(
            "workflow.completed", spec.name,
            {"ms": round((time.perf_counter() - started) * 1000, 1), "result": result}))
        self._emit("run.completed", thread_id=tid, values=values)
        return RunOutcome(tid, spec.name, "completed", values)

    # ------------------------------------------------------------------ approvals
    async def _resume_loop(self) -> None:
        """The poller: each step on its own, so a failing one (a bad history entry, a
        database hiccup) is logged and audited and never holds up the others; resumes
        run as tasks, so one slow workflow does not stop sweeps, expiry or other resumes."""
        while True:
            for step in (self._sweep, self.apply_history_queue, self.resume_decided,
                         self._report_drops, self._checkpoint_audit, self._retention,
                         self.metrics.refresh):
                try:
                    await step()
                except Exception as exc:
                    await self._failed("engine.poll_failed", exc, step=step.__name__)
            await asyncio.sleep(self.settings.approval_poll_s)

    async def _sweep(self) -> None:
        """Escalate and expire approvals by the policy, and tell people."""
        for rec, what in await self.control.sweep(self.settings.policy):
            await self._announce(rec, what)
        for name, until in await self.control.lockouts_to_announce():
            when = time.strftime("%H:%M:%S", time.localtime(until))
            try:
                await self.ops.notify(
                    recipient="security", priority="high",
                    subject=f"Operator {name} locked out after wrong PINs",
                    message=f"{self.settings.policy.pin_attempts} wrong PINs in a row for "
                            f"{name} at the approval console; locked until {when}. If it "
                            "was not them, someone is guessing.",
                    key=f"lockout/{name}/{until}")
            except Exception:
                log.exception("engine.announce_failed", operator=name)

    async def resume_decided(self) -> list[str]:
        """Start resuming, as background tasks under the same limits as new runs, every
        run whose approval was decided (or expired) and not yet resumed; returns the ids
        of the approvals whose resume started now. A resume that fails is audited and
        tried again at the next poll (its approval is marked resumed only when done)."""
        started: list[str] = []
        if self.paused:
            return started
        for rec in await self.control.decided_not_resumed():
            if rec.id in self._resuming:
                continue
            self._resuming.add(rec.id)
            self._spawn(self._guarded_resume(rec), f"resume-{rec.id[:8]}")
            started.append(rec.id)
        return started

    async def _guarded_resume(self, rec: ApprovalRecord) -> None:
        try:
            await self.resume(rec)
        except Exception as exc:
            await self._failed("approval.resume_failed", exc, thread_id=rec.thread_id,
                               approval_id=rec.id)
        finally:
            self._resuming.discard(rec.id)

    async def apply_history_queue(self) -> int:
        """Apply history writes other processes queued (closed work orders, corrections)
        while this engine holds the embedded store; returns how many were applied."""
        n = 0
        for seq, kind, payload in await self.control.pending_history():
            try:
                await self.history.apply(kind, payload)
            except HistoryError as exc:  # a bad entry must not block the ones after it
                await self.control.audit("history.rejected", actor="engine", seq=seq,
                                         kind=kind, error=str(exc))
            else:
                await self.control.audit("history.applied", actor="engine", seq=seq, kind=kind)
                n += 1
            await self.control.history_applied(seq)
        return n

    async def _announce(self, rec: ApprovalRecord, what: str) -> None:
        """Tell people that an approval escalated (to the roles now asked) or expired."""
        rule = self.settings.policy.rule(rec.risk)
        if what == "escalated":
            recipient = ",".join(f"role:{r}" for r in rule.escalate_to) or "operator-on-duty"
            subject = f"Escalated, waiting for your decision: {rec.title}"
            message = (f"Approval {rec.id} ({rec.risk} risk, asset {rec.asset or '-'}) has "
                       f"waited {rule.escalate_after_s:g} s; you may now decide it: "
                       f"aiotflow approve {rec.id}")
        else:
            recipient = "operator-on-duty"
            subject = f"Expired, nothing was done: {rec.title}"
            message = (f"Approval {rec.id} ({rec.risk} risk, asset {rec.asset or '-'}) was not "
                       f"decided within {rule.expires_s:g} s; the action will not run.")
        try:
            await self.ops.notify(recipient=recipient, priority="high", subject=subject,
                                  message=message, key=f"approval-{what}/{rec.id}")
        except Exception:  # the sweep goes on; the change itself is audited
            log.exception("engine.announce_failed", approval_id=rec.id)

    async def resume(self, rec: ApprovalRecord) -> RunOutcome | None:
        """Resume the run that waits for ``rec`` with its decision."""
        spec = self.app.workflows.get(rec.workflow)
        run = await self.runs.get(rec.thread_id)
        if spec is None or run is None:
            return None  # another app's workflow: its engine resumes it
        if run.status == "running":
            return None  # the run is still on its way to the interrupt: next poll
        if run.status != "waiting_approval":
            await self.control.mark_resumed(rec.id)  # finished meanwhile: nothing to resume
            return None
        try:
            self.executor.verifier.verify(rec)
        except ForgedDecision as exc:
            # a row written into the database, a console without the engine's policy, a
            # decision copied from elsewhere: refused, audited, and the approval asked again
            log.error("approval.forgery", approval_id=rec.id, reason=exc.reason)
            self.stats.forgeries += 1
            await self.control.refuse_forgery(rec, exc.reason, actor=self.worker_id)
            return None
        decision = {"approval_id": rec.id, "status": rec.status, "by": rec.decided_by or "",
                    "comment": rec.comment}
        if rec.thread_id in self._running:
            return None
        self._running.add(rec.thread_id)
        try:
            # the one worker that moves the run from waiting to running resumes it
            if not await self.runs.take_for_resume(rec.thread_id, self.worker_id):
                return None
            self.stats.resumed += 1
            self.metrics.run_transitions.inc(spec.name, "resumed")
            self.metrics.approval_wait.observe(
                max(0.0, (rec.decided_at or time.time()) - rec.requested_at), rec.risk,
                rec.status)
            self._emit("run.resumed", thread_id=rec.thread_id, decision=decision)
            alert = Alert.model_validate(run.alert)
            outcome = await self._invoke(spec, alert, rec.thread_id, Command(resume=decision))
        finally:
            self._running.discard(rec.thread_id)
        await self.control.mark_resumed(rec.id)
        return outcome

    async def _take_over(self) -> None:
        """Take up what no live worker holds: recorded alerts not processed yet and runs
        left running - by a crash of this worker's earlier process, by a worker whose
        lease expired, or by this process while the database was out of reach. Each row
        is taken by a compare-and-set, so one worker wins it; each runs in a task of its
        own whose failure is audited, never fatal to the engine."""
        if self.paused:
            return
        lease = self.settings.lease_s
        runs, alerts = await self.runs.orphans(self.worker_id, lease)
        for alert_id, owner in alerts:
            if alert_id in self._submitting:
                continue
            payload = await self.runs.take_over_alert(alert_id, was=owner, me=self.worker_id)
            if payload is None:
                continue
            self.stats.taken_over += owner != self.worker_id
            log.warning("engine.recovering_alert", alert_id=alert_id, owner=owner)
            try:
                alert = Alert.model_validate_json(payload)
            except ValidationError as exc:  # recorded by another version: cannot run here
                await self.control.audit("alert.unrecoverable", actor="engine",
                                         alert_id=alert_id, error=str(exc)[:500])
                await self.control.processed(alert_id)
                continue
            self._spawn_submit(alert)
        for run in runs:
            if run.thread_id in self._running or run.workflow not in self.app.workflows:
                continue
            if not await self.runs.take_over(run.thread_id, was=run.owner, me=self.worker_id):
                continue
            self.stats.taken_over += run.owner != self.worker_id
            self._running.add(run.thread_id)
            self._spawn(self._guarded_recover(run), f"recover-{run.alert_id[:8]}")
        if self.settings.workers:  # alone, no slots are taken (see _site_slot)
            await self.runs.free_slots(lease)
        for site, slot, tid in list(self._leaked_slots):
            await self.runs.release_slot(site, slot, thread_id=tid)
            self._leaked_slots.remove((site, slot, tid))

    async def _lease_loop(self) -> None:
        """Beat this worker's lease every lease/3 and take over what dead workers left.
        Without the database for most of a lease the worker pauses: it takes no alerts
        and lets its runs go (cancelled where they stand: checkpoints and keyed effects
        make them continue, here or elsewhere, without repeating a step's effect)."""
        lease = self.settings.lease_s
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(lease / 3)
            try:
                async with asyncio.timeout(lease / 3):  # a pool waiting for a connection
                    alive = await self.runs.beat(self.worker_id, self._incarnation)
            except Exception as exc:
                log.warning("engine.heartbeat_failed", worker=self.worker_id,
                            error=f"{type(exc).__name__}: {exc}")
                if not self.paused and time.monotonic() - last_ok > lease * 0.7:
                    self._pause("database out of reach")
                continue
            if not alive:  # another process registered as this worker: it has the work
                self._pause("another process registered with this worker id")
                for task in self._loops:  # and its MQTT client id: stop fighting for it
                    task.cancel()
                await self._failed("worker.superseded", RuntimeError(self.worker_id),
                                   worker=self.worker_id)
                self.superseded.set()
                return
            last_ok = time.monotonic()
            if self.paused:
                self.paused = False
                log.warning("engine.resumed_work", worker=self.worker_id)
            try:
                await self._take_over()
            except Exception as exc:
                await self._failed("engine.takeover_failed", exc, worker=self.worker_id)

    def _pause(self, why: str) -> None:
        self.paused = True
        self.stats.paused += 1
        log.error("engine.paused", worker=self.worker_id, reason=why,
                  letting_go=len(self._inflight))
        for task in list(self._inflight):
            task.cancel()

    async def _deregister(self) -> None:
        with contextlib.suppress(Exception):
            await self.runs.stop(self.worker_id, self._incarnation)

    async def _site_slot(self, site: str, tid: str) -> int | None:
        """One of the site's run slots, shared by all workers: waits while all are taken.
        Alone on SQLite (no workers) the process's own semaphore is the limit: no slot."""
        if not self.settings.workers:
            return None
        delay = 0.01
        while True:
            slot = await self.runs.acquire_slot(site, thread_id=tid, owner=self.worker_id,
                                                limit=self.settings.max_runs_per_site)
            if slot is not None:
                return slot
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)

    async def _release_slot(self, site: str, slot: int | None, tid: str) -> None:
        if slot is None:
            return
        try:
            await asyncio.shield(self.runs.release_slot(site, slot, thread_id=tid))
        except Exception:  # released at the next take-over pass
            self._leaked_slots.append((site, slot, tid))

    async def _guarded_recover(self, run: RunRecord) -> None:
        spec = self.app.workflows[run.workflow]
        self._running.add(run.thread_id)
        try:
            log.warning("engine.recovering", thread_id=run.thread_id)
            await self.control.audit("workflow.recovered", actor="engine",
                                     thread_id=run.thread_id)
            alert = Alert.model_validate(run.alert)
            snap = await self._graphs[spec.name].aget_state(
                {"configurable": {"thread_id": run.thread_id}})
            # no checkpoint yet: start over; otherwise continue from the last checkpoint
            inp = None if snap.values else {"alert": run.alert}
            await self._invoke(spec, alert, run.thread_id, inp)
        except Exception as exc:  # left 'running': taken up again later
            await self._failed("workflow.recover_failed", exc, thread_id=run.thread_id)
        finally:
            self._running.discard(run.thread_id)

    async def drain(self, seconds: float = 30.0) -> bool:
        """Wait up to ``seconds`` until no alert is being processed; ``True`` if idle."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while self._inflight:
                    await asyncio.wait(list(self._inflight))
        return not self._inflight


def _trace_nodes(builder: Any, workflow: str) -> None:
    """Make every node of ``builder`` (a ``StateGraph``, before compiling) a span of its
    own, a child of the run's ``invoke_agent`` span; an interrupt (waiting for a person)
    is not a failure. The node's own runnable is called as it was: runtime context,
    config and interrupts pass through."""
    from langchain_core.runnables import RunnableConfig
    from langgraph._internal._runnable import RunnableCallable

    def traced(name: str, inner: Any) -> Any:
        # the name "config" and this annotation are how langgraph knows to pass it
        async def node(state: Any, config: RunnableConfig) -> Any:
            with tracing.span(f"node {name}", benign=(GraphBubbleUp,), attributes={
                    "aiotflow.workflow": workflow, "aiotflow.node": name}):
                return await inner.ainvoke(state, config)
        return RunnableCallable(None, node, name=name, trace=False)

    for name, spec in list(builder.nodes.items()):
        builder.nodes[name] = dataclasses.replace(spec, runnable=traced(name, spec.runnable))


def _checkpointer(s: EngineSettings) -> contextlib.AbstractAsyncContextManager[Any]:
    """The LangGraph checkpointer beside the state: SQLite in the state dir, or
    PostgreSQL at ``state_url`` (its tables made by ``aiotflow db upgrade``)."""
    if s.state_url is None:
        return AsyncSqliteSaver.from_conn_string(str(private_db(s.checkpoint_db)))
    return _postgres_saver(s.state_url)


@contextlib.asynccontextmanager
async def _postgres_saver(url: str) -> Any:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    # a pool, not one connection, so that a restarted database is reconnected to; the
    # saver serialises its queries with one lock whatever the pool size (langgraph #7259)
    async with AsyncConnectionPool(
            url, min_size=1, max_size=4, open=False, timeout=30,
            kwargs={"autocommit": True, "prepare_threshold": 0,
                    "row_factory": dict_row}) as pool:
        yield AsyncPostgresSaver(pool)  # type: ignore[arg-type]


def _named_alert(text: str) -> str | None:
    """The alert id a payload names, if it is a JSON object with a string ``id``."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    name = value.get("id") if isinstance(value, dict) else None
    return name if isinstance(name, str) and 0 < len(name) <= 200 else None
