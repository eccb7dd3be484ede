"""structlog configuration, done once by the command-line entrypoint."""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["configure_logging"]


class _Stderr:
    """Writes to whatever ``sys.stderr`` is at the time (it may be replaced, e.g. by a
    test harness), never to a stream captured once and closed later."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg


def _stderr_logger(*_args: object) -> _Stderr:
    return _Stderr()


def configure_logging(level: str = "INFO", *, json: bool = False) -> None:
    """Log to stderr at ``level``: console lines, or JSON lines with ``json`` (with the
    traceback of a logged exception; a line written while an alert is processed carries
    ``alert_id``, ``thread_id`` and ``trace_id``)."""
    lvl = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(level=lvl, stream=sys.stderr, format="%(message)s")
    for noisy in ("httpx", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(max(lvl, logging.WARNING))
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    # JSON lines keep the traceback (as text in "exception"), not just "exc_info": true;
    # the console renderer prints it itself
    structured: list[structlog.types.Processor] = (
        [structlog.processors.format_exc_info] if json else [])
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            *structured,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
