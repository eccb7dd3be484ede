"""The ``aiotflow`` command line: one module per command group, the logic in the packages.

    aiotflow edge        the edge runtime (MQTT telemetry -> ONNX -> alerts)      [base]
    aiotflow simulate    publish simulated generator telemetry                    [base]
    aiotflow train       fit a detector and export an ONNX model bundle           [train]
    aiotflow eval skab   detection quality on SKAB recordings (leaderboard protocol) [train]
    aiotflow eval retrieval  fault diagnosis from the incident history on SKAB   [train, engine]
    aiotflow run APP     run an app's workflows for alerts (module:attribute)     [engine]
    aiotflow db          upgrade / check the state database's schema (PostgreSQL) [engine]
    aiotflow approvals   list approvals waiting for a person                      [engine]
    aiotflow approve     review and decide pending approvals                      [engine]
    aiotflow history     import / export / query / correct the incident history   [engine]
    aiotflow workorder   list work orders, close one with its finding (learning loop) [engine]
    aiotflow audit       verify the hash-chained audit trail; show one alert's story [engine]
    aiotflow costs       LLM spend per alert, site, day, model or step            [engine]
    aiotflow operator    hash an operator's PIN for [engine.policy]               [engine]
    aiotflow status      health of edges and engines; exit 0 when healthy         [base]
    aiotflow demo        the whole product on embedded defaults                   [all]
    aiotflow seed        seed a state directory: roster, logs, incident history [engine, train]

[extra]: what to install for it, e.g. pip install 'aiotflow[engine]'.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import os
import signal
import sys
import threading
from collections.abc import Sequence

from aiotflow import __version__
from aiotflow.extras import MissingExtra, extra_for_module, require

from . import approvals, audit, db, demo, edge, engine, history, models, status

__all__ = ["main"]

#: the command groups, in the order of the help text
GROUPS = (edge, models, engine, db, approvals, history, audit, status, demo)
#: commands that print their own progress: quiet logs unless asked for
_QUIET = ("demo", "approve", "approvals")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aiotflow", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"aiotflow {__version__}")
    p.add_argument("--log-level", default=os.environ.get("AIOTFLOW_LOG_LEVEL", "INFO"))
    p.add_argument("--log-json", action="store_true", help="log JSON lines to stderr")
    sub = p.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    return p


def _errors() -> tuple[type[BaseException], ...]:
    """The error types a command reports as one line (exit 2): those of every package
    the command imported (importing one here could fail for a missing extra, and would
    slow down ``--help``)."""
    found: list[type[BaseException]] = [KeyError]
    for module, name in (("aiotflow.contracts.errors", "ContractError"),
                         ("aiotflow.edge.errors", "EdgeError"),
                         ("aiotflow.tools.errors", "ToolError"),
                         ("aiotflow.tools.database", "DatabaseError"),
                         ("aiotflow.keys", "KeyFileError"),
                         ("aiotflow.vectorstore.errors", "HistoryError"),
                         ("aiotflow.workflows.errors", "WorkflowError")):
        if module in sys.modules:
            found.append(getattr(sys.modules[module], name))
    return tuple(found)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code (2: bad input or a missing extra)."""
    args = _parser().parse_args(argv)
    if hasattr(signal, "SIGUSR1") and threading.current_thread() is threading.main_thread():
        # `kill -USR1 PID` prints every thread's stack to stderr: what a stuck process waits on
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    # state, outbox, keys, stats and history hold operators' names, comments, phone numbers
    # and secrets: whatever creates a file here (SQLite, Qdrant Edge) creates it private
    old_umask = os.umask(0o077)
    try:
        return _run(args)
    finally:
        os.umask(old_umask)


def _run(args: argparse.Namespace) -> int:
    level = args.log_level
    if args.command in _QUIET and "AIOTFLOW_LOG_LEVEL" not in os.environ and level == "INFO":
        level = "ERROR"  # the demo and the console print their own progress
    from aiotflow.logging import configure_logging

    configure_logging(level, json=args.log_json)
    try:
        require(*args.extras, feature=f"aiotflow {args.command}")
        return asyncio.run(args.func(args))
    except MissingExtra as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        extra = extra_for_module(exc.name)
        if extra is None:
            raise
        print(f"error: aiotflow {args.command} needs the '{extra}' extra: pip install "
              f"'aiotflow[{extra}]' (not installed: {exc.name})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        known = _errors()
        if "pydantic" in sys.modules:  # settings built from flags: name the bad field
            from pydantic import ValidationError

            from aiotflow.contracts.settings import config_error

            if isinstance(exc, ValidationError):
                print(f"aiotflow {args.command}: error: {config_error(exc)}", file=sys.stderr)
                return 2
        # a task group's failure: reported the same way when it is one of ours
        inner = exc.exceptions if isinstance(exc, ExceptionGroup) else (exc,)
        if inner and all(isinstance(e, known) for e in inner):
            for e in inner:
                print(f"aiotflow {args.command}: error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
