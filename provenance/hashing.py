"""The `Digest` value type and streaming SHA-256 of bytes and files.

A digest's text form is `sha256:<64 lowercase hex>`; parsing is strict (algorithm, length, case).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from provenance.errors import FormatError

ALGORITHM = "sha256"
DIGEST_SIZE = 32
# 8 MiB reads: large enough that per-call overhead vanishes; hashlib releases the GIL on each update.
BLOCK_SIZE = 8 * 1024 * 1024

_TEXT = re.compile(r"sha256:([0-9a-f]{64})")

ProgressCallback = Callable[[int, int], None]
"""Called as `progress(bytes_done, bytes_total)` after each block."""


@dataclass(frozen=True, slots=True)
class Digest:
    """A SHA-256 digest. `str()` gives `sha256:<hex>`; `bytes` is the raw 32 bytes."""

    value: bytes
    algorithm: str = ALGORITHM

    def __post_init__(self) -> None:
        if self.algorithm != ALGORITHM:
            raise FormatError(f"unsupported digest algorithm {self.algorithm!r}: only sha256 is supported")
        if not isinstance(self.value, bytes) or len(self.value) != DIGEST_SIZE:
            raise FormatError(f"a sha256 digest is {DIGEST_SIZE} bytes, got {len(self.value)}")

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse `sha256:<64 lowercase hex>` exactly; anything else is a FormatError naming the input."""
        if not isinstance(text, str):
            raise FormatError(f"a digest must be text like 'sha256:<64 hex>', got {type(text).__name__}")
        match = _TEXT.fullmatch(text)
        if match is None:
            shown = text if len(text) <= 80 else text[:77] + "..."
            raise FormatError(f"not a digest: {shown!r} (expected 'sha256:' followed by 64 lowercase hex digits)")
        return cls(bytes.fromhex(match.group(1)))

    @classmethod
    def from_hex(cls, hex_text: str) -> Digest:
        """Build from bare hex (as chain clients return it), with or without `0x`."""
        body = hex_text[2:] if hex_text.startswith("0x") else hex_text
        return cls.parse(f"sha256:{body.lower()}")

    @classmethod
    def of(cls, data: bytes | bytearray | memoryview) -> Digest:
        return cls(hashlib.sha256(data).digest())

    @property
    def hex(self) -> str:
        return self.value.hex()

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.value.hex()}"

    def __bytes__(self) -> bytes:
        return self.value


def sha256(data: bytes | bytearray | memoryview) -> bytes:
    """Raw SHA-256 of `data`."""
    return hashlib.sha256(data).digest()


def hash_stream(
    stream: object, *, total: int = 0, progress: ProgressCallback | None = None, block_size: int = BLOCK_SIZE
) -> Digest:
    """SHA-256 of a binary stream with `readinto`, read in large blocks into one reused buffer."""
    hasher = hashlib.sha256()
    buffer = bytearray(block_size)
    view = memoryview(buffer)
    done = 0
    readinto = stream.readinto  # type: ignore[attr-defined]
    while True:
        n = readinto(buffer)
        if not n:
            break
        hasher.update(view[:n])
        done += n
        if progress is not None:
            progress(done, total)
    return Digest(hasher.digest())


def hash_file(path: str | os.PathLike[str], *, progress: ProgressCallback | None = None) -> Digest:
    """SHA-256 of a file's bytes. A missing or unreadable path is a one-line UsageError."""
    from provenance.fsutil import open_input

    with open_input(path) as f:
        return hash_stream(f, total=os.fstat(f.fileno()).st_size, progress=progress)
