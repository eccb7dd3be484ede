"""Storage engines behind :class:`~aiotflow.vectorstore.store.HistoryStore`, one small interface.

* :class:`EdgeBackend` - Qdrant Edge (``qdrant-edge-py``), Qdrant's own engine in-process
  on a directory: one shard per collection. The embedded default: filtered top-k at 100k
  points well under a millisecond with payload indexes.
* :class:`ClientBackend` - ``qdrant-client``: a Qdrant server (URL + API key), or the
  client's local mode (``:memory:`` or a path; it scans in Python, fine for small tests).

Both take the same neutral :class:`Where` filter and return plain :class:`Hit` rows, so
the store and everything above it are the same code whichever engine is configured.
Record ids are strings of any form; the engine sees a UUID derived from each
(:func:`point_id`) and the original id travels in the payload (``id``).

Collections are created with Euclidean distance on vectors the store builds (unit
embedding, optionally an operating-context part; see :mod:`aiotflow.vectorstore.context`), and
scores come back as similarities ``1 - d^2 / 2`` (the cosine for unit vectors).
Collections made by earlier versions with cosine distance still open and answer the same
way. Each collection keeps a small metadata dict (the store's vector layout).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from .context import distance_of_similarity, similarity_of_distance

__all__ = ["Backend", "ClientBackend", "EdgeBackend", "Hit", "Metric", "Where", "point_id"]

Metric = Literal["euclid", "cosine"]

_NAMESPACE = uuid.UUID("5b0e4a2c-58c9-4d0e-9a53-6f1f0c6f3a71")


def point_id(record_id: str) -> str:
    """The engine's point id of a record id (stable, any string accepted)."""
    return str(uuid.uuid5(_NAMESPACE, record_id))


@dataclass(frozen=True)
class Where:
    """A conjunction of payload conditions, engine-neutral."""

    equals: dict[str, str] = field(default_factory=dict)
    not_equals: dict[str, str] = field(default_factory=dict)
    #: field -> values it must not take
    not_in: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: field -> (lower bound inclusive or None, upper bound exclusive or None)
    ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.equals or self.not_equals or self.not_in or self.ranges)


@dataclass(frozen=True)
class Hit:
    id: str  # the record id (payload ``id``)
    score: float
    payload: dict[str, Any]
    vector: list[float] | None = None


class Backend(Protocol):
    name: str

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    def dim(self, collection: str) -> int | None: ...
    def metric(self, collection: str) -> Metric: ...
    def meta(self, collection: str) -> dict[str, Any]: ...
    async def create(self, collection: str, dim: int, keywords: Sequence[str],
                     floats: Sequence[str], *, metric: Metric = ...,
                     meta: dict[str, Any] | None = None) -> None: ...
    async def upsert(self, collection: str,
                     rows: Sequence[tuple[str, Sequence[float], dict[str, Any]]],
                     chunk: int = ...) -> None: ...
    async def search(self, collection: str, vector: Sequence[float], where: Where,
                     limit: int, min_score: float | None) -> list[Hit]: ...
    async def scroll(self, collection: str, where: Where, *, limit: int,
                     order_by: str | None = None, descending: bool = False,
                     with_vectors: bool = False, offset: Any = None
                     ) -> tuple[list[Hit], Any]: ...
    async def get(self, collection: str, ids: Sequence[str],
                  with_vectors: bool = False) -> list[Hit]: ...
    async def set_payload(self, collection: str, record_id: str,
                          payload: dict[str, Any]) -> None: ...
    async def count(self, collection: str, where: Where | None = None) -> int: ...


@dataclass(frozen=True)
class _Layout:
    dim: int
    metric: Metric
    meta: dict[str, Any]


class _Layouts:
    """What each engine knows of its collections: vector size, distance, metadata."""

    def __init__(self) -> None:
        self._layouts: dict[str, _Layout] = {}

    def _remember(self, collection: str, dim: int, metric: Metric,
                  meta: dict[str, Any] | None) -> None:
        self._layouts[collection] = _Layout(dim, metric, dict(meta or {}))

    def dim(self, collection: str) -> int | None:
        lay = self._layouts.get(collection)
        return lay.dim if lay else None

    def metric(self, collection: str) -> Metric:
        lay = self._layouts.get(collection)
        return lay.metric if lay else "euclid"

    def meta(self, collection: str) -> dict[str, Any]:
        lay = self._layouts.get(collection)
        return dict(lay.meta) if lay else {}


