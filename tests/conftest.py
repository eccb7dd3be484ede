"""Shared fixtures: a real Mosquitto per test, a trained model bundle, seed data."""

from __future__ import annotations

import asyncio
import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiotflow.demo.seed import history_incidents
from aiotflow.edge.bundle import ModelBundle
from aiotflow.training.train import train_simulated
from aiotflow.vectorstore.models import Incident

from .fakes import SchedulingService
from .postgres import Postgres


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mosquitto_bin() -> str:
    found = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.access(found, os.X_OK):
        pytest.fail("mosquitto is not installed: run `make test` (it installs it) or "
                    "`sudo apt-get install -y mosquitto`")
    return found


class Mosquitto:
    """A real Mosquitto broker on a free loopback port, stoppable and restartable."""

    def __init__(self, workdir: Path, *, persistence: bool = False,
                 port: int | None = None) -> None:
        self.binary = _mosquitto_bin()
        self.port = port or free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        persist = (f"persistence true\npersistence_location {workdir}/\nautosave_interval 1\n"
                   if persistence else "persistence false\n")
        # As root Mosquitto drops to user "mosquitto", which cannot write our tmp dirs.
        self.conf.write_text(
            f"user {getpass.getuser()}\n"
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n{persist}"
            "max_queued_messages 100000\n")
        self.log = workdir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.proc is None
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)],
                                     stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {self.log.read_text()}") from None
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def kill(self) -> None:
        """SIGKILL: no clean shutdown (sessions only as of the last autosave)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generator model trained once per session on healthy simulated data."""
    path = tmp_path_factory.mktemp("model") / "generator.onnx"
    train_simulated(path, assets=6, seconds=900.0, version="test")
    return path


@pytest.fixture(scope="session")
def bundle(bundle_path: Path) -> ModelBundle:
    return ModelBundle(bundle_path)


@pytest.fixture(scope="session")
def incidents(bundle: ModelBundle) -> list[Incident]:
    """A synthetic incident history made with the session's model."""
    return history_incidents(bundle, 40, seed=5)


@pytest.fixture
def scheduling_service() -> Iterator[SchedulingService]:
    """A customer scheduling REST service on loopback (status settable to 503)."""
    with SchedulingService() as svc:
        yield svc


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One real PostgreSQL cluster per session (each test takes a database of its own)."""
    try:
        server = Postgres()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    server.start()
    yield server
    server.close()


async def upgraded(url: str) -> str:
    """``aiotflow db upgrade`` on ``url`` (control, ops and the checkpointer)."""
    from aiotflow.cli import main

    code = await asyncio.to_thread(main, ["--log-level", "WARNING", "db", "upgrade",
                                          "--state-url", url])
    assert code == 0
    return url


@pytest.fixture
async def pg_url(postgres: Postgres) -> str:
    """A fresh PostgreSQL database with aiotflow's schema, as `aiotflow db upgrade` makes it."""
    return await upgraded(postgres.create_database())


@pytest.fixture(params=["sqlite", "postgres"])
async def state_target(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where a store lives, on each engine: a SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "control.db"
    server: Postgres = request.getfixturevalue("postgres")
    return await upgraded(server.create_database())
