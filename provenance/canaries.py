"""Canaries for the optional one-run empirical DP audit (`prov train --canaries M`, `prov audit-dp`; issue #23).

Steinke, Nasr and Jagielski (2023), "Privacy auditing with one (1) training run": M random records are drawn, each
is put in the training data independently with probability 1/2, and after training an auditor guesses from the
model which ones were trained on. Under ε-DP the number of correct guesses cannot beat a Binomial with success
probability e^ε / (1 + e^ε) by much (`provenance.dpaudit`), so many correct guesses contradict a wrong ε claim.

Everything about a run's canaries is derived from one fresh 32-byte seed (`os.urandom`):

    stream_i   = SHAKE-256(b"prov.canaries.v1\\x00" || seed || uint64_be(i))
    text_i     = lowercase words (3..7 letters, single spaces) read from stream_i, until at least
                 `text_length(max_length)` characters: high entropy, and long enough to fill the example's tokens
    member_i   = low bit of HMAC-SHA256(seed, b"member" || uint64_be(i))
    record_i   = {"text": text_i} | {"prompt": CANARY_PROMPT, "completion": text_i}
                 | {"messages": [{"role": "user", "content": CANARY_QUESTION}, {"role": "assistant", ...text_i}]}

The run trains on the user's records followed by the member canaries, in canary order (`augment`). The private
file `RUN/canaries.json` (`prov.canaries.v1`, 0600) holds the seed and every canary with its membership bit; the run
manifest carries only `{"format", "count", "commitment"}`, the commitment being the SHA-256 of the document's
canonical encoding (safe to publish: the document holds a 256-bit seed and texts drawn from it). No torch here.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provenance import canonical
from provenance.dataset import KIND_FIELDS, KINDS, Record, Records
from provenance.errors import FormatError, UsageError
from provenance.fsutil import atomic_write
from provenance.hashing import Digest

CANARIES_FORMAT = "prov.canaries.v1"
CANARIES_NAME = "canaries.json"  # in the run directory, 0600: never published
DATA_NAME = "data.jsonl"  # the run's training data when it has canaries: the user's records, then the members
SEED_BYTES = 32
MAX_CANARIES = 1_000_000
CANARY_PROMPT = "canary:"
CANARY_QUESTION = "What is the canary?"
_STREAM_LABEL = b"prov.canaries.v1\x00"
_MEMBER_LABEL = b"member"
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_MAX_TEXT = 8192


def text_length(max_length: int) -> int:
    """Characters per canary text: about four per token of `max_length` (random letters tokenize into short
    pieces), at least 64 (≥ 256 bits of entropy at 4.7 bits a letter), at most 8192."""
    return max(64, min(_MAX_TEXT, 4 * max_length))


def canary_text(seed: bytes, index: int, *, length: int) -> str:
    """Canary `index`'s text: random lowercase words from the seed's stream (see the module docstring)."""
    stream = hashlib.shake_256(_STREAM_LABEL + seed + index.to_bytes(8, "big")).digest(4 * length + 64)
    words: list[str] = []
    size, pos = 0, 0
    while size <= length:  # the words and the spaces between them: at least `length` characters
        word_length, pos = 3 + stream[pos] % 5, pos + 1
        letters: list[str] = []
        while len(letters) < word_length:
            byte, pos = stream[pos], pos + 1
            if byte < 234:  # 234 = 9 * 26: no modulo bias
                letters.append(_LETTERS[byte % 26])
        words.append("".join(letters))
        size += word_length + 1
    return " ".join(words)


def is_member(seed: bytes, index: int) -> bool:
    return bool(hmac.new(seed, _MEMBER_LABEL + index.to_bytes(8, "big"), hashlib.sha256).digest()[-1] & 1)


def canary_record(kind: str, text: str) -> Record:
    """A canonical record of `kind` whose trained-on part is `text`."""
    if kind == "text":
        return {"text": text}
    if kind == "prompt_completion":
        return {"completion": text, "prompt": CANARY_PROMPT}
    if kind == "chat":
        return {"messages": [{"content": CANARY_QUESTION, "role": "user"}, {"content": text, "role": "assistant"}]}
    raise UsageError(f"unknown data kind {kind!r} (one of {', '.join(KINDS)})")


@dataclass(frozen=True)
class Canary:
    record: Record
    member: bool


@dataclass(frozen=True)
class CanarySet:
    """A run's canaries: the seed, and each canary's record and membership bit, in canary order."""

    seed: bytes
    kind: str
    max_length: int
    canaries: tuple[Canary, ...]

    @property
    def count(self) -> int:
        return len(self.canaries)

    def members(self) -> list[Record]:
        return [c.record for c in self.canaries if c.member]

    def to_json(self) -> dict[str, Any]:
        return {"canaries": [{"member": c.member, "record": c.record} for c in self.canaries],
                "count": self.count, "format": CANARIES_FORMAT, "kind": self.kind, "max_length": self.max_length,
                "seed": self.seed.hex()}

    def encode(self) -> bytes:
        return canonical.encode(self.to_json())

    def commitment(self) -> Digest:
        """SHA-256 of the canonical document: what the run manifest's `canaries.commitment` holds."""
        return Digest.of(self.encode())

    def manifest_section(self) -> dict[str, Any]:
        return {"commitment": str(self.commitment()), "count": self.count, "format": CANARIES_FORMAT}

    def save(self, path: Path) -> None:
        atomic_write(path, self.encode() + b"\n", mode=0o600)


