"""Reading UnixFS DAGs block by block from any block source, checking structure as well as hashes.

Every function takes `get`, a callable returning a block's bytes already verified against its CID (the
stores' `get_block`), so nothing here ever sees unverified content. Names from a fetched directory are
checked before they touch the file system (no `..`, no `/`, no duplicates).
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from provenance import limits
from provenance._store.dagpb import (
    DIRECTORY,
    FILE,
    HAMT_SHARD,
    SYMLINK,
    UNIXFS_RAW,
    Link,
    Node,
    decode_links,
    decode_node,
)
from provenance.canonical import escape_controls
from provenance.cid import DAG_PB, RAW, Cid
from provenance.errors import FormatError, StoreError, UsageError
from provenance.fsutil import atomic_output, fsync_dir

GetBlock = Callable[[Cid], bytes]
MAX_DEPTH = 64  # directory nesting; a checkpoint folder is a few levels deep
MAX_FILE_DEPTH = 32  # Kubo's file trees are ~log174(size) deep (6 levels reach petabytes): deeper is hostile
MAX_FILE_LINKS = 1024  # Kubo's balanced DAG has at most 174 links a node
# Kubo shards a directory (HAMT) once names + CIDs reach 256 KiB: at least 37 bytes an entry, so < 7,100 entries.
MAX_DIRECTORY_ENTRIES = 8192
MAX_TREE_ENTRIES = 100_000  # files and folders one write_directory creates, however a DAG reuses subtrees
MAX_NAME_BYTES = 255  # NAME_MAX of every common file system: longer fails on write as "internal error" otherwise


def _umask() -> int:
    """The process umask, read without changing it (os.umask would race with other threads)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def default_mode(*, directory: bool) -> int:
    """The mode a plain open()/mkdir() would give: temp files and folders start private (0600/0700)."""
    return (0o777 if directory else 0o666) & ~_umask()


class StoreWriteError(StoreError):
    """The store could not write (disk full, permissions). Nothing partial was left pinned or visible."""

    transient = True


class NotAFile(UsageError):
    """The CID names a directory (or something else) where a file was asked for."""


class NotADirectory(UsageError):
    """The CID names a file where a directory was asked for."""


def stat(get: GetBlock, cid: Cid) -> tuple[str, int]:
    """`("file", size)` or `("directory", entries)` for a root, fetching only the root block.

    A file's size is the one its root declares, checked against the root's own blocksizes; `iter_file` then
    holds every block below to it, so a caller can refuse content by size before reading any of it.
    """
    block = get(cid)
    if cid.codec == RAW:
        return "file", len(block)
    node = decode_node(block, where=f"block {cid}")
    if node.type == DIRECTORY:
        _check_directory(cid, node)
        return "directory", len(node.links)
    if node.type in (FILE, UNIXFS_RAW):
        return "file", _declared_size(cid, node)
    return _unsupported(cid, node), 0


def _unsupported(cid: Cid, node: Node) -> str:
    if node.type == HAMT_SHARD:
        raise FormatError(f"{cid} is a HAMT-sharded directory, which prov does not read")
    if node.type == SYMLINK:
        raise FormatError(f"{cid} is a UnixFS symlink, which prov does not follow")
    raise FormatError(f"{cid} has unsupported UnixFS type {node.type}")


def _declared_size(cid: Cid, node: Node) -> int:
    """The bytes a file node holds: its inline data plus its blocksizes, which its filesize (if any) must equal."""
    if len(node.links) > MAX_FILE_LINKS:
        raise FormatError(f"block {cid}: a file node with {len(node.links)} links (prov reads at most "
                          f"{MAX_FILE_LINKS}; Kubo writes at most 174)")
    if len(node.blocksizes) != len(node.links):
        raise FormatError(f"block {cid}: {len(node.links)} links but {len(node.blocksizes)} blocksizes")
    total = len(node.data) + sum(node.blocksizes)
    if node.filesize is not None and node.filesize != total:
        raise FormatError(f"block {cid}: filesize says {node.filesize} bytes, its data and blocksizes add up "
                          f"to {total}")
    return total


