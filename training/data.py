"""Training data: loading examples, the salted dataset root, tokenization, and batches exactly as fed.

Examples are texts. A `.jsonl` file holds one JSON object per non-empty line with the text under `text_field`;
any other file is plain UTF-8 text with one example per non-empty line (surrounding whitespace stripped).

Dataset root (`prov.dataset.v1`, the one definition the verifier calls):

    canonical(example) = canonical JSON of {"text": <text>}
    salt_i             = HMAC-SHA256(dataset_key, b"example" || uint64_be(i))
    leaf_i             = SHA-256(0x00 || salt_i || canonical(example_i))
    root               = RFC 6962 root over leaf_0 .. leaf_{N-1}

Batches: each example is tokenized once with the model's tokenizer (special tokens added as the tokenizer does),
truncated and right-padded to `max_length`. A batch is three int64 arrays of shape (n, max_length):
`input_ids`, `attention_mask`, and `labels` (= input_ids, with -100 where attention_mask is 0). An empty Poisson
batch has shape (0, max_length). These are the arrays hashed into the batch digest.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from provenance import canonical, merkle
from provenance.errors import FormatError, UsageError
from provenance.hashing import Digest

DATASET_FORMAT = "prov.dataset.v1"
EXAMPLE_LABEL = b"example"
DEMO_DATA = Path(__file__).parent / "data" / "demo.jsonl"
IGNORE_INDEX = -100
TENSOR_NAMES = ("attention_mask", "input_ids", "labels")

Batch = dict[str, np.ndarray]


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


@dataclass(frozen=True)
class TokenizedDataset:
    """Every example tokenized once: int64 arrays of shape (N, max_length)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    max_length: int

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def batch(self, indices: Sequence[int]) -> Batch:
        """The tensors fed for these dataset indices (shape (0, max_length) when empty)."""
        idx = np.asarray(list(indices), dtype=np.int64)
        input_ids = np.ascontiguousarray(self.input_ids[idx])
        attention_mask = np.ascontiguousarray(self.attention_mask[idx])
        labels = np.where(attention_mask == 1, input_ids, IGNORE_INDEX).astype(np.int64)
        return {"attention_mask": attention_mask, "input_ids": input_ids, "labels": labels}


def tokenize(examples: Sequence[str], tokenizer: Any, *, max_length: int) -> TokenizedDataset:
    """Tokenize with the model's tokenizer: truncate and right-pad to `max_length` (pad = eos if unset)."""
    if getattr(tokenizer, "pad_token_id", None) is None:
        if getattr(tokenizer, "eos_token", None) is None:
            raise UsageError("the tokenizer has neither a pad nor an eos token; cannot pad batches")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    encoded = tokenizer(
        list(examples), truncation=True, max_length=max_length, padding="max_length", return_tensors="np"
    )
    input_ids = np.ascontiguousarray(encoded["input_ids"], dtype=np.int64)
    attention_mask = np.ascontiguousarray(encoded["attention_mask"], dtype=np.int64)
    if input_ids.shape != (len(examples), max_length):
        raise FormatError(f"tokenizer returned shape {input_ids.shape}, expected {(len(examples), max_length)}")
    return TokenizedDataset(input_ids, attention_mask, max_length)


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
