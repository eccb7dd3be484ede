"""Each package re-exports its public surface with __all__ (like httpx's test)."""

import importlib

import pytest

PACKAGES = ["edge", "vectorstore", "tools", "workflows", "agents"]


@pytest.mark.parametrize("name", PACKAGES)
def test_exported_members(name: str) -> None:
    module = importlib.import_module(name)
    exported = set(module.__all__)
    public = {n for n in dir(module) if not n.startswith("_")}
    submodules = {n for n in public if type(getattr(module, n)).__name__ == "module"}
    assert exported == public - submodules, name
    for n in exported:
        assert getattr(module, n) is not None


def test_dependency_direction() -> None:
    """tools, vectorstore and edge import none of the other four packages."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    banned = {"edge": {"tools", "vectorstore", "workflows", "agents"},
              "tools": {"edge", "vectorstore", "workflows", "agents"},
              "vectorstore": {"edge", "tools", "workflows", "agents"},
              "workflows": {"agents"}}
    for pkg, forbidden in banned.items():
        for path in (root / pkg).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                for n in names:
                    assert n.split(".")[0] not in forbidden, f"{path} imports {n}"
