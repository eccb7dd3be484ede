"""The edge runtime: MQTT telemetry -> windows -> ONNX scores -> alert policy -> outbox.

Tasks (owned by one TaskGroup, all named):

* ``edge-consume``: subscribes to telemetry, validates each message, appends readings
  to the per-asset windows and queues due windows. A bad message is counted and
  dead-lettered with its reason; it never stops the loop. Reconnects with backoff.
* ``edge-score``: every ``max_delay_ms`` (or as soon as ``max_batch`` windows wait)
  scores the queued windows in one ONNX call off the event loop, runs the alert
  policy and writes alerts and dead letters to the outbox.
* ``edge-publish``: publishes the outbox to the uplink broker at QoS 1. A dead letter
  leaves it once the broker acknowledged it; an alert only once the engine did (its
  acknowledgement on ``ack.prefix/{site}/{asset}`` after it recorded the alert), sent
  again with backoff until then. Reconnects with backoff.
* ``edge-stats``: rewrites the stats file.

Leaving the context drains: the consumer stops, queued windows are scored, the outbox
is published for up to ``drain_timeout_s`` (what is left stays on disk for next time).
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import hashlib
import itertools
import json
import operator
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import aiomqtt
import msgspec
import numpy as np
import numpy.typing as npt
import structlog

from aiotflow import tracing
from aiotflow.contracts.mqtt import (
    LinkState,
    buffer_reads,
    deliver_directly,
    reap,
    reconnecting,
    sink_queue,
    wait_event,
)
from aiotflow.contracts.schema import Alert, Rows, SampleDecoder, alert_id_for, decode_readings
from aiotflow.contracts.signing import sign_alert
from aiotflow.files import write_private
from aiotflow.keys import load_or_create_key
from aiotflow.metrics import HistogramFamily

from .baseline import OperatingPoint
from .bundle import ModelBundle
from .config import EdgeSettings
from .drift import DriftMonitor
from .errors import PayloadError
from .features import WindowBuffer
from .metrics import edge_registry
from .outbox import PRIORITY, Outbox
from .policy import AlertPolicy, severity_for

__all__ = ["EdgeRuntime", "EdgeStats"]

log = structlog.get_logger("aiotflow.edge")


@dataclass
class EdgeStats:
    """Counters of one runtime; written as JSON to ``--stats-file``."""

    #: which edge: its site (None: any) and its model, ``name@version``
    site: str | None = None
    model: str | None = None
    messages_received: int = 0
    readings_received: int = 0
    invalid: int = 0
    invalid_reasons: dict[str, int] = field(default_factory=dict)
    deadlettered: int = 0
    windows_scored: int = 0
    score_batches: int = 0
    alerts_emitted: int = 0
    #: alerts by "kind/severity" ("anomaly/critical", "model_drift/warning")
    alerts_by: dict[str, int] = field(default_factory=dict)
    alerts_suppressed: int = 0
    published: int = 0
    resent: int = 0
    acks_received: int = 0
    acks_invalid: int = 0
    outbox_depth: int = 0
    outbox_awaiting_ack: int = 0
    outbox_evicted: int = 0
    outbox_dropped: int = 0
    outbox_poison: int = 0
    drift_psi: float | None = None
    drift_alerts: int = 0
    imputed_values: int = 0
    windows_skipped: int = 0
    assets: int = 0
    #: idle assets whose windows were let go at max_assets, and readings of new assets
    #: refused because every kept one was live
    assets_evicted: int = 0
    assets_refused: int = 0
    connects: int = 0
    uplink_connects: int = 0
    telemetry_connected: bool = False
    uplink_connected: bool = False
    disconnects: int = 0
    uplink_disconnects: int = 0
    last_error: str | None = None
    started: float = field(default_factory=time.time)
    updated: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Block:
    """Due windows of one asset, queued for scoring: window ``m`` is the ``length`` rows
    of ``rows`` from ``starts[m]``, its last sample at ``ts[m]`` (a batched message's
    windows share its rows; a single reading's window is a block of one)."""

    __slots__ = ("arrived", "asset", "key", "rows", "site", "starts", "ts")

    def __init__(self, site: str, asset: str, key: str, ts: list[float],
                 rows: npt.NDArray[np.float64], starts: range, arrived: float) -> None:
        self.site, self.asset, self.key = site, asset, key
        self.ts, self.rows, self.starts = ts, rows, starts
        self.arrived = arrived  # monotonic time the message with its last sample came

    def split(self, n: int) -> _Block:
        """Keep the first ``n`` windows here; the rest as a new block."""
        rest = _Block(self.site, self.asset, self.key, self.ts[n:], self.rows,
                      self.starts[n:], self.arrived)
        self.ts, self.starts = self.ts[:n], self.starts[:n]
        return rest


class _Runs(NamedTuple):
    """A scored batch as runs of one key's windows: run ``j`` is windows
    ``offsets[j]`` up to ``offsets[j + 1]``, ``lengths[j]`` of them; ``ts`` of each."""

    keys: list[str]
    lengths: list[int]
    offsets: list[int]
    ts: npt.NDArray[np.float64]


class EdgeRuntime:
    """``async with EdgeRuntime(settings) as rt: ...`` runs the edge until the block ends."""

    #: recorded as things happen (the counters are :attr:`stats`, read at scrape time)
    batch_seconds: HistogramFamily
    batch_windows: HistogramFamily
    reading_to_alert: HistogramFamily

    def __init__(
        self,
        settings: EdgeSettings,
        *,
        bundle: ModelBundle | None = None,
        stats_file: str | Path | None = None,
    ) -> None:
        self.settings = settings
        self.bundle = bundle or ModelBundle(settings.model)
        meta = self.bundle.meta
        self.buffer = WindowBuffer(meta.channels, meta.window, meta.hop,
                                   max_impute=settings.max_impute,
                                   max_assets=settings.max_assets,
                                   idle_s=settings.asset_idle_s, on_evict=self._forget)
        # the usual message (every channel of the model, no asset named) decoded with
        # no dict per reading; any other goes by decode_readings
        self._samples = SampleDecoder(meta.channels)
        self._lags = np.arange(meta.window)
        self._routes: dict[str, tuple[str, str, PayloadError | None]] = {}
        self._max_batch = settings.scoring.max_batch
        #: windows waiting at which the scorer stops the reading until it caught up
        self._high_water = 4 * self._max_batch
        # QoS 1 publishes in flight at once (aiomqtt warns past 10 pending)
        self._publish_window = 10
        self.policy = AlertPolicy(settings.policy)
        self.operating_point = OperatingPoint(meta.channels)
        self.drift = DriftMonitor(meta.score_quantiles, settings.drift)
        self.stats = EdgeStats(site=settings.site,
                               model=f"{self.bundle.name}@{self.bundle.version}")
        self.stats_file = Path(stats_file) if stats_file else None
        self.subscribed = asyncio.Event()
        self.telemetry_link = LinkState()
        self.uplink_link = LinkState()
        self._alert_listeners: list[Callable[[Alert], None]] = []
        self._pending: list[_Block] = []
        self.pending_count = 0  # windows in _pending
        self._dead: list[tuple[str, str, bytes, int]] = []
        #: alert ids the engine acknowledged, confirmed in the outbox by the publisher
        self._acked: list[str] = []
        self._wake_scorer = asyncio.Event()
        self._wake_publisher = asyncio.Event()
        self._outbox_empty = asyncio.Event()
        self._outbox = Outbox(settings.outbox, max_messages=settings.outbox_max,
                              max_bytes=settings.outbox_max_bytes)
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closing = False
        self._suffix = uuid.uuid4().hex[:6]
        #: Prometheus families over these stats (served by ``aiotflow edge --metrics-port``)
        self.metrics = edge_registry(self)

    def add_alert_listener(self, fn: Callable[[Alert], None]) -> None:
        """Call ``fn(alert)`` for every alert as it enters the outbox (local displays,
        tests); a failing listener is logged and ignored."""
        self._alert_listeners.append(fn)

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> EdgeRuntime:
        if self._tg is not None:
            raise RuntimeError("EdgeRuntime is not re-entrant")
        self.key = load_or_create_key(self.settings.signing_key_file, self.settings.site or "edge")
        await self._outbox.__aenter__()
        self.stats.outbox_depth = await self._outbox.depth()
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        for name, coro in (
            ("edge-consume", self._consume()),
            ("edge-score", self._score_loop()),
            ("edge-publish", self._publish_loop()),
            ("edge-stats", self._stats_loop()),
        ):
            self._tasks[name] = self._tg.create_task(coro, name=name)
        log.info("edge.started", model=self.bundle.name, version=self.bundle.version,
                 broker=self.settings.mqtt.url, outbox_depth=self.stats.outbox_depth)
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._tg is not None
        try:
            self._tasks["edge-consume"].cancel()
            self._closing = True
            self._wake_scorer.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tasks["edge-score"]
            self._wake_publisher.set()
            if self._outbox.size:
                await wait_event(self._outbox_empty, self.settings.drain_timeout_s)
            for name in ("edge-publish", "edge-stats"):
                self._tasks[name].cancel()
            await reap(list(self._tasks.values()))
            await self._tg.__aexit__(t, e, tb)
        finally:
            self._tg = None
            self.stats.outbox_depth = await self._outbox.depth()
            self.write_stats()
            await self._outbox.__aexit__(None, None, None)
            log.info("edge.stopped", **{k: v for k, v in self.stats.as_dict().items()
                                        if isinstance(v, int)})

    async def run_until(self, stop: asyncio.Event) -> EdgeStats:
        """Run until ``stop`` is set, then drain; returns the final stats."""
        async with self:
            await stop.wait()
        return self.stats

    # ------------------------------------------------------------------ consume
    async def _consume(self) -> None:
        async def body(client: aiomqtt.Client) -> None:
            await client.subscribe(self.settings.telemetry_topic, qos=1)
            self.subscribed.set()
            log.info("edge.subscribed", topic=self.settings.telemetry_topic)
            try:
                # messages are handled on arrival by the sink queue; iterating only
                # waits for (and raises on) disconnection
                async for _ in client.messages:
                    pass
            finally:
                self.subscribed.clear()

        await reconnecting("telemetry", self.settings.mqtt, body,
                           client_id=f"aiotflow-edge-{self._suffix}", state=self.telemetry_link,
                           prepare=self._fast_inbound, queue_type=sink_queue(self._on_message))

    def _fast_inbound(self, client: aiomqtt.Client) -> None:
        """The telemetry link: its socket read in chunks, each message handled straight
        from paho's callback (where either is not possible, as aiomqtt does it)."""
        buffer_reads(client)
        deliver_directly(client, self.handle)

    def _on_message(self, message: aiomqtt.Message) -> None:
        self.handle(message.topic.value, message.payload)

    def handle(self, topic: str, payload: Any) -> None:
        """Process one telemetry message (synchronous: it never blocks or raises)."""
        st = self.stats
        st.messages_received += 1
        raw = payload if isinstance(payload, bytes) else (
            bytes(payload) if isinstance(payload, bytearray) else str(payload).encode())
        route = self._routes.get(topic)
        if route is None:
            route = self._route(topic)
        site, asset, bad = route
        if bad is not None:
            self._reject(topic, site, asset, raw, bad)
            return
        arrived = time.monotonic()
        fast = self._samples.decode(raw)
        if fast is not None and self._push_samples(site, asset, *fast, arrived):
            if self.pending_count >= self._max_batch:
                self._wake_scorer.set()
            return
        try:
            readings = decode_readings(raw, topic=topic)
        except PayloadError as exc:
            self._reject(topic, site, asset, raw, exc)
            return
        buffer = self.buffer
        ring = None
        for r in readings:
            a = asset if r.asset is None else r.asset
            if ring is None or r.asset is not None:
                ring = buffer.ring(f"{site}/{a}")
                if ring is None:
                    self._refused(1)
                    continue
            if r.ts <= ring.last_ts:
                self._reject(topic, site, a, msgspec.json.encode(r), PayloadError(
                    "out_of_order", f"ts {r.ts} is not after the last sample {ring.last_ts}"))
                continue
            st.readings_received += 1
            if buffer.push(ring, r.ts, r.values):
                self._queue(_Block(site, a, f"{site}/{a}", [r.ts], buffer.window(ring),
                                   range(1), arrived))
        if self.pending_count >= self._max_batch:
            self._wake_scorer.set()

    def _refused(self, readings: int) -> None:
        """Readings of a new asset the windows refused (full of live assets): counted."""
        st = self.stats
        st.invalid += readings
        st.invalid_reasons["too_many_assets"] = (
            st.invalid_reasons.get("too_many_assets", 0) + readings)

    def _queue(self, block: _Block) -> None:
        self._pending.append(block)
        self.pending_count += len(block.starts)

    def _push_samples(self, site: str, asset: str, ts: list[float], rows: Rows,
                      arrived: float) -> bool:
        """Complete samples of the topic's asset (from :class:`SampleDecoder`), pushed at
        once when in time order; ``False`` (nothing done) when not: the message then goes
        reading by reading, which rejects what is out of order."""
        n = len(ts)
        if n > 1 and not all(map(operator.lt, ts, itertools.islice(ts, 1, None))):
            return False
        key = f"{site}/{asset}"
        buffer, st = self.buffer, self.stats
        ring = buffer.ring(key, readings=n)
        if ring is None:
            self._refused(n)
            return True
        if ts[0] <= ring.last_ts:
            return False
        st.readings_received += n
        if isinstance(rows, list):  # a single reading
            if buffer.push_row(ring, ts[0], rows[0]):
                self._queue(_Block(site, asset, key, ts, buffer.window(ring), range(1),
                                   arrived))
            return True
        due, ext = buffer.push_many(ring, ts[-1], rows)
        if due:
            # window after row j starts at row j + 1 of ext
            self._queue(_Block(site, asset, key, ts[due.start:due.stop:due.step], ext,
                               range(due.start + 1, due.stop + 1, due.step), arrived))
        return True

    def pending_windows(self) -> list[tuple[str, str, float, npt.NDArray[np.float64]]]:
        """``(site, asset, ts, window [length, C])`` of every window waiting to be scored."""
        length = self.bundle.meta.window
        return [(b.site, b.asset, t, b.rows[s:s + length])
                for b in self._pending for t, s in zip(b.ts, b.starts, strict=True)]

    def _forget(self, key: str) -> None:
        """An idle asset evicted from the windows: its alert state and level go too."""
        self.policy.forget(key)
        self.operating_point.forget(key)

    def _route(self, topic: str) -> tuple[str, str, PayloadError | None]:
        """``(site, asset, error)`` of a telemetry topic, cached."""
        parts = topic.split("/")
        site, asset = (parts[-2], parts[-1]) if len(parts) >= 2 else ("", "")
        bad = None
        if not site or not asset:
            bad = PayloadError("bad_topic", "topic must end in {site}/{asset}", topic=topic)
        elif self.settings.site and site != self.settings.site:
            bad = PayloadError("wrong_site", f"site {site!r} is not {self.settings.site!r}")
        if len(self._routes) > 100_000:  # topics are attacker-controlled: bound the cache
            self._routes.clear()
        route = self._routes[topic] = (site, asset, bad)
        return route

    def _reject(self, topic: str, site: str, asset: str, raw: bytes, exc: PayloadError) -> None:
        st = self.stats
        st.invalid += 1
        st.invalid_reasons[exc.reason] = st.invalid_reasons.get(exc.reason, 0) + 1
        # a bounded prefix, the size and a hash: junk of any size makes a small letter
        keep = raw[:self.settings.deadletter_max_bytes]
        try:
            text: str | None = keep.decode("utf-8")
            encoded = None
        except UnicodeDecodeError:
            text, encoded = None, base64.b64encode(keep).decode()
        letter = {
            "topic": topic[:1024],
            "reason": exc.reason,
            "detail": exc.detail[:1024],
            "received": time.time(),
            "payload": text,
            "payload_base64": encoded,
            "size": len(raw),
            "truncated": len(raw) > len(keep),
            "sha256": hashlib.sha256(raw).hexdigest(),
        }
        dl_topic = f"{self.settings.deadletter_prefix}/{site or '_'}/{asset or '_'}"
        self._dead.append((f"dl-{uuid.uuid4()}", dl_topic, json.dumps(letter).encode(),
                           PRIORITY["deadletter"]))
        if len(self._dead) >= 256:
            self._wake_scorer.set()

    # ------------------------------------------------------------------ score
    async def _score_loop(self) -> None:
        delay = self.settings.scoring.max_delay_ms / 1000.0
        while True:
            # a full batch at once; fewer windows once the oldest has waited max_delay_ms
            # (then with what came meanwhile): under load batches fill up instead of
            # chasing the few windows each batch's scoring let in
            if self.pending_count >= self._max_batch:
                # behind by several batches (a model slower than the telemetry): on the
                # loop, so that no message is read until the windows are scored - what
                # waits stays bounded, and the broker holds the rest
                await self._score_once(inline=self.pending_count >= self._high_water)
                continue
            if self._closing:
                while self._pending or self._dead:
                    await self._score_once()
                return
            wait = delay
            if self._pending:
                wait = self._pending[0].arrived + delay - time.monotonic()
                if wait <= 0:
                    await self._score_once()
                    continue
            elif self._dead:
                await self._score_once()
                continue
            self._wake_scorer.clear()
            await wait_event(self._wake_scorer, wait)

    def _take_batch(self) -> list[_Block]:
        """Up to ``max_batch`` queued windows, oldest first (a block split if need be)."""
        max_batch, pending = self._max_batch, self._pending
        taken = 0
        for i, block in enumerate(pending):
            taken += len(block.starts)
            if taken >= max_batch:
                if taken > max_batch:
                    pending.insert(i + 1, block.split(len(block.starts) - (taken - max_batch)))
                batch, self._pending = pending[:i + 1], pending[i + 1:]
                break
        else:
            batch, self._pending = pending, []
        self.pending_count -= min(taken, max_batch)
        return batch

    async def _score_once(self, *, inline: bool = False) -> None:
        """Score a batch (off the event loop; on it with ``inline``: no socket is read
        meanwhile) and write its alerts and the dead letters to the outbox."""
        batch = self._take_batch()
        dead, self._dead = self._dead, []
        out: list[tuple[str, str, bytes, int]] = []  # alerts, for the engine
        if batch:
            # every block's rows end to end, and where each window starts in them
            starts: list[int] = []
            offsets = [0]  # window index where each block begins
            ts: list[float] = []
            row = 0
            for b in batch:
                s = b.starts
                starts.extend(range(row + s.start, row + s.stop, s.step))
                row += len(b.rows)
                offsets.append(len(starts))
                ts.extend(b.ts)
            # a block is a run of one key's windows: the policy and the operating point
            # take a key per run
            keys = [b.key for b in batch]
            lengths = [len(b.starts) for b in batch]
            rows = batch[0].rows if len(batch) == 1 else np.concatenate([b.rows for b in batch])
            # [length, B, C]: time-major, the layout the features are computed in
            windows = np.take(rows, np.add.outer(self._lags, starts), axis=0)
            began_ns = time.time_ns()
            t0 = time.perf_counter()
            # the channel means (for the operating point) come with the features
            means = np.empty((len(starts), windows.shape[2]))
            if inline:
                emb, scores = self.bundle.score_windows(windows, time_major=True, means=means)
            else:
                emb, scores = await asyncio.to_thread(self.bundle.score_windows, windows,
                                                      time_major=True, means=means)
            self.batch_seconds.observe(time.perf_counter() - t0)
            self.batch_windows.observe(len(starts))
            self.stats.windows_scored += len(starts)
            self.stats.score_batches += 1
            threshold = self.bundle.meta.threshold
            point = self.operating_point
            episodes, normal = self.policy.update_runs(keys, lengths, ts, scores, threshold)
            runs = _Runs(keys, lengths, offsets, np.fromiter(ts, np.float64, len(ts)))
            folded = 0  # normal windows folded into the operating point so far
            for i, episode in episodes:
                upto = bisect.bisect_left(normal, i, lo=folded)
                self._fold(point, normal[folded:upto], runs, means)  # level up to now
                folded = upto
                block = batch[bisect.bisect_right(offsets, i) - 1]
                site, asset = block.site, block.asset
                topic = f"{self.settings.alert_prefix}/{site}/{asset}"
                alert = self._alert(site, asset, ts[i], windows[:, i], episode.start,
                                    float(scores[i]), emb[i], point.get(block.key), topic,
                                    began_ns)
                out.append((alert.id, topic, alert.model_dump_json().encode(),
                            PRIORITY[alert.severity]))
                self._count(alert)
                self.reading_to_alert.observe(time.monotonic() - block.arrived)
                self._notify(alert)
                log.warning("edge.alert", alert_id=alert.id, asset=asset, site=site,
                            severity=alert.severity, score=round(alert.score, 2))
            self._fold(point, normal[folded:], runs, means)
            self.stats.alerts_suppressed = self.policy.suppressed
            drift = self.drift.update(scores)
            self.stats.drift_psi = None if self.drift.psi is None else round(self.drift.psi, 4)
            if drift is not None:
                alert = self._drift_alert(drift)
                out.append((alert.id, f"{self.settings.alert_prefix}/{alert.topic_suffix}",
                            alert.model_dump_json().encode(), PRIORITY["model_drift"]))
                self.stats.drift_alerts += 1
                self._count(alert)
                self._notify(alert)
                log.warning("edge.model_drift", psi=round(drift, 3), model=self.bundle.name)
        if out or dead:
            await self._outbox.put_many(dead)
            await self._outbox.put_many(out, await_ack=self.settings.ack.required)
            self.stats.deadlettered += len(dead)
            self.stats.outbox_depth = self._outbox.size
            self.stats.outbox_evicted = self._outbox.evicted
            self.stats.outbox_dropped = self._outbox.dropped
            self._outbox_empty.clear()
            self._wake_publisher.set()

    @staticmethod
    def _fold(point: OperatingPoint, normal: list[int], runs: _Runs,
              means: npt.NDArray[np.float64]) -> None:
        """Fold the batch's ``normal`` windows into the operating point: in one call,
        equivalent to one window at a time."""
        if len(normal) == len(runs.ts):  # every window of the batch: the usual case
            point.update_runs(runs.keys, runs.lengths, runs.ts, means)
        elif normal:  # some of the runs' windows: what is left of each run, in order
            idx = np.asarray(normal, dtype=np.intp)
            counts = np.bincount(np.searchsorted(runs.offsets, idx, side="right") - 1,
                                 minlength=len(runs.keys)).tolist()
            kept = [(k, c) for k, c in zip(runs.keys, counts, strict=True) if c]
            point.update_runs([k for k, _ in kept], [c for _, c in kept], runs.ts[idx],
                              means[idx])

    def _count(self, alert: Alert) -> None:
        st = self.stats
        st.alerts_emitted += alert.kind == "anomaly"
        k = f"{alert.kind}/{alert.severity}"
        st.alerts_by[k] = st.alerts_by.get(k, 0) + 1

    def _notify(self, alert: Alert) -> None:
        for fn in self._alert_listeners:
            try:
                fn(alert)
            except Exception:
                log.exception("edge.alert_listener_failed")

    def _drift_alert(self, value: float) -> Alert:
        meta = self.bundle.meta
        now = time.time()
        site = self.settings.site or "_edge"
        return Alert(
            id=alert_id_for(site, f"drift:{meta.name}", now, meta.version), site=site,
            asset=meta.name, ts=now, episode_start=now, severity="warning", score=value,
            threshold=self.settings.drift.threshold, embedding=[], summary={},
            model_name=meta.name, model_version=meta.version, asset_type="model",
            kind="model_drift", traceparent=tracing.new_traceparent(),
            detail={"psi": round(value, 4), "bin_shares": self.drift.shares,
                    "expected_share": 0.1, "window": self.drift.filled},
        )

    def _alert(self, site: str, asset: str, ts: float, window: npt.NDArray[np.float64],
               start: float, score: float, emb: npt.NDArray[Any], baseline: dict[str, float],
               topic: str, began_ns: int) -> Alert:
        """The alert of an episode that opened; its trace starts here: a producer span
        from the batch's scoring to now, whose context the alert carries (a fresh
        traceparent when no spans are recorded)."""
        meta = self.bundle.meta
        alert_id = alert_id_for(site, asset, start, meta.version)
        severity = severity_for(score, meta.threshold)
        traceparent = None
        if tracing.enabled():
            with tracing.span(f"create {topic}", kind="producer", start_ns=began_ns,
                              attributes={
                                  "messaging.system": "mqtt",
                                  "messaging.operation.type": "create",
                                  "messaging.operation.name": "create",
                                  "messaging.destination.name": topic,
                                  "messaging.message.id": alert_id,
                                  "aiotflow.site": site, "aiotflow.asset": asset,
                                  "aiotflow.alert.severity": severity,
                                  "aiotflow.alert.score": score,
                                  "aiotflow.model": f"{meta.name}@{meta.version}"}):
                traceparent = tracing.current_traceparent()
        return Alert(
            id=alert_id,
            site=site,
            asset=asset,
            ts=ts,
            episode_start=start,
            severity=severity,
            score=score,
            threshold=meta.threshold,
            embedding=[round(float(v), 5) for v in emb],
            summary=self.bundle.summarize(window, emb),
            baseline=baseline,
            model_name=meta.name,
            model_version=meta.version,
            asset_type=meta.asset_type,
            traceparent=traceparent or tracing.new_traceparent(),
        )

    # ------------------------------------------------------------------ publish
    async def _publish_loop(self) -> None:
        ack = self.settings.ack
        site = self.settings.site
        ack_topic = f"{ack.prefix}/{site}/#" if site else f"{ack.prefix}/#"
        alerts = self.settings.alert_prefix + "/"

        def on_ack(message: aiomqtt.Message) -> None:  # in the socket callback: no I/O
            try:
                alert_id = msgspec.json.decode(message.payload)["id"]  # type: ignore[arg-type]
            except (msgspec.DecodeError, TypeError, KeyError):
                alert_id = None
            if not isinstance(alert_id, str):
                self.stats.acks_invalid += 1
                return
            self._acked.append(alert_id)
            self._wake_publisher.set()

        async def body(client: aiomqtt.Client) -> None:
            if ack.required:
                await client.subscribe(ack_topic, qos=1)
            while True:
                # clear before looking: a wake-up set while peeking is not lost
                self._wake_publisher.clear()
                if self._acked:
                    confirmed, self._acked = self._acked, []
                    self.stats.acks_received += await self._outbox.confirm(confirmed)
                    self.stats.outbox_depth = self._outbox.size
                batch = await self._outbox.peek(self._publish_window)
                if not batch:
                    if self._outbox.size == 0:
                        self.stats.outbox_depth = 0
                        self._outbox_empty.set()
                    due, self.stats.outbox_awaiting_ack = await self._outbox.waiting()
                    wait = 1.0 if due is None else min(1.0, max(due - time.time(), 0.01))
                    await wait_event(self._wake_publisher, wait)
                    continue
                # alerts are signed as they are sent: a fresh time each try, so one kept
                # through a long outage is not taken for a replay
                results = await asyncio.gather(
                    *(client.publish(m.topic, sign_alert(self.key, m.topic, m.payload)
                                     if m.topic.startswith(alerts) else m.payload,
                                     qos=1, timeout=10) for m in batch),
                    return_exceptions=True)
                delivered, retries, now = [], [], time.time()
                for m, r in zip(batch, results, strict=True):
                    if isinstance(r, aiomqtt.MqttError):
                        raise r  # the link is down: reconnect, the outbox keeps them all
                    if isinstance(r, Exception):  # unpublishable (e.g. a bad topic): poison
                        self.stats.outbox_poison += 1
                        log.error("edge.unpublishable", topic=m.topic, key=m.key, error=str(r))
                        delivered.append(m.seq)
                    elif m.await_ack:  # the broker has it; the engine has not said so yet
                        retries.append((m.seq, now + ack.retry_in(m.attempts + 1)))
                        self.stats.resent += m.attempts > 0
                    else:
                        delivered.append(m.seq)
                await self._outbox.ack(delivered)
                await self._outbox.sent(retries)
                self.stats.published += len(batch)
                self.stats.outbox_depth = self._outbox.size

        await reconnecting("uplink", self.settings.uplink_mqtt, body,
                           client_id=f"aiotflow-edge-up-{self._suffix}", state=self.uplink_link,
                           queue_type=sink_queue(on_ack))

    # ------------------------------------------------------------------ stats
    async def _stats_loop(self) -> None:
        while True:
            self.write_stats()
            await asyncio.sleep(self.settings.stats_interval_s)

    def write_stats(self) -> None:
        """Write the stats file atomically (no-op without one)."""
        self.stats.assets = len(self.buffer)
        st = self.stats
        t, u = self.telemetry_link, self.uplink_link
        st.connects, st.uplink_connects = t.connects, u.connects
        st.telemetry_connected, st.uplink_connected = t.connected, u.connected
        st.disconnects, st.uplink_disconnects = t.disconnects, u.disconnects
        st.last_error = u.last_error if not u.connected else t.last_error
        self.stats.imputed_values = self.buffer.imputed
        st.assets_evicted, st.assets_refused = self.buffer.evicted, self.buffer.refused
        self.stats.windows_skipped = self.buffer.skipped
        self.stats.updated = time.time()
        if self.stats_file is None:
            return
        write_private(self.stats_file, json.dumps(self.stats.as_dict(), indent=2).encode(),
                      durable=False)