def iter_file(get: GetBlock, cid: Cid) -> Iterator[bytes]:
    """The content of the file `cid`, in order, one block at a time (streaming; memory stays ~1 block).

    Bounded by what the root declares: every node's blocksizes must add up to its filesize, each child must
    declare exactly the size its parent gives it (a raw leaf must be exactly that long), links may not point
    back to an ancestor, nodes hold at most MAX_FILE_LINKS links and the tree is at most MAX_FILE_DEPTH deep.
    So a DAG can never yield more than its root's declared size: it fails on the first block that disagrees.
    """
    if cid.codec != DAG_PB:
        yield get(cid)
        return
    node = decode_node(get(cid), where=f"block {cid}")
    if node.type == DIRECTORY:
        raise NotAFile(f"{cid} is a directory, not a file")
    if node.type not in (FILE, UNIXFS_RAW):
        _unsupported(cid, node)
    declared = _declared_size(cid, node)
    budget = limits.current()
    if budget is not None:  # a DAG declaring a terabyte stops here, before its first leaf is read
        budget.reserve(declared, f"file {cid} (declares {declared} bytes)")
    produced = 0
    for piece in _file_node(get, cid, node, (cid,)):
        produced += len(piece)
        if produced > declared:  # unreachable while the checks below hold; kept as the last line of defence
            raise FormatError(f"file {cid} yields more than the {declared} bytes it declares")
        yield piece


def _file_node(get: GetBlock, cid: Cid, node: Node, ancestors: tuple[Cid, ...]) -> Iterator[bytes]:
    """Yield a node's bytes; `node` already passed `_declared_size`, so its blocksizes match its links."""
    if node.data:
        yield node.data
    for link, expected in zip(node.links, node.blocksizes, strict=True):
        child, _ = Cid.from_bytes(link.cid)
        if child in ancestors:
            raise FormatError(f"block {cid} links back to its ancestor {child}: a cycle")
        if child.codec == RAW:
            block = get(child)
            if len(block) != expected:
                raise FormatError(f"block {cid}: leaf {child} holds {len(block)} bytes, blocksizes says {expected}")
            yield block
            continue
        if len(ancestors) >= MAX_FILE_DEPTH:
            raise FormatError(f"file DAG under {ancestors[0]} is deeper than {MAX_FILE_DEPTH} levels")
        sub = decode_node(get(child), where=f"block {child}")
        if sub.type not in (FILE, UNIXFS_RAW):
            raise FormatError(f"block {child} inside a file is UnixFS type {sub.type}, not a file node")
        declared = _declared_size(child, sub)
        if declared != expected:
            raise FormatError(f"block {cid}: child {child} declares {declared} bytes, blocksizes says {expected}")
        yield from _file_node(get, child, sub, (*ancestors, child))


def _check_directory(cid: Cid, node: Node) -> None:
    if len(node.links) > MAX_DIRECTORY_ENTRIES:
        raise FormatError(f"directory {cid} lists {len(node.links)} entries, more than the {MAX_DIRECTORY_ENTRIES} "
                          "a basic UnixFS directory holds")


def read_directory(get: GetBlock, cid: Cid) -> list[tuple[str, Cid]]:
    """The entries of directory `cid` as `(name, cid)`, names checked safe to create on disk."""
    if cid.codec != DAG_PB:
        raise NotADirectory(f"{cid} is a file, not a directory")
    node = decode_node(get(cid), where=f"block {cid}")
    if node.type in (FILE, UNIXFS_RAW):
        raise NotADirectory(f"{cid} is a file, not a directory")
    if node.type != DIRECTORY:
        _unsupported(cid, node)
    _check_directory(cid, node)
    return _entries(cid, node.links)


def _entries(cid: Cid, links: list[Link]) -> list[tuple[str, Cid]]:
    seen: set[str] = set()
    entries = []
    for link in links:
        name = link.name
        if not name or name in (".", "..") or "/" in name or "\0" in name or "\\" in name:
            raise FormatError(f"directory {cid} has an unsafe entry name {escape_controls(repr(name))}")
        if escape_controls(name) != name:  # a name that would reorder or rewrite what an auditor sees in a listing
            raise FormatError(f"directory {cid} has an entry name with control or bidi characters "
                              f"{escape_controls(repr(name))}")
        if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise FormatError(f"directory {cid} has an entry name of {len(name.encode('utf-8', 'surrogatepass'))} "
                              f"bytes (file systems allow {MAX_NAME_BYTES})")
        if name in seen:
            raise FormatError(f"directory {cid} lists {name!r} twice")
        seen.add(name)
        entries.append((name, Cid.from_bytes(link.cid)[0]))
    return entries


def write_file(get: GetBlock, cid: Cid, dest: Path) -> int:
    """Stream file `cid` into `dest` atomically (temp file beside it, fsync, rename). Returns bytes written."""
    try:
        with atomic_output(dest, mode=default_mode(directory=False), suffix=".part") as out:
            return _copy(get, cid, out, dest)
    except OSError as exc:
        raise write_error(dest, exc) from None


