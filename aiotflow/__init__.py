"""aiotflow: event-driven agent orchestration for AIoT.

This package composes the others into the ``aiotflow`` command line and the demo;
the building blocks are :mod:`edge`, :mod:`vectorstore`, :mod:`tools`, :mod:`workflows`
and :mod:`agents`.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
