"""The incident history on Qdrant: Qdrant Edge on a path by default, a server by URL.

Two collections: ``incidents`` (an embedding and what the event turned out to be) and
``maintenance`` (maintenance records, searched by asset, subsystem and time only; Qdrant
needs a vector per point, so they carry a constant one-dimensional vector).

The incidents collection records its vector layout in its metadata: the embedding
dimension and, when the history weighs operating context, the context scale
(:class:`~aiotflow.vectorstore.context.ContextSettings`). The layout is fixed when the first
incident is written; a store opened later uses it (a different configured scale is an
error: export and re-import into a new history to re-index).
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from aiotflow import tracing
from aiotflow.metrics import METRICS

from .backends import Backend, ClientBackend, EdgeBackend, Hit, Where
from .context import ContextSettings, unit
from .diagnosis import Diagnosis, DiagnosisCache, DiagnosisSettings, estimate
from .errors import EmbeddingMismatch, HistoryBusy, HistoryError, HistoryUnavailable
from .models import Incident, MaintenanceRecord, OutcomeStats, SimilarIncident, outcome_stats

__all__ = ["HistorySettings", "HistoryStore"]

log = structlog.get_logger("aiotflow.history")

_INCIDENT_KEYWORDS = ("id", "asset", "asset_type", "site", "failure_mode", "system",
                      "work_order", "event")
_MAINTENANCE_KEYWORDS = ("id", "asset", "site", "system", "work_order")


class HistorySettings(BaseModel):
    """Where the history lives and how it answers (``[history]`` in a config)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path | None = Field(None, description="Embedded store directory.")
    url: str | None = Field(None, description="Qdrant server URL (instead of a path).")
    api_key: SecretStr | None = Field(None, description="Qdrant server API key (never "
                                                       "logged).")
    engine: Literal["edge", "client"] = Field(
        "edge", description="Embedded engine: Qdrant Edge (fast) or qdrant-client local mode.")
    prefix: str = Field("aiotflow_", description="Collection name prefix on a server.")
    diagnosis: DiagnosisSettings = Field(default_factory=DiagnosisSettings)
    cache_ttl_s: float = Field(600.0, ge=0, description="Reuse an answer this long; 0: off.")
    cache_distance: float = Field(
        0.05, ge=0, le=2, description="Cosine distance within which an alert reuses it.")
    context: ContextSettings | None = Field(
        None, description="Weigh the operating point (channel levels) beside the "
                          "embedding; fixed when the history is created.")


_LATENCY = METRICS.histogram(
    "aiotflow_history_query_duration_seconds",
    "A query of the incident history (similar, diagnose), by operation.", ("operation",))
_CACHE = METRICS.counter(
    "aiotflow_history_cache_requests",
    "Diagnoses asked of the history, by whether the answer cache had them (hit, miss).",
    ("result",))


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _timed(operation: str) -> Callable[[Callable[Concatenate[HistoryStore, _P], Awaitable[_R]]],
                                       Callable[Concatenate[HistoryStore, _P], Awaitable[_R]]]:
    """A query method timed (``aiotflow_history_query_duration_seconds``) and traced (a
    database client span); a diagnosis counts whether the cache answered it."""
    def wrap(fn: Callable[Concatenate[HistoryStore, _P], Awaitable[_R]]
             ) -> Callable[Concatenate[HistoryStore, _P], Awaitable[_R]]:
        @functools.wraps(fn)
        async def timed(self: HistoryStore, *args: _P.args, **kwargs: _P.kwargs) -> _R:
            t0 = time.perf_counter()
            hits = self.cache.hits if self.cache is not None else 0
            try:
                with tracing.span(f"{operation} incidents", kind="client", attributes={
                        "db.system.name": "qdrant", "db.operation.name": operation,
                        "db.collection.name": "incidents",
                        "aiotflow.history.engine": self.engine}) as sp:
                    out = await fn(self, *args, **kwargs)
                    if isinstance(out, Diagnosis):
                        if self.cache is not None:
                            hit = self.cache.hits > hits
                            _CACHE.inc("hit" if hit else "miss")
                            tracing.set_attributes(sp, aiotflow__cache_hit=hit)
                        tracing.set_attributes(
                            sp, aiotflow__diagnosis__call=out.call,
                            aiotflow__diagnosis__failure_mode=out.failure_mode,
                            aiotflow__diagnosis__events=out.events)
                    elif isinstance(out, list):
                        tracing.set_attributes(sp, db__response__returned_rows=len(out))
                    return out
            finally:
                _LATENCY.observe(time.perf_counter() - t0, operation)
        return timed
    return wrap


