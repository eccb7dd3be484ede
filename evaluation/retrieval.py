"""``aiotflow eval retrieval DIR``: does the incident history name the right fault?

On SKAB (``DIR/FAULTS.md`` labels each recording with its fault), leave one recording
out at a time: the history holds the embeddings of the *other* recordings' anomalous
windows (one event per recording, labelled with its fault), and the held-out recording's
first alert is diagnosed by the normal code (:meth:`HistoryStore.diagnose`, the
recording itself excluded by its asset name). Each recording goes through the edge path
(bundle, ONNX Runtime, WindowBuffer, AlertPolicy) as in ``aiotflow eval skab``, except
that its model is fitted on the *normal* rows of its first 400 (this eval is about
retrieval, so a fault inside the training rows must not hide the alert); the alert's
embedding is the one the edge would publish.

Operating context (on by default, ``context=False`` for the embedding alone): each
incident and each alert also carries the asset's operating point - the ``baseline`` the
runtime publishes with an alert (EWMA of its normal windows' channel means, see
:class:`aiotflow.edge.baseline.OperatingPoint`) - and the history weighs it in spreads of the
fleet's normal operation (:class:`~aiotflow.vectorstore.context.ContextSettings` fitted on the
normal training rows of all recordings; no fault label is used for it).
"""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path
from typing import Any

from aiotflow.edge.errors import ConfigError
from aiotflow.evaluation.skab import DETECTORS, load_file, skab_files, stream, training_rows
from aiotflow.vectorstore import (
    ContextSettings,
    DiagnosisSettings,
    HistorySettings,
    HistoryStore,
    Incident,
)

__all__ = ["evaluate_retrieval", "fault_labels"]


def fault_labels(root: Path) -> dict[str, str]:
    """``{relative path: fault}`` from the markdown table in ``root/FAULTS.md``."""
    path = root / "FAULTS.md"
    if not path.is_file():
        raise ConfigError("no FAULTS.md (a table: file | fault | ...)", field=str(path))
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"\|\s*([^|]+?\.csv)\s*\|\s*([^|]+?)\s*\|", line)
        if m:
            out[m.group(1)] = m.group(2)
    if not out:
        raise ConfigError("FAULTS.md has no rows of the form | file.csv | fault |",
                          field=str(path))
    return out


async def evaluate_retrieval(root: Path, *, detector: str = "pca", stride: int = 5,
                             diagnosis: DiagnosisSettings | None = None,
                             context: bool = True,
                             context_weight: float = 2.0) -> dict[str, Any]:
    """Leave-one-recording-out fault diagnosis; accuracy and the calls made."""
    if detector not in DETECTORS:
        raise ConfigError(f"unknown detector; one of {sorted(DETECTORS)}", field="detector")
    cfg = DETECTORS[detector]
    settings = diagnosis or DiagnosisSettings()
    labels = fault_labels(root)
    started = time.perf_counter()
    incidents: list[Incident] = []
    queries: dict[str, tuple[list[float], dict[str, float]] | None] = {}
    normal: list[Any] = []
    channels: list[str] = []
    with tempfile.TemporaryDirectory() as d:
        for path in skab_files(root):
            f = load_file(path, root)
            if f.name not in labels:
                raise ConfigError(f"{f.name} has no fault in FAULTS.md", field=str(path))
            channels = f.channels
            sc = stream(f, cfg, Path(d), normal_only=True)
            normal.append(training_rows(f, normal_only=True))

            anomalous = [j for j, row in enumerate(sc.rows) if f.anomaly[row] == 1]
            for j in anomalous[::stride]:
                row = int(sc.rows[j])
                incidents.append(Incident(
                    id=f"{f.name}#{row}", event=f.name, asset=f.name, asset_type="pump",
                    site="skab", ts=float(f.times[row]), failure_mode=labels[f.name],
                    summary=f"SKAB {f.name}, row {row}", context=sc.baselines[j],
                    embedding=[float(v) for v in sc.embeddings[j]]))
            if sc.alerts:
                j = int(sc.rows.searchsorted(sc.alerts[0]))
                queries[f.name] = ([float(v) for v in sc.embeddings[j]], sc.baselines[j])
            else:
                queries[f.name] = None
        fleet = (ContextSettings.fit(normal, channels, weight=context_weight)
                 if context else None)
        per_file: list[dict[str, Any]] = []
        async with HistoryStore(settings=HistorySettings(path=Path(d) / "history",
                                                         diagnosis=settings, context=fleet,
                                                         cache_ttl_s=0)) as store:
            await store.add(incidents)
            q0 = store.queries
            for name, q in queries.items():
                truth = labels[name]
                if q is None:
                    per_file.append({"file": name, "truth": truth, "predicted": None,
                                     "call": "no_alert", "correct": False})
                    continue
                found = await store.diagnose(q[0], asset=name, asset_type="pump",
                                             exclude_asset=name, context=q[1])
                per_file.append({
                    "file": name, "truth": truth, "predicted": found.failure_mode,
                    "probability": found.probability, "call": found.call,
                    "correct": found.failure_mode == truth, "sentence": found.sentence(),
                    "truth_in_history": any(labels[o] == truth for o in labels if o != name),
                })
        rounds = (store.queries - q0) / max(1, sum(q is not None for q in queries.values()))
    alerted = [r for r in per_file if r["call"] != "no_alert"]
    correct = sum(r["correct"] for r in per_file)
    right_call = sum((r["call"] == "probable") == r["correct"] for r in alerted)
    probable = [r for r in alerted if r["call"] == "probable"]
    return {
        "detector": detector, "files": len(per_file), "alerted": len(alerted),
        "top1_accuracy": round(correct / len(per_file), 4) if per_file else 0.0,
        "top1_accuracy_alerted": round(correct / len(alerted), 4) if alerted else 0.0,
        "uncertain_calls": sum(r["call"] == "uncertain" for r in alerted),
        "call_accuracy": round(right_call / len(alerted), 4) if alerted else 0.0,
        "probable_precision": (round(sum(r["correct"] for r in probable) / len(probable), 4)
                               if probable else None),
        "majority_baseline": round(max(list(labels.values()).count(v) for v in labels.values())
                                   / len(labels), 4),
        "history_points": len(incidents), "engine_queries_per_diagnosis": round(rounds, 2),
        "diagnosis": settings.model_dump(),
        "context": fleet.spec() if fleet else None, "training_rows": "normal rows of the first 400",
        "seconds": round(time.perf_counter() - started, 1), "per_file": per_file,
    }
