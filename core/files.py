"""Private files: what aiotflow writes about people and decisions is for its owner only.

The state dir holds operator names, comments, technicians' phone numbers and keys, so it
is created ``0700`` and its files ``0600`` whatever the process's umask. SQLite gives its
``-wal`` / ``-shm`` files the mode of the database file, so :func:`private_db` before the
connection opens is enough for a database.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

__all__ = ["private_db", "private_dir", "private_file", "private_umask", "write_private"]


def private_dir(path: str | Path) -> Path:
    """Create ``path`` (and parents) if missing and make it ``0700``; returns it."""
    p = Path(path)
    with private_umask():
        p.mkdir(parents=True, exist_ok=True)
    if stat.S_IMODE(p.stat().st_mode) & 0o077:
        with contextlib.suppress(PermissionError):  # not ours: the owner decides
            p.chmod(0o700)
    return p


def private_file(path: str | Path) -> Path:
    """Make an existing file ``0600`` (a no-op when it is already)."""
    p = Path(path)
    with contextlib.suppress(FileNotFoundError, PermissionError):
        if stat.S_IMODE(p.stat().st_mode) & 0o077:
            p.chmod(0o600)
    return p


def private_db(path: str | Path) -> Path:
    """A database file about to be opened: its directory made ``0700`` if new, the file
    created ``0600`` if missing (SQLite then makes its journals the same) or made so."""
    p = Path(path)
    if not p.parent.exists():
        private_dir(p.parent)
    try:
        os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        private_file(p)
        for suffix in ("-wal", "-shm", "-journal"):
            private_file(p.with_name(p.name + suffix))
    return p


def write_private(path: str | Path, data: bytes, *, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically, the file ``0600`` from its first byte;
    ``durable`` (a key, an anchor) syncs it to disk first, which a stats file rewritten
    every second need not pay for."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return p


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Files created inside are ``0600`` at most (directories ``0700``).

    The umask is process-wide: keep the block short (an ``open``), as SQLite's file
    creation is."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)
