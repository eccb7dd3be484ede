"""Scheduling backends: who is on call with a skill, and booking them.

:class:`SqliteScheduling` uses the built-in operations database; :class:`HttpScheduling`
talks to a customer's REST service::

    GET  {base}/oncall?skill=cooling&at=1700000000   -> 200 Technician | 404
    POST {base}/bookings  {technician_id, asset, site, start, hours, reason, key}
                                                     -> 200/201 Booking

Connection errors, timeouts and 5xx are :class:`ToolUnavailable` (retried by the tool
layer, then the agent falls back to notifying an operator); other 4xx are
:class:`ToolFailed`.
"""

from __future__ import annotations

from typing import Protocol

import httpx

from .errors import ToolFailed, ToolUnavailable
from .ops import Booking, OpsDatabase, Technician

__all__ = ["HttpScheduling", "SchedulingBackend", "SqliteScheduling"]


class SchedulingBackend(Protocol):
    """What the scheduling tools need from a roster system."""

    async def find_on_call(self, skill: str, at: float) -> Technician | None: ...

    async def book(
        self, *, technician_id: str, asset: str, site: str, start: float, hours: float,
        reason: str, key: str,
    ) -> Booking: ...


class SqliteScheduling:
    """Scheduling on the built-in SQLite roster."""

    def __init__(self, ops: OpsDatabase) -> None:
        self.ops = ops

    async def find_on_call(self, skill: str, at: float) -> Technician | None:
        return await self.ops.find_on_call(skill, at)

    async def book(
        self, *, technician_id: str, asset: str, site: str, start: float, hours: float,
        reason: str, key: str,
    ) -> Booking:
        return await self.ops.book(technician_id=technician_id, asset=asset, site=site,
                                   start=start, hours=hours, reason=reason, key=key)


class HttpScheduling:
    """Scheduling on a customer's REST service (one ``httpx.AsyncClient``)."""

    def __init__(self, base_url: str, *, timeout: float = 5.0, token: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout,
                                       headers=headers)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, url: str, **kw: object) -> httpx.Response:
        try:
            resp = await self._http.request(method, url, **kw)  # type: ignore[arg-type]
        except httpx.TransportError as exc:
            raise ToolUnavailable(f"scheduling service unreachable: {exc!r}") from exc
        if resp.status_code >= 500 or resp.status_code == 429:
            raise ToolUnavailable(f"scheduling service answered {resp.status_code}")
        return resp

    async def find_on_call(self, skill: str, at: float) -> Technician | None:
        resp = await self._request("GET", "/oncall", params={"skill": skill, "at": at})
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise ToolFailed(f"scheduling service refused: {resp.status_code} {resp.text[:200]}")
        return Technician.model_validate(resp.json())

    async def book(
        self, *, technician_id: str, asset: str, site: str, start: float, hours: float,
        reason: str, key: str,
    ) -> Booking:
        resp = await self._request(
            "POST", "/bookings",
            json={"technician_id": technician_id, "asset": asset, "site": site, "start": start,
                  "hours": hours, "reason": reason, "key": key},
            headers={"Idempotency-Key": key},
        )
        if resp.status_code not in (200, 201):
            raise ToolFailed(f"scheduling service refused: {resp.status_code} {resp.text[:200]}")
        return Booking.model_validate(resp.json())
