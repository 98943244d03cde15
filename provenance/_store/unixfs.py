"""dag-pb and UnixFS encodings, and the builders that turn files and directories into Kubo's DAGs.

Layout, as `ipfs add --cid-version=1 --raw-leaves` (Kubo) and js-ipfs both make it:
- a file is cut into 262,144-byte chunks, each a `raw` block; a file of one chunk is just that block, and an
  empty file is one empty raw block;
- otherwise chunks are grouped 174 to a dag-pb node (UnixFS File: filesize, blocksizes), those nodes 174 to a
  parent, and so on, every leaf at the same depth; the last node of a level may have a single child;
- a directory is a dag-pb node (UnixFS Directory) with one link per entry, sorted by UTF-8 name, each link's
  Tsize the total bytes of the child's DAG.

Builders hand every block to an optional sink (children before parents), so a store writes blocks while the
CID is computed, in one read of the input. `bytes_cid`, `file_cid` and `directory_cid` give the CID Kubo prints
for whole content (`provenance.store` re-exports them). Decoding lives in `provenance._store.dagpb`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from provenance._store.dagpb import (
    DIRECTORY,
    FILE,
    HAMT_SHARD,
    METADATA,
    SYMLINK,
    UNIXFS_RAW,
    Link,
    Node,
    decode_links,
    decode_node,
)
from provenance.cid import DAG_PB, RAW, BlockSink, cid_bytes, cid_text, encode_varint
from provenance.errors import UsageError
from provenance.fsutil import open_input

__all__ = [
    "CHUNK_SIZE", "DIRECTORY", "FILE", "HAMT_SHARD", "MAX_LINKS", "METADATA", "SYMLINK", "UNIXFS_RAW", "Built",
    "FileBuilder", "Link", "Node", "build_directory", "build_file", "bytes_cid", "decode_links", "decode_node",
    "directory_cid", "encode_node", "file_cid", "file_data", "open_input",
]

CHUNK_SIZE = 262_144
MAX_LINKS = 174
READ_BLOCK = 32 * CHUNK_SIZE  # 8 MiB: per-read overhead vanishes, and every read ends on a chunk boundary
# Kubo turns a basic directory into a HAMT shard once its estimated size (sum of name bytes + binary CID
# bytes over its links) reaches 256 KiB (boxo `HAMTShardingSize`); js-ipfs shards above 1,000 entries.
HAMT_THRESHOLD = 262_144

_DIRECTORY_DATA = b"\x08\x01"  # UnixFS {Type: Directory}
_RAW_PREFIX = cid_bytes(RAW, b"")
_PB_PREFIX = cid_bytes(DAG_PB, b"")


@dataclass(frozen=True, slots=True)
class Built:
    """What a builder returns for the root it made: binary CID, total DAG bytes, and file bytes."""

    cid: bytes
    tsize: int
    filesize: int


# -- encoding ----------------------------------------------------------------------------------------------


def encode_node(links: list[Link], data: bytes) -> bytes:
    """Canonical dag-pb PBNode: Links (field 2, in the given order) then Data (field 1)."""
    out = bytearray()
    for link in links:
        name = link.name.encode("utf-8")
        body = b"\x0a" + encode_varint(len(link.cid)) + link.cid
        body += b"\x12" + encode_varint(len(name)) + name + b"\x18" + encode_varint(link.tsize)
        out += b"\x12" + encode_varint(len(body)) + body
    out += b"\x0a" + encode_varint(len(data)) + data
    return bytes(out)


def file_data(filesize: int, blocksizes: list[int]) -> bytes:
    """UnixFS {Type: File, filesize, blocksizes} as Kubo writes it (blocksizes unpacked)."""
    out = bytearray(b"\x08\x02\x18" + encode_varint(filesize))
    for size in blocksizes:
        out += b"\x20" + encode_varint(size)
    return bytes(out)


class FileBuilder:
    """Streams chunks into Kubo's balanced DAG. Feed `add_chunk` full chunks (the last may be short)."""

    def __init__(
        self, sink: BlockSink | None = None, *, chunk_size: int = CHUNK_SIZE, max_links: int = MAX_LINKS
    ) -> None:
        self._sink = sink
        # Only tests change these (deep trees from little data); Kubo's CIDs need the defaults.
        self.chunk_size = chunk_size
        self.max_links = max_links
        # Pending (cid, tsize, filesize) per level; a level is turned into one parent as soon as it holds
        # max_links entries, which gives the same tree as grouping level by level at the end.
        self._levels: list[list[tuple[bytes, int, int]]] = [[]]
        self._chunks = 0

    def add_chunk(self, chunk: bytes | memoryview) -> None:
        """Add one chunk. A sink receives a view it must consume before this call returns."""
        cid = _RAW_PREFIX + hashlib.sha256(chunk).digest()
        if self._sink is not None:
            self._sink(cid, chunk)
        size = len(chunk)
        self._chunks += 1
        level = self._levels[0]
        level.append((cid, size, size))
        if len(level) == self.max_links:
            self._flush(0)

    def add_all(self, data: memoryview) -> None:
        """Cut `data` into chunks and add them all (for whole in-memory content)."""
        step = self.chunk_size
        for offset in range(0, len(data), step):
            self.add_chunk(data[offset : offset + step])

    def finish(self) -> Built:
        """Close the tree and return its root."""
        if self._chunks == 0:
            self.add_chunk(b"")
        levels = self._levels
        k = 0
        while True:
            items = levels[k]
            higher = any(levels[j] for j in range(k + 1, len(levels)))
            if not higher and len(items) == 1:
                cid, tsize, filesize = items[0]
                return Built(cid, tsize, filesize)
            if items:
                self._flush(k)
            k += 1

    def _flush(self, k: int) -> None:
        items = self._levels[k]
        self._levels[k] = []
        links = [Link(cid, "", tsize) for cid, tsize, _ in items]
        sizes = [filesize for _, _, filesize in items]
        block = encode_node(links, file_data(sum(sizes), sizes))
        cid = _PB_PREFIX + hashlib.sha256(block).digest()
        if self._sink is not None:
            self._sink(cid, block)
        if k + 1 == len(self._levels):
            self._levels.append([])
        parent = self._levels[k + 1]
        parent.append((cid, len(block) + sum(link.tsize for link in links), sum(sizes)))
        if len(parent) == self.max_links:
            self._flush(k + 1)


