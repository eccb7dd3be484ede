"""Text for a person's terminal.

Titles, summaries and audit details can come from an LLM, a model bundle or a message on
the broker; printed as they are, an ESC sequence in one could clear the screen, move the
cursor or hide what follows. Everything the command line and the approval console show
passes through :func:`printable` first.
"""

from __future__ import annotations

__all__ = ["printable"]


def _escape(ch: str) -> str:
    if ch in "\n\t" or (" " <= ch != "\x7f" and not "\x80" <= ch <= "\x9f"):
        return ch
    return ch.encode("unicode_escape").decode()


def printable(text: object) -> str:
    """``text`` with every control character (ESC, C1, DEL, ...) but newline and tab shown
    as its escape (``\\x1b``), so that what reaches the terminal is what was written."""
    s = str(text)
    return s if s.isprintable() else "".join(map(_escape, s))
