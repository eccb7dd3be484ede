"""How the command line prints for people: rich on a terminal; plain, stable text when
the output is a pipe or a file (and JSON with ``--json``), so scripts can read it.

rich comes with the ``engine`` and ``train`` extras, whose commands print tables; without
it (a gateway's base install) everything prints plain."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

from aiotflow.terminal import printable

__all__ = ["console", "is_tty", "print_json", "progress", "table"]


def is_tty(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` (default: standard output) is a terminal rich can draw on."""
    stream = sys.stdout if stream is None else stream
    try:
        return stream.isatty() and importlib.util.find_spec("rich") is not None
    except (AttributeError, ValueError):
        return False


def console(*, stderr: bool = False) -> Any:
    """A rich console on the current standard output (or error)."""
    from rich.console import Console

    return Console(file=sys.stderr if stderr else sys.stdout, highlight=False)


def print_json(value: Any) -> None:
    """``value`` as indented JSON on standard output."""
    print(json.dumps(value, indent=2, default=str))


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str | None = None,
          empty: str | None = None) -> None:
    """Rows under a header: a rich table on a terminal, aligned plain text otherwise.

    ``empty`` is printed instead when there are no rows."""
    if not rows and empty is not None:
        print(empty)
        return
    cells = [[printable(v) for v in row] for row in rows]
    if is_tty():
        from rich.table import Table
        from rich.text import Text

        t = Table(title=title, title_justify="left")
        for c in columns:
            t.add_column(c, overflow="fold")
        for row in cells:
            t.add_row(*map(Text, row))  # Text, not markup: cells hold what others wrote
        console().print(t)
        return
    grid = [list(columns), *cells]
    widths = [max(len(r[i]) for r in grid) for i in range(len(columns))]
    if title:
        print(title)
    for r in grid:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


@contextlib.contextmanager
def progress(label: str) -> Iterator[Callable[[int, int], None] | None]:
    """``with progress("importing") as update:`` a ``(done, total)`` callback drawing a
    progress bar on a terminal's standard error, stopped however the block ends; None
    when standard error is not a terminal (nothing to draw)."""
    if not is_tty(sys.stderr):
        yield None
        return
    from rich.progress import Progress

    with Progress(console=console(stderr=True)) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)
