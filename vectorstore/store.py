"""The incident history on Qdrant: embedded on a path by default, a server by URL."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog
from qdrant_client import AsyncQdrantClient, models

from .errors import EmbeddingMismatch, HistoryError, HistoryUnavailable
from .models import Incident, OutcomeStats, SimilarIncident, outcome_stats

__all__ = ["HistoryStore"]

log = structlog.get_logger("aiotflow.history")

_KEYWORD_FIELDS = ("asset", "asset_type", "site", "failure_mode", "system")


class HistoryStore:
    """``async with HistoryStore(path="history") as h:`` - similar past incidents.

    Exactly one of ``path`` (embedded Qdrant, in-process, on disk), ``url`` (a Qdrant
    server) or ``location=":memory:"``. The collection is created on first write with
    the embedding's dimension (cosine distance) and keyword indexes for filtering.
    """

    def __init__(
        self,
        *,
        path: str | Path | None = None,
        url: str | None = None,
        api_key: str | None = None,
        location: str | None = None,
        collection: str = "incidents",
    ) -> None:
        if sum(x is not None for x in (path, url, location)) != 1:
            raise HistoryError("give exactly one of path, url or location")
        self.path = Path(path) if path is not None else None
        self.url = url
        self._api_key = api_key
        self.location = location
        self.collection = collection
        self._client: AsyncQdrantClient | None = None
        self._dim: int | None = None

    async def __aenter__(self) -> HistoryStore:
        if self._client is not None:
            raise RuntimeError("HistoryStore is not re-entrant")
        try:
            if self.path is not None:
                self.path.mkdir(parents=True, exist_ok=True)
                self._client = AsyncQdrantClient(path=str(self.path))
            elif self.url is not None:
                self._client = AsyncQdrantClient(url=self.url, api_key=self._api_key)
            else:
                self._client = AsyncQdrantClient(location=self.location)
            if await self._client.collection_exists(self.collection):
                info = await self._client.get_collection(self.collection)
                vectors = info.config.params.vectors
                if isinstance(vectors, models.VectorParams):
                    self._dim = vectors.size
        except HistoryError:
            raise
        except Exception as exc:  # qdrant-client raises many unrelated types
            self._client = None
            where = self.path or self.url or self.location
            raise HistoryUnavailable(f"cannot open incident history at {where}: {exc}") from exc
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    @property
    def client(self) -> AsyncQdrantClient:
        if self._client is None:
            raise RuntimeError("HistoryStore is not open")
        return self._client

    @property
    def dim(self) -> int | None:
        """Embedding dimension of the collection (``None`` until it exists)."""
        return self._dim

    async def _ensure(self, dim: int) -> None:
        if self._dim is not None:
            if dim != self._dim:
                raise EmbeddingMismatch(self._dim, dim)
            return
        await self.client.create_collection(
            self.collection,
            vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
        )
        if self.url is not None:  # local mode scans and warns that indexes do nothing
            for name in _KEYWORD_FIELDS:
                await self.client.create_payload_index(
                    self.collection, name, field_schema=models.PayloadSchemaType.KEYWORD
                )
            await self.client.create_payload_index(
                self.collection, "ts", field_schema=models.PayloadSchemaType.FLOAT
            )
        self._dim = dim

    async def add(self, incidents: Sequence[Incident], *, batch: int = 256) -> int:
        """Insert or replace incidents (by id); returns how many were written."""
        if not incidents:
            return 0
        await self._ensure(len(incidents[0].embedding))
        for inc in incidents:
            if len(inc.embedding) != self._dim:
                raise EmbeddingMismatch(self._dim or 0, len(inc.embedding))
        for i in range(0, len(incidents), batch):
            chunk = incidents[i:i + batch]
            await self.client.upsert(
                self.collection,
                points=[
                    models.PointStruct(id=inc.id, vector=list(inc.embedding),
                                       payload=inc.payload())
                    for inc in chunk
                ],
            )
        return len(incidents)

    async def count(self) -> int:
        if self._dim is None:
            return 0
        return (await self.client.count(self.collection, exact=True)).count

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
    ) -> list[SimilarIncident]:
        """The ``limit`` most similar past incidents, best first, with optional filters."""
        if self._dim is None:
            return []
        if len(embedding) != self._dim:
            raise EmbeddingMismatch(self._dim, len(embedding))
        must: list[Any] = []
        must_not: list[Any] = []
        if asset_type is not None:
            must.append(models.FieldCondition(key="asset_type",
                                              match=models.MatchValue(value=asset_type)))
        if site is not None:
            must.append(models.FieldCondition(key="site", match=models.MatchValue(value=site)))
        if before is not None:
            must.append(models.FieldCondition(key="ts", range=models.Range(lt=before)))
        if exclude_asset is not None:
            must_not.append(models.FieldCondition(key="asset",
                                                  match=models.MatchValue(value=exclude_asset)))
        flt = models.Filter(must=must or None, must_not=must_not or None)
        res = await self.client.query_points(
            self.collection,
            query=list(embedding),
            query_filter=flt if (must or must_not) else None,
            limit=limit,
            with_payload=True,
            score_threshold=min_similarity,
        )
        out = []
        for p in res.points:
            payload = dict(p.payload or {})
            out.append(SimilarIncident(
                incident=Incident(embedding=[], **payload) if payload else Incident(
                    id=str(p.id), asset="?", ts=0, failure_mode="unknown", embedding=[]),
                similarity=float(p.score),
            ))
        return out

    async def outcomes(self, embedding: Sequence[float], **kwargs: Any) -> OutcomeStats:
        """Outcome statistics of the similar incidents (see :meth:`similar`)."""
        return outcome_stats(await self.similar(embedding, **kwargs))
