"""aiotflow evaluation: detection quality on SKAB (its leaderboard protocol, NAB scoring)
and fault diagnosis from the incident history (:mod:`aiotflow.evaluation.retrieval`).

Tooling beside the runtime: ``aiotflow eval skab`` needs the ``train`` extra,
``aiotflow eval retrieval`` the ``train`` and ``engine`` extras.
"""

from aiotflow.extras import require as _require

_require("train", feature="aiotflow.evaluation")

from .metrics import NAB_PROFILES, BinaryCounts, NabTotals, changepoints, nab_file, nab_windows
from .skab import (
    TRAIN_ROWS,
    FileScore,
    SkabFile,
    evaluate,
    load_file,
    score_file,
    skab_files,
    stream,
    summarise,
    training_rows,
)

__all__ = [
    "NAB_PROFILES",
    "TRAIN_ROWS",
    "BinaryCounts",
    "FileScore",
    "NabTotals",
    "SkabFile",
    "changepoints",
    "evaluate",
    "load_file",
    "nab_file",
    "nab_windows",
    "score_file",
    "skab_files",
    "stream",
    "summarise",
    "training_rows",
]