def draw(count: int, *, kind: str, max_length: int, seed: bytes | None = None) -> CanarySet:
    """`count` canaries of `kind` from `seed` (default: a fresh one from os.urandom)."""
    if not 0 < count <= MAX_CANARIES:
        raise UsageError(f"--canaries: must be between 1 and {MAX_CANARIES}, got {count}")
    seed = os.urandom(SEED_BYTES) if seed is None else seed
    if len(seed) != SEED_BYTES:
        raise UsageError(f"canary seed must be {SEED_BYTES} bytes")
    length = text_length(max_length)
    canaries = tuple(Canary(canary_record(kind, canary_text(seed, i, length=length)), is_member(seed, i))
                     for i in range(count))
    return CanarySet(seed, kind, max_length, canaries)


def augment(records: Records, canaries: CanarySet) -> Records:
    """The run's training data: the user's records, then the member canaries."""
    if canaries.kind != records.kind:
        raise UsageError(f"canaries of kind {canaries.kind} for a {records.kind} dataset")
    return Records(records.kind, (*records.items, *canaries.members()), records.fields)


def write_jsonl(path: Path, records: Records) -> None:
    """`records` as JSONL under the dataset's own field names, so the run manifest's `dataset.fields` read it."""
    names = records.fields.of(records.kind)
    lines = [canonical.encode({names[k]: v for k, v in record.items()}) + b"\n" for record in records]
    atomic_write(path, b"".join(lines), mode=0o600)


def load(path: Path) -> CanarySet:
    """Read a `prov.canaries.v1` document and check it is what its seed derives (one-line errors)."""
    doc = canonical.read_document(path, CANARIES_FORMAT, missing=UsageError(
        f"{path}: no canaries file (was the run trained with --canaries?)"), what="canaries file")
    try:
        seed = bytes.fromhex(doc["seed"])
        kind, max_length, items = doc["kind"], doc["max_length"], doc["canaries"]
        if kind not in KIND_FIELDS or not canonical.is_count(max_length, 2) or not isinstance(items, list):
            raise ValueError
        found = CanarySet(seed, kind, max_length, tuple(Canary(i["record"], i["member"]) for i in items))
    except (KeyError, TypeError, ValueError):
        raise FormatError(f"{path}: malformed {CANARIES_FORMAT} document") from None
    if doc.get("count") != found.count or found.count == 0 or \
            draw(found.count, kind=kind, max_length=max_length, seed=seed) != found:
        raise FormatError(f"{path}: the canaries are not those their seed derives (altered file)")
    return found


def check_section(section: Any, *, source: str = "run manifest") -> dict[str, Any]:
    """Validate a run manifest's optional `canaries` section (present only in runs trained with canaries)."""
    if not isinstance(section, Mapping) or set(section) != {"commitment", "count", "format"} \
            or section["format"] != CANARIES_FORMAT or not canonical.is_count(section["count"], 1) \
            or not isinstance(section["commitment"], str):
        raise FormatError(f"{source}: `canaries` must be {{format: {CANARIES_FORMAT}, count >= 1, commitment}}")
    Digest.parse(section["commitment"])
    return dict(section)


def check_commitment(canaries: CanarySet, manifest: Mapping[str, Any], *, source: str) -> None:
    """The canaries file must be the one the run manifest committed to."""
    section = manifest.get("canaries")
    if section is None:
        raise UsageError(f"{source}: this run was trained without canaries (prov train --canaries M)")
    section = check_section(section)
    if str(canaries.commitment()) != section["commitment"] or canaries.count != section["count"]:
        raise FormatError(f"{source}: canaries file does not match the run manifest's commitment "
                          f"(expected {section['commitment']}, found {canaries.commitment()})")
