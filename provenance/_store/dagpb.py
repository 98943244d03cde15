"""dag-pb nodes and their UnixFS data: the types, and a strict decoder for blocks read from an untrusted store.

Decoding is strict where ambiguity could change what a DAG means (field order, duplicate Data, links without a
Hash, links naming a CID prov cannot verify) and tolerant of UnixFS extras it ignores (mode, mtime, fanout).
Every length is checked before it is used, a block larger than `MAX_BLOCK_SIZE` is refused before decoding, so
a hostile block costs at most its own size; caps that depend on the node's kind (links of a file node,
entries of a directory) are applied by the readers in `provenance._store.dag`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from provenance.cid import MAX_BLOCK_SIZE, Cid, decode_varint
from provenance.errors import FormatError

# UnixFS Data.Type values.
UNIXFS_RAW, DIRECTORY, FILE, METADATA, SYMLINK, HAMT_SHARD = range(6)


@dataclass(frozen=True, slots=True)
class Link:
    """A dag-pb link: binary CID, name (`""` inside files) and Tsize (bytes of the child's whole DAG)."""

    cid: bytes
    name: str
    tsize: int


@dataclass(slots=True)
class Node:
    """A decoded dag-pb node with its UnixFS data."""

    links: list[Link]
    type: int
    data: bytes = b""
    filesize: int | None = None
    blocksizes: list[int] = field(default_factory=list)


def decode_node(block: bytes | memoryview, *, where: str = "block") -> Node:
    """Decode a dag-pb block and its UnixFS data. Malformed input is a FormatError naming `where`."""
    try:
        links, data = _decode_pbnode(_bounded(block))
        if data is None:
            raise FormatError("dag-pb node has no UnixFS data")
        node = _decode_unixfs(data)
        node.links = links
        return node
    except FormatError as exc:
        raise FormatError(f"{where} is not a valid UnixFS dag-pb node: {exc}") from None


def decode_links(block: bytes | memoryview, *, where: str = "block") -> list[Link]:
    """The links of any dag-pb block (UnixFS or not), for walking a DAG."""
    try:
        return _decode_pbnode(_bounded(block))[0]
    except FormatError as exc:
        raise FormatError(f"{where} is not a valid dag-pb node: {exc}") from None


def _bounded(block: bytes | memoryview) -> memoryview:
    if len(block) > MAX_BLOCK_SIZE:
        raise FormatError(f"block of {len(block)} bytes exceeds the {MAX_BLOCK_SIZE}-byte block limit")
    return memoryview(block)


def _field(buf: memoryview, pos: int) -> tuple[int, int, int | memoryview, int]:
    """Read one protobuf field at `pos`: (number, wire type, value, next). Only wire types 0, 1, 2, 5."""
    key, pos = decode_varint(buf, pos)
    number, wire = key >> 3, key & 7
    if number == 0:
        raise FormatError("protobuf field number 0")
    if wire == 0:
        value, pos = decode_varint(buf, pos)
        return number, wire, value, pos
    if wire == 2:
        length, pos = decode_varint(buf, pos)
        if length > len(buf) - pos:
            raise FormatError("truncated protobuf field")
        return number, wire, buf[pos : pos + length], pos + length
    size = {1: 8, 5: 4}.get(wire)
    if size is None or pos + size > len(buf):
        raise FormatError(f"unsupported or truncated protobuf wire type {wire}")
    return number, wire, int.from_bytes(buf[pos : pos + size], "little"), pos + size


def _decode_pbnode(buf: memoryview) -> tuple[list[Link], bytes | None]:
    links: list[Link] = []
    data: bytes | None = None
    pos = 0
    while pos < len(buf):
        number, wire, value, pos = _field(buf, pos)
        if wire != 2 or number not in (1, 2):
            raise FormatError(f"unexpected PBNode field {number}")
        assert isinstance(value, memoryview)
        if number == 1:
            if data is not None:
                raise FormatError("duplicate Data field")
            data = bytes(value)
        else:
            if data is not None:
                raise FormatError("Links after Data")
            links.append(_decode_pblink(value))
    for link in links:
        _, end = Cid.from_bytes(link.cid)  # every link must name a CID prov can fetch and verify
        if end != len(link.cid):
            raise FormatError("trailing bytes after a link's CID")
    return links, data


def _decode_pblink(buf: memoryview) -> Link:
    cid: bytes | None = None
    name = ""
    tsize = 0
    last = 0
    pos = 0
    while pos < len(buf):
        number, wire, value, pos = _field(buf, pos)
        if number <= last or number > 3 or wire != (0 if number == 3 else 2):
            raise FormatError(f"unexpected or out-of-order PBLink field {number}")
        last = number
        if number == 1:
            cid = bytes(value)
        elif number == 2:
            try:
                name = bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                raise FormatError("link name is not UTF-8") from None
        else:
            tsize = int(value)
    if cid is None:
        raise FormatError("link without a Hash")
    return Link(cid, name, tsize)


def _decode_unixfs(buf: bytes) -> Node:
    view = memoryview(buf)
    node = Node(links=[], type=-1)
    pos = 0
    while pos < len(view):
        number, wire, value, pos = _field(view, pos)
        if number == 1 and wire == 0:
            node.type = int(value)
        elif number == 2 and wire == 2:
            node.data = bytes(value)
        elif number == 3 and wire == 0:
            node.filesize = int(value)
        elif number == 4 and wire == 0:
            node.blocksizes.append(int(value))
        elif number == 4 and wire == 2:  # packed repeated
            packed = value
            assert isinstance(packed, memoryview)
            at = 0
            while at < len(packed):
                size, at = decode_varint(packed, at)
                node.blocksizes.append(size)
    if node.type not in range(6):
        raise FormatError("UnixFS data has no valid Type")
    return node
