"""The public surface: one namespace, each package's __all__ (like httpx's test), the
dependency direction, and a gateway's import that loads none of the engine stack."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: package -> its folder at the repository root (pyproject's package-dir)
LAYOUT: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"][
    "setuptools"]["package-dir"]
PACKAGES = sorted(LAYOUT)
#: what the engine stack and training bring; a gateway loads none of it
HEAVY = ("langgraph", "openai", "qdrant_client", "qdrant_edge", "sklearn", "skl2onnx", "onnx",
         "tenacity", "httpx", "scipy")


def test_every_root_package_is_mapped_and_installed_under_aiotflow() -> None:
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"]
    # every package folder under a mapped root is listed, or the wheel would lack it
    found = {pkg + "".join(f".{part}" for part in d.relative_to(ROOT / folder).parts)
             for pkg, folder in LAYOUT.items()
             for d in [ROOT / folder, *(ROOT / folder).glob("**/")]
             if (d / "__init__.py").is_file() and "__pycache__" not in d.parts}
    assert sorted(listed) == sorted(found)
    assert all(p == "aiotflow" or p.startswith("aiotflow.") for p in listed)
    folders = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert folders - {"examples", "tests"} == set(LAYOUT.values())
    for package, folder in LAYOUT.items():
        assert Path(importlib.import_module(package).__file__ or "").parent == ROOT / folder


@pytest.mark.parametrize("name", [p for p in PACKAGES if p != "aiotflow.cli"])
def test_exported_members(name: str) -> None:
    module = importlib.import_module(name)
    exported = {n for n in module.__all__ if not n.startswith("_")}
    public = {n for n in dir(module) if not n.startswith("_")}
    submodules = {n for n in public if type(getattr(module, n)).__name__ == "module"}
    assert exported == public - submodules - {"annotations"}, name
    for n in exported:
        assert getattr(module, n) is not None


def test_workflow_authors_import_from_aiotflow() -> None:
    from aiotflow import AlertFilter, App, WorkflowContext, approval_node
    from aiotflow.workflows import App as WorkflowsApp

    assert App is WorkflowsApp and callable(approval_node)
    assert AlertFilter.__module__.startswith("aiotflow.workflows")
    assert WorkflowContext.__module__.startswith("aiotflow.workflows")


def _imported_after(statement: str) -> list[str]:
    """Top-level modules a fresh interpreter holds after ``statement``, run from /."""
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd="/").stdout
    return json.loads(out)


@pytest.mark.parametrize("statement", [
    "import aiotflow.edge",
    "import aiotflow.edge.runtime, aiotflow.contracts, aiotflow.simulator",
    "import aiotflow.cli; aiotflow.cli._parser()",
])
def test_gateway_imports_load_no_engine_stack(statement: str) -> None:
    loaded = _imported_after(statement)
    assert "aiotflow.edge" in loaded or "aiotflow.cli" in loaded
    heavy = sorted({m.split(".")[0] for m in loaded} & set(HEAVY))
    assert heavy == [], f"{statement} loads {heavy}"


def test_engine_loads_no_edge_runtime_simulator_or_broker() -> None:
    loaded = _imported_after("import aiotflow.workflows, aiotflow.agents")
    assert "aiotflow.workflows.engine" in loaded and "langgraph" in loaded
    ours = {m for m in loaded if m.startswith("aiotflow.")}
    assert not {m for m in ours if m.split(".")[1] in ("edge", "simulator", "demo",
                                                        "training", "evaluation")}, ours


def test_no_bare_package_names_are_imported() -> None:
    """Code imports our packages as aiotflow.*, never by their folder's name (which
    would load a second copy of the module from the repository root)."""
    bare = set(LAYOUT.values()) - {"aiotflow"}
    for path in ROOT.glob("**/*.py"):
        if ".venv" in path.parts or "build" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module
                     and node.level == 0 else [])
            for n in names:
                assert n.split(".")[0] not in bare, f"{path} imports {n}"


#: package -> the aiotflow packages it must never import (ARCHITECTURE.md)
BANNED = {
    "contracts": {"edge", "tools", "vectorstore", "workflows", "agents", "training",
                  "evaluation", "simulator", "demo", "cli"},
    "edge": {"tools", "vectorstore", "workflows", "agents", "training", "evaluation",
             "simulator", "demo", "cli"},
    "tools": {"edge", "vectorstore", "workflows", "agents", "training", "evaluation",
              "simulator", "demo", "cli"},
    "vectorstore": {"edge", "tools", "workflows", "agents", "training", "evaluation",
                    "simulator", "demo", "cli"},
    "workflows": {"edge", "agents", "training", "evaluation", "simulator", "demo", "cli"},
    "agents": {"edge", "training", "evaluation", "simulator", "demo", "cli"},
    "simulator": {"edge", "tools", "vectorstore", "workflows", "agents", "training",
                  "evaluation", "demo", "cli"},
    "training": {"tools", "vectorstore", "workflows", "agents", "evaluation", "demo", "cli"},
}


@pytest.mark.parametrize("folder", sorted(BANNED))
def test_dependency_direction(folder: str) -> None:
    for path in (ROOT / folder).glob("**/*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            for n in names:
                parts = n.split(".")
                if parts[0] == "aiotflow" and len(parts) > 1:
                    assert parts[1] not in BANNED[folder], f"{path} imports {n}"