class HistoryStore:
    """``async with HistoryStore(path="history") as h:`` - past incidents and maintenance.

    Exactly one of ``path`` (embedded, in-process, on disk; Qdrant Edge unless
    ``engine="client"``), ``url`` (a Qdrant server, with ``api_key``) or
    ``location=":memory:"`` (qdrant-client in memory, for tests).
    """

    def __init__(
        self,
        *,
        path: str | Path | None = None,
        url: str | None = None,
        api_key: str | None = None,
        location: str | None = None,
        engine: Literal["edge", "client"] = "edge",
        settings: HistorySettings | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        if settings is not None and path is None and url is None and location is None:
            key = settings.api_key
            path, url, api_key, engine = (settings.path, settings.url,
                                          key.get_secret_value() if key else None,
                                          settings.engine)
        if sum(x is not None for x in (path, url, location)) != 1:
            raise HistoryError("give exactly one of path, url or location")
        self.settings = settings or HistorySettings()
        self.path = Path(path) if path is not None else None
        self.url = url
        self.location = location
        backend: Backend
        if self.path is not None and engine == "edge":
            backend = EdgeBackend(self.path)
        elif self.path is not None:
            backend = ClientBackend(path=self.path)
        elif url is not None:
            backend = ClientBackend(url=url, api_key=api_key, prefix=self.settings.prefix)
        else:
            backend = ClientBackend(location=location)
        self.backend = backend
        self.cache = (DiagnosisCache(ttl_s=self.settings.cache_ttl_s,
                                     max_distance=self.settings.cache_distance, clock=clock)
                      if self.settings.cache_ttl_s > 0 else None)
        self.queries = 0
        self._open = False
        self._context: tuple[ContextSettings | None] | None = None  # the history's, once read

    @property
    def engine(self) -> str:
        return self.backend.name

    async def __aenter__(self) -> HistoryStore:
        if self._open:
            raise RuntimeError("HistoryStore is not re-entrant")
        try:
            await self.backend.open()
        except Exception as exc:  # engines raise many unrelated types
            where = self.path or self.url or self.location
            if "WouldBlock" in str(exc) or "already accessed" in str(exc):
                raise HistoryBusy(f"incident history at {where} is open in another process "
                                  "(an engine running on this state directory?)") from exc
            raise HistoryUnavailable(f"cannot open incident history at {where}: {exc}") from exc
        try:
            _ = self.context  # a configured scale the history was not built with: say so now
        except HistoryError:
            await self.backend.close()
            raise
        self._open = True
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._open:
            self._open = False
            await self.backend.close()

    def stats(self) -> dict[str, Any]:
        """Engine, store queries and answer-cache counts (for logs and stats files)."""
        c = self.cache
        return {"engine": self.engine, "queries": self.queries,
                "cache_hits": c.hits if c else 0, "cache_misses": c.misses if c else 0,
                "cache_hit_rate": round(c.hit_rate, 4) if c else 0.0}

    @property
    def dim(self) -> int | None:
        """Embedding dimension of the incidents (``None`` until the first is written)."""
        stored = self.backend.dim("incidents")
        if stored is None:
            return None
        return int(self.backend.meta("incidents").get("embedding_dim", stored))

    @property
    def context(self) -> ContextSettings | None:
        """The operating-context scale in force: the history's own once it exists (a
        different configured one is refused), else the configured one."""
        if self.backend.dim("incidents") is None:
            return self.settings.context
        if self._context is not None:
            return self._context[0]
        spec = self.backend.meta("incidents").get("context")
        stored = ContextSettings.model_validate(spec) if spec else None
        wanted = self.settings.context
        if wanted is not None and (stored is None or not wanted.same_as(stored.spec())):
            where = self.path or self.url or self.location
            raise HistoryError(
                f"the incident history at {where} was built "
                + ("without operating context" if stored is None
                   else "with a different operating-context scale")
                + " than configured; use the history's own (remove [history.context]) or "
                  "export it and import into a new history to re-index")
        self._context = (stored,)
        return stored

    def _vector(self, embedding: Sequence[float], context: dict[str, float] | None
                ) -> tuple[list[float], list[str]]:
        """The engine vector of an embedding (and operating point), and the context
        channels that were missing."""
        if self.backend.metric("incidents") == "cosine":  # a history from before layouts
            return list(embedding), []
        vec = unit(embedding)
        ctx = self.context
        if ctx is None:
            return vec, []
        part, missing = ctx.part(context)
        return vec + part, missing

    # ------------------------------------------------------------------ writing

    async def add(self, incidents: Sequence[Incident], *, batch: int = 1000) -> int:
        """Insert or replace incidents (by id); returns how many were written."""
        if not incidents:
            return 0
        dim = self.dim or len(incidents[0].embedding)
        for inc in incidents:
            if len(inc.embedding) != dim:
                raise EmbeddingMismatch(dim, len(inc.embedding))
        ctx = self.context
        if self.dim is None:
            await self.backend.create(
                "incidents", dim + (ctx.size if ctx else 0), _INCIDENT_KEYWORDS, ("ts",),
                meta={"embedding_dim": dim, "context": ctx.spec() if ctx else None})
        rows, short = [], 0
        for inc in incidents:
            vec, missing = self._vector(inc.embedding, inc.context)
            short += bool(missing)
            rows.append((inc.id, vec, inc.payload()))
        if short:
            log.warning("history.context_missing", incidents=short,
                        note="missing channels count as the fleet centre")
        await self.backend.upsert("incidents", rows, chunk=batch)
        if self.cache is not None:
            self.cache.clear()  # answers may change with new evidence
        return len(incidents)

    async def add_maintenance(self, records: Sequence[MaintenanceRecord], *,
                              batch: int = 1000) -> int:
        """Insert or replace maintenance records (by id)."""
        if not records:
            return 0
        if self.backend.dim("maintenance") is None:
            await self.backend.create("maintenance", 1, _MAINTENANCE_KEYWORDS, ("ts",))
        await self.backend.upsert("maintenance", [(r.id, [1.0], r.payload()) for r in records],
                                  chunk=batch)
        return len(records)

    async def record_outcome(self, incident: Incident,
                             maintenance: MaintenanceRecord | None = None) -> None:
        """The learning loop: a settled event (e.g. a closed work order with a confirmed
        failure mode) becomes history, with the maintenance it took."""
        await self.add([incident])
        if maintenance is not None:
            await self.add_maintenance([maintenance])
        log.info("history.learned", incident=incident.id, asset=incident.asset,
                 failure_mode=incident.failure_mode, work_order=incident.work_order)

    async def apply(self, kind: str, payload: dict[str, Any]) -> None:
        """Apply one queued write (see ``ControlStore.enqueue_history``): ``outcome``
        (``incident`` and optional ``maintenance``) or ``correct`` (the arguments of
        :meth:`correct`)."""
        try:
            if kind == "outcome":
                m = payload.get("maintenance")
                await self.record_outcome(Incident.model_validate(payload["incident"]),
                                          MaintenanceRecord.model_validate(m) if m else None)
            elif kind == "correct":
                await self.correct(payload["incident_id"], payload["failure_mode"],
                                   by=payload["by"], reason=payload.get("reason", ""),
                                   system=payload.get("system"))
            else:
                raise HistoryError(f"unknown history write {kind!r}")
        except (ValidationError, KeyError, TypeError) as exc:
            raise HistoryError(f"malformed {kind} write: {exc}") from exc

    async def correct(self, incident_id: str, failure_mode: str, *, by: str,
                      reason: str = "", system: str | None = None) -> Incident:
        """Change an incident's failure mode, keeping what it was, who changed it and why."""
        current = await self.get(incident_id)
        if current is None:
            raise HistoryError(f"no incident {incident_id!r}")
        corrections = [*current.corrections, {"from": current.failure_mode, "to": failure_mode,
                                              "by": by, "reason": reason, "ts": time.time()}]
        update: dict[str, Any] = {"failure_mode": failure_mode, "corrections": corrections,
                                  "confirmed": True}
        if system is not None:
            update["system"] = system
        await self.backend.set_payload("incidents", incident_id, update)
        if self.cache is not None:
            self.cache.clear()
        return current.model_copy(update=update)

    # ------------------------------------------------------------------ reading

    async def count(self, kind: Literal["incidents", "maintenance"] = "incidents") -> int:
        return await self.backend.count(kind) if self.backend.dim(kind) is not None else 0

    async def get(self, incident_id: str, *, with_embedding: bool = False) -> Incident | None:
        if self.dim is None:
            return None
        rows = await self.backend.get("incidents", [incident_id], with_vectors=with_embedding)
        return _incident(rows[0], self.dim if with_embedding else None) if rows else None

    @_timed("similar")
    async def similar(
        self,
        embedding: Sequence[float],
        *,
        limit: int = 10,
        asset_type: str | None = None,
        site: str | None = None,
        exclude_asset: str | None = None,
        before: float | None = None,
        min_similarity: float | None = None,
        context: dict[str, float] | None = None,
    ) -> list[SimilarIncident]:
        """The ``limit`` most similar past incidents, best first, with optional filters.

        ``context``: the alert's operating point (channel levels), used when the history
        weighs operating context (missing channels count as the fleet centre)."""
        if self.dim is None:
            return []
        if len(embedding) != self.dim:
            raise EmbeddingMismatch(self.dim, len(embedding))
        vector, _ = self._vector(embedding, context)
        self.queries += 1
        hits = await self.backend.search("incidents", vector,
                                         _where(asset_type, site, exclude_asset, before),
                                         limit, min_similarity)
        return [SimilarIncident(incident=_incident(h), similarity=h.score) for h in hits]

    async def nearest_events(self, vector: list[float], where: Where, *, events: int,
                             per_event: int, min_similarity: float | None,
                             max_fetch: int = 4000) -> list[SimilarIncident]:
        """The best point of each of the ``events`` most similar events, best first.

        An event stored as many windows could fill any fixed number of nearest points by
        itself, so this searches in rounds: fetch ``per_event`` points per event still
        wanted, keep each new event's best point (its best point is in the result
        whenever any of its points is), and search again without the events found,
        fetching as many points per event as the last round saw, until enough are found
        or the history has no more. Exact; one engine query when events are single
        points, a few when they are long runs of windows.
        """
        found: dict[str, SimilarIncident] = {}
        per = max(1, per_event)
        while len(found) < events:
            done = list(found.values())
            w = replace(where, not_in={
                "event": tuple(h.incident.event for h in done if h.incident.event),
                "id": tuple(h.incident.id for h in done if not h.incident.event)})
            limit = min(max_fetch, per * (events - len(found)))
            self.queries += 1
            hits = await self.backend.search("incidents", vector, w, limit, min_similarity)
            new = seen = 0
            for h in hits:  # best first: an event's first point is its best
                seen += 1
                key = str(h.payload.get("event") or h.id)
                if key not in found:
                    found[key] = SimilarIncident(incident=_incident(h), similarity=h.score)
                    new += 1
                    if len(found) == events:  # the rest are worse
                        break
            if len(hits) < limit or not new:
                break
            per = max(per, -(-seen // new))  # points per event this round
        return sorted(found.values(), key=lambda h: -h.similarity)[:events]

    async def outcomes(self, embedding: Sequence[float], **kwargs: Any) -> OutcomeStats:
        """Outcome statistics of the similar incidents (see :meth:`similar`)."""
        return outcome_stats(await self.similar(embedding, **kwargs))

    async def last_maintenance(self, asset: str, system: str | None = None, *,
                               before: float | None = None) -> MaintenanceRecord | None:
        """The most recent maintenance of ``asset`` (of one subsystem if given)."""
        if self.backend.dim("maintenance") is None:
            return None
        where = Where(equals={"asset": asset} | ({"system": system} if system else {}),
                      ranges={"ts": (None, before)} if before is not None else {})
        rows, _ = await self.backend.scroll("maintenance", where, limit=1, order_by="ts",
                                            descending=True)
        return MaintenanceRecord.model_validate(rows[0].payload) if rows else None

    @_timed("diagnose")
    async def diagnose(
        self,
        embedding: Sequence[float],
        *,
        asset: str,
        asset_type: str | None = None,
        site: str | None = None,
        before: float | None = None,
        exclude_asset: str | None = None,
        context: dict[str, float] | None = None,
    ) -> Diagnosis:
        """What similar past events (same asset type, optionally same site) say, cited.

        ``context``: the alert's operating point (channel levels: its ``baseline``),
        weighed when the history has an operating-context scale; a channel it lacks
        makes the call uncertain.

        A recent answer for the same asset and a near-identical query is reused (see
        :class:`~aiotflow.vectorstore.diagnosis.DiagnosisCache`); ``store.cache.hit_rate`` counts.
        """
        if self.dim is not None and len(embedding) != self.dim:
            raise EmbeddingMismatch(self.dim, len(embedding))
        vector, missing = (self._vector(embedding, context) if self.dim is not None
                           else (list(embedding), []))
        key = (asset, asset_type or "", site or "", exclude_asset or "")
        if self.cache is not None:
            cached = self.cache.get(key, vector)
            if cached is not None:
                return cached
        cfg = self.settings.diagnosis
        hits = ([] if self.dim is None else await self.nearest_events(
            vector, _where(asset_type, site, exclude_asset, before), events=cfg.k,
            per_event=cfg.oversample, min_similarity=cfg.min_similarity))
        events, modes, reasons = estimate(hits, cfg)
        if missing:
            reasons.append("no operating context for " + ", ".join(missing)
                           + " (counted as the fleet centre)")
        top = modes[0] if modes else None
        system = None
        if top is not None:
            systems = [h.incident.system for h in events
                       if h.incident.failure_mode == top.failure_mode and h.incident.system]
            system = max(set(systems), key=systems.count) if systems else None
        last = (await self.last_maintenance(asset, system, before=before)
                if system is not None else None)
        ids = [h.incident.id for h in events] + ([last.id] if last else [])
        answer = Diagnosis(
            call="uncertain" if reasons or top is None else "probable",
            failure_mode=top.failure_mode if top else None,
            probability=top.probability if top else 0.0,
            events=len(events), modes=modes, neighbours=events,
            reasons=reasons or ([] if top else ["no similar past events"]),
            system=system, last_maintenance=last, evidence_ids=ids,
        )
        if self.cache is not None:
            self.cache.put(key, vector, answer)
        return answer

    async def find(
        self,
        *,
        asset: str | None = None,
        asset_type: str | None = None,
        site: str | None = None,
        failure_mode: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
    ) -> list[Incident]:
        """Incidents matching the filters, newest first (for people: ``history query``)."""
        if self.dim is None:
            return []
        where = Where(
            equals={k: v for k, v in (("asset", asset), ("asset_type", asset_type),
                                      ("site", site), ("failure_mode", failure_mode)) if v},
            ranges={"ts": (since, until)} if since is not None or until is not None else {},
        )
        rows, _ = await self.backend.scroll("incidents", where, limit=limit, order_by="ts",
                                            descending=True)
        return [_incident(r) for r in rows]

    async def export(self, kind: Literal["incidents", "maintenance"] = "incidents", *,
                     page: int = 1000) -> AsyncIterator[Incident | MaintenanceRecord]:
        """Every record of one kind (incidents with their embeddings)."""
        if self.backend.dim(kind) is None:
            return
        offset: Any = None
        while True:
            rows, offset = await self.backend.scroll(kind, Where(), limit=page, offset=offset,
                                                     with_vectors=kind == "incidents")
            for r in rows:
                yield (_incident(r, self.dim) if kind == "incidents"
                       else MaintenanceRecord.model_validate(r.payload))
            if offset is None or not rows:
                return


def _where(asset_type: str | None, site: str | None, exclude_asset: str | None,
           before: float | None) -> Where:
    return Where(
        equals={k: v for k, v in (("asset_type", asset_type), ("site", site)) if v},
        not_equals={"asset": exclude_asset} if exclude_asset else {},
        ranges={"ts": (None, before)} if before is not None else {},
    )


def _incident(hit: Hit, embedding_dim: int | None = None) -> Incident:
    """An incident from a stored point; with ``embedding_dim``, its embedding (the unit
    embedding the engine holds, without the operating-context part)."""
    payload = dict(hit.payload)
    payload["embedding"] = (hit.vector or [])[:embedding_dim] if embedding_dim else []
    payload.setdefault("id", hit.id)
    return Incident.model_validate(payload)
