"""The plant's other systems, as the maintenance agents need them: spare-parts inventory,
the maintenance calendar (planned downtime windows), condition readings (route surveys,
a historian's daily values) and the control journal through
which an agent derates or stops a machine.

Kept in the operations database (migration 2), each write under the caller's
idempotency key like the rest of it. In a plant the inventory is the ERP's and the
commands go to the control system's gateway, which reads ``asset_commands`` (or an HTTP
backend takes its place); what the agent may do is decided here and in the tool layer:

* ``check_stock``, ``next_downtime``, ``condition_trend``: read-only (low risk);
* ``order_part``: spends money, so its tier depends on the amount - up to the policy's
  ``spend_limit_usd`` it runs on its own, above it a person approves it (high); the
  order never costs more than the ``max_total_usd`` that was approved;
* ``derate_asset``: the reversible, bounded mitigation - load down to no less than 50 %,
  for at most 4 hours, after which the controller restores it (medium: automatic);
* ``stop_asset``: a controlled stop (critical: a manager approves, by default).

Scopes: ``inventory:read``, ``inventory:write``, ``calendar:read``, ``control:write``
(the last is not granted to workflows by default).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .database import Migration, Store, Tx
from .errors import ToolFailed
from .registry import ToolRegistry

__all__ = [
    "PLANT_SCOPES",
    "AssetCommand",
    "ConditionReading",
    "DowntimeWindow",
    "Part",
    "PartOrder",
    "PlantData",
    "register_plant_tools",
    "trend_per_day",
]

PLANT_SCOPES = frozenset({"inventory:read", "inventory:write", "calendar:read",
                          "control:write"})

V2 = Migration(2, "spare parts, part orders, downtime windows, condition readings, "
                  "asset commands", """
