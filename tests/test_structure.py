"""The package's shape: imports run one way (no circles, counting imports inside functions and under
``TYPE_CHECKING``), every source file stays under 300 lines and the LightningModule under 200."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import farzi_lightning
from farzi_lightning.module import FarziLightningModule

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"farzi_lightning": ROOT / "farzi_lightning", "farzi_lightning.callbacks": ROOT / "callbacks"}


def modules() -> dict[str, tuple[Path, bool]]:
    """``{dotted name: (file, is a package)}`` of every module of the package (callbacks where installed)."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [p for p in path.relative_to(folder).with_suffix("").parts if p != "__init__"]
            found[".".join([package, *parts])] = (path, path.name == "__init__.py")
    return found


def import_graph() -> dict[str, set[str]]:
    """Module → the package's modules it imports anywhere in its file (``from . import x`` → the submodule)."""
    found = modules()
    graph = {}
    for name, (path, is_package) in found.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    edges.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in found else target)
            elif isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names)
        graph[name] = {e for e in edges if e in found and e != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_relative_function_level_and_type_checking_imports():
    graph = import_graph()
    assert "farzi_lightning.manifest" in graph["farzi_lightning.learners.bank"]  # from ..manifest import
    assert "farzi_lightning.seeds" in graph["farzi_lightning.module"]  # from . import bilevel, seeds
    assert len(graph) >= 40


def test_imports_run_one_way():
    assert cycles(import_graph()) == []


def test_no_source_file_over_300_lines_and_the_module_under_200():
    long = {str(path.relative_to(ROOT)): n for path, _ in modules().values()
            if (n := len(path.read_text().splitlines())) > 300}
    assert long == {}
    lines, _ = inspect.getsourcelines(FarziLightningModule)
    assert len(lines) < 200, len(lines)
    assert farzi_lightning.FarziLightningModule is FarziLightningModule
