"""The distribution as a gateway installs it: the built wheel, base dependencies only, in
a fresh virtual environment (pip takes them from its cache or the index)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from aiotflow.contracts import Alert
from aiotflow.contracts.signing import open_alert

from .conftest import Mosquitto
from .workflows.helpers import wait_for

ROOT = Path(__file__).resolve().parents[1]
#: what the base install must not bring (the engine stack, training, the extras' rich)
HEAVY = ("langgraph", "openai", "qdrant_client", "qdrant_edge", "sklearn", "skl2onnx", "onnx",
         "scipy", "tenacity", "httpx", "rich")
#: the acceptance bound on the base venv
MAX_BASE_MB = 250


def _du_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not
               f.is_symlink()) / 2**20


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv holding the built wheel and its base dependencies: its bin/ folder."""
    work = tmp_path_factory.mktemp("gateway")
    env = os.environ | {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(work / "dist"), str(ROOT)], check=True, env=env, capture_output=True)
    [wheel] = (work / "dist").glob("aiotflow-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True)
    bin_ = work / "venv" / "bin"
    done = subprocess.run([str(bin_ / "python"), "-m", "pip", "install", "-q", str(wheel)],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    yield bin_


def _run(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_base_install_is_one_lean_namespace(gateway: Path) -> None:
    [site] = (gateway.parent / "lib").glob("python3*/site-packages")
    top = {p.name.removesuffix(".py") for p in site.iterdir()
           if not p.name.endswith((".dist-info", ".pth", ".libs")) and p.name != "__pycache__"}
    assert "aiotflow" in top
    ours = {"edge", "tools", "agents", "workflows", "vectorstore", "contracts", "training",
            "evaluation", "simulator", "demo", "cli", "core"}
    assert not top & ours, top & ours
    assert not top & set(HEAVY), top & set(HEAVY)
    size = _du_mb(gateway.parent)
    assert size <= MAX_BASE_MB, f"base venv {size:.0f} MB"


def test_gateway_commands_and_missing_extras(gateway: Path) -> None:
    out = _run(str(gateway / "aiotflow"), "edge", "--help")
    assert out.returncode == 0 and "--config" in out.stdout, out.stderr
    # from the repository root, by the console script and by python -m: the root folders
    # must not shadow the installed package
    for argv in ([str(gateway / "aiotflow")], [str(gateway / "python"), "-m", "aiotflow"]):
        run = _run(*argv, "run", "examples.custom_workflow:app")
        assert run.returncode == 2, run.stderr
        assert "pip install 'aiotflow[engine]'" in run.stderr and "Traceback" not in run.stderr
    train = _run(str(gateway / "aiotflow"), "train", "--out", "x.onnx")
    assert train.returncode == 2 and "pip install 'aiotflow[train]'" in train.stderr
    assert "Traceback" not in train.stderr
    lib = _run(str(gateway / "python"), "-c", "import aiotflow.workflows")
    assert lib.returncode == 1 and "MissingExtra" in lib.stderr
    assert "pip install 'aiotflow[engine]'" in lib.stderr


async def test_gateway_scores_telemetry_into_alerts(
    gateway: Path, mosquitto: Mosquitto, bundle_path: Path, tmp_path: Path
) -> None:
    """The lean install runs the edge runtime on a bundle trained elsewhere, fed by its
    own simulator: the alert arrives, with neither scikit-learn nor LangGraph present."""
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f'model = "{bundle_path}"\noutbox = "{tmp_path / "outbox.db"}"\n'
                   f'stats_interval_s = 0.2\n[mqtt]\nurl = "{mosquitto.url}"\n')
    stats = tmp_path / "stats.json"
    edge = await asyncio.create_subprocess_exec(
        str(gateway / "aiotflow"), "edge", "--config", str(cfg), "--stats-file", str(stats),
        stderr=asyncio.subprocess.PIPE, cwd=tmp_path)
    try:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as sub:
            await sub.subscribe("aiotflow/alerts/#", qos=1)
            await wait_for(lambda: stats.exists() and json.loads(stats.read_text())["connects"],
                           30)
            sim = await asyncio.create_subprocess_exec(
                str(gateway / "aiotflow"), "simulate", "--broker", mosquitto.url,
                "--assets", "2", "--speed", "25", "--duration", "150",
                "--fault", "gen-002:coolant_pump@50", "--ramp", "30",
                stderr=asyncio.subprocess.PIPE, cwd=tmp_path)
            async with asyncio.timeout(60):
                msg = await anext(aiter(sub.messages))
            alert = Alert.model_validate_json(open_alert(msg.payload).body)
            _, sim_err = await asyncio.wait_for(sim.communicate(), 60)
            assert sim.returncode == 0, sim_err.decode()
    finally:
        edge.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(edge.communicate(), 30)
    assert edge.returncode == 0, err.decode()[-2000:]
    assert alert.asset == "gen-002" and alert.embedding
