"""``aiotflow history``: import, export and query the incident history.

Import reads JSONL (one object per line) or CSV (a header row; ``embedding`` as a JSON
array or space-separated numbers, list fields such as ``maintenance_refs`` as JSON
arrays or ``;``-separated). An incident carries either its ``embedding`` or its raw
``window`` (``{"channel": [samples...]}``, embedded with ``--model``, a model bundle, the
way the edge embeds a live window), and optionally its operating point ``context``
(``{"channel": level}``, in CSV also ``channel=level;...``; the ``baseline`` of the
alert). A line that does not parse or validate is written, unchanged, to
``FILE.rejected`` with the reason, and counted; nothing is dropped silently.

``aiotflow history context`` prints the ``[engine.history.context]`` table that makes a
new history weigh the operating point (see :mod:`vectorstore.context`), fitted from a
fleet model's training statistics or from CSV files of normal operation.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal, TextIO

import numpy as np
from pydantic import ValidationError

from edge.bundle import ModelBundle
from vectorstore import ContextSettings, HistoryError, HistoryStore, Incident, MaintenanceRecord

__all__ = ["context_from_csv", "context_from_model", "context_toml", "export_records",
           "import_file", "parse_time", "read_rows"]

Kind = Literal["incidents", "maintenance"]
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


def _embed(bundle: ModelBundle, window: Any) -> list[float]:
    """The bundle's embedding of one raw window ``{"channel": [samples...]}``."""
    meta = bundle.meta
    if not isinstance(window, dict):
        raise ValueError("window must be an object of channel -> samples")
    missing = [c for c in meta.channels if c not in window]
    if missing:
        raise ValueError(f"window lacks channels {missing}")
    cols = [np.asarray(window[c], dtype=np.float64) for c in meta.channels]
    if any(len(c) != meta.window for c in cols):
        raise ValueError(f"each channel needs {meta.window} samples (the model's window)")
    emb, _ = bundle.score_windows(np.stack(cols, axis=1)[None])
    return [float(v) for v in emb[0]]


def _record(kind: Kind, row: dict[str, Any], bundle: ModelBundle | None
            ) -> Incident | MaintenanceRecord:
    if "ts" in row and isinstance(row["ts"], str):
        row["ts"] = parse_time(row["ts"])
    if kind == "maintenance":
        return MaintenanceRecord.model_validate(row)
    if "window" in row:
        if bundle is None:
            raise ValueError("a raw window needs --model (a model bundle) to embed it")
        row = {k: v for k, v in row.items() if k != "window"} | {
            "embedding": _embed(bundle, row["window"]),
            "asset_type": row.get("asset_type", bundle.meta.asset_type)}
    return Incident.model_validate(row)


class _Progress:
    def __init__(self, total: int, out: TextIO, enabled: bool) -> None:
        self.total, self.out, self.enabled = total, out, enabled
        self.last = 0.0

    def show(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self.last < 0.2):
            return
        self.last = now
        frac = done / self.total if self.total else 1.0
        bar = "#" * int(frac * 30)
        self.out.write(f"\r[{bar:<30}] {done}/{self.total} {frac:4.0%}")
        if force:
            self.out.write("\n")
        self.out.flush()


async def import_file(store: HistoryStore, path: Path, *, kind: Kind = "incidents",
                      model: Path | None = None, batch: int = 1000,
                      progress: bool | None = None) -> dict[str, Any]:
    """Import one file; returns counts and where the rejected lines went."""
    try:
        rows = await asyncio.to_thread(lambda: list(read_rows(path)))
    except OSError as exc:
        raise HistoryError(f"cannot read {path}: {exc.strerror}") from None
    bundle = ModelBundle(model) if model else None
    bar = _Progress(len(rows), sys.stderr, sys.stderr.isatty() if progress is None else progress)
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
            rec = _record(kind, row, bundle)
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
        bar.show(i)
    await flush()
    bar.show(len(rows), force=True)
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


def format_incidents(rows: list[Incident]) -> str:
    """A table for people."""
    buf = io.StringIO()
    buf.write(f"{'when (UTC)':17}  {'asset':12} {'failure mode':16} {'work order':11} id\n")
    for r in rows:
        when = dt.datetime.fromtimestamp(r.ts, dt.UTC).strftime("%Y-%m-%d %H:%M")
        fixed = " (corrected)" if r.corrections else ""
        buf.write(f"{when:17}  {r.asset:12} {r.failure_mode:16} {r.work_order or '-':11} "
                  f"{r.id}{fixed}\n")
    if not rows:
        buf.write("(no incidents match)\n")
    return buf.getvalue()


def context_from_model(model: Path, *, weight: float = 2.0) -> ContextSettings:
    """The operating-context scale from a model bundle's training statistics (mean and
    standard deviation per channel): right for a model trained on many assets' normal
    data, whose spread is the fleet's."""
    stats = ModelBundle(model).meta.train_stats
    kept = {c: (st.mean, st.std) for c, st in stats.items() if st.std > 0}
    if not kept:
        raise HistoryError(f"{model}: every channel is constant in the training data")
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
