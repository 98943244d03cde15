"""Canonical encodings of what happens in one optimizer step: step records, step statistics, and the v1 batch.

Step record `prov.step.v3` (written since issue #23): step, salted batch commitment (`prov.batch.v2`, see
`provenance.batches`), lr, noise index, and a hiding commitment to the step's private statistics (`prov.stats.v2`:
loss, clipped fraction and the example count). Nothing published says how many examples a step took: an exact
Poisson batch size is a channel about the data the DP accountant does not cover. `prov.step.v2` (0.2 until #23)
published the count in clear beside a `prov.stats.v1` commitment; `prov.step.v1` (runs before 0.2) carried loss and
clipped fraction in clear; both are still parsed, so old runs stay auditable. A record's Merkle leaf is
`H(0x00 || canonical(record))`. Floats are stored as their `repr` strings. docs/formats.md has every definition.

Batch encoding `prov.batch.v1` (legacy, unsalted): a valid safetensors file written by `encode_safetensors`: 8-byte
little-endian header length, canonical-JSON header padded with spaces to a multiple of 8, then each tensor's
C-order little-endian bytes in sorted name order; `__metadata__` holds the format name, step and dataset indices.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from provenance import canonical, merkle
from provenance.errors import FormatError
from provenance.hashing import Digest

BATCH_FORMAT_V1 = "prov.batch.v1"
STEP_FORMAT_V1 = "prov.step.v1"
STEP_FORMAT = "prov.step.v2"  # the v2 record class below (publishes the count)
STEP_FORMAT_V3 = "prov.step.v3"  # what the trainer writes
STATS_FORMAT = "prov.stats.v1"  # statistics of a v2 step: loss, clipped fraction
STATS_FORMAT_V2 = "prov.stats.v2"  # statistics of a v3 step: loss, clipped fraction, example count

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


def encode_batch_v1(*, step: int, indices: Sequence[int], tensors: Mapping[str, Any]) -> bytes:
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
    metadata = {"format": BATCH_FORMAT_V1, "indices": canonical.encode([int(i) for i in indices]).decode(),
                "step": str(int(step))}
    return encode_safetensors(entries, metadata)


def batch_digest_v1(*, step: int, indices: Sequence[int], tensors: Mapping[str, Any]) -> Digest:
    return Digest.of(encode_batch_v1(step=step, indices=indices, tensors=tensors))


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


def _check_count(value: Any, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise FormatError(f"step record field {field} must be a non-negative integer")
    return value


def _check_fields(value: Any, expected: set[str], format_name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FormatError("step record must be a JSON object")
    if value.get("format") != format_name:
        raise FormatError(f"unknown step record format {value.get('format')!r} (expected {format_name})")
    if set(value) != expected:
        raise FormatError(
            f"step record fields differ: missing {sorted(expected - set(value))}, "
            f"unexpected {sorted(set(value) - expected)}"
        )
    return value


# Fields of a step that do not depend on floating point: they must match exactly in any environment.
EXACT_FIELDS = ("batch", "examples", "lr", "noise_index")


class _Logged:
    """What every step-record format shares: its canonical bytes, and its leaf in the step log."""

    __slots__ = ()

    def to_json(self) -> dict[str, Any]:
        raise NotImplementedError

    def encode(self) -> bytes:
        return canonical.encode(self.to_json())

    def leaf_hash(self) -> bytes:
        return merkle.hash_leaf(self.encode())


@dataclass(frozen=True, slots=True)
class StepRecord(_Logged):
    """One optimizer step as logged (`prov.step.v2`). `examples` is the Poisson batch size (may be 0); `stats` is
    the salted commitment to the step's loss and clipped fraction (`stats_commitment`)."""

    format: ClassVar[str] = STEP_FORMAT
    step: int
    batch: Digest
    examples: int
    lr: float
    noise_index: int
    stats: Digest

    def to_json(self) -> dict[str, Any]:
        return {
            "batch": str(self.batch),
            "examples": self.examples,
            "format": STEP_FORMAT,
            "lr": _float_text(self.lr, "lr"),
            "noise_index": self.noise_index,
            "stats": str(self.stats),
            "step": self.step,
        }

    @classmethod
    def from_json(cls, value: Any) -> StepRecord:
        """Parse a v2 record read from a trust boundary; every field is checked."""
        v = _check_fields(value, {"batch", "examples", "format", "lr", "noise_index", "stats", "step"}, STEP_FORMAT)
        return cls(step=_check_count(v["step"], "step"), batch=Digest.parse(v["batch"]),
                   examples=_check_count(v["examples"], "examples"), lr=_parse_float(v["lr"], "lr"),
                   noise_index=_check_count(v["noise_index"], "noise_index"), stats=Digest.parse(v["stats"]))


@dataclass(frozen=True, slots=True)
class StepRecordV1(_Logged):
    """A step as logged by runs before 0.2 (`prov.step.v1`): loss and clipped fraction in clear, no stats
    commitment. Read-only: kept so old runs stay auditable."""

    format: ClassVar[str] = STEP_FORMAT_V1
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
            "format": STEP_FORMAT_V1,
            "loss": _float_text(self.loss, "loss"),
            "lr": _float_text(self.lr, "lr"),
            "noise_index": self.noise_index,
            "step": self.step,
        }

    @classmethod
    def from_json(cls, value: Any) -> StepRecordV1:
        v = _check_fields(value, {"batch", "clipped_fraction", "examples", "format", "loss", "lr", "noise_index",
                                  "step"}, STEP_FORMAT_V1)
        return cls(step=_check_count(v["step"], "step"), batch=Digest.parse(v["batch"]),
                   examples=_check_count(v["examples"], "examples"), lr=_parse_float(v["lr"], "lr"),
                   loss=_parse_float(v["loss"], "loss"),
                   clipped_fraction=_parse_float(v["clipped_fraction"], "clipped_fraction"),
                   noise_index=_check_count(v["noise_index"], "noise_index"))


