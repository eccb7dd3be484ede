"""``aiotflow history`` (import, export, query, correct the incident history; the
operating-context table) and ``aiotflow workorder`` (list; close, which teaches it)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from ._common import add_state_options, command, engine_settings
from .output import print_json, progress, table

__all__ = ["register"]


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M")


async def _context(a: argparse.Namespace) -> int:
    from aiotflow.vectorstore.transfer import context_from_csv, context_from_stats, context_toml

    if bool(a.model) == bool(a.csv):
        print("give --model BUNDLE or --csv FILE [FILE ...]", file=sys.stderr)
        return 2
    if a.model:
        from aiotflow.edge import ModelBundle

        stats = ModelBundle(a.model).meta.train_stats
        ctx = context_from_stats({c: (st.mean, st.std) for c, st in stats.items()},
                                 weight=a.weight, source=a.model)
    else:
        ctx = context_from_csv([Path(p) for p in a.csv], weight=a.weight,
                               channels=a.channels.split(",") if a.channels else None)
    print(context_toml(ctx), end="")
    return 0


async def _correct(a: argparse.Namespace) -> int:
    from aiotflow.tools import ControlStore
    from aiotflow.vectorstore import HistoryBusy, HistoryStore

    s = engine_settings(a)
    try:
        async with HistoryStore(settings=s.history_settings) as store:
            inc = await store.correct(a.incident_id, a.failure_mode, by=a.user,
                                      reason=a.reason or "", system=a.system)
    except HistoryBusy:  # the running engine holds it: queue, it applies
        async with ControlStore(s.control_target) as control:
            seq = await control.enqueue_history(
                "correct", {"incident_id": a.incident_id, "failure_mode": a.failure_mode,
                            "by": a.user, "reason": a.reason or "", "system": a.system},
                actor=a.user)
        print(json.dumps({"id": a.incident_id, "failure_mode": a.failure_mode, "queued": seq}))
        return 0
    print(json.dumps({"id": inc.id, "failure_mode": inc.failure_mode,
                      "corrections": inc.corrections}))
    return 0


async def _import(a: argparse.Namespace) -> int:
    from aiotflow.vectorstore import HistoryStore
    from aiotflow.vectorstore.transfer import import_file

    s = engine_settings(a)
    embed = asset_type = None
    if a.model:
        from aiotflow.edge import ModelBundle

        bundle = ModelBundle(a.model)
        embed, asset_type = bundle.embed_window, bundle.meta.asset_type
    async with HistoryStore(settings=s.history_settings) as store:
        with progress(f"importing {a.kind}") as update:
            out = await import_file(store, Path(a.file), kind=a.kind, embed=embed,
                                    asset_type=asset_type, progress=update)
    print(json.dumps(out))
    if out["rejected"]:
        print(f"{out['rejected']} line(s) rejected, kept with reasons in "
              f"{out['rejected_file']}", file=sys.stderr)
        return 1
    return 0


async def _export(a: argparse.Namespace) -> int:
    from aiotflow.vectorstore import HistoryStore
    from aiotflow.vectorstore.transfer import export_records

    s = engine_settings(a)
    async with HistoryStore(settings=s.history_settings) as store:
        if a.out:
            fh = await asyncio.to_thread(open, a.out, "w")
            try:
                n = await export_records(store, a.kind, fh)
            finally:
                fh.close()
        else:
            n = await export_records(store, a.kind, sys.stdout)
    print(f"exported {n} {a.kind}", file=sys.stderr)
    return 0


async def _query(a: argparse.Namespace) -> int:
    from aiotflow.vectorstore import HistoryStore
    from aiotflow.vectorstore.transfer import parse_time

    s = engine_settings(a)
    async with HistoryStore(settings=s.history_settings) as store:
        rows = await store.find(asset=a.asset, asset_type=a.asset_type, site=a.site,
                                failure_mode=a.failure_mode,
                                since=parse_time(a.since) if a.since else None,
                                until=parse_time(a.until) if a.until else None, limit=a.limit)
    if a.json:
        print_json([r.model_dump(exclude={"embedding"}) for r in rows])
        return 0
    table(("when (UTC)", "asset", "failure mode", "work order", "id"),
          [[_when(r.ts), r.asset, r.failure_mode, r.work_order or "-",
            r.id + (" (corrected)" if r.corrections else "")] for r in rows],
          empty="(no incidents match)")
    return 0


async def _workorders(a: argparse.Namespace) -> int:
    from aiotflow.tools import OpsDatabase

    s = engine_settings(a)
    async with OpsDatabase(s.ops_target) as ops:
        orders = await ops.work_orders(asset=a.asset)
    table(("id", "status", "asset", "priority", "failure mode", "title"),
          [[wo.id, wo.status, wo.asset, wo.priority, wo.failure_mode or "-", wo.title]
           for wo in orders], empty="No work orders.")
    return 0


async def _close(a: argparse.Namespace) -> int:
    from aiotflow.agents import close_and_learn
    from aiotflow.tools import ControlStore, OpsDatabase
    from aiotflow.vectorstore import HistoryBusy, HistoryStore

    s = engine_settings(a)
    async with OpsDatabase(s.ops_target) as ops, ControlStore(s.control_target) as control, \
            contextlib.AsyncExitStack() as stack:
        history: HistoryStore | None
        try:
            history = await stack.enter_async_context(HistoryStore(settings=s.history_settings))
        except HistoryBusy:
            history = None  # the running engine holds it: queue, it applies
        wo, inc = await close_and_learn(
            ops=ops, control=control, history=history, work_order=a.work_order,
            failure_mode=a.failure_mode, resolution=a.resolution, by=a.user, system=a.system)
    print(json.dumps({"work_order": wo.id, "status": wo.status, "failure_mode": wo.failure_mode,
                      "incident": inc.id,
                      "history": "written" if history is not None else "queued for the engine"}))
    return 0


def register(sub: Any) -> None:
    hi = sub.add_parser("history", help="import, export, query or correct the incident history")
    hs = hi.add_subparsers(dest="action", required=True)
    hii = hs.add_parser("import", help="import incidents or maintenance records (JSONL or CSV)")
    hii.add_argument("file")
    hii.add_argument("--model", help="model bundle to embed raw windows with")
    hex_ = hs.add_parser("export", help="write every record as JSONL")
    hex_.add_argument("--out", "-o", help="file (default: standard output)")
    for c in (hii, hex_):
        c.add_argument("--kind", choices=["incidents", "maintenance"], default="incidents")
    hq = hs.add_parser("query", help="incidents for people, newest first")
    hq.add_argument("--asset")
    hq.add_argument("--asset-type")
    hq.add_argument("--site")
    hq.add_argument("--failure-mode")
    hq.add_argument("--since", help="epoch seconds or ISO date/time (UTC)")
    hq.add_argument("--until")
    hq.add_argument("--limit", type=int, default=50)
    hq.add_argument("--json", action="store_true")
    hx = hs.add_parser("context", help="print the [engine.history.context] table for a new "
                                       "history that weighs the operating point")
    hx.add_argument("--model", help="a fleet model bundle (its training statistics)")
    hx.add_argument("--csv", nargs="+", help="CSV files of normal operation of many assets")
    hx.add_argument("--channels", help="comma-separated columns (default: numeric ones)")
    hx.add_argument("--weight", type=float, default=2.0,
                    help="similarity cost of operating-point difference (default 2)")
    hc = hs.add_parser("correct", help="change an incident's failure mode (kept on record)")
    hc.add_argument("incident_id")
    hc.add_argument("--failure-mode", required=True)
    hc.add_argument("--system")
    hc.add_argument("--reason")
    hc.add_argument("--user", default=getpass.getuser())
    add_state_options(hii, hex_, hq, hc)
    for p, func in ((hii, _import), (hex_, _export), (hq, _query), (hx, _context),
                    (hc, _correct)):
        command(p, func, "engine")

    wk = sub.add_parser("workorder", help="list work orders, or close one (teaches the history)")
    ws = wk.add_subparsers(dest="action", required=True)
    wl = ws.add_parser("list", help="work orders, oldest first")
    wl.add_argument("--asset")
    wc = ws.add_parser("close", help="close with the failure mode found; recorded as history")
    wc.add_argument("work_order", help="e.g. WO-000001")
    wc.add_argument("--failure-mode", required=True, help="what it turned out to be")
    wc.add_argument("--resolution", required=True, help="what was done")
    wc.add_argument("--system", help="subsystem (default: the failure mode's)")
    wc.add_argument("--user", default=getpass.getuser())
    add_state_options(wl, wc)
    command(wl, _workorders, "engine")
    command(wc, _close, "engine")
