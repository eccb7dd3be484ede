"""The ``aiotflow`` command line.

    aiotflow demo        the whole product on embedded defaults
    aiotflow edge        the edge runtime (MQTT telemetry -> ONNX -> alerts)
    aiotflow simulate    publish simulated generator telemetry
    aiotflow train       fit a detector and export an ONNX model bundle
    aiotflow seed        seed a state directory with roster, logs and incident history
    aiotflow eval skab   detection quality on SKAB recordings (leaderboard protocol)
    aiotflow eval retrieval  fault diagnosis from the incident history on SKAB
    aiotflow history     import / export / query / correct the incident history
    aiotflow workorder   list work orders, close one with its finding (learning loop)
    aiotflow audit       verify the hash-chained audit trail; show one alert's story
    aiotflow costs       LLM spend per alert, site or day
    aiotflow run APP     run an app's workflows for alerts (module:attribute)
    aiotflow approvals   list approvals waiting for a person
    aiotflow approve     review and decide pending approvals
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge.errors import EdgeError
from tools.errors import ToolError
from vectorstore.errors import HistoryError
from workflows.errors import WorkflowError

from .logging import configure_logging

__all__ = ["main"]


def _stop_event() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (graceful drain, exit 0)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop


# ---------------------------------------------------------------------- commands
async def _cmd_demo(a: argparse.Namespace) -> int:
    from .demo import DemoOptions, print_summary, run_demo

    opts = DemoOptions(broker=a.broker, approve=a.approve, duration=a.duration, json=a.json,
                       assets=a.assets, speed=a.speed,
                       state_dir=Path(a.state_dir) if a.state_dir else None,
                       scheduling_down=a.scheduling_down, user=a.user)
    summary = await run_demo(opts)
    print_summary(summary, as_json=a.json)
    return 0


async def _cmd_edge(a: argparse.Namespace) -> int:
    from edge.config import EdgeSettings
    from edge.runtime import EdgeRuntime

    settings = EdgeSettings.load(a.config)
    runtime = EdgeRuntime(settings, stats_file=a.stats_file)
    stats = await runtime.run_until(_stop_event())
    print(json.dumps({k: v for k, v in stats.as_dict().items() if k != "invalid_reasons"}),
          file=sys.stderr)
    return 0


async def _cmd_simulate(a: argparse.Namespace) -> int:
    from edge.config import MqttSettings
    from edge.simulator import Fleet, parse_fault, publish_fleet

    mqtt = MqttSettings(url=a.broker)
    faults = [parse_fault(f, ramp=a.ramp) for f in a.fault]
    fleet = Fleet(a.assets, site=a.site, seed=a.seed, faults=faults)
    stop = _stop_event()
    sent = await publish_fleet(fleet, hostname=mqtt.hostname, port=mqtt.port, rate_hz=a.rate,
                               duration=a.duration, speed=a.speed, stop=stop)
    print(json.dumps({"published": sent, "assets": a.assets,
                      "faults": [f.__dict__ for f in faults]}), file=sys.stderr)
    return 0


async def _cmd_train(a: argparse.Namespace) -> int:
    from edge.simulator import CHANNELS
    from edge.training import load_csv, train_bundle, train_simulated

    if a.csv:
        series, channels = [], None
        for path in a.csv:
            chans, data = load_csv(path, channels=a.channels.split(",") if a.channels else None,
                                   sep=a.sep)
            if channels is not None and chans != channels:
                print(f"error: {path} has channels {chans}, expected {channels}",
                      file=sys.stderr)
                return 2
            channels = chans
            series.append(data)
        assert channels is not None
        from edge.skab import DETECTORS

        if a.detector not in DETECTORS:
            print(f"error: --detector must be one of {sorted(DETECTORS)}", file=sys.stderr)
            return 2
        # the detector configurations are the ones measured with `aiotflow eval skab`;
        # the default is the best there
        cfg = DETECTORS[a.detector]
        bundle = train_bundle(series, channels=channels, out=a.out, window=a.window or cfg.window,
                              hop=a.hop or 1, sample_rate_hz=a.rate, features=cfg.features,
                              quantile=cfg.quantile, margin=cfg.margin, detector=cfg.kind,
                              embedding=cfg.embedding,
                              name=a.name or f"{a.asset_type}-{cfg.name}",
                              asset_type=a.asset_type, trained_on=", ".join(a.csv))
    else:
        bundle = train_simulated(a.out, assets=a.assets, seconds=a.seconds,
                                 sample_rate_hz=a.rate, window=a.window or 30, hop=a.hop or 2)
        assert list(bundle.meta.channels) == list(CHANNELS)
    print(json.dumps(bundle.describe() | {"train_stats": "..."}, indent=2))
    return 0


async def _cmd_eval(a: argparse.Namespace) -> int:
    from edge.skab import DETECTORS, evaluate

    if a.benchmark == "retrieval":
        return await _eval_retrieval(a)

    names = list(DETECTORS) if a.detector == "all" else [a.detector]
    results = []
    for name in names:
        out = Path(a.predictions) / name if a.predictions and len(names) > 1 else (
            Path(a.predictions) if a.predictions else None)
        results.append(await asyncio.to_thread(evaluate, Path(a.dir), name, predictions=out))
    if a.json:
        print(json.dumps(results[0] if len(results) == 1 else results, indent=2))
        return 0
    cols = ("detector", "f1", "far", "mar", "nab_standard", "nab_lowfp", "nab_lowfn")
    print(" ".join(f"{c:>12}" for c in cols))
    for r in results:
        print(" ".join(f"{r[c]!s:>12}" for c in cols))
    print(f"{results[0]['files']} files, {results[0]['rows']} test rows", file=sys.stderr)
    return 0


async def _eval_retrieval(a: argparse.Namespace) -> int:
    from vectorstore import DiagnosisSettings

    from .retrieval import evaluate_retrieval

    r = await evaluate_retrieval(Path(a.dir), detector=a.detector,
                                 diagnosis=DiagnosisSettings(k=a.k) if a.k else None,
                                 context=not a.no_context, context_weight=a.context_weight)
    if a.json:
        print(json.dumps(r, indent=2))
        return 0
    for f in r["per_file"]:
        mark = "ok " if f["correct"] else "-- "
        print(f"{mark}{f['file']:16} {f['truth']:24} -> {f['predicted'] or '-':24} {f['call']}")
    print(f"top-1 {r['top1_accuracy']:.0%} of {r['files']} files "
          f"({r['top1_accuracy_alerted']:.0%} of {r['alerted']} with an alert); "
          f"{r['uncertain_calls']} uncertain calls, calls right {r['call_accuracy']:.0%}; "
          f"majority baseline {r['majority_baseline']:.0%}; operating context "
          + ("on" if r["context"] else "off"))
    return 0


async def _cmd_history(a: argparse.Namespace) -> int:
    from vectorstore.errors import HistoryBusy
    from vectorstore.store import HistoryStore
    from workflows.settings import EngineSettings

    from .history import (
        context_from_csv,
        context_from_model,
        context_toml,
        export_records,
        format_incidents,
        import_file,
        parse_time,
    )

    if a.action == "context":
        if bool(a.model) == bool(a.csv):
            print("give --model BUNDLE or --csv FILE [FILE ...]", file=sys.stderr)
            return 2
        ctx = (context_from_model(Path(a.model), weight=a.weight) if a.model else
               context_from_csv([Path(p) for p in a.csv], weight=a.weight,
                                channels=a.channels.split(",") if a.channels else None))
        print(context_toml(ctx), end="")
        return 0
    s = EngineSettings.load(a.config, table="engine", **_state(a))
    if a.action == "correct":
        try:
            async with HistoryStore(settings=s.history_settings) as store:
                inc = await store.correct(a.incident_id, a.failure_mode, by=a.user,
                                          reason=a.reason or "", system=a.system)
        except HistoryBusy:
            from tools.control import ControlStore

            async with ControlStore(s.control_db) as control:
                seq = await control.enqueue_history(
                    "correct", {"incident_id": a.incident_id, "failure_mode": a.failure_mode,
                                "by": a.user, "reason": a.reason or "", "system": a.system},
                    actor=a.user)
            print(json.dumps({"id": a.incident_id, "failure_mode": a.failure_mode,
                              "queued": seq}))
            return 0
        print(json.dumps({"id": inc.id, "failure_mode": inc.failure_mode,
                          "corrections": inc.corrections}))
        return 0
    async with HistoryStore(settings=s.history_settings) as store:
        if a.action == "import":
            out = await import_file(store, Path(a.file), kind=a.kind,
                                    model=Path(a.model) if a.model else None)
            print(json.dumps(out))
            if out["rejected"]:
                print(f"{out['rejected']} line(s) rejected, kept with reasons in "
                      f"{out['rejected_file']}", file=sys.stderr)
                return 1
            return 0
        if a.action == "export":
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
        rows = await store.find(asset=a.asset, asset_type=a.asset_type, site=a.site,
                                failure_mode=a.failure_mode,
                                since=parse_time(a.since) if a.since else None,
                                until=parse_time(a.until) if a.until else None, limit=a.limit)
        if a.json:
            print(json.dumps([r.model_dump(exclude={"embedding"}) for r in rows], indent=2))
        else:
            print(format_incidents(rows), end="")
    return 0


async def _cmd_workorder(a: argparse.Namespace) -> int:
    from agents.learning import close_and_learn
    from tools.control import ControlStore
    from tools.ops import OpsDatabase
    from vectorstore.errors import HistoryBusy
    from vectorstore.store import HistoryStore
    from workflows.settings import EngineSettings

    s = EngineSettings.load(a.config, table="engine", **_state(a))
    async with OpsDatabase(s.ops_db) as ops:
        if a.action == "list":
            for wo in await ops.work_orders(asset=a.asset):
                print(f"{wo.id}  {wo.status:6}  {wo.asset:10}  {wo.priority:8}  "
                      f"{wo.failure_mode or '-':16}  {wo.title}")
            return 0
        async with ControlStore(s.control_db) as control:
            async with contextlib.AsyncExitStack() as stack:
                history: HistoryStore | None
                try:
                    history = await stack.enter_async_context(
                        HistoryStore(settings=s.history_settings))
                except HistoryBusy:
                    history = None  # the running engine holds it: queue, it applies
                wo, inc = await close_and_learn(
                    ops=ops, control=control, history=history, work_order=a.work_order,
                    failure_mode=a.failure_mode, resolution=a.resolution, by=a.user,
                    system=a.system)
    print(json.dumps({"work_order": wo.id, "status": wo.status, "failure_mode": wo.failure_mode,
                      "incident": inc.id,
                      "history": "written" if history is not None else "queued for the engine"}))
    return 0


async def _cmd_audit(a: argparse.Namespace) -> int:
    from tools.control import ControlStore
    from workflows.settings import EngineSettings

    from .audit import format_story

    s = EngineSettings.load(a.config, table="engine", **_state(a))
    if not s.control_db.exists():
        print(f"error: no control database at {s.control_db}", file=sys.stderr)
        return 2
    async with ControlStore(s.control_db) as control:
        if a.action == "verify":
            report = await control.verify_audit()
            print(json.dumps(report.model_dump(), indent=2) if a.json else
                  f"audit chain {'intact' if report.ok else 'BROKEN'}: {report.records} "
                  f"records, head {report.head[:16] or '-'}"
                  + "".join(f"\n  - {p}" for p in report.problems))
            return 0 if report.ok else 1
        records = await control.alert_story(a.alert_id)
    if a.json:
        print(json.dumps([r.model_dump() for r in records], indent=2, default=str))
    else:
        print(format_story(a.alert_id, records), end="")
    return 0 if records else 1


async def _cmd_seed(a: argparse.Namespace) -> int:
    from edge.bundle import ModelBundle
    from tools.ops import OpsDatabase
    from vectorstore.store import HistoryStore
    from workflows.settings import EngineSettings

    from .seed import seed_all

    s = EngineSettings.load(a.config, table="engine", **_state(a))
    bundle = ModelBundle(a.model)
    async with OpsDatabase(s.ops_db) as ops, HistoryStore(settings=s.history_settings) as history:
        n = await seed_all(ops, history, bundle, assets=a.assets.split(","),
                           stale=a.stale.split(",") if a.stale else [], incidents=a.incidents)
    print(json.dumps({"incidents_added": n, "state_dir": str(s.state_dir)}))
    return 0


def _state(a: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if getattr(a, "state_dir", None):
        out["state_dir"] = Path(a.state_dir)
    if getattr(a, "broker", None):
        out["mqtt"] = {"url": a.broker}
    return out


async def _cmd_run(a: argparse.Namespace) -> int:
    from workflows.app import load_app
    from workflows.engine import Engine
    from workflows.settings import EngineSettings

    app = load_app(a.app)
    settings = EngineSettings.load(a.config, table="engine", **_state(a))
    stop = _stop_event()
    async with Engine(app, settings) as engine:
        print(f"aiotflow: running {app.name} ({', '.join(app.workflows)}); "
              f"approve with: aiotflow approve --state-dir {settings.state_dir}",
              file=sys.stderr)
        await stop.wait()
        await engine.drain(10)
    print(json.dumps(engine.stats.as_dict() | {"history": engine.history.stats()}),
          file=sys.stderr)
    return 0


async def _cmd_approvals(a: argparse.Namespace) -> int:
    from tools.control import ControlStore
    from workflows.console import format_pending
    from workflows.settings import EngineSettings

    s = EngineSettings.load(a.config, table="engine", **_state(a))
    async with ControlStore(s.control_db) as control:
        recs = await control.approvals(status=None if a.all else "pending")
    if a.json:
        print(json.dumps([r.model_dump() for r in recs], indent=2, default=str))
    elif a.all:
        for r in recs:
            print(f"{r.id}  {r.status:9}  {r.asset:10}  {r.decided_by or '-':12}  {r.title}")
        if not recs:
            print("No approvals.")
    else:
        print(format_pending(recs))
    return 0


async def _cmd_approve(a: argparse.Namespace) -> int:
    from tools.control import ControlStore, Decision
    from workflows.console import IdentityError, check_identity, refusal, review_pending
    from workflows.settings import EngineSettings

    s = EngineSettings.load(a.config, table="engine", **_state(a))
    if a.user is None:
        if s.policy.operators:
            try:
                a.user = (await asyncio.to_thread(input, "Who is approving? ")).strip()
            except EOFError:
                print("error: no operator name given", file=sys.stderr)
                return 1
        else:
            a.user = getpass.getuser()
    async with ControlStore(s.control_db) as control:
        try:
            if a.decision:
                if not a.approval_id:
                    print("error: --decision needs an approval id", file=sys.stderr)
                    return 2
                await check_identity(control, s.policy, a.user, getpass.getpass)
                decision: Decision = "approved" if a.decision == "approve" else "rejected"
                rec = await control.approval(a.approval_id)
                if rec is None:
                    print(f"error: no approval {a.approval_id}", file=sys.stderr)
                    return 2
                why = await refusal(control, s.policy, a.user, rec)
                if why is not None:
                    print(f"error: not yours to decide: {why}", file=sys.stderr)
                    return 1
                after = await control.decide(a.approval_id, decision, by=a.user,
                                             comment=a.comment)
                if after.decided_by != a.user or after.status != decision:
                    print(f"already {after.status} by {after.decided_by}", file=sys.stderr)
                    return 1
                print(f"{decision}: {after.title}")
                return 0
            counts = await review_pending(control, user=a.user, approval_id=a.approval_id,
                                          policy=s.policy)
        except IdentityError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(counts), file=sys.stderr)
    return 0


async def _cmd_costs(a: argparse.Namespace) -> int:
    from tools.control import ControlStore
    from workflows.settings import EngineSettings

    from .audit import cost_report, format_costs

    s = EngineSettings.load(a.config, table="engine", **_state(a))
    async with ControlStore(s.control_db) as control:
        rows = cost_report(await control.audit_records(kind="llm.narrative"), a.by)
    print(json.dumps(rows, indent=2) if a.json else format_costs(rows, a.by), end="\n"
          if a.json else "")
    return 0


async def _cmd_operator(a: argparse.Namespace) -> int:
    from tools.policy import hash_pin

    pin = getpass.getpass("PIN or token: ")
    if len(pin) < 4 or pin != getpass.getpass("again: "):
        print("error: PINs differ or shorter than 4 characters", file=sys.stderr)
        return 2
    print(hash_pin(pin))
    return 0


# ---------------------------------------------------------------------- parser
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aiotflow", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--log-level", default=os.environ.get("AIOTFLOW_LOG_LEVEL", "INFO"))
    p.add_argument("--log-json", action="store_true", help="log JSON lines to stderr")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run the end-to-end demo on embedded defaults")
    d.add_argument("--broker", help="use this MQTT broker (mqtt://host:port) instead")
    d.add_argument("--approve", choices=["yes", "no"], help="answer approvals unattended")
    d.add_argument("--duration", type=float, default=110.0, help="upper bound, seconds")
    d.add_argument("--json", action="store_true", help="print the summary as JSON")
    d.add_argument("--assets", type=int, default=3)
    d.add_argument("--speed", type=float, default=4.0, help="simulated time per wall second")
    d.add_argument("--state-dir", help="keep state here (default: a new temporary folder)")
    d.add_argument("--scheduling-down", action="store_true",
                   help="point scheduling at a dead service to show the fallback")
    d.add_argument("--user", default=getpass.getuser())

    e = sub.add_parser("edge", help="run the edge runtime")
    e.add_argument("--config", required=True, help="TOML file (see README)")
    e.add_argument("--stats-file", help="write a JSON summary here (periodically and at exit)")

    s = sub.add_parser("simulate", help="publish simulated generator telemetry")
    s.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    s.add_argument("--assets", type=int, default=3)
    s.add_argument("--rate", type=float, default=2.0, help="readings per second per asset")
    s.add_argument("--fault", action="append", default=[], metavar="ASSET:MODE@SECONDS")
    s.add_argument("--ramp", type=float, default=60.0, help="seconds to full fault severity")
    s.add_argument("--duration", type=float, help="simulated seconds (default: until Ctrl-C)")
    s.add_argument("--speed", type=float, default=1.0, help="simulated time per wall second")
    s.add_argument("--site", default="plant-1")
    s.add_argument("--seed", type=int, default=7)

    t = sub.add_parser("train", help="fit a detector on normal data, export an ONNX bundle")
    t.add_argument("--out", required=True)
    t.add_argument("--csv", action="append", help="CSV of normal operation (repeatable)")
    t.add_argument("--channels", help="comma-separated CSV columns (default: all numeric)")
    t.add_argument("--sep", default=",")
    t.add_argument("--rate", type=float, default=2.0, help="sample rate of the data, Hz")
    t.add_argument("--detector", default="pca",
                   help="CSV: a detector of `aiotflow eval skab` (pca, autoencoder, iforest)")
    t.add_argument("--window", type=int, help="samples per window (CSV: the detector's; "
                                              "simulator: 30)")
    t.add_argument("--hop", type=int, help="samples between windows (CSV: 1; simulator: 2)")
    t.add_argument("--assets", type=int, default=8, help="simulator: healthy generators")
    t.add_argument("--seconds", type=float, default=1800.0, help="simulator: seconds each")
    t.add_argument("--name", help="model name (default: ASSET_TYPE-DETECTOR)")
    t.add_argument("--asset-type", default="generator")

    ev = sub.add_parser("eval", help="evaluate detectors on a benchmark (SKAB protocol)")
    ev.add_argument("benchmark", choices=["skab", "retrieval"],
                    help="skab: detection quality; retrieval: fault diagnosis from history")
    ev.add_argument("dir", help="the SKAB data folder (valve1/, valve2/, other/, ...)")
    ev.add_argument("--detector", default="pca", help="a detector name, or all (skab)")
    ev.add_argument("--k", type=int, default=None,
                    help="retrieval: similar events weighed (default: the diagnosis default; "
                         "one event per recording, SKAB has 1-12 recordings per fault)")
    ev.add_argument("--no-context", action="store_true",
                    help="retrieval: weigh the embedding alone, not the operating point")
    ev.add_argument("--context-weight", type=float, default=2.0,
                    help="retrieval: cost of operating-point difference (see "
                         "vectorstore.context)")
    ev.add_argument("--json", action="store_true")
    ev.add_argument("--predictions", help="write datetime;anomaly_pred CSVs here")

    sd = sub.add_parser("seed", help="seed roster, maintenance logs and incident history")
    sd.add_argument("--model", required=True)
    sd.add_argument("--assets", default="gen-001,gen-002,gen-003")
    sd.add_argument("--stale", default="gen-002", help="assets without recent cooling service")
    sd.add_argument("--incidents", type=int, default=60)

    r = sub.add_parser("run", help="run an app's workflows for alerts")
    r.add_argument("app", help="module:attribute, e.g. examples.generator_fleet:app")
    r.add_argument("--broker")

    ap = sub.add_parser("approvals", help="list approvals waiting for a person")
    ap.add_argument("--all", action="store_true", help="include decided ones")
    ap.add_argument("--json", action="store_true")

    av = sub.add_parser("approve", help="review and decide pending approvals")
    av.add_argument("approval_id", nargs="?")
    av.add_argument("--user", help="who decides (asked when operators are configured; "
                                   "default: the login name)")
    av.add_argument("--decision", choices=["approve", "reject"],
                    help="decide without prompting (needs an id)")
    av.add_argument("--comment")

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

    co = sub.add_parser("costs", help="LLM spend per alert, site or day")
    co.add_argument("--by", choices=["alert", "site", "day"], default="site")
    co.add_argument("--json", action="store_true")

    op = sub.add_parser("operator", help="operator tools: hash-pin for [engine.policy]")
    op.add_argument("action", choices=["hash-pin"])

    au = sub.add_parser("audit", help="verify the audit chain, or show one alert's story")
    aus = au.add_subparsers(dest="action", required=True)
    auv = aus.add_parser("verify", help="recompute every hash; exit 1 if the chain is broken")
    auv.add_argument("--json", action="store_true")
    ash = aus.add_parser("show", help="from sensor evidence to work order, for one alert")
    ash.add_argument("alert_id")
    ash.add_argument("--json", action="store_true")

    for cmd in (sd, r, ap, av, hii, hex_, hq, hc, wl, wc, auv, ash, co):
        cmd.add_argument("--config", help="TOML file; its [engine] table is used")
        cmd.add_argument("--state-dir", help="state directory (default .aiotflow)")
    return p


_COMMANDS = {
    "demo": _cmd_demo, "edge": _cmd_edge, "simulate": _cmd_simulate, "train": _cmd_train,
    "seed": _cmd_seed, "eval": _cmd_eval, "run": _cmd_run, "approvals": _cmd_approvals,
    "approve": _cmd_approve, "history": _cmd_history, "workorder": _cmd_workorder,
    "audit": _cmd_audit, "operator": _cmd_operator, "costs": _cmd_costs,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = args.log_level
    if args.command in ("demo", "approve", "approvals") and "AIOTFLOW_LOG_LEVEL" not in os.environ \
            and level == "INFO":
        level = "ERROR"  # the demo and the console print their own progress
    configure_logging(level, json=args.log_json)
    try:
        return asyncio.run(_COMMANDS[args.command](args))
    except (EdgeError, ToolError, HistoryError, WorkflowError, KeyError) as exc:
        print(f"aiotflow {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
