"""A real PostgreSQL for the tests (and the benchmarks): ``initdb`` in a temp dir, started
on a free loopback port, stoppable, killable and restartable. As root it runs as the
``postgres`` user (PostgreSQL refuses to run as root)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bindir() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(p.split("/")[4]))
    if not versions:
        raise RuntimeError("PostgreSQL is not installed: run `make test` (it installs it) or "
                           "`sudo apt-get install -y postgresql`")
    return Path(versions[-1]).parent


class Postgres:
    """``pg = Postgres(); pg.start(); url = pg.create_database()``."""

    def __init__(self) -> None:
        self.bin = _bindir()
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="aiotflow-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.root, "postgres", "postgres")
        self._initialised = False

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self._as, str(self.bin / args[0]), *args[1:]], check=check,
                              capture_output=True, text=True, timeout=120)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://aiotflow@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        if not self._initialised:
            self._run("initdb", "-D", str(self.data), "-U", "aiotflow", "--auth=trust",
                      "-E", "UTF8", "--no-sync", "--no-instructions")
            self._initialised = True
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        result = self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.log),
                           "-w", "-t", "60", "start", check=False)
        if result.returncode:
            raise RuntimeError(f"postgres did not start: {result.stderr}\n"
                               f"{self.log.read_text() if self.log.exists() else ''}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("postgres did not listen")

    def stop(self, mode: str = "fast") -> None:
        """``fast``: clean shutdown; ``immediate``: like a crash (no checkpoint)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def create_database(self, name: str | None = None) -> str:
        """A new, empty database; its URL."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
