"""Content identifiers exactly as Kubo computes them, in pure Python.

A CID here is always CIDv1 with a SHA-256 multihash and one of two codecs: `raw` (file chunks) or `dag-pb`
(UnixFS nodes). Its text form is multibase base32 lowercase (`b...`), what `ipfs add --cid-version=1` prints.
`parse_cid` also accepts CIDv0 (`Qm...`) and base58btc CIDv1 (`z...`), as nodes and pinning services answer
with them, and normalises them to base32.

This module holds the CID primitives only (varints, the multihash, binary and text forms, block verification)
and imports nothing else of prov's but its errors: the UnixFS / dag-pb encodings build on it
(`provenance._store.unixfs`), never the reverse. The CID of a whole file or directory (`file_cid`, `bytes_cid`,
`directory_cid`) is computed there and offered by `provenance.store`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from provenance.errors import DigestMismatch, FormatError

CID_VERSION = 1
RAW = 0x55
DAG_PB = 0x70
SHA2_256 = 0x12
SHA2_256_SIZE = 32
CODEC_NAMES = {RAW: "raw", DAG_PB: "dag-pb"}
MAX_BLOCK_SIZE = 2 * 1024 * 1024  # bitswap's hard limit: no IPFS node moves a bigger block (Kubo makes <= 1 MiB)
MAX_TEXT = 256  # a sha2-256 CID is 59 characters in base32, 46-49 in base58; refuse to decode longer claims

_BASE32_TEXT = re.compile(r"b[a-z2-7]+")
_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {ch: i for i, ch in enumerate(_B58_ALPHABET)}

BlockSink = Callable[[bytes, "bytes | memoryview"], None]
"""Receives each block a builder makes, as `(binary CID, block bytes)`, children before parents."""


class CidMismatch(DigestMismatch):
    """A block's bytes do not hash to the CID it was fetched or imported under."""

    def __init__(self, cid: Cid | str, *, found: bytes) -> None:
        self.cid = str(cid)
        super().__init__(f"block {self.cid} does not match its CID", expected=_as_cid(cid).digest, found=found)


# -- varint ------------------------------------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128, as multiformats and protobuf use it."""
    if value < 0:
        raise ValueError("varint must be non-negative")
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(data: bytes | memoryview, offset: int = 0) -> tuple[int, int]:
    """Decode an unsigned varint at `offset`; returns `(value, next_offset)`. Strict: minimal, at most 9 bytes."""
    value = 0
    shift = 0
    pos = offset
    end = len(data)
    while True:
        if pos >= end:
            raise FormatError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and pos - offset > 1:
                raise FormatError("varint is not minimally encoded")
            return value, pos
        shift += 7
        if shift >= 63:
            raise FormatError("varint is longer than 9 bytes")


