"""The store and CID modules import each other without cycles, counting every import statement (also those inside
functions, which hide a cycle from Python until the function runs): the graph is read from the source's AST."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "provenance"
# The modules this layering is about: the CID primitives, CAR, the public store factory and every store internal.
LAYERED = ["provenance.cid", "provenance.car", "provenance.store",
           *sorted(f"provenance._store.{p.stem}" for p in (PACKAGE_ROOT / "_store").glob("*.py")
                   if p.stem != "__init__")]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE_ROOT.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every prov module `path` imports, anywhere in the file (top level, functions, TYPE_CHECKING blocks)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            parts = (node.module or "").split(".") if node.module else []
            if node.level:
                anchor = [p for p in package.split(".") if p]
                parts = anchor[: len(anchor) - (node.level - 1)] + parts
            base = ".".join(parts)
            # `from a import b` runs a's __init__ and, when b is a module, imports b itself.
            targets = [base, *(f"{base}.{alias.name}" if base else alias.name for alias in node.names)]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]  # `import a.b.c` of a name inside a module: its module
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A shortest import cycle that passes through `start`, or None (breadth-first back to `start`)."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph.get(node, ())):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if target not in parents:
                    parents[target] = node
                    following.append(target)
        frontier = following
    return None


def test_the_layered_modules_exist() -> None:
    names = set(all_modules())
    assert {"provenance._store.base", "provenance._store.unixfs", "provenance._store.local",
            "provenance._store.kubo"} <= names
    assert set(LAYERED) <= names


@pytest.mark.parametrize("module", LAYERED)
def test_no_import_cycle_through(module: str) -> None:
    cycle = cycle_through(import_graph(), module)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cid_primitives_import_nothing_above_them() -> None:
    assert import_graph()["provenance.cid"] <= {"provenance", "provenance.errors"}


def test_backends_never_import_the_factory() -> None:
    graph = import_graph()
    for backend in ("provenance._store.local", "provenance._store.kubo", "provenance._store.base"):
        assert "provenance.store" not in graph[backend], backend


def test_the_graph_sees_imports_inside_functions(tmp_path: Path) -> None:
    # The check would be worthless if a function-level import slipped past it: build a two-module cycle whose
    # back edge sits inside a function, and one with a relative import.
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from a import x\n    return x\n")
    (tmp_path / "c.py").write_text("from . import a\n")
    known = {"a", "b", "c"}
    graph = {name: imports_of(name, tmp_path / f"{name}.py", known) for name in known}
    assert graph["b"] == {"a"} and graph["a"] == {"b"} and graph["c"] == {"a"}
    assert cycle_through(graph, "a") == ["a", "b", "a"]
