"""mypy over the installed layout: ``aiotflow.edge`` is the root folder ``edge/``.

mypy maps files to modules by their folders and does not follow setuptools' editable
import hooks, so this builds ``build/typecheck/aiotflow/`` out of symbolic links, one per
entry of ``[tool.setuptools.package-dir]`` in pyproject.toml, and checks the package
there. Errors name the module's path (``aiotflow/edge/runtime.py:12``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

root = Path(__file__).resolve().parents[1]
tree = root / "build" / "typecheck"
mapping = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
    "package-dir"]
top = tree / "aiotflow"
shutil.rmtree(top, ignore_errors=True)
top.mkdir(parents=True)
for entry in (root / mapping["aiotflow"]).iterdir():
    if entry.name != "__pycache__":
        (top / entry.name).symlink_to(entry)
for package, folder in mapping.items():
    if package != "aiotflow":
        (top / package.removeprefix("aiotflow.")).symlink_to(root / folder)
os.chdir(tree)
sys.exit(subprocess.call([sys.executable, "-m", "mypy", "--config-file",
                          str(root / "pyproject.toml"), "--cache-dir", str(root / ".mypy_cache"),
                          "-p", "aiotflow", *sys.argv[1:]]))
