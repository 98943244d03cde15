"""The interfaces the verifier reads through: an artifact store and a registry, as protocols, and the records
they return.

Any object with these methods works (the local blockstore, a Kubo node, the v2 registry client, the read-only v1
reader, a test double); the verifier never needs to know which. `RegistryReader` is defined beside the registry
clients (`provenance._chain.reader`) and re-exported here.
"""

from __future__ import annotations

import os
from typing import Protocol

from provenance._chain.reader import BlockInfo, ChainInfo, RegistryReader
from provenance._chain.records import CheckpointRecord, Finalization, RunHistory, RunRecord

__all__ = ["BlockInfo", "ChainInfo", "CheckpointRecord", "Finalization", "RegistryReader", "RunHistory", "RunRecord",
           "StoreReader"]


class StoreReader(Protocol):
    """Content-addressed reads; every read is checked against its CID by the store."""

    spec: str

    def get_bytes(self, cid: str, *, max_size: int | None = ...) -> bytes: ...

    def get_directory(self, cid: str, dest: str | os.PathLike[str]) -> int: ...

    def list_directory(self, cid: str) -> dict[str, str]: ...
