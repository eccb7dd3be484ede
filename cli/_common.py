"""What the command groups share: signals, the engine's state options, the extra check."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

__all__ = ["Command", "add_state_options", "command", "engine_settings", "state_overrides",
           "stop_event"]

#: one command: parsed arguments in, exit code out
Command = Callable[[argparse.Namespace], Awaitable[int]]


def command(parser: argparse.ArgumentParser, func: Command, *extras: str) -> None:
    """Make ``func`` the command of ``parser``; ``extras`` are checked before it runs."""
    parser.set_defaults(func=func, extras=extras)


def stop_event() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (graceful drain, exit 0)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop


def add_state_options(*parsers: argparse.ArgumentParser) -> None:
    """``--config``, ``--state-dir`` and ``--state-url``: where an engine command finds
    its state."""
    for p in parsers:
        p.add_argument("--config", help="TOML file; its [engine] table is used")
        p.add_argument("--state-dir", help="state directory (default .aiotflow)")
        p.add_argument("--state-url", help="postgresql://... shared by many workers "
                                           "(or AIOTFLOW_STATE_URL; default: SQLite files "
                                           "in the state directory)")


def state_overrides(a: argparse.Namespace) -> dict[str, Any]:
    """Engine settings given on the command line (they win over file and environment)."""
    out: dict[str, Any] = {}
    if getattr(a, "state_dir", None):
        out["state_dir"] = Path(a.state_dir)
    if getattr(a, "state_url", None):
        out["state_url"] = a.state_url
    if getattr(a, "worker_id", None):
        out["worker_id"] = a.worker_id
    if getattr(a, "broker", None):
        out["mqtt"] = {"url": a.broker}
    return out


def engine_settings(a: argparse.Namespace) -> Any:
    """The engine's settings for this command: ``--config``'s [engine] table, environment,
    then the command line."""
    from aiotflow.workflows.settings import EngineSettings

    return EngineSettings.load(a.config, table="engine", **state_overrides(a))
