"""Safetensors files read without torch and without trusting them, and the tensor digest `prov.tensors.v1`.

A safetensors file is `u64 little-endian N || N bytes of JSON header || data`. The header maps each tensor name
to `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets into the data section) and may hold
`"__metadata__"`, a map of strings. `read_header` checks everything the safetensors specification and its
reference implementation require before any tensor byte is used: the header fits its size cap and the file,
parses as bounded JSON, names known dtypes and non-negative shapes, and its offsets are in bounds, each exactly
`dtype size × elements` long, non-overlapping and contiguous, covering the data section exactly (no hidden
bytes). A pickle or a zip of pickles (PyTorch `.bin`) is named as such and never opened.

**Tensor digest** `prov.tensors.v1`: the SHA-256 of
`records.encode_safetensors(tensors, metadata={"format": "prov.tensors.v1"})`, the canonical re-encoding of the
same tensors (names sorted, canonical header, bytes in name order). It ignores the file's metadata, its tensor
order, its header whitespace and padding: two files with the same names, dtypes, shapes and bytes have the same
tensor digest, however written. It is computed by streaming tensor bytes from the file(s), never loading a whole
file; `tensor_digest_of_files` covers a model sharded over several files (a name may not repeat across them).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from provenance import canonical
from provenance.canonical import short_repr
from provenance.errors import FormatError, UsageError
from provenance.hashing import Digest

TENSORS_FORMAT = "prov.tensors.v1"
# The reference implementation allows 100 MB; real headers are kilobytes (a 70B model's is ~200 KB). A header is
# parsed into Python objects at several times its size, so prov caps it lower.
MAX_HEADER = 16 * 1024 * 1024
READ_BLOCK = 8 * 1024 * 1024
_METADATA = "__metadata__"
_FIELDS = {"data_offsets", "dtype", "shape"}
_PICKLE_HINT = ("prov reads safetensors only and never unpickles a file; convert it with "
                "safetensors (e.g. `save_file(state_dict, 'adapter_model.safetensors')`) in a trusted environment")

# Bits per element of every dtype the safetensors specification (0.8) names.
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32,
    "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64,
}


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One tensor's entry: `begin`/`end` are offsets into the data section (which starts at `Header.data_start`)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True, slots=True)
class Header:
    """A validated safetensors header: tensors sorted by name, metadata, and where the data section starts."""

    tensors: tuple[TensorInfo, ...]
    metadata: dict[str, str] = field(default_factory=dict)
    data_start: int = 8

    def tensor(self, name: str) -> TensorInfo:
        for info in self.tensors:
            if info.name == name:
                return info
        raise FormatError(f"no tensor named {name!r}")


# -- reading headers ---------------------------------------------------------------------------------------


def read_header(path: str | os.PathLike[str]) -> Header:
    """Read and validate the header of the safetensors file at `path` (no tensor bytes are read)."""
    with _open(Path(path)) as stream:
        return header_of(stream, size=os.fstat(stream.fileno()).st_size, source=str(path))


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    """The `__metadata__` of a safetensors file, after checking the whole header (the tensors are not loaded)."""
    return dict(read_header(path).metadata)


def header_of(stream: BinaryIO, *, size: int, source: str) -> Header:
    """Validate the header of a safetensors file of `size` bytes open as `stream` (at its start)."""
    head = stream.read(8)
    length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
    plausible = 0 < length <= MAX_HEADER and 8 + length <= size
    first = stream.read(1) if plausible else b""
    # A pickle starts with 0x80 and a zip with "PK": read as a length, that is nearly always absurd. A real
    # header whose length happens to start with 0x80 (128, 384, ...) is recognised by its "{" first.
    if first != b"{" and (head[:1] == b"\x80" or head[:4] == b"PK\x03\x04"):
        raise FormatError(f"{source}: a pickle / PyTorch .bin file, not safetensors; {_PICKLE_HINT}")
    if len(head) < 8:
        raise FormatError(f"{source}: too short to be a safetensors file ({size} bytes)")
    if not plausible:
        raise FormatError(f"{source}: not a safetensors file, or truncated (header of {length} bytes in a "
                          f"{size}-byte file)")
    if first != b"{":
        raise FormatError(f"{source}: not a safetensors file (its header does not start with '{{'); {_PICKLE_HINT}")
    raw = first + stream.read(length - 1)
    if len(raw) != length:
        raise FormatError(f"{source}: truncated while reading its {length}-byte header")
    return parse_header(raw, data_size=size - 8 - length, source=source)


def parse_header(raw: bytes, *, data_size: int, source: str) -> Header:
    """Validate header bytes (the JSON after the length) against a data section of `data_size` bytes."""
    try:
        document = canonical.decode(raw, source="its header", max_size=MAX_HEADER)
    except FormatError as exc:
        raise FormatError(f"{source}: not a safetensors file ({exc}); {_PICKLE_HINT}") from None
    if not isinstance(document, dict):
        raise FormatError(f"{source}: not a safetensors file (header is not an object)")
    metadata = _metadata(document.get(_METADATA), source)
    tensors = sorted((_tensor(name, info, data_size, source) for name, info in document.items() if name != _METADATA),
                     key=lambda t: t.name)
    _check_layout(tensors, data_start=8 + len(raw), data_size=data_size, source=source)
    return Header(tuple(tensors), metadata, 8 + len(raw))


def _metadata(value: Any, source: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise FormatError(f"{source}: safetensors __metadata__ must map strings to strings")
    return value


def _tensor(name: str, info: Any, data_size: int, source: str) -> TensorInfo:
    where = f"{source}: safetensors entry {short_repr(name)}"
    offsets = info.get("data_offsets") if isinstance(info, dict) else None
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(canonical.is_count(o) for o in offsets)):
        raise FormatError(f"{where} has no valid data_offsets")
    if set(info) != _FIELDS:
        raise FormatError(f"{where} must have exactly dtype, shape and data_offsets")
    dtype, shape = info["dtype"], info["shape"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise FormatError(f"{where} has unknown dtype {short_repr(dtype)}")
    if not isinstance(shape, list) or not all(canonical.is_count(d) for d in shape):
        raise FormatError(f"{where} has a shape that is not a list of non-negative integers")
    begin, end = offsets
    if begin > end:
        raise FormatError(f"{where}: data_offsets [{begin}, {end}] run backwards")
    elements = _elements(shape, limit=8 * data_size)
    if elements is None:
        raise FormatError(f"{where}: shape {short_repr(shape)} holds more elements than the file has bits")
    bits = elements * DTYPE_BITS[dtype]
    if bits % 8:
        raise FormatError(f"{where}: {dtype} × {shape} is not a whole number of bytes")
    if end - begin != bits // 8:
        raise FormatError(f"{where}: {dtype} × {shape} needs {bits // 8} bytes, data_offsets give {end - begin}")
    return TensorInfo(name, dtype, tuple(shape), begin, end)


def _elements(shape: list[int], *, limit: int) -> int | None:
    """The product of `shape`, or None once it exceeds `limit` (no huge integers from a hostile shape)."""
    if 0 in shape:
        return 0
    product = 1
    for dim in shape:
        product *= dim
        if product > limit:
            return None
    return product


def _check_layout(tensors: list[TensorInfo], *, data_start: int, data_size: int, source: str) -> None:
    end = max((t.end for t in tensors), default=0)
    if end > data_size:
        raise FormatError(f"{source}: truncated safetensors file (its tensors need {data_start + end} bytes, "
                          f"the file has {data_start + data_size})")
    position = 0
    for info in sorted(tensors, key=lambda t: (t.begin, t.end)):
        if info.begin != position:
            what = "overlaps the previous tensor" if info.begin < position else f"leaves a gap at byte {position}"
            raise FormatError(f"{source}: safetensors entry {short_repr(info.name)} {what}")
        position = info.end
    if position != data_size:
        raise FormatError(f"{source}: invalid safetensors file: {data_size - position} bytes after its last tensor")


@contextlib.contextmanager
def _open(path: Path) -> Iterator[BinaryIO]:
    try:
        stream = path.open("rb")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    with stream:
        yield stream


# -- the tensor digest -------------------------------------------------------------------------------------


def canonical_header(tensors: Iterable[TensorInfo]) -> bytes:
    """The length-prefixed, padded header `records.encode_safetensors` writes for these tensors (sorted names,
    offsets in that order) under `{"format": "prov.tensors.v1"}`: the first bytes of the tensor digest's input."""
    header: dict[str, Any] = {_METADATA: {"format": TENSORS_FORMAT}}
    offset = 0
    for info in sorted(tensors, key=lambda t: t.name):
        header[info.name] = {"data_offsets": [offset, offset + info.nbytes], "dtype": info.dtype,
                             "shape": list(info.shape)}
        offset += info.nbytes
    head = canonical.encode(header)
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head