@dataclass(frozen=True, slots=True)
class StepRecordV3(_Logged):
    """One optimizer step as logged since issue #23 (`prov.step.v3`): a v2 record without the example count, which
    `stats` (`prov.stats.v2`) now commits to with the loss and clipped fraction. An auditor with the secrets still
    checks the count (the sampled indices, the batch commitment and the opened statistics all fix it)."""

    format: ClassVar[str] = STEP_FORMAT_V3
    step: int
    batch: Digest
    lr: float
    noise_index: int
    stats: Digest

    def to_json(self) -> dict[str, Any]:
        return {"batch": str(self.batch), "format": STEP_FORMAT_V3, "lr": _float_text(self.lr, "lr"),
                "noise_index": self.noise_index, "stats": str(self.stats), "step": self.step}

    @classmethod
    def from_json(cls, value: Any) -> StepRecordV3:
        v = _check_fields(value, {"batch", "format", "lr", "noise_index", "stats", "step"}, STEP_FORMAT_V3)
        return cls(step=_check_count(v["step"], "step"), batch=Digest.parse(v["batch"]),
                   lr=_parse_float(v["lr"], "lr"), noise_index=_check_count(v["noise_index"], "noise_index"),
                   stats=Digest.parse(v["stats"]))


AnyStepRecord = StepRecord | StepRecordV1 | StepRecordV3


def step_record_from_json(value: Any) -> AnyStepRecord:
    """Parse a step record of any known format (v3; v2 and v1 from older runs)."""
    if isinstance(value, dict) and value.get("format") == STEP_FORMAT_V1:
        return StepRecordV1.from_json(value)
    if isinstance(value, dict) and value.get("format") == STEP_FORMAT_V3:
        return StepRecordV3.from_json(value)
    return StepRecord.from_json(value)


# --- step statistics (prov.stats.v1) ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StepStats:
    """The private statistics of one step: what a step record's `stats` commits to. Never published. With
    `examples` (a v3 step's count) the commitment is `prov.stats.v2`, without it `prov.stats.v1`."""

    step: int
    loss: float
    clipped_fraction: float
    examples: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"clipped_fraction": _float_text(self.clipped_fraction, "clipped_fraction"),
                               "loss": _float_text(self.loss, "loss"), "step": self.step}
        if self.examples is not None:
            out["examples"] = self.examples
        return out

    @classmethod
    def from_json(cls, value: Any, *, source: str = "step statistics") -> StepStats:
        keys = {"clipped_fraction", "loss", "step"}
        if not isinstance(value, dict) or set(value) not in (keys, keys | {"examples"}):
            raise FormatError(f"{source}: a line must be {{clipped_fraction, loss, step}} or {{clipped_fraction, "
                              "examples, loss, step}")
        return cls(step=_check_count(value["step"], "step"), loss=_parse_float(value["loss"], "loss"),
                   clipped_fraction=_parse_float(value["clipped_fraction"], "clipped_fraction"),
                   examples=_check_count(value["examples"], "examples") if "examples" in value else None)

    def commitment(self, stats_key: bytes) -> Digest:
        if self.examples is not None:
            return stats_commitment_v2(stats_key, step=self.step, loss=self.loss,
                                       clipped_fraction=self.clipped_fraction, examples=self.examples)
        return stats_commitment(stats_key, step=self.step, loss=self.loss, clipped_fraction=self.clipped_fraction)


def stats_commitment(stats_key: bytes, *, step: int, loss: float, clipped_fraction: float) -> Digest:
    """`H(b"prov.stats.v1\x00" || HMAC(stats_key, u64(step)) || canonical({clipped_fraction, loss}))`: hiding
    without the stats key (derived from the noise seed), binding to the exact values."""
    salt = hmac.new(stats_key, step.to_bytes(8, "big"), hashlib.sha256).digest()
    body = canonical.encode({"clipped_fraction": _float_text(clipped_fraction, "clipped_fraction"),
                             "loss": _float_text(loss, "loss")})
    return Digest.of(STATS_FORMAT.encode() + b"\x00" + salt + body)


def stats_commitment_v2(stats_key: bytes, *, step: int, loss: float, clipped_fraction: float,
                        examples: int) -> Digest:
    """`H(b"prov.stats.v2\x00" || HMAC(stats_key, u64(step)) || canonical({clipped_fraction, examples, loss}))`: the
    v1 commitment with the step's example count inside, for `prov.step.v3` records."""
    salt = hmac.new(stats_key, step.to_bytes(8, "big"), hashlib.sha256).digest()
    body = canonical.encode({"clipped_fraction": _float_text(clipped_fraction, "clipped_fraction"),
                             "examples": _check_count(examples, "examples"), "loss": _float_text(loss, "loss")})
    return Digest.of(STATS_FORMAT_V2.encode() + b"\x00" + salt + body)
