"""``aiotflow train`` (fit and export a model bundle) and ``aiotflow eval`` (SKAB)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from aiotflow.extras import require

from ._common import command
from .output import print_json, table

__all__ = ["register"]


async def _train(a: argparse.Namespace) -> int:
    from aiotflow.training import train_from_csv, train_simulated

    if a.csv:
        bundle = await asyncio.to_thread(
            train_from_csv, a.csv, out=a.out, detector=a.detector,
            channels=a.channels.split(",") if a.channels else None, sep=a.sep,
            window=a.window, hop=a.hop or 1, sample_rate_hz=a.rate, name=a.name,
            asset_type=a.asset_type)
    else:
        bundle = await asyncio.to_thread(
            train_simulated, a.out, assets=a.assets, seconds=a.seconds, sample_rate_hz=a.rate,
            window=a.window or 30, hop=a.hop or 2)
    print(json.dumps(bundle.describe() | {"train_stats": "..."}, indent=2))
    return 0


async def _eval(a: argparse.Namespace) -> int:
    if a.benchmark == "retrieval":
        return await _eval_retrieval(a)
    from aiotflow.evaluation import evaluate
    from aiotflow.training import DETECTORS

    names = list(DETECTORS) if a.detector == "all" else [a.detector]
    results = []
    for name in names:
        out = Path(a.predictions) / name if a.predictions and len(names) > 1 else (
            Path(a.predictions) if a.predictions else None)
        results.append(await asyncio.to_thread(evaluate, Path(a.dir), name, predictions=out))
    if a.json:
        print_json(results[0] if len(results) == 1 else results)
        return 0
    cols = ("detector", "f1", "far", "mar", "nab_standard", "nab_lowfp", "nab_lowfn")
    table(cols, [[r[c] for c in cols] for r in results],
          title=f"SKAB: {results[0]['files']} files, {results[0]['rows']} test rows")
    return 0


async def _eval_retrieval(a: argparse.Namespace) -> int:
    require("engine", feature="aiotflow eval retrieval")
    from aiotflow.evaluation.retrieval import evaluate_retrieval
    from aiotflow.vectorstore import DiagnosisSettings

    r = await evaluate_retrieval(Path(a.dir), detector=a.detector,
                                 diagnosis=DiagnosisSettings(k=a.k) if a.k else None,
                                 context=not a.no_context, context_weight=a.context_weight)
    if a.json:
        print_json(r)
        return 0
    table(("", "file", "fault", "diagnosed", "call"),
          [["ok" if f["correct"] else "--", f["file"], f["truth"], f["predicted"] or "-",
            f["call"]] for f in r["per_file"]])
    print(f"top-1 {r['top1_accuracy']:.0%} of {r['files']} files "
          f"({r['top1_accuracy_alerted']:.0%} of {r['alerted']} with an alert); "
          f"{r['uncertain_calls']} uncertain calls, calls right {r['call_accuracy']:.0%}; "
          f"majority baseline {r['majority_baseline']:.0%}; operating context "
          + ("on" if r["context"] else "off"), file=sys.stderr)
    return 0


def register(sub: Any) -> None:
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
    command(t, _train, "train")

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
                         "aiotflow.vectorstore.context)")
    ev.add_argument("--json", action="store_true")
    ev.add_argument("--predictions", help="write datetime;anomaly_pred CSVs here")
    command(ev, _eval, "train")
