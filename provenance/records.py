"""Canonical encodings of what happens in one optimizer step: the batch and the step record.

Batch encoding `prov.batch.v1`: a valid safetensors file written by this module alone (so its bytes never depend
on a library version): 8-byte little-endian header length, canonical-JSON header padded with spaces to a multiple
of 8, then each tensor's C-order little-endian bytes in sorted name order. The header's `__metadata__` holds the
format name, the step and the dataset indices. Verifying a batch digest needs numpy, not torch.

Step record `prov.step.v1`: canonical JSON; floats are stored as their `repr` strings. Its Merkle leaf is
`H(0x00 || canonical(record))`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from provenance import canonical, merkle
from provenance.errors import FormatError
from provenance.hashing import Digest

BATCH_FORMAT = "prov.batch.v1"
STEP_FORMAT = "prov.step.v1"

_DTYPES: dict[str, str] = {
    "bool": "BOOL", "uint8": "U8", "int8": "I8", "int16": "I16", "int32": "I32", "int64": "I64",
    "float16": "F16", "float32": "F32", "float64": "F64",
}


def encode_safetensors(entries: Mapping[str, tuple[str, Sequence[int], bytes]], metadata: Mapping[str, str]) -> bytes:
    """Deterministic safetensors bytes: the one writer of that layout (batches here, checkpoint files in training).

    `entries` maps a tensor name to (safetensors dtype code, shape, C-order little-endian bytes). Layout: 8-byte
    little-endian header length, canonical-JSON header (sorted keys, no whitespace) padded with spaces to a multiple
    of 8, then the tensors' bytes in sorted name order. Valid for every safetensors reader.
    """
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(entries):
        if name == "__metadata__":
            raise FormatError("a tensor may not be named __metadata__")
        dtype, shape, data = entries[name]
        header[name] = {"data_offsets": [offset, offset + len(data)], "dtype": dtype, "shape": list(shape)}
        chunks.append(data)
        offset += len(data)
    head = canonical.encode(header)
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + b"".join(chunks)


def encode_batch(*, step: int, indices: Sequence[int], tensors: Mapping[str, Any]) -> bytes:
    """The canonical bytes of one step's batch: its step number, dataset indices and tensors as fed."""
    if step < 0:
        raise FormatError(f"batch step must be >= 0, got {step}")
    entries: dict[str, tuple[str, Sequence[int], bytes]] = {}
    for name, value in tensors.items():
        array = np.asarray(value)
        dtype = _DTYPES.get(array.dtype.name)
        if dtype is None:
            raise FormatError(f"batch tensor {name!r}: unsupported dtype {array.dtype.name}")
        data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        entries[name] = (dtype, array.shape, data)
    metadata = {"format": BATCH_FORMAT, "indices": canonical.encode([int(i) for i in indices]).decode(),
                "step": str(int(step))}
    return encode_safetensors(entries, metadata)


def batch_digest(*, step: int, indices: Sequence[int], tensors: Mapping[str, Any]) -> Digest:
    return Digest.of(encode_batch(step=step, indices=indices, tensors=tensors))


def _float_text(value: float, field: str) -> str:
    if not isinstance(value, float | int):
        raise FormatError(f"step record field {field} must be a number")
    return repr(float(value))


def _parse_float(text: Any, field: str) -> float:
    if not isinstance(text, str):
        raise FormatError(f"step record field {field} must be a float written as a string")
    try:
        value = float(text)
    except ValueError:
        raise FormatError(f"step record field {field}: {text!r} is not a number") from None
    if repr(value) != text and not math.isnan(value):
        raise FormatError(f"step record field {field}: {text!r} is not in canonical repr form")
    return value


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One optimizer step as logged. `examples` is the Poisson batch size (may be 0)."""

    step: int
    batch: Digest
    examples: int
    lr: float
    loss: float
    clipped_fraction: float
    noise_index: int

    def to_json(self) -> dict[str, Any]:
        return {
            "batch": str(self.batch),
            "clipped_fraction": _float_text(self.clipped_fraction, "clipped_fraction"),
            "examples": self.examples,
            "format": STEP_FORMAT,
            "loss": _float_text(self.loss, "loss"),
            "lr": _float_text(self.lr, "lr"),
            "noise_index": self.noise_index,
            "step": self.step,
        }

    def encode(self) -> bytes:
        return canonical.encode(self.to_json())

    def leaf_hash(self) -> bytes:
        return merkle.hash_leaf(self.encode())

    @classmethod
    def from_json(cls, value: Any) -> StepRecord:
        """Parse a record read from a trust boundary; every field is checked."""
        if not isinstance(value, dict):
            raise FormatError("step record must be a JSON object")
        expected = {"batch", "clipped_fraction", "examples", "format", "loss", "lr", "noise_index", "step"}
        if set(value) != expected:
            raise FormatError(
                f"step record fields differ: missing {sorted(expected - set(value))}, "
                f"unexpected {sorted(set(value) - expected)}"
            )
        if value["format"] != STEP_FORMAT:
            raise FormatError(f"unknown step record format {value['format']!r} (expected {STEP_FORMAT})")
        for field in ("step", "examples", "noise_index"):
            if not isinstance(value[field], int) or isinstance(value[field], bool) or value[field] < 0:
                raise FormatError(f"step record field {field} must be a non-negative integer")
        return cls(
            step=value["step"],
            batch=Digest.parse(value["batch"]),
            examples=value["examples"],
            lr=_parse_float(value["lr"], "lr"),
            loss=_parse_float(value["loss"], "loss"),
            clipped_fraction=_parse_float(value["clipped_fraction"], "clipped_fraction"),
            noise_index=value["noise_index"],
        )
