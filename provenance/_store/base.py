"""The store interface every backend implements, its errors, and the reads shared by all backends.

Backends (`_store/local.py`, `_store/kubo.py`) subclass `Store` from here and never import `provenance.store`,
the public factory that opens them: the import graph has no cycle.
"""

from __future__ import annotations

import abc
import os
from pathlib import Path
from types import TracebackType

from provenance import car, limits
from provenance._store import dag
from provenance._store.dag import StoreWriteError
from provenance.cid import MAX_BLOCK_SIZE, Cid, CidMismatch, parse_cid, verify_block
from provenance.errors import FormatError, StoreError, StoreUnavailable
from provenance.hashing import ProgressCallback

__all__ = [
    "DEFAULT_MAX_BYTES",
    "BlockNotFound",
    "CidMismatch",
    "ContentTooLarge",
    "NotPinned",
    "Store",
    "StoreAddressError",
    "StoreError",
    "StoreUnavailable",
    "StoreWriteError",
    "UnexpectedCid",
]

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
"""`get_bytes` refuses content larger than this unless called with a larger `max_size` (or None)."""


class StoreAddressError(StoreError):
    """A store spec, multiaddr or URL that cannot name a store."""


class BlockNotFound(StoreError):
    """The store does not hold (or could not fetch in time) a block. Carries the CID."""

    def __init__(self, cid: Cid | str, detail: str = "") -> None:
        self.cid = str(cid)
        super().__init__(f"block {self.cid} not found{': ' + detail if detail else ''}")


class NotPinned(StoreError):
    """`unpin` of a CID that is not pinned."""


class ContentTooLarge(StoreError):
    """`get_bytes` of content above its size limit: use `get_file`, or raise `max_size`."""


class UnexpectedCid(StoreError):
    """A node stored content under a different CID than prov computes (differently configured add)."""


class Store(abc.ABC):
    """An artifact store. CIDs go in and out as base32 text; reads are verified against them."""

    spec: str = ""

    # -- what each backend provides -----------------------------------------------------------------------

    @abc.abstractmethod
    def _read_block(self, cid: Cid) -> bytes:
        """One block's bytes as the backend holds them (unverified); `BlockNotFound` if absent."""

    def get_block(self, cid: Cid) -> bytes:
        """One block's bytes, re-hashed against `cid` (`CidMismatch` otherwise): every read goes through here,
        charged to the active byte budget and deadline (`provenance.limits`)."""
        budget = limits.current()
        if budget is not None:
            budget.check_time(f"{self.spec or 'store'}: reading block {cid}")
        data = self._read_block(cid)
        if budget is not None:
            budget.charge(len(data), f"block {cid} from {self.spec or 'the store'}")
        if len(data) > MAX_BLOCK_SIZE:
            raise FormatError(f"block {cid} holds {len(data)} bytes, more than any IPFS node moves "
                              f"({MAX_BLOCK_SIZE}); refusing it")
        verify_block(cid, data)
        return data

    @abc.abstractmethod
    def has(self, cid: str) -> bool:
        """Whether the store holds the root block of `cid` itself (without fetching it from elsewhere)."""

    @abc.abstractmethod
    def put_bytes(self, data: bytes, *, pin: bool = True) -> str:
        """Store `data` as a file; returns its CID (the same as `unixfs.bytes_cid(data)`)."""

    @abc.abstractmethod
    def put_file(self, path: str | os.PathLike[str], *, pin: bool = True,
                 progress: ProgressCallback | None = None) -> str:
        """Store a file's bytes, streaming; returns its CID (as `unixfs.file_cid(path)`)."""

    @abc.abstractmethod
    def put_directory(self, path: str | os.PathLike[str], *, pin: bool = True) -> str:
        """Store a directory tree; returns its CID (as `unixfs.directory_cid(path)`)."""

    @abc.abstractmethod
    def pin(self, cid: str) -> None:
        """Keep `cid`'s whole DAG from garbage collection (fetching missing blocks where the backend can)."""

    @abc.abstractmethod
    def unpin(self, cid: str) -> None:
        """Let `cid` be collected; `NotPinned` if it was not pinned."""

    @abc.abstractmethod
    def pins(self) -> list[str]:
        """CIDs pinned (recursively), sorted."""

    @abc.abstractmethod
    def gc(self) -> int:
        """Remove blocks no pin reaches; returns how many were removed."""

    @abc.abstractmethod
    def import_car(self, path: str | os.PathLike[str]) -> list[str]:
        """Import a CAR v1 file, verifying every block and that each root's DAG is complete; pins the roots."""

    def close(self) -> None:
        """Release connections or handles (nothing to do for most backends)."""
        return None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- built on get_block: shared by every backend ------------------------------------------------------

    def stat(self, cid: str) -> tuple[str, int]:
        """`("file", bytes)` or `("directory", entries)` from the root block alone."""
        return dag.stat(self.get_block, parse_cid(cid))

    def get_bytes(self, cid: str, *, max_size: int | None = DEFAULT_MAX_BYTES) -> bytes:
        """A file's whole content, verified. Above `max_size` bytes it refuses (`ContentTooLarge`)."""
        root = parse_cid(cid)
        kind, size = dag.stat(self.get_block, root)
        if kind != "file":
            raise dag.NotAFile(f"{root} is a directory, not a file: use get_directory")
        if max_size is not None and size > max_size:
            raise ContentTooLarge(
                f"{root} holds {size} bytes, more than the {max_size}-byte limit for get_bytes; "
                "use get_file, or pass a larger max_size"
            )
        return b"".join(dag.iter_file(self.get_block, root))

    def get_file(self, cid: str, dest: str | os.PathLike[str]) -> int:
        """Stream a file into `dest`, verified, atomically (temp file then rename). Returns bytes written."""
        return dag.write_file(self.get_block, parse_cid(cid), Path(dest))

    def get_directory(self, cid: str, dest: str | os.PathLike[str]) -> int:
        """Recreate a directory at `dest` (must not exist), every block verified. Returns files written."""
        return dag.write_directory(self.get_block, parse_cid(cid), Path(dest))

    def list_directory(self, cid: str) -> dict[str, str]:
        """A directory's entries: name → CID."""
        return {name: str(child) for name, child in dag.read_directory(self.get_block, parse_cid(cid))}

    def get(self, cid: str, dest: str | os.PathLike[str]) -> int:
        """`get_file` or `get_directory`, whichever `cid` is."""
        kind, _ = self.stat(cid)
        return self.get_directory(cid, dest) if kind == "directory" else self.get_file(cid, dest)

    def put(self, path: str | os.PathLike[str], *, pin: bool = True) -> str:
        """`put_file` or `put_directory`, whichever `path` is."""
        if Path(path).is_dir():
            return self.put_directory(path, pin=pin)
        return self.put_file(path, pin=pin)

    def export_car(self, cid: str, path: str | os.PathLike[str]) -> int:
        """Write `cid`'s whole DAG as a CAR v1 file (atomically), every block verified. Returns block count."""
        root = parse_cid(cid)
        return car.write_car(path, [root], dag.iter_dag(self.get_block, root))
