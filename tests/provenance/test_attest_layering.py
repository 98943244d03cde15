"""Attestation layering (#11): the read side (provenance.attestations) sits below the verifier and never imports it;
the write side (provenance.attest) sits above it and the verifier never reaches it. The graph is read from the AST
(imports inside functions count; tests/fixtures/imports.py), and one check runs in a fresh interpreter. (No import
cycles anywhere and no private module in the CLI are checked for the whole package by tests/test_layering.py.)"""

from __future__ import annotations

import subprocess
import sys

from tests.fixtures.imports import REPO, import_graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module `start` imports, directly or through others."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_the_read_side_never_reaches_the_verifier_or_the_write_side() -> None:
    below = reachable(import_graph(), "provenance.attestations")
    assert "provenance.verify" not in below and "provenance.attest" not in below
    assert not any(m.startswith("provenance._verify") for m in below), sorted(below)


def test_the_write_side_sits_above_the_verifier() -> None:
    graph = import_graph()
    assert "provenance.verify" in graph["provenance.attest"]
    assert "provenance.attest" not in reachable(graph, "provenance.verify")
    assert "provenance.attestations" in reachable(graph, "provenance.verify")  # the verifier lists attestations


def test_keys_and_intoto_are_public_and_below_the_verifier() -> None:
    graph = import_graph()
    for module in ("provenance.keys", "provenance.intoto"):
        assert "provenance.verify" not in reachable(graph, module), module
    assert {"provenance.keys", "provenance.intoto", "provenance.attest", "provenance.attestations"} \
        >= {m for m in graph["provenance.cli.attest"] if m.startswith(("provenance.keys", "provenance.intoto",
                                                                         "provenance.attest"))}


def test_importing_the_read_side_loads_no_verifier() -> None:
    code = ("import sys, provenance.attestations, provenance.keys, provenance.intoto; "
            "print(sorted(m for m in sys.modules if m.startswith(('provenance.verify', 'provenance._verify', "
            "'provenance.attest', 'torch'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['provenance.attestations']"