def tensor_digest(path: str | os.PathLike[str]) -> Digest:
    """The `prov.tensors.v1` digest of one safetensors file's tensors (metadata and layout ignored)."""
    return tensor_digest_of_files([path])


def tensor_digest_of_files(paths: Iterable[str | os.PathLike[str]]) -> Digest:
    """The `prov.tensors.v1` digest of the tensors of several safetensors files (shards) taken together."""
    with contextlib.ExitStack() as stack:
        owner: dict[str, tuple[BinaryIO, Header, TensorInfo, str]] = {}
        files = 0
        for path in map(Path, paths):
            files += 1
            stream = stack.enter_context(_open(path))
            header = header_of(stream, size=os.fstat(stream.fileno()).st_size, source=str(path))
            for info in header.tensors:
                if info.name in owner:
                    raise FormatError(f"tensor {short_repr(info.name)} is in both {owner[info.name][3]} and {path}")
                owner[info.name] = (stream, header, info, str(path))
        if not files:
            raise UsageError("a tensor digest needs at least one safetensors file")
        hasher = hashlib.sha256(canonical_header(entry[2] for entry in owner.values()))
        for name in sorted(owner):
            stream, header, info, source = owner[name]
            _stream_into(hasher, stream, start=header.data_start + info.begin, size=info.nbytes, source=source)
    return Digest(hasher.digest())


