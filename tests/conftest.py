"""Shared pytest set-up. Fixtures that start real services live in tests/fixtures/ and are loaded here."""

from __future__ import annotations

import importlib.util

pytest_plugins = [
    name
    for name in ("tests.fixtures.chain", "tests.fixtures.ipfs", "tests.fixtures.training", "tests.fixtures.adversary",
                 "tests.fixtures.rpcproxy")
    if importlib.util.find_spec(name) is not None
]
