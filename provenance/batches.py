"""Batches exactly as fed to the model, and the salted batch commitment (`prov.batch.v2`) of each step.

Tokenization: each example is tokenized once with the base model's tokenizer (any object with the Hugging Face
tokenizer call interface; nothing is imported here), truncated and right-padded to `max_length`. A batch is three
int64 arrays of shape (n, max_length): `input_ids`, `attention_mask`, and `labels` (= input_ids, with -100 where
attention_mask is 0). An empty Poisson batch has shape (0, max_length). The verifier rebuilds batches with the same
code the trainer used, so batch commitments of every step can be checked without training.

Commitment (docs/formats.md, "Batch commitment"): per-example salted leaves (salt = HMAC(batch key, u64(step) ||
u64(index)), batch key derived from the dataset key), one RFC 6962 root per rank shard, and a root over the rank
leaves. Hiding without the dataset key; one example's presence in a step can be proven by opening only its leaf
(`example_opening` / `check_example_opening`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from provenance import canonical, merkle
from provenance.errors import FormatError, UsageError
from provenance.hashing import Digest
from provenance.records import encode_safetensors

BATCH_FORMAT = "prov.batch.v2"
EXAMPLE_FORMAT = "prov.batch-example.v2"
IGNORE_INDEX = -100
TENSOR_NAMES = ("attention_mask", "input_ids", "labels")

Batch = dict[str, np.ndarray]


@dataclass(frozen=True)
class TokenizedDataset:
    """Every example tokenized once: int64 arrays of shape (N, max_length); `labels` default to the input ids
    where the attention mask is 1 (-100 elsewhere)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    max_length: int
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def batch(self, indices: Sequence[int]) -> Batch:
        """The tensors fed for these dataset indices (shape (0, max_length) when empty)."""
        idx = np.asarray(list(indices), dtype=np.int64)
        input_ids = np.ascontiguousarray(self.input_ids[idx])
        attention_mask = np.ascontiguousarray(self.attention_mask[idx])
        if self.labels is not None:
            labels = np.ascontiguousarray(self.labels[idx])
        else:
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


# --- the commitment -------------------------------------------------------------------------------------------


def shard_bounds(count: int, world_size: int) -> list[tuple[int, int]]:
    """Positions `[start, end)` of each rank's shard of a sorted logical batch of `count` examples."""
    if world_size < 1:
        raise UsageError(f"world size must be >= 1, got {world_size}")
    return [(r * count // world_size, (r + 1) * count // world_size) for r in range(world_size)]


def example_bytes(*, step: int, index: int, row: Mapping[str, np.ndarray]) -> bytes:
    """The canonical bytes of one example as fed at `step`: its three int64 rows of shape (1, max_length)."""
    entries: dict[str, tuple[str, Sequence[int], bytes]] = {}
    for name in TENSOR_NAMES:
        array = np.ascontiguousarray(np.asarray(row[name]).reshape(1, -1), dtype="<i8")
        entries[name] = ("I64", array.shape, array.tobytes())
    return encode_safetensors(entries, {"format": EXAMPLE_FORMAT, "index": str(int(index)), "step": str(int(step))})


def example_salt(batch_key: bytes, *, step: int, index: int) -> bytes:
    return hmac.new(batch_key, step.to_bytes(8, "big") + index.to_bytes(8, "big"), hashlib.sha256).digest()


def example_leaf(batch_key: bytes, *, step: int, index: int, row: Mapping[str, np.ndarray]) -> bytes:
    """`leaf(salt || example bytes)`: the leaf of example `index` in step `step`'s batch."""
    return merkle.hash_leaf(example_salt(batch_key, step=step, index=index)
                            + example_bytes(step=step, index=index, row=row))


def rank_leaf(*, rank: int, examples: int, root: bytes) -> bytes:
    return merkle.hash_leaf(canonical.encode({"examples": examples, "rank": rank, "root": root.hex()}))


def batch_digest_of_rank_leaves(*, step: int, rank_leaves: Sequence[bytes]) -> Digest:
    return Digest.of(canonical.encode({"format": BATCH_FORMAT, "ranks": len(rank_leaves),
                                       "root": merkle.root(list(rank_leaves)).hex(), "step": step}))


@dataclass(frozen=True)
class BatchCommitment:
    """A step's batch commitment with the intermediate values a proof needs."""

    step: int
    indices: tuple[int, ...]
    example_leaves: tuple[bytes, ...]  # in batch order
    rank_roots: tuple[bytes, ...]
    rank_leaves: tuple[bytes, ...]
    digest: Digest


def _rows(tensors: Mapping[str, np.ndarray], position: int) -> dict[str, np.ndarray]:
    return {name: np.asarray(tensors[name])[position] for name in TENSOR_NAMES}


def commit_batch(batch_key: bytes, *, step: int, indices: Sequence[int], tensors: Mapping[str, np.ndarray],
                 world_size: int = 1) -> BatchCommitment:
    """The `prov.batch.v2` commitment of step `step`'s logical batch (`indices` sorted, `tensors` row-aligned)."""
    order = [int(i) for i in indices]
    if order != sorted(order) or len(set(order)) != len(order):
        raise FormatError(f"step {step}: batch indices must be sorted and distinct")
    for name in TENSOR_NAMES:
        if name not in tensors or np.asarray(tensors[name]).shape[0] != len(order):
            raise FormatError(f"step {step}: batch tensor {name!r} missing or not one row per example")
    leaves = [example_leaf(batch_key, step=step, index=i, row=_rows(tensors, p)) for p, i in enumerate(order)]
    roots, rank_leaves = [], []
    for rank, (start, end) in enumerate(shard_bounds(len(order), world_size)):
        root = merkle.root(leaves[start:end])
        roots.append(root)
        rank_leaves.append(rank_leaf(rank=rank, examples=end - start, root=root))
    digest = batch_digest_of_rank_leaves(step=step, rank_leaves=rank_leaves)
    return BatchCommitment(step, tuple(order), tuple(leaves), tuple(roots), tuple(rank_leaves), digest)


def batch_digest(batch_key: bytes, *, step: int, indices: Sequence[int], tensors: Mapping[str, np.ndarray],
                 world_size: int = 1) -> Digest:
    """The digest a `prov.step.v2` record's `batch` field holds."""
    return commit_batch(batch_key, step=step, indices=indices, tensors=tensors, world_size=world_size).digest