# --------------------------------------------------------------------------- Qdrant Edge


class EdgeBackend(_Layouts):
    """Qdrant Edge shards under ``root`` (``root/<collection>/``).

    Queries run inline (they take well under a millisecond with payload indexes; a thread
    hop would cost more than the query); writes and scans go to a worker thread.
    """

    name = "qdrant-edge"

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root
        self._shards: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        import qdrant_edge as qe

        self.root.mkdir(parents=True, exist_ok=True)
        try:
            for meta in sorted(self.root.glob("*/aiotflow.json")):
                info = json.loads(meta.read_text())
                name = meta.parent.name
                self._shards[name] = await asyncio.to_thread(qe.EdgeShard.load,
                                                             str(meta.parent))
                self._remember(name, int(info["dim"]), info.get("distance", "cosine"),
                               info.get("meta"))
        except BaseException:
            await self.close()  # release what was opened (each shard locks its WAL)
            raise

    async def close(self) -> None:
        for shard in self._shards.values():
            await asyncio.to_thread(_flush_close, shard)
        self._shards.clear()

    async def create(self, collection: str, dim: int, keywords: Sequence[str],
                     floats: Sequence[str], *, metric: Metric = "euclid",
                     meta: dict[str, Any] | None = None) -> None:
        import qdrant_edge as qe

        async with self._lock:
            if collection in self._shards:
                return
            where = self.root / collection
            distance = qe.Distance.Euclid if metric == "euclid" else qe.Distance.Cosine
            cfg = qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=dim, distance=distance))
            shard = await asyncio.to_thread(qe.EdgeShard.create, str(where), cfg)
            for name in keywords:
                shard.update(qe.UpdateOperation.create_field_index(
                    name, qe.PayloadSchemaType.Keyword))
            for name in floats:
                shard.update(qe.UpdateOperation.create_field_index(
                    name, qe.PayloadSchemaType.Float))
            (where / "aiotflow.json").write_text(json.dumps(
                {"dim": dim, "collection": collection, "distance": metric,
                 "meta": meta or {}}))
            self._shards[collection] = shard
            self._remember(collection, dim, metric, meta)

    def _shard(self, collection: str) -> Any:
        return self._shards[collection]

    async def upsert(self, collection: str,
                     rows: Sequence[tuple[str, Sequence[float], dict[str, Any]]],
                     chunk: int = 1000) -> None:
        """Write ``rows`` in chunks, each in a worker thread (the engine call blocks)."""
        import qdrant_edge as qe

        shard = self._shard(collection)
        for i in range(0, len(rows), chunk):
            points = [qe.Point(point_id(rid), list(vec), payload)
                      for rid, vec, payload in rows[i:i + chunk]]
            await asyncio.to_thread(shard.update, qe.UpdateOperation.upsert_points(points))

    @staticmethod
    def _filter(where: Where | None) -> Any:
        import qdrant_edge as qe

        if not where:
            return None
        must: list[Any] = [qe.FieldCondition(key=k, match=qe.MatchValue(v))
                           for k, v in where.equals.items()]
        must += [qe.FieldCondition(key=k, range=qe.RangeFloat(gte=lo, lt=hi))
                 for k, (lo, hi) in where.ranges.items()]
        must_not: list[Any] = [qe.FieldCondition(key=k, match=qe.MatchValue(v))
                               for k, v in where.not_equals.items()]
        must_not += [qe.FieldCondition(key=k, match=qe.MatchAny(list(v)))
                     for k, v in where.not_in.items() if v]
        return qe.Filter(must=must or None, must_not=must_not or None)

    async def search(self, collection: str, vector: Sequence[float], where: Where,
                     limit: int, min_score: float | None) -> list[Hit]:
        import qdrant_edge as qe

        metric = self.metric(collection)
        req = qe.QueryRequest(limit=limit, query=qe.Query.Nearest(list(vector)),
                              filter=self._filter(where), with_payload=True,
                              score_threshold=_threshold(metric, min_score))
        return [_hit(p, _similarity(metric, float(p.score)))
                for p in self._shard(collection).query(req)]

    async def scroll(self, collection: str, where: Where, *, limit: int,
                     order_by: str | None = None, descending: bool = False,
                     with_vectors: bool = False, offset: Any = None
                     ) -> tuple[list[Hit], Any]:
        import qdrant_edge as qe

        order = (qe.OrderBy(order_by, direction=qe.Direction.Desc if descending
                            else qe.Direction.Asc) if order_by else None)
        req = qe.ScrollRequest(limit=limit, filter=self._filter(where), with_payload=True,
                               with_vector=with_vectors, order_by=order, offset=offset)
        recs, nxt = await asyncio.to_thread(self._shard(collection).scroll, req)
        return [_hit(r, 1.0, with_vectors) for r in recs], nxt

    async def get(self, collection: str, ids: Sequence[str],
                  with_vectors: bool = False) -> list[Hit]:
        recs = self._shard(collection).retrieve([point_id(i) for i in ids], True, with_vectors)
        return [_hit(r, 1.0, with_vectors) for r in recs]

    async def set_payload(self, collection: str, record_id: str,
                          payload: dict[str, Any]) -> None:
        import qdrant_edge as qe

        op = qe.UpdateOperation.set_payload([point_id(record_id)], payload)
        await asyncio.to_thread(self._shard(collection).update, op)

    async def count(self, collection: str, where: Where | None = None) -> int:
        import qdrant_edge as qe

        if collection not in self._shards:
            return 0
        return int(self._shard(collection).count(qe.CountRequest(exact=True,
                                                                 filter=self._filter(where))))


