"""Moving the incident history in and out: import, export, the operating-context table.

Import reads JSONL (one object per line) or CSV (a header row; ``embedding`` as a JSON
array or space-separated numbers, list fields such as ``maintenance_refs`` as JSON
arrays or ``;``-separated). An incident carries either its ``embedding`` or its raw
``window`` (``{"channel": [samples...]}``, embedded the way the edge embeds a live window
by the function the caller passes, e.g. a model bundle's), and optionally its operating
point ``context`` (``{"channel": level}``, in CSV also ``channel=level;...``; the
``baseline`` of the alert). A line that does not parse or validate is written, unchanged, to
``FILE.rejected`` with the reason, and counted; nothing is dropped silently.

``aiotflow history context`` prints the ``[engine.history.context]`` table that makes a
new history weigh the operating point (see :mod:`aiotflow.vectorstore.context`), fitted from a
fleet model's training statistics or from CSV files of normal operation.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, TextIO

import numpy as np
from pydantic import ValidationError

from .context import ContextSettings
from .errors import HistoryError
from .models import Incident, MaintenanceRecord
from .store import HistoryStore

__all__ = ["Embed", "Progress", "context_from_csv", "context_from_stats", "context_toml",
           "export_records", "import_file", "parse_time", "read_rows"]

Kind = Literal["incidents", "maintenance"]
#: embeds one raw window ``{"channel": [samples...]}`` (e.g. ``ModelBundle.embed_window``)
Embed = Callable[[Any], list[float]]
#: told ``(done, total)`` as an import goes
Progress = Callable[[int, int], None]
_LISTS = ("maintenance_refs",)


def parse_time(text: str) -> float:
    """Epoch seconds from a number or an ISO date/time (UTC unless it says otherwise)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise HistoryError(f"not a time: {text!r} (epoch seconds or ISO 8601)") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


