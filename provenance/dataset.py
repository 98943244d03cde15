"""Training data as the run commits to it: loading examples, the salted dataset root, and the manifest's summary.

No torch and no tokenizer: an auditor with only the verifier installed recomputes the dataset root from the data
and the dataset key. Examples are texts. A `.jsonl` file holds one JSON object per non-empty line with the text
under `text_field`; any other file is plain UTF-8 text with one example per non-empty line (whitespace stripped).

Dataset root (`prov.dataset.v1`, the one definition the trainer and the verifier call):

    canonical(example) = canonical JSON of {"text": <text>}
    salt_i             = HMAC-SHA256(dataset_key, b"example" || uint64_be(i))
    leaf_i             = SHA-256(0x00 || salt_i || canonical(example_i))
    root               = RFC 6962 root over leaf_0 .. leaf_{N-1}
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from provenance import canonical, merkle
from provenance.errors import FormatError, UsageError
from provenance.hashing import Digest

DATASET_FORMAT = "prov.dataset.v1"
EXAMPLE_LABEL = b"example"


def load_examples(path: str | os.PathLike[str], *, format: str = "auto", text_field: str = "text") -> list[str]:
    """Read the examples of a JSONL or plain-text file, in file order. Bad input is a one-line error."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{p}: dataset not found")
    if not p.is_file():
        raise UsageError(f"{p}: dataset must be a file (.jsonl or plain text)")
    kind = format
    if kind == "auto":
        kind = "jsonl" if p.suffix.lower() in (".jsonl", ".json") else "text"
    try:
        content = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"{p}: dataset is not UTF-8 text") from None
    examples: list[str] = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        if kind == "text":
            examples.append(line.strip())
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise FormatError(f"{p} line {number}: not valid JSON ({exc.msg})") from None
        except RecursionError:
            raise FormatError(f"{p} line {number}: JSON nested too deeply") from None
        if not isinstance(value, dict) or not isinstance(value.get(text_field), str):
            raise FormatError(f"{p} line {number}: expected an object with a string field {text_field!r}")
        examples.append(value[text_field])
    if not examples:
        raise UsageError(f"{p}: dataset holds no examples")
    return examples


def example_record(text: str) -> dict[str, Any]:
    """The record of one example that the dataset root commits to."""
    return {"text": text}


def example_salt(dataset_key: bytes, index: int) -> bytes:
    return hmac.new(dataset_key, EXAMPLE_LABEL + index.to_bytes(8, "big"), hashlib.sha256).digest()


def example_leaf(dataset_key: bytes, index: int, text: str) -> bytes:
    """The Merkle leaf hash of example `index`: `SHA-256(0x00 || salt_i || canonical({"text": text}))`."""
    return merkle.hash_leaf(example_salt(dataset_key, index) + canonical.encode(example_record(text)))


def dataset_leaves(examples: Sequence[str], dataset_key: bytes) -> list[bytes]:
    return [example_leaf(dataset_key, i, text) for i, text in enumerate(examples)]


def dataset_root(examples: Sequence[str], dataset_key: bytes) -> Digest:
    """The salted dataset root committed in the run manifest (`dataset.root`)."""
    return Digest(merkle.root(dataset_leaves(examples, dataset_key)))


def dataset_summary(examples: Sequence[str], dataset_key: bytes, *, path: Path, max_length: int,
                    text_field: str) -> dict[str, Any]:
    """The run manifest's `dataset` section."""
    return {
        "format": DATASET_FORMAT,
        "max_length": max_length,
        "name": path.name,
        "root": str(dataset_root(examples, dataset_key)),
        "size": len(examples),
        "text_field": text_field,
    }
