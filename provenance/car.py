"""CAR v1 (Content Addressable aRchive) files: write them, and read them back verifying every block.

Format (ipld.io/specs/transport/car/carv1): `varint(len) || dag-cbor {"roots": [CID...], "version": 1}`,
then sections `varint(len) || binary CID || block`. Kubo's `ipfs dag import` takes what `write_car` writes
and keeps the same root CIDs. A CAR file's own bytes are never an identity: record root CIDs instead.

Reading is strict, bounded and one-line on failure: a truncated section, a header that is not a CAR v1 header
(CAR v2 is named as such), a block that does not hash to its CID, all raise with the file and byte offset. The
header is at most MAX_HEADER bytes, a section at most one block of `MAX_BLOCK_SIZE` plus its CID, and a reader
can be given a total budget of bytes and blocks (`read_car`, which holds every block in memory, always has one).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from provenance._store.dag import default_mode
from provenance.canonical import short_repr
from provenance.cid import MAX_BLOCK_SIZE, Cid, decode_varint, encode_varint, verify_block
from provenance.errors import FormatError, UsageError
from provenance.fsutil import atomic_output

MAX_HEADER = 1 << 20
MAX_SECTION = MAX_BLOCK_SIZE + 128  # one block and its binary CID; refuse to buffer absurd claims
MAX_ROOTS = 1024
READ_CAR_MAX_BYTES = 256 << 20  # `read_car` keeps every block in memory: bound what a hostile file can make it hold
READ_CAR_MAX_BLOCKS = 1 << 20
_CID_TAG = 42


def encode_header(roots: Sequence[Cid]) -> bytes:
    """The length-prefixed dag-cbor header: map keys in dag-cbor order (`roots` before `version`)."""
    body = bytearray(b"\xa2\x65roots")
    body += _cbor_head(4, len(roots))
    for root in roots:
        binary = b"\x00" + bytes(root)  # tag 42 holds the binary CID behind a 0x00 multibase prefix
        body += b"\xd8\x2a" + _cbor_head(2, len(binary)) + binary
    body += b"\x67version\x01"
    return encode_varint(len(body)) + bytes(body)


def _cbor_head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes((major << 5 | value,))
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if value < 1 << (8 * size):
            return bytes((major << 5 | info,)) + value.to_bytes(size, "big")
    raise ValueError("CBOR length too large")


def write_car(path: str | os.PathLike[str], roots: Sequence[Cid], blocks: Iterable[tuple[Cid, bytes]]) -> int:
    """Write a CAR v1 file atomically (temp file beside it, fsync, rename). Returns the number of blocks."""
    count = 0
    with atomic_output(path, mode=default_mode(directory=False), suffix=".part") as out:
        out.write(encode_header(roots))
        for cid, block in blocks:
            binary = bytes(cid)
            out.write(encode_varint(len(binary) + len(block)))
            out.write(binary)
            out.write(block)
            count += 1
    return count


class CarReader:
    """Reads a CAR v1 file: `roots` after opening, then iterate for verified `(cid, block)` pairs."""

    def __init__(self, path: str | os.PathLike[str], *, max_bytes: int | None = None,
                 max_blocks: int | None = None) -> None:
        """`max_bytes` / `max_blocks`: refuse a file whose sections add up to more (None: only the file bounds it)."""
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_blocks = max_blocks
        try:
            self._file: BinaryIO = self.path.open("rb")
        except FileNotFoundError:
            raise UsageError(f"{self.path}: no such file") from None
        except IsADirectoryError:
            raise UsageError(f"{self.path} is a directory, not a CAR file") from None
        except OSError as exc:
            raise UsageError(f"{self.path}: cannot read ({exc.strerror or exc})") from None
        self._offset = 0
        try:
            self.roots = self._read_header()
        except BaseException:
            self._file.close()
            raise

    def __enter__(self) -> CarReader:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def _fail(self, message: str) -> FormatError:
        return FormatError(f"{self.path}: {message} (at byte {self._offset})")

    def _read_length(self, *, eof_ok: bool) -> int | None:
        """A section's varint length, or None at a clean end of file."""
        raw = bytearray()
        while True:
            byte = self._file.read(1)
            if not byte:
                if not raw and eof_ok:
                    return None
                raise self._fail("truncated CAR file: it ends inside a length prefix")
            raw += byte
            if not byte[0] & 0x80:
                break
            if len(raw) > 9:
                raise self._fail("not a CAR file: invalid length prefix")
        try:
            value, _ = decode_varint(bytes(raw))
        except FormatError as exc:
            raise self._fail(f"not a CAR file: {exc}") from None
        return value

    def _read_exact(self, size: int, what: str) -> bytes:
        data = self._file.read(size)
        if len(data) != size:
            raise self._fail(f"truncated CAR file: {what} needs {size} bytes, only {len(data)} remain")
        return data

    def _read_header(self) -> list[Cid]:
        length = self._read_length(eof_ok=True)
        if length is None:
            raise self._fail("empty file, not a CAR file")
        if length == 0 or length > MAX_HEADER:
            raise self._fail(f"not a CAR file: header length {length}")
        raw = self._read_exact(length, "the header")
        try:
            header, end = _cbor_decode(raw, 0, 0)
            if end != len(raw):
                raise FormatError("trailing bytes in header")
        except FormatError as exc:
            raise self._fail(f"not a CAR file: header is not valid dag-cbor ({exc})") from None
        if not isinstance(header, dict) or "version" not in header:
            raise self._fail("not a CAR file: header has no version")
        if header["version"] == 2:
            raise self._fail("this is a CAR v2 file; prov reads CAR v1 (convert it with `car` or Kubo)")
        if header["version"] != 1:
            raise self._fail(f"unsupported CAR version {short_repr(header['version'])}")
        roots = header.get("roots")
        if not isinstance(roots, list) or not all(isinstance(r, Cid) for r in roots):
            raise self._fail("CAR header roots must be a list of CIDs")
        if len(roots) > MAX_ROOTS:
            raise self._fail(f"CAR header lists {len(roots)} roots, more than {MAX_ROOTS}")
        self._offset += len(encode_varint(length)) + length
        return roots

    def __iter__(self) -> Iterator[tuple[Cid, bytes]]:
        total = blocks = 0
        while True:
            length = self._read_length(eof_ok=True)
            if length is None:
                return
            if length > MAX_SECTION:
                raise self._fail(f"block section of {length} bytes exceeds the {MAX_SECTION}-byte limit")
            total += length
            blocks += 1
            if self.max_bytes is not None and total > self.max_bytes:
                raise self._fail(f"CAR file holds more than {self.max_bytes} bytes of blocks, the limit here")
            if self.max_blocks is not None and blocks > self.max_blocks:
                raise self._fail(f"CAR file holds more than {self.max_blocks} blocks, the limit here")
            section = self._read_exact(length, "a block section")
            try:
                cid, start = Cid.from_bytes(section)
            except FormatError as exc:
                raise self._fail(f"bad CID in block section ({exc})") from None
            block = section[start:]
            verify_block(cid, block)
            self._offset += len(encode_varint(length)) + length
            yield cid, block