def write_error(where: Path, exc: OSError) -> StoreWriteError:
    """One line naming the path and what to do, for a full disk, a refused permission or an over-long name."""
    hint = {errno.ENOSPC: "free space on that disk or choose another destination",
            errno.EDQUOT: "free space on that disk or choose another destination",
            errno.EACCES: "choose a destination you may write to", errno.EPERM: "choose a destination you may write to",
            errno.ENAMETOOLONG: "choose a shorter destination path"}.get(exc.errno or 0, "check the destination")
    return StoreWriteError(f"{where}: cannot write ({exc.strerror or type(exc).__name__}); {hint}")


def _copy(get: GetBlock, cid: Cid, out: BinaryIO, where: Path) -> int:
    """Write file `cid` to `out`, refusing before the first byte a file that declares more than the disk holds
    (or than the active budget allows: `iter_file` reserves it)."""
    _, declared = stat(get, cid)
    budget = limits.current()
    if budget is not None:
        budget.reserve(declared, f"{where}: file {cid} (declares {declared} bytes)")
    free = _free_bytes(out)
    if free is not None and declared > free:
        raise StoreWriteError(f"{where}: file {cid} declares {declared} bytes but only {free} are free on that "
                              "disk; free space or choose another destination")
    written = 0
    write = out.write
    for piece in iter_file(get, cid):
        write(piece)
        written += len(piece)
    return written


def _free_bytes(out: BinaryIO) -> int | None:
    try:
        info = os.fstatvfs(out.fileno())
    except (OSError, AttributeError, ValueError):
        return None
    return info.f_bavail * info.f_frsize


def write_directory(get: GetBlock, cid: Cid, dest: Path) -> int:
    """Recreate directory `cid` at `dest` (which must not exist): built in a temp folder, then renamed.

    Returns the number of files written. On any failure nothing is left at `dest`.
    """
    dest = Path(dest)
    if dest.exists() or dest.is_symlink():
        raise UsageError(f"{dest} already exists; choose a new path for the directory")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part"))
    except OSError as exc:
        raise write_error(dest, exc) from None
    try:
        count = _fill_directory(get, cid, tmp, 0, [0])
        tmp.chmod(default_mode(directory=True))
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
        return count
    except OSError as exc:
        _remove_tree(tmp)
        raise write_error(dest, exc) from None
    except BaseException:
        _remove_tree(tmp)
        raise


def _fill_directory(get: GetBlock, cid: Cid, target: Path, depth: int, created: list[int]) -> int:
    """Write directory `cid` into `target`; `created` counts entries made so far across the whole tree."""
    if depth > MAX_DEPTH:
        raise FormatError(f"directory DAG under {cid} is deeper than {MAX_DEPTH} levels")
    count = 0
    for name, child in read_directory(get, cid):
        created[0] += 1
        if created[0] > MAX_TREE_ENTRIES:
            raise FormatError(f"directory {cid} expands to more than {MAX_TREE_ENTRIES} files and folders")
        path = target / name
        kind = "file" if child.codec == RAW else stat(get, child)[0]
        if kind == "directory":
            path.mkdir()
            count += _fill_directory(get, child, path, depth + 1, created)
        else:
            with path.open("xb") as out:
                _copy(get, child, out, path)
                out.flush()
                os.fsync(out.fileno())
            count += 1
    fsync_dir(target)
    return count


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def iter_dag(get: GetBlock, root: Cid) -> Iterator[tuple[Cid, bytes]]:
    """Every block of the DAG under `root`, depth-first pre-order, each once (the order CAR export uses)."""
    stack = [root]
    seen: set[Cid] = set()
    while stack:
        cid = stack.pop()
        if cid in seen:
            continue
        seen.add(cid)
        block = get(cid)
        yield cid, block
        if cid.codec == DAG_PB:
            links = decode_links(block, where=f"block {cid}")
            stack.extend(Cid.from_bytes(link.cid)[0] for link in reversed(links))


def walk_links(get: GetBlock, root: Cid, exists: Callable[[Cid], bool]) -> Iterator[Cid]:
    """Every CID under `root`, reading only dag-pb nodes; raw leaves are checked with `exists` (cheap)."""
    stack = [root]
    seen: set[Cid] = set()
    while stack:
        cid = stack.pop()
        if cid in seen:
            continue
        seen.add(cid)
        if cid.codec == DAG_PB:
            links = decode_links(get(cid), where=f"block {cid}")
            stack.extend(Cid.from_bytes(link.cid)[0] for link in reversed(links))
        elif not exists(cid):
            get(cid)  # raises the store's not-found error, naming the CID
        yield cid
