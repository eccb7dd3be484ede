"""Errors raised by the incident history.

Exception tree::

    HistoryError
    ├── HistoryUnavailable   the Qdrant engine or server cannot be reached or opened
    │   └── HistoryBusy      the embedded store is open in another process
    └── EmbeddingMismatch    an embedding's dimension differs from the collection's
"""

from __future__ import annotations


class HistoryError(Exception):
    """Base class of every error raised by :mod:`aiotflow.vectorstore`."""


class HistoryUnavailable(HistoryError):
    """The history store cannot be opened or reached."""


class HistoryBusy(HistoryUnavailable):
    """The embedded store is held by another process (one writer per directory)."""


class EmbeddingMismatch(HistoryError):
    """An embedding has the wrong dimension for this collection."""

    def __init__(self, expected: int, got: int) -> None:
        super().__init__(f"embedding has {got} dimensions, the collection holds {expected}")
        self.expected = expected
        self.got = got
