"""The store and CID modules import each other without cycles, counting every import statement (also those inside
functions, which hide a cycle from Python until the function runs): the graph is read from the source's AST."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.imports import PACKAGE_ROOT, all_modules, cycle_through, import_graph, imports_of

# The modules this layering is about: the CID primitives, CAR, the public store factory and every store internal.
LAYERED = ["provenance.cid", "provenance.car", "provenance.store",
           *sorted(f"provenance._store.{p.stem}" for p in (PACKAGE_ROOT / "_store").glob("*.py")
                   if p.stem != "__init__")]


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