# -- the CID type ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cid:
    """A CIDv1 over SHA-256: a codec (`RAW` or `DAG_PB`) and a 32-byte digest. `str()` is base32 `b...`."""

    codec: int
    digest: bytes

    def __post_init__(self) -> None:
        if self.codec not in CODEC_NAMES:
            raise FormatError(f"unsupported CID codec 0x{self.codec:x}: prov stores raw and dag-pb blocks only")
        if not isinstance(self.digest, bytes) or len(self.digest) != SHA2_256_SIZE:
            raise FormatError(f"a sha2-256 CID digest is {SHA2_256_SIZE} bytes")

    @classmethod
    def of(cls, codec: int, block: bytes | memoryview) -> Cid:
        """The CID of `block` under `codec`."""
        return cls(codec, hashlib.sha256(block).digest())

    @classmethod
    def from_bytes(cls, data: bytes | memoryview, offset: int = 0) -> tuple[Cid, int]:
        """Decode a binary CID (v1, or v0 = a bare sha2-256 multihash) at `offset`; returns `(cid, next)`."""
        if len(data) - offset >= 2 and data[offset] == SHA2_256 and data[offset + 1] == SHA2_256_SIZE:
            end = offset + 2 + SHA2_256_SIZE  # CIDv0: dag-pb implied
            if end > len(data):
                raise FormatError("truncated CID")
            return cls(DAG_PB, bytes(data[offset + 2 : end])), end
        version, pos = decode_varint(data, offset)
        if version != CID_VERSION:
            raise FormatError(f"unsupported CID version {version}")
        codec, pos = decode_varint(data, pos)
        hash_code, pos = decode_varint(data, pos)
        size, pos = decode_varint(data, pos)
        if hash_code != SHA2_256 or size != SHA2_256_SIZE:
            raise FormatError(f"unsupported multihash 0x{hash_code:x} (length {size}): only sha2-256 is supported")
        if pos + size > len(data):
            raise FormatError("truncated CID")
        return cls(codec, bytes(data[pos : pos + size])), pos + size

    def __bytes__(self) -> bytes:
        return bytes((CID_VERSION, self.codec, SHA2_256, SHA2_256_SIZE)) + self.digest

    def __str__(self) -> str:
        return "b" + base64.b32encode(bytes(self)).decode("ascii").lower().rstrip("=")

    @property
    def codec_name(self) -> str:
        return CODEC_NAMES[self.codec]


def cid_bytes(codec: int, digest: bytes) -> bytes:
    """Binary CIDv1 for a sha2-256 `digest` without building a `Cid` (the builders' hot path)."""
    return bytes((CID_VERSION, codec, SHA2_256, SHA2_256_SIZE)) + digest


def cid_text(binary: bytes) -> str:
    """Base32 text of a binary CIDv1."""
    return "b" + base64.b32encode(binary).decode("ascii").lower().rstrip("=")


def parse_cid(text: str) -> Cid:
    """Parse a CID: base32 CIDv1 (`b...`, any case), base58btc CIDv1 (`z...`) or CIDv0 (`Qm...`).

    Strict: the whole text must decode, with a sha2-256 multihash and a raw or dag-pb codec; anything else
    is a one-line FormatError that shows the input.
    """
    if not isinstance(text, str):
        raise FormatError(f"a CID must be text, got {type(text).__name__}")
    shown = text if len(text) <= 80 else text[:77] + "..."
    stripped = text.strip()
    try:
        if len(stripped) > MAX_TEXT:  # base58 decoding is quadratic: never run it on unbounded input
            raise FormatError(f"longer than {MAX_TEXT} characters")
        if stripped.startswith("Qm") and len(stripped) == 46:
            binary = _b58decode(stripped)
        elif stripped.startswith("z"):
            binary = _b58decode(stripped[1:])
        elif stripped[:1] in ("b", "B") and _BASE32_TEXT.fullmatch(stripped.lower()):
            body = stripped[1:].upper()
            try:
                binary = base64.b32decode(body + "=" * (-len(body) % 8))
            except binascii.Error:
                raise FormatError("invalid base32 length") from None
        else:
            raise FormatError("unknown multibase prefix or alphabet")
        cid, end = Cid.from_bytes(binary)
        if end != len(binary):
            raise FormatError("trailing bytes after the CID")
    except (FormatError, ValueError) as exc:
        raise FormatError(f"not a CID: {shown!r} ({exc})") from None
    return cid


def _as_cid(value: Cid | str) -> Cid:
    return value if isinstance(value, Cid) else parse_cid(value)


def _b58decode(text: str) -> bytes:
    number = 0
    for ch in text:
        index = _B58_INDEX.get(ch)
        if index is None:
            raise FormatError(f"invalid base58 character {ch!r}")
        number = number * 58 + index
    pad = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\x00" * pad + body


def verify_block(cid: Cid | str, block: bytes | memoryview) -> None:
    """Raise `CidMismatch` unless `block` hashes to `cid`'s digest. Every read from any store goes through this."""
    expected = _as_cid(cid)
    found = hashlib.sha256(block).digest()
    if found != expected.digest:
        raise CidMismatch(expected, found=found)