CREATE TABLE IF NOT EXISTS parts (
    part_no TEXT PRIMARY KEY, description TEXT NOT NULL, fits TEXT NOT NULL,
    stock {int} NOT NULL, unit_cost {real} NOT NULL, lead_time_days {real} NOT NULL,
    supplier TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS part_orders (
    id TEXT PRIMARY KEY, part_no TEXT NOT NULL, quantity {int} NOT NULL,
    total_usd {real} NOT NULL, asset TEXT NOT NULL, site TEXT NOT NULL, reason TEXT NOT NULL,
    eta {real} NOT NULL, key TEXT UNIQUE, created {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS downtime_windows (
    id TEXT PRIMARY KEY, asset TEXT NOT NULL, site TEXT NOT NULL, start {real} NOT NULL,
    "end" {real} NOT NULL, kind TEXT NOT NULL DEFAULT 'planned', note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS downtime_asset ON downtime_windows(asset, start);
CREATE TABLE IF NOT EXISTS condition_readings (
    asset TEXT NOT NULL, channel TEXT NOT NULL, ts {real} NOT NULL, value {real} NOT NULL,
    source TEXT NOT NULL DEFAULT 'survey', PRIMARY KEY (asset, channel, ts)
);
CREATE TABLE IF NOT EXISTS asset_commands (
    id TEXT PRIMARY KEY, asset TEXT NOT NULL, site TEXT NOT NULL, command TEXT NOT NULL,
    load_pct {real}, until {real}, reason TEXT NOT NULL, key TEXT UNIQUE,
    created {real} NOT NULL
)
""")


class Part(BaseModel):
    model_config = ConfigDict(frozen=True)

    part_no: str
    description: str
    fits: list[str] = Field(description="Failure modes (or asset types) it repairs.")
    stock: int = Field(ge=0)
    unit_cost: float = Field(ge=0)
    lead_time_days: float = Field(ge=0)
    supplier: str = ""


class PartOrder(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    part_no: str
    quantity: int
    total_usd: float
    asset: str
    site: str
    reason: str
    eta: float = Field(description="Expected delivery (epoch s).")


class DowntimeWindow(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    asset: str
    site: str
    start: float
    end: float
    kind: str = "planned"
    note: str = ""

    @property
    def hours(self) -> float:
        return (self.end - self.start) / 3600


class ConditionReading(BaseModel):
    """One point of an asset's condition trend: a route survey or a historian's daily
    aggregate (slow wear shows over weeks, not within an alert's window)."""

    model_config = ConfigDict(frozen=True)

    asset: str
    channel: str
    ts: float
    value: float
    source: str = "survey"


class AssetCommand(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    asset: str
    site: str
    command: Literal["derate", "stop"]
    load_pct: float | None = None
    until: float | None = Field(None, description="A derate ends here; the controller "
                                                  "restores full load.")
    reason: str
    created: float


class PlantData(Store):
    """The plant tables of :class:`~aiotflow.tools.ops.OpsDatabase`, and the keyed insert
    that every write of it goes through."""

    async def _insert_once(self, table: str, key: str, sql: str, params: tuple[Any, ...]) -> Any:
        """The row of ``table`` with ``key``: inserted by ``sql`` unless already there (one
        unit of work; the key is UNIQUE, so a concurrent call with the same key, in this
        process or another, finds the row instead of inserting a second)."""
        async with self.unit() as db:
            row = await by_key(db, table, key)
            if row is None:
                await db.execute(sql + " ON CONFLICT DO NOTHING", params)
                row = await by_key(db, table, key)
        assert row is not None
        return row

    async def add_parts(self, parts: Sequence[Part]) -> None:
        async with self.unit() as db:
            await db.executemany(
                "INSERT INTO parts(part_no, description, fits, stock, unit_cost,"
                " lead_time_days, supplier) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(part_no)"
                " DO UPDATE SET description = excluded.description, fits = excluded.fits,"
                " stock = excluded.stock, unit_cost = excluded.unit_cost,"
                " lead_time_days = excluded.lead_time_days, supplier = excluded.supplier",
                [(p.part_no, p.description, ",".join(p.fits), p.stock, p.unit_cost,
                  p.lead_time_days, p.supplier) for p in parts])

    async def parts(self, *, fits: str | None = None) -> list[Part]:
        async with self.read() as db:
            rows = await db.all("SELECT * FROM parts ORDER BY part_no")
        out = [_part(r) for r in rows]
        return [p for p in out if fits is None or fits in p.fits]

    async def order_part(self, *, part_no: str, quantity: int, asset: str, site: str,
                         reason: str, max_total_usd: float, key: str) -> PartOrder:
        async with self.read() as db:
            row = await db.one("SELECT * FROM parts WHERE part_no = ?", (part_no,))
        if row is None:
            raise ToolFailed(f"no part {part_no!r} in the catalogue", tool="order_part")
        part = _part(row)
        total = round(part.unit_cost * quantity, 2)
        if total > max_total_usd:
            raise ToolFailed(f"{quantity} x {part_no} costs {total:,.2f}, more than the "
                             f"{max_total_usd:,.2f} approved", tool="order_part")
        now = time.time()
        r = await self._insert_once(
            "part_orders", key,
            "INSERT INTO part_orders(id, part_no, quantity, total_usd, asset, site, reason,"
            " eta, key, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (f"PO-{uuid.uuid4().hex[:10]}", part_no, quantity, total, asset, site, reason,
             now + part.lead_time_days * 86400, key, now))
        return _order(r)

    async def part_orders(self) -> list[PartOrder]:
        async with self.read() as db:
            return [_order(r) for r in await db.all("SELECT * FROM part_orders ORDER BY created")]

    async def add_downtime(self, windows: Sequence[DowntimeWindow]) -> None:
        async with self.unit() as db:
            await db.executemany(
                'INSERT INTO downtime_windows(id, asset, site, start, "end", kind, note)'
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET"
                ' start = excluded.start, "end" = excluded."end", kind = excluded.kind,'
                " note = excluded.note",
                [(w.id, w.asset, w.site, w.start, w.end, w.kind, w.note) for w in windows])

    async def next_downtime(self, asset: str, *, after: float, min_hours: float = 0.0
                            ) -> DowntimeWindow | None:
        async with self.read() as db:
            rows = await db.all('SELECT * FROM downtime_windows WHERE asset = ? AND "end" > ?'
                                " ORDER BY start", (asset, after))
        for r in rows:
            w = _window(r)
            if (w.end - max(w.start, after)) / 3600 >= min_hours:
                return w
        return None

    async def add_condition(self, readings: Sequence[ConditionReading]) -> None:
        async with self.unit() as db:
            await db.executemany(
                "INSERT INTO condition_readings(asset, channel, ts, value, source)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(r.asset, r.channel, r.ts, r.value, r.source) for r in readings])

    async def condition(self, asset: str, channel: str, *, since: float
                        ) -> list[ConditionReading]:
        async with self.read() as db:
            rows = await db.all("SELECT * FROM condition_readings WHERE asset = ? AND"
                                " channel = ? AND ts >= ? ORDER BY ts", (asset, channel, since))
        return [ConditionReading(asset=r["asset"], channel=r["channel"], ts=r["ts"],
                                 value=r["value"], source=r["source"]) for r in rows]

    async def command(self, *, asset: str, site: str, command: str, reason: str, key: str,
                      load_pct: float | None = None, until: float | None = None
                      ) -> AssetCommand:
        r = await self._insert_once(
            "asset_commands", key,
            "INSERT INTO asset_commands(id, asset, site, command, load_pct, until, reason,"
            " key, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (f"CMD-{uuid.uuid4().hex[:10]}", asset, site, command, load_pct, until, reason,
             key, time.time()))
        return _command(r)

    async def commands(self, *, asset: str | None = None) -> list[AssetCommand]:
        async with self.read() as db:
            rows = await db.all("SELECT * FROM asset_commands ORDER BY created")
        return [_command(r) for r in rows if asset is None or r["asset"] == asset]


async def by_key(db: Tx, table: str, key: str) -> Any:
    return await db.one(f"SELECT * FROM {table} WHERE key = ?", (key,))


def _part(r: Any) -> Part:
    return Part(part_no=r["part_no"], description=r["description"],
                fits=[f for f in r["fits"].split(",") if f], stock=r["stock"],
                unit_cost=r["unit_cost"], lead_time_days=r["lead_time_days"],
                supplier=r["supplier"])


def _order(r: Any) -> PartOrder:
    return PartOrder(id=r["id"], part_no=r["part_no"], quantity=r["quantity"],
                     total_usd=r["total_usd"], asset=r["asset"], site=r["site"],
                     reason=r["reason"], eta=r["eta"])


def _window(r: Any) -> DowntimeWindow:
    return DowntimeWindow(id=r["id"], asset=r["asset"], site=r["site"], start=r["start"],
                          end=r["end"], kind=r["kind"], note=r["note"])


def _command(r: Any) -> AssetCommand:
    return AssetCommand(id=r["id"], asset=r["asset"], site=r["site"], command=r["command"],
                        load_pct=r["load_pct"], until=r["until"], reason=r["reason"],
                        created=r["created"])


# ---------------------------------------------------------------------------- tools
class _In(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CheckStockIn(_In):
    failure_mode: str | None = Field(None, description="Parts that repair this failure mode.")
    part_no: str | None = None


class StockOut(BaseModel):
    parts: list[Part]


class OrderPartIn(_In):
    part_no: str
    quantity: int = Field(1, ge=1, le=20)
    asset: str
    site: str
    reason: str = Field(min_length=3, max_length=300)
    max_total_usd: float = Field(gt=0, description="The most the order may cost; what the "
                                                   "policy's spend limit is checked on.")
    idempotency_key: str | None = None


class NextDowntimeIn(_In):
    asset: str
    after: float | None = Field(None, description="Epoch seconds; now if unset.")
    min_hours: float = Field(0.0, ge=0, description="The window must leave this long.")


class DowntimeOut(BaseModel):
    window: DowntimeWindow | None


class ConditionTrendIn(_In):
    asset: str
    channel: str = Field(description="e.g. vibration_mm_s")
    days: float = Field(180.0, gt=0, le=3650)


class ConditionTrendOut(BaseModel):
    readings: list[ConditionReading]
    slope_per_day: float | None = Field(description="Least-squares trend (None: fewer than "
                                                    "two readings).")


def trend_per_day(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``(epoch s, value)`` points, per day."""
    if len(points) < 2:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    if var <= 0:
        return None
    return sum((t - mt) * (v - mv) for t, v in points) / var * 86400


class DerateIn(_In):
    asset: str
    site: str
    load_pct: float = Field(ge=50, le=95, description="Load limit; never below 50 %.")
    minutes: float = Field(gt=0, le=240, description="Restored after this long.")
    reason: str = Field(min_length=3, max_length=300)
    idempotency_key: str | None = None


class StopIn(_In):
    asset: str
    site: str
    reason: str = Field(min_length=3, max_length=300)
    idempotency_key: str | None = None


def register_plant_tools(registry: ToolRegistry, data: PlantData) -> ToolRegistry:
    """Register the inventory, calendar and control tools on ``registry``."""

    @registry.tool(scopes={"inventory:read"})
    async def check_stock(args: CheckStockIn) -> StockOut:
        """Spare parts in stock, with unit cost and supplier lead time."""
        parts = await data.parts(fits=args.failure_mode)
        return StockOut(parts=[p for p in parts if args.part_no in (None, p.part_no)])

    @registry.tool(scopes={"inventory:write"}, risk="medium", side_effect=True,
                   amount_field="max_total_usd")
    async def order_part(args: OrderPartIn) -> PartOrder:
        """Order a spare part from its supplier (approval needed above the spend limit)."""
        assert args.idempotency_key is not None
        return await data.order_part(part_no=args.part_no, quantity=args.quantity,
                                     asset=args.asset, site=args.site, reason=args.reason,
                                     max_total_usd=args.max_total_usd, key=args.idempotency_key)

    @registry.tool(scopes={"calendar:read"})
    async def next_downtime(args: NextDowntimeIn) -> DowntimeOut:
        """The asset's next planned downtime window (the maintenance calendar)."""
        return DowntimeOut(window=await data.next_downtime(
            args.asset, after=args.after or time.time(), min_hours=args.min_hours))

    @registry.tool(scopes={"maintenance:read"})
    async def condition_trend(args: ConditionTrendIn) -> ConditionTrendOut:
        """An asset's condition readings of one channel (surveys, daily aggregates) and
        their trend per day."""
        rows = await data.condition(args.asset, args.channel,
                                    since=time.time() - args.days * 86400)
        return ConditionTrendOut(readings=rows,
                                 slope_per_day=trend_per_day([(r.ts, r.value) for r in rows]))

    @registry.tool(scopes={"control:write"}, risk="medium", side_effect=True)
    async def derate_asset(args: DerateIn) -> AssetCommand:
        """Limit an asset's load for a while (reversible: full load is restored after)."""
        assert args.idempotency_key is not None
        return await data.command(asset=args.asset, site=args.site, command="derate",
                                  reason=args.reason, key=args.idempotency_key,
                                  load_pct=args.load_pct,
                                  until=time.time() + args.minutes * 60)

    @registry.tool(scopes={"control:write"}, risk="critical")
    async def stop_asset(args: StopIn) -> AssetCommand:
        """Bring an asset to a controlled stop (it stays stopped until restarted on site)."""
        assert args.idempotency_key is not None
        return await data.command(asset=args.asset, site=args.site, command="stop",
                                  reason=args.reason, key=args.idempotency_key)

    return registry