def _stream_into(hasher: Any, stream: BinaryIO, *, start: int, size: int, source: str) -> None:
    stream.seek(start)
    buffer = bytearray(min(size, READ_BLOCK))
    view = memoryview(buffer)
    left = size
    while left:
        n = stream.readinto(view[: min(left, len(buffer))])  # type: ignore[attr-defined]
        if not n:
            raise FormatError(f"{source}: the file shrank while it was read")
        hasher.update(view[:n])
        left -= n


# -- in-memory helpers (small files fetched from a store) ----------------------------------------------------


def tensor_digest_of_bytes(data: bytes, *, source: str = "safetensors bytes") -> Digest:
    """The `prov.tensors.v1` digest of a safetensors file held in memory (same value as `tensor_digest`)."""
    import io

    stream = io.BytesIO(data)
    header = header_of(stream, size=len(data), source=source)
    hasher = hashlib.sha256(canonical_header(header.tensors))
    for info in sorted(header.tensors, key=lambda t: t.name):
        hasher.update(data[header.data_start + info.begin: header.data_start + info.end])
    return Digest(hasher.digest())


_NUMPY_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
                 "U8": "u1", "BOOL": "?"}


def read_tensors(data: bytes, *, source: str = "safetensors bytes") -> dict[str, Any]:
    """The tensors of an in-memory safetensors file as numpy arrays (bf16 widened to float32), never unpickling.
    For information such as weight distances; digests are always taken over the exact bytes."""
    import io

    import numpy as np

    header = header_of(io.BytesIO(data), size=len(data), source=source)
    out: dict[str, Any] = {}
    for info in header.tensors:
        raw = data[header.data_start + info.begin: header.data_start + info.end]
        if info.dtype == "BF16":
            widened = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            out[info.name] = widened.view(np.float32).reshape(info.shape)
        elif info.dtype in _NUMPY_DTYPES:
            out[info.name] = np.frombuffer(raw, dtype=_NUMPY_DTYPES[info.dtype]).reshape(info.shape)
        else:
            raise FormatError(f"{source}: tensor {short_repr(info.name)} has dtype {info.dtype}, which prov cannot "
                              "read as numbers")
    return out