def _hit(point: Any, score: float, with_vector: bool = False) -> Hit:
    """A scored point or record of either engine as a :class:`Hit` (record id from the
    payload, where the engine's own id is the derived UUID)."""
    payload = dict(point.payload or {})
    return Hit(str(payload["id"] if "id" in payload else point.id), score, payload,
               _dense(point.vector) if with_vector else None)


def _threshold(metric: Metric, min_similarity: float | None) -> float | None:
    """The engine's score threshold for a minimum similarity (a distance for euclid)."""
    if min_similarity is None or metric == "cosine":
        return min_similarity
    return distance_of_similarity(min_similarity)


def _similarity(metric: Metric, score: float) -> float:
    return similarity_of_distance(score) if metric == "euclid" else score


def _flush_close(shard: Any) -> None:
    shard.flush()
    shard.close()


def _dense(vector: Any) -> list[float] | None:
    if isinstance(vector, dict):  # named vectors: the unnamed default
        vector = vector.get("", next(iter(vector.values()), None))
    return [float(v) for v in vector] if vector is not None else None


# --------------------------------------------------------------------------- qdrant-client


class ClientBackend(_Layouts):
    """qdrant-client: a server by URL, or local mode (``:memory:`` / a path)."""

    def __init__(self, *, url: str | None = None, api_key: str | None = None,
                 location: str | None = None, path: Path | None = None,
                 prefix: str = "") -> None:
        self.url, self._api_key, self.location, self.path = url, api_key, location, path
        self.prefix = prefix
        self.name = "qdrant-server" if url else "qdrant-client-local"
        super().__init__()
        self._client: Any = None

    async def open(self) -> None:
        from qdrant_client import AsyncQdrantClient

        if self.url is not None:
            self._client = AsyncQdrantClient(url=self.url, api_key=self._api_key)
        elif self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True)
            self._client = AsyncQdrantClient(path=str(self.path))
        else:
            self._client = AsyncQdrantClient(location=self.location or ":memory:")
        for c in (await self._client.get_collections()).collections:
            if c.name.startswith(self.prefix):
                await self._learn(c.name[len(self.prefix):])

    async def _learn(self, collection: str) -> None:
        """Dimension, distance and metadata of an existing collection."""
        from qdrant_client import models

        info = await self._client.get_collection(self.prefix + collection)
        vectors = info.config.params.vectors
        if isinstance(vectors, models.VectorParams):
            self._remember(collection, vectors.size,
                           "euclid" if vectors.distance == models.Distance.EUCLID else "cosine",
                           info.config.metadata)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def create(self, collection: str, dim: int, keywords: Sequence[str],
                     floats: Sequence[str], *, metric: Metric = "euclid",
                     meta: dict[str, Any] | None = None) -> None:
        from qdrant_client import models

        if self.dim(collection) is not None:
            return
        name = self.prefix + collection
        if await self._client.collection_exists(name):  # made since we opened
            await self._learn(collection)
            return
        distance = models.Distance.EUCLID if metric == "euclid" else models.Distance.COSINE
        await self._client.create_collection(
            name, vectors_config=models.VectorParams(size=dim, distance=distance),
            metadata=meta or None)
        if self.url is not None:  # local mode scans; it warns that indexes do nothing
            for f in keywords:
                await self._client.create_payload_index(
                    name, f, field_schema=models.PayloadSchemaType.KEYWORD)
            for f in floats:
                await self._client.create_payload_index(
                    name, f, field_schema=models.PayloadSchemaType.FLOAT)
        self._remember(collection, dim, metric, meta)

    @staticmethod
    def _filter(where: Where | None) -> Any:
        from qdrant_client import models

        if not where:
            return None
        must: list[Any] = [models.FieldCondition(key=k, match=models.MatchValue(value=v))
                           for k, v in where.equals.items()]
        must += [models.FieldCondition(key=k, range=models.Range(gte=lo, lt=hi))
                 for k, (lo, hi) in where.ranges.items()]
        must_not: list[Any] = [models.FieldCondition(key=k, match=models.MatchValue(value=v))
                               for k, v in where.not_equals.items()]
        must_not += [models.FieldCondition(key=k, match=models.MatchAny(any=list(v)))
                     for k, v in where.not_in.items() if v]
        return models.Filter(must=must or None, must_not=must_not or None)

    async def upsert(self, collection: str,
                     rows: Sequence[tuple[str, Sequence[float], dict[str, Any]]],
                     chunk: int = 256) -> None:
        from qdrant_client import models

        for i in range(0, len(rows), chunk):
            await self._client.upsert(self.prefix + collection, points=[
                models.PointStruct(id=point_id(rid), vector=list(vec), payload=payload)
                for rid, vec, payload in rows[i:i + chunk]])

    async def search(self, collection: str, vector: Sequence[float], where: Where,
                     limit: int, min_score: float | None) -> list[Hit]:
        metric = self.metric(collection)
        res = await self._client.query_points(
            self.prefix + collection, query=list(vector), query_filter=self._filter(where),
            limit=limit, with_payload=True, score_threshold=_threshold(metric, min_score))
        return [_hit(p, _similarity(metric, float(p.score))) for p in res.points]

    async def scroll(self, collection: str, where: Where, *, limit: int,
                     order_by: str | None = None, descending: bool = False,
                     with_vectors: bool = False, offset: Any = None
                     ) -> tuple[list[Hit], Any]:
        from qdrant_client import models

        order = (models.OrderBy(key=order_by, direction=models.Direction.DESC if descending
                                else models.Direction.ASC) if order_by else None)
        recs, nxt = await self._client.scroll(
            self.prefix + collection, scroll_filter=self._filter(where), limit=limit,
            with_payload=True, with_vectors=with_vectors, order_by=order, offset=offset)
        return [_hit(r, 1.0, with_vectors) for r in recs], nxt

    async def get(self, collection: str, ids: Sequence[str],
                  with_vectors: bool = False) -> list[Hit]:
        recs = await self._client.retrieve(self.prefix + collection,
                                           ids=[point_id(i) for i in ids],
                                           with_payload=True, with_vectors=with_vectors)
        return [_hit(r, 1.0, with_vectors) for r in recs]

    async def set_payload(self, collection: str, record_id: str,
                          payload: dict[str, Any]) -> None:
        await self._client.set_payload(self.prefix + collection, payload=payload,
                                       points=[point_id(record_id)])

    async def count(self, collection: str, where: Where | None = None) -> int:
        if self.dim(collection) is None:
            return 0
        res = await self._client.count(self.prefix + collection,
                                       count_filter=self._filter(where), exact=True)
        return int(res.count)
