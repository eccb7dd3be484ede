"""How well does a SKAB detector configuration generalise to recordings it was not chosen on?

The shipped ``pca`` configuration was chosen over a grid of general settings on all local
recordings, so its figures are optimistic. This benchmark estimates the figures on unseen
recordings by nested leave-one-group-out: the recordings fall into groups by directory
(``valve1``, ``valve2``, ``other``: different experiments on the testbed); for each group
in turn, the configuration is chosen on the *other* groups only (same grid, same rule)
and applied to the held-out group. The held-out outcomes of all groups are then pooled
and scored like one run of ``aiotflow eval skab``. Beside it, the same run reports the
shipped configuration per group and the whole grid's spread.

Selection rule (on the training groups): among configurations with FAR <= 13 %, the
largest F1 + NAB standard / 100 + NAB low-FP / 100; if none, the largest of that sum.

Every configuration is scored through the edge path (``edge.skab.score_file``: bundle,
ONNX Runtime, WindowBuffer, AlertPolicy).

    python benchmarks/skab_generalisation.py [--data ../shared/data/skab] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from aiotflow.evaluation.skab import (
    FileScore,
    SkabFile,
    load_file,
    score_file,
    skab_files,
    summarise,
)
from aiotflow.training.presets import DETECTORS, DetectorConfig

GRID: dict[str, list[Any]] = {
    "window": [3, 5, 8, 12],
    "features": [("mean",), ("mean", "std")],
    "quantile": [99.0, 100.0],
    "margin": [1.5, 2.0, 3.0, 4.0, 6.0],
    "k": [1, 3],
}

_FILES: list[SkabFile] = []


def _init(root: str) -> None:
    base = Path(root)
    _FILES.extend(load_file(p, base) for p in skab_files(base))


def _run(cfg: DetectorConfig) -> tuple[DetectorConfig, list[FileScore]]:
    with tempfile.TemporaryDirectory() as d:
        return cfg, [score_file(f, cfg, Path(d)) for f in _FILES]


def group_of(name: str) -> str:
    parts = Path(name).parts
    return parts[0] if len(parts) > 1 else "."


def objective(r: dict[str, Any]) -> tuple[bool, float]:
    return (r["far"] <= 13.0, r["f1"] + r["nab_standard"] / 100 + r["nab_lowfp"] / 100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2]
                                          / "shared" / "data" / "skab"))
    ap.add_argument("--json", action="store_true", help="JSON only")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args()

    grid = [DetectorConfig(name=f"grid-{i}", **dict(zip(GRID, vals, strict=True)))
            for i, vals in enumerate(itertools.product(*GRID.values()))]
    configs = [DETECTORS["pca"], *grid]
    started = time.perf_counter()
    with ProcessPoolExecutor(a.workers, initializer=_init, initargs=(a.data,)) as pool:
        results = dict((cfg.name, (cfg, scores)) for cfg, scores in pool.map(_run, configs))
    elapsed = time.perf_counter() - started

    names = [s.name for s in results["pca"][1]]
    groups = sorted({group_of(n) for n in names})

    def pick(cfg_name: str, keep: set[str]) -> list[FileScore]:
        return [s for s in results[cfg_name][1] if group_of(s.name) in keep]

    folds, held_out = [], []
    for g in groups:
        train = set(groups) - {g}
        best = max((c.name for c in grid), key=lambda n: objective(summarise(pick(n, train))))
        held = pick(best, {g})
        held_out.extend(held)
        cfg = results[best][0]
        folds.append({
            "held_out": g, "files": len(held),
            "chosen": cfg.model_dump(include={"window", "features", "quantile", "margin", "k"}),
            "train": {k: v for k, v in summarise(pick(best, train)).items()
                      if k in FIGURES},
            "test": {k: v for k, v in summarise(held).items() if k in FIGURES},
        })
    all_groups = set(groups)
    spread = sorted((summarise(pick(c.name, all_groups)) for c in grid),
                    key=objective, reverse=True)
    out = {
        "files": len(names), "groups": {g: sum(group_of(n) == g for n in names)
                                         for g in groups},
        "grid_size": len(grid), "seconds": round(elapsed, 1),
        "nested_logo": {k: v for k, v in summarise(held_out).items() if k in FIGURES},
        "shipped_pca_all": {k: v for k, v in summarise(results["pca"][1]).items()
                            if k in FIGURES},
        "shipped_pca_per_group": {g: {k: v for k, v in summarise(pick("pca", {g})).items()
                                      if k in FIGURES} for g in groups},
        "grid_best_all": {k: v for k, v in spread[0].items() if k in FIGURES},
        "grid_median_all": {k: v for k, v in spread[len(spread) // 2].items() if k in FIGURES},
        "folds": folds,
    }
    print(json.dumps(out, indent=2))
    if a.json:
        return
    rows = [("nested leave-one-group-out", out["nested_logo"]),
            ("shipped pca, all files", out["shipped_pca_all"]),
            *((f"shipped pca, {g}", r) for g, r in out["shipped_pca_per_group"].items()),
            ("grid best (in-sample)", out["grid_best_all"]),
            ("grid median", out["grid_median_all"])]
    print(f"\n{'':28}" + "".join(f"{c:>13}" for c in FIGURES), file=sys.stderr)
    for label, r in rows:
        print(f"{label:28}" + "".join(f"{r[c]!s:>13}" for c in FIGURES), file=sys.stderr)


FIGURES = ("files", "f1", "far", "mar", "nab_standard", "nab_lowfp", "nab_lowfn")

if __name__ == "__main__":
    main()