def read_rows(path: Path) -> Iterator[tuple[int, str, dict[str, Any] | str]]:
    """``(line, raw text, row or error)`` for each record of a JSONL or CSV file."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as fh:
            lines = fh.read().splitlines()
        if not lines:
            return
        header = next(csv.reader([lines[0]]))
        for n, text in enumerate(lines[1:], start=2):
            if not text.strip():
                continue
            cells = next(csv.reader([text]))
            if len(cells) != len(header):
                yield n, text, f"{len(cells)} cells, the header has {len(header)}"
                continue
            yield n, text, _csv_row(dict(zip(header, cells, strict=True)))
        return
    with path.open() as fh:
        for n, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                yield n, text.rstrip("\n"), f"not JSON: {exc.msg} at column {exc.colno}"
                continue
            if not isinstance(row, dict):
                yield n, text.rstrip("\n"), "not a JSON object"
                continue
            yield n, text.rstrip("\n"), row


def _csv_row(cells: dict[str, str]) -> dict[str, Any] | str:
    row: dict[str, Any] = {k: v for k, v in cells.items() if v != ""}
    try:
        if "embedding" in row:
            e = row["embedding"].strip()
            row["embedding"] = json.loads(e) if e.startswith("[") else [float(v)
                                                                         for v in e.split()]
        for k in _LISTS:
            if k in row:
                v = row[k].strip()
                row[k] = json.loads(v) if v.startswith("[") else [x for x in v.split(";") if x]
        if "window" in row:
            row["window"] = json.loads(row["window"])
        if "context" in row:  # {"Temperature": 80.1, ...} or Temperature=80.1;Flow=32
            v = row["context"].strip()
            row["context"] = (json.loads(v) if v.startswith("{") else
                              {k.strip(): float(x) for k, _, x in
                               (p.partition("=") for p in v.split(";") if p.strip())})
    except (ValueError, json.JSONDecodeError) as exc:
        return f"bad cell: {exc}"
    return row


def _record(kind: Kind, row: dict[str, Any], embed: Embed | None, asset_type: str | None
            ) -> Incident | MaintenanceRecord:
    if "ts" in row and isinstance(row["ts"], str):
        row["ts"] = parse_time(row["ts"])
    if kind == "maintenance":
        return MaintenanceRecord.model_validate(row)
    if "window" in row:
        if embed is None:
            raise ValueError("a raw window needs --model (a model bundle) to embed it")
        row = {k: v for k, v in row.items() if k != "window"} | {"embedding": embed(row["window"])}
        if asset_type is not None:
            row.setdefault("asset_type", asset_type)
    return Incident.model_validate(row)


async def import_file(store: HistoryStore, path: Path, *, kind: Kind = "incidents",
                      embed: Embed | None = None, asset_type: str | None = None,
                      batch: int = 1000, progress: Progress | None = None) -> dict[str, Any]:
    """Import one file; returns counts and where the rejected lines went.

    ``embed`` turns a raw ``window`` into its embedding (incidents that carry one need
    it); ``asset_type`` is the default of such incidents (the embedding model's)."""
    try:
        rows = await asyncio.to_thread(lambda: list(read_rows(path)))
    except OSError as exc:
        raise HistoryError(f"cannot read {path}: {exc.strerror}") from None
    rejected_path = path.with_name(path.name + ".rejected")
    rejects: list[str] = []
    pending: list[Any] = []
    written = 0
    dim = store.dim

    async def flush() -> None:
        nonlocal written
        if not pending:
            return
        if kind == "maintenance":
            written += await store.add_maintenance(pending)
        else:
            written += await store.add(pending)
        pending.clear()

    for i, (line, text, row) in enumerate(rows, start=1):
        try:
            if isinstance(row, str):
                raise ValueError(row)
            rec = _record(kind, row, embed, asset_type)
            if isinstance(rec, Incident):
                dim = dim or len(rec.embedding)
                if len(rec.embedding) != dim:
                    raise ValueError(f"embedding has {len(rec.embedding)} dimensions, the "
                                     f"history holds {dim}")
            pending.append(rec)
        except (ValueError, ValidationError, HistoryError) as exc:
            reason = (exc.errors(include_url=False)[0]["msg"] + " at "
                      + ".".join(str(x) for x in exc.errors()[0]["loc"])
                      if isinstance(exc, ValidationError) else str(exc))
            rejects.append(json.dumps({"line": line, "error": reason, "text": text}))
        if len(pending) >= batch:
            await flush()
        if progress is not None:
            progress(i, len(rows))
    await flush()
    if progress is not None:
        progress(len(rows), len(rows))
    if rejects:
        await asyncio.to_thread(rejected_path.write_text, "\n".join(rejects) + "\n")
    return {"file": str(path), "kind": kind, "read": len(rows), "imported": written,
            "rejected": len(rejects), "rejected_file": str(rejected_path) if rejects else None,
            "total": await store.count(kind)}


async def export_records(store: HistoryStore, kind: Kind, out: TextIO) -> int:
    """Write every record of ``kind`` as JSONL; returns how many."""
    n = 0
    records: AsyncIterator[Incident | MaintenanceRecord] = store.export(kind)
    async for rec in records:
        out.write(rec.model_dump_json() + "\n")
        n += 1
    return n


def context_from_stats(stats: Mapping[str, tuple[float, float]], *, weight: float = 2.0,
                       source: str = "the statistics") -> ContextSettings:
    """The operating-context scale from per-channel ``(mean, standard deviation)`` of
    normal operation, e.g. a model bundle's training statistics: right for a model
    trained on many assets' normal data, whose spread is the fleet's."""
    kept = {c: (m, sd) for c, (m, sd) in stats.items() if sd > 0}
    if not kept:
        raise HistoryError(f"{source}: every channel is constant in the training data")
    return ContextSettings(weight=weight, channels=kept)


def context_from_csv(paths: list[Path], *, channels: list[str] | None = None,
                     weight: float = 2.0) -> ContextSettings:
    """The operating-context scale fitted on CSV files of normal operation of many assets
    (``,`` or ``;`` separated, a header row; ``channels`` default: every numeric column
    but ``anomaly``/``changepoint`` labels)."""
    series, names = [], channels
    for path in paths:
        try:
            text = path.read_text()
        except OSError as exc:
            raise HistoryError(f"cannot read {path}: {exc.strerror}") from None
        delim = ";" if text.partition("\n")[0].count(";") > text.partition("\n")[0].count(",") \
            else ","
        rows = [r for r in csv.reader(io.StringIO(text), delimiter=delim) if r]
        if len(rows) < 3:
            raise HistoryError(f"{path}: needs a header and at least two rows")
        header = [h.strip() for h in rows[0]]

        def numeric(col: int, rows: list[list[str]] = rows) -> bool:
            try:
                [float(r[col]) for r in rows[1:]]
            except (ValueError, IndexError):
                return False
            return True

        if names is None:
            names = [h for i, h in enumerate(header)
                     if h not in ("anomaly", "changepoint") and numeric(i)]
        missing = [c for c in names if c not in header]
        if missing:
            raise HistoryError(f"{path}: no column(s) {missing}")
        idx = [header.index(c) for c in names]
        try:
            series.append(np.array([[float(r[i]) for i in idx] for r in rows[1:]]))
        except (ValueError, IndexError) as exc:
            raise HistoryError(f"{path}: a non-numeric or missing cell ({exc})") from None
    if not names:
        raise HistoryError("no numeric channels found")
    return ContextSettings.fit(series, names, weight=weight)


def context_toml(ctx: ContextSettings, table: str = "engine.history.context") -> str:
    """``ctx`` as a TOML table to paste into an engine config."""
    lines = [f"[{table}]", f"weight = {ctx.weight:g}", "# channel = [centre, spread] of "
             "normal operation across the fleet", f"[{table}.channels]"]
    lines += [f"{json.dumps(c)} = [{m:.6g}, {sd:.6g}]" for c, (m, sd) in
              sorted(ctx.channels.items())]
    return "\n".join(lines) + "\n"