def read_car(
    path: str | os.PathLike[str], *, max_bytes: int = READ_CAR_MAX_BYTES, max_blocks: int = READ_CAR_MAX_BLOCKS
) -> tuple[list[Cid], list[tuple[Cid, bytes]]]:
    """Roots and all blocks (verified) of a small CAR file, in file order; a bigger one is refused."""
    with CarReader(path, max_bytes=max_bytes, max_blocks=max_blocks) as reader:
        return reader.roots, list(reader)


def _cbor_decode(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
    """A strict dag-cbor subset decoder, enough for CAR headers (no floats, no indefinite lengths)."""
    if depth > 16:
        raise FormatError("nesting too deep")
    if pos >= len(buf):
        raise FormatError("truncated")
    major, info = buf[pos] >> 5, buf[pos] & 31
    pos += 1
    if info < 24:
        arg = info
    elif info <= 27:
        size = 1 << (info - 24)
        if pos + size > len(buf):
            raise FormatError("truncated")
        arg = int.from_bytes(buf[pos : pos + size], "big")
        pos += size
    else:
        raise FormatError(f"unsupported additional info {info}")
    if major == 0:
        return arg, pos
    if major == 1:
        return -1 - arg, pos
    if major in (2, 3):
        if pos + arg > len(buf):
            raise FormatError("truncated string")
        raw = buf[pos : pos + arg]
        if major == 2:
            return raw, pos + arg
        try:
            return raw.decode("utf-8"), pos + arg
        except UnicodeDecodeError:
            raise FormatError("text is not UTF-8") from None
    if major in (4, 5) and arg > len(buf) - pos:  # every item takes at least one byte
        raise FormatError("truncated")
    if major == 4:
        items = []
        for _ in range(arg):
            item, pos = _cbor_decode(buf, pos, depth + 1)
            items.append(item)
        return items, pos
    if major == 5:
        mapping: dict[str, Any] = {}
        for _ in range(arg):
            key, pos = _cbor_decode(buf, pos, depth + 1)
            if not isinstance(key, str) or key in mapping:
                raise FormatError("map keys must be unique strings")
            mapping[key], pos = _cbor_decode(buf, pos, depth + 1)
        return mapping, pos
    if major == 6:
        value, pos = _cbor_decode(buf, pos, depth + 1)
        if arg != _CID_TAG or not isinstance(value, bytes) or value[:1] != b"\x00":
            raise FormatError(f"unsupported tag {arg}")
        cid, end = Cid.from_bytes(value, 1)
        if end != len(value):
            raise FormatError("trailing bytes after a CID")
        return cid, pos
    simple = {20: False, 21: True, 22: None}
    if info in simple:
        return simple[info], pos
    raise FormatError("floats and other simple values are not allowed")
