"""What a gateway installs and how fast its command starts.

Builds the wheel, installs it with base dependencies only into a fresh venv (pip takes
them from its cache or the index), then reports the venv's size (largest packages first)
and the wall time of ``aiotflow edge --help`` and of ``import aiotflow.edge``, against
``python -c pass`` in the same venv as the baseline (interpreter start-up), interleaved
A B A B ... and reported as medians. The same command in the full development venv
(``.[all,dev]``) is timed beside it.

    python benchmarks/install_footprint.py [--runs 15] [--json] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not
               f.is_symlink()) / 2**20


def build_gateway(work: Path) -> Path:
    env = os.environ | {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(work / "dist"), str(ROOT)], check=True, env=env, capture_output=True)
    [wheel] = (work / "dist").glob("aiotflow-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True)
    subprocess.run([str(work / "venv/bin/python"), "-m", "pip", "install", "-q", str(wheel)],
                   check=True, env=env, capture_output=True)
    return work / "venv"


def _time(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, cwd="/")
    return (time.perf_counter() - t0) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", help="build the venv here and keep it")
    a = ap.parse_args()
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="aiotflow-gateway-"))
    try:
        venv = build_gateway(work)
        [site] = (venv / "lib").glob("python3*/site-packages")
        sizes = sorted(((p.name, _mb(p)) for p in site.iterdir() if p.is_dir()),
                       key=lambda kv: -kv[1])
        full = ROOT / ".venv/bin"
        cases = {
            "python -c pass (baseline)": [str(venv / "bin/python"), "-c", "pass"],
            "aiotflow edge --help": [str(venv / "bin/aiotflow"), "edge", "--help"],
            "import aiotflow.edge": [str(venv / "bin/python"), "-c", "import aiotflow.edge"],
            "full venv: aiotflow edge --help": [str(full / "aiotflow"), "edge", "--help"],
        }
        times: dict[str, list[float]] = {k: [] for k in cases}
        for argv in cases.values():  # warm the page cache once
            _time(argv)
        for _ in range(a.runs):  # interleaved
            for k, argv in cases.items():
                times[k].append(_time(argv))
        med = {k: round(statistics.median(v), 1) for k, v in times.items()}
        base = med["python -c pass (baseline)"]
        result: dict[str, Any] = {
            "base_venv_mb": round(_mb(venv), 1),
            "largest_mb": {n: round(s, 1) for n, s in sizes[:8]},
            "median_ms": med,
            "edge_help_minus_interpreter_ms": round(med["aiotflow edge --help"] - base, 1),
            "import_edge_minus_interpreter_ms": round(med["import aiotflow.edge"] - base, 1),
            "runs": a.runs,
        }
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    if a.json:
        print(json.dumps(result, indent=2))
    print(f"base venv: {result['base_venv_mb']} MB (" + ", ".join(
        f"{n} {s}" for n, s in result["largest_mb"].items()) + ")")
    for k, v in med.items():
        print(f"{k:36} {v:8.1f} ms (median of {a.runs})")


if __name__ == "__main__":
    main()