def build_file(
    stream: BinaryIO,
    *,
    sink: BlockSink | None = None,
    progress: Callable[[int], None] | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> Built:
    """Build a file's DAG from a binary stream, read once in ~8 MiB blocks into a reused buffer.

    `progress`, if given, is called as `progress(bytes_done)` after each block.
    """
    builder = FileBuilder(sink, chunk_size=chunk_size)
    block_size = chunk_size * max(1, READ_BLOCK // chunk_size)  # every read ends on a chunk boundary
    view = memoryview(bytearray(block_size))
    done = 0
    while True:
        n = _fill(stream, view)
        for offset in range(0, n, chunk_size):
            builder.add_chunk(view[offset : min(offset + chunk_size, n)])
        done += n
        if progress is not None and n:
            progress(done)
        if n < block_size:
            return builder.finish()


def _fill(stream: BinaryIO, view: memoryview) -> int:
    """Read until `view` is full or the stream ends; short reads (pipes, sockets) are retried."""
    readinto = getattr(stream, "readinto", None)
    filled = 0
    while filled < len(view):
        if readinto is not None:
            n = readinto(view[filled:])
        else:
            data = stream.read(len(view) - filled)
            n = len(data)
            view[filled : filled + n] = data
        if not n:
            break
        filled += n
    return filled


def build_directory(path: Path, *, sink: BlockSink | None = None) -> Built:
    """Build `ipfs add -r --hidden --cid-version=1 --raw-leaves PATH`'s DAG: every entry, dotfiles included.

    Symlinks and special files are refused (Kubo would store a symlink as a link, which a fetch must not
    recreate blindly). A directory big enough that Kubo would shard it (HAMT) is refused: see HAMT_THRESHOLD.
    """
    if not path.exists():
        raise UsageError(f"{path}: no such directory")
    if path.is_symlink() or not path.is_dir():
        raise UsageError(f"{path} is not a directory")
    return _build_dir(path, sink)


def _build_dir(path: Path, sink: BlockSink | None) -> Built:
    try:
        with os.scandir(path) as scan:
            entries = list(scan)
    except OSError as exc:
        raise UsageError(f"{path}: cannot list directory ({exc.strerror or exc})") from None
    named: list[tuple[bytes, os.DirEntry[str]]] = []
    for entry in entries:
        try:
            named.append((entry.name.encode("utf-8"), entry))
        except UnicodeEncodeError:
            raise UsageError(f"{Path(entry.path)!s}: file name is not valid UTF-8") from None
    named.sort(key=lambda pair: pair[0])
    links: list[Link] = []
    estimate = 0
    for name_bytes, entry in named:
        child = Path(entry.path)
        if entry.is_symlink():
            raise UsageError(f"{child}: symbolic links are not supported in stored directories")
        if entry.is_dir(follow_symlinks=False):
            built = _build_dir(child, sink)
        elif entry.is_file(follow_symlinks=False):
            with open_input(child) as stream:
                built = build_file(stream, sink=sink)
        else:
            raise UsageError(f"{child}: not a regular file or directory")
        links.append(Link(built.cid, entry.name, built.tsize))
        estimate += len(name_bytes) + len(built.cid)
    if estimate >= HAMT_THRESHOLD:
        raise UsageError(
            f"{path}: {len(links)} entries are too many for a basic UnixFS directory (Kubo would shard it "
            "as a HAMT, which prov does not build); split it into subdirectories"
        )
    block = encode_node(links, _DIRECTORY_DATA)
    cid = _PB_PREFIX + hashlib.sha256(block).digest()
    if sink is not None:
        sink(cid, block)
    return Built(cid, len(block) + sum(link.tsize for link in links), 0)


# -- whole-object CIDs -------------------------------------------------------------------------------------


def bytes_cid(data: bytes | bytearray | memoryview) -> str:
    """Kubo's CIDv1 (`--raw-leaves`) for a file holding exactly `data`."""
    builder = FileBuilder()
    builder.add_all(memoryview(data))
    return cid_text(builder.finish().cid)


def file_cid(source: str | os.PathLike[str] | BinaryIO) -> str:
    """Kubo's CIDv1 (`--raw-leaves`) for a file path or a binary stream, read once in large blocks."""
    if isinstance(source, str | os.PathLike):
        with open_input(Path(source)) as stream:
            return cid_text(build_file(stream).cid)
    return cid_text(build_file(source).cid)


def directory_cid(path: str | os.PathLike[str]) -> str:
    """Kubo's CIDv1 for `ipfs add -r --hidden --cid-version=1 --raw-leaves PATH` (see `build_directory`)."""
    return cid_text(build_directory(Path(path)).cid)
