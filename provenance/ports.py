"""The interfaces the verifier reads through: an artifact store and a registry, as protocols.

Any object with these methods works (the local blockstore, a Kubo node, the v2 registry client, the read-only v1
reader, a test double); the verifier never needs to know which.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from provenance.hashing import Digest


class StoreReader(Protocol):
    """Content-addressed reads; every read is checked against its CID by the store."""

    @property
    def spec(self) -> str: ...

    def get_bytes(self, cid: str, *, max_size: int | None = ...) -> bytes: ...

    def get_directory(self, cid: str, target: Path) -> Path: ...

    def list_directory(self, cid: str) -> dict[str, str]: ...


class ChainInfo(Protocol):
    chain_id: int
    genesis_hash: str
    latest_block: int
    dev_chain: str | None


class BlockInfo(Protocol):
    number: int
    hash: bytes
    timestamp: int


class RunHistory(Protocol):
    """A run's complete on-chain history, checked by the client against the registry's stored state."""

    registration: Any  # RunRecord
    checkpoints: Sequence[Any]  # CheckpointRecord, index order
    writers: Sequence[Any]  # RegistryEvent (WriterAuthorized / WriterRevoked), chain order
    finalization: Any  # a record with block_number, tx_hash, merged_tensor_digest; or None


class RegistryReader(Protocol):
    """What the verifier reads from a ProvenanceRegistry (v2 client or v1 reader)."""

    @property
    def version(self) -> int: ...

    @property
    def address(self) -> str | None: ...

    def chain_info(self) -> ChainInfo: ...

    def block(self, number: int) -> BlockInfo | None: ...

    def claims(self, *, weights: Digest | None = None, tensors: Digest | None = None) -> list[Any]: ...

    def run(self, run_key: bytes) -> RunHistory: ...
