"""Crash points for recovery tests: ``AIOTFLOW_FAILPOINTS="a,b"`` makes the process kill
itself (SIGKILL, like a power cut: no cleanup, no flush) when it reaches point ``a`` or
``b``. Off unless the variable is set; reading it costs one set lookup per point.

Points: ``engine.claimed`` (alert claimed, graph not started), ``engine.waiting`` (run
paused for approval), ``tool.before:NAME`` (about to call), ``tool.done:NAME`` (the tool
did its work, its effect is not recorded yet), ``tool.recorded:NAME`` (effect recorded).
"""

from __future__ import annotations

import os
import signal

__all__ = ["failpoint"]

_ACTIVE = frozenset(p.strip() for p in os.environ.get("AIOTFLOW_FAILPOINTS", "").split(",")
                    if p.strip())


def failpoint(name: str) -> None:
    """Die here, at once, if ``name`` is an active failpoint."""
    if name in _ACTIVE:
        os.kill(os.getpid(), signal.SIGKILL)
