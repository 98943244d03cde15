"""The v2 commitments of a step: salted batch commitment (`prov.batch.v2`), statistics commitment
(`prov.stats.v1`) and step record (`prov.step.v2`), cross-checked against a naive reference written from
docs/formats.md, and mutated inputs that must change them."""

from __future__ import annotations

import hashlib
import hmac
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provenance import batches, canonical, merkle
from provenance.errors import FormatError
from provenance.hashing import Digest
from provenance.records import (
    STEP_FORMAT_V1,
    StepRecord,
    StepRecordV1,
    StepStats,
    stats_commitment,
    step_record_from_json,
)
from provenance.secrets import Secrets
from tests.fixtures.golden import BATCH_KEY, STATS_KEY, batch_tensors


def naive_batch_digest(key: bytes, step: int, indices: list[int], tensors: dict[str, np.ndarray], world: int) -> str:
    """docs/formats.md, written out one value at a time."""
    leaves = []
    for position, index in enumerate(indices):
        header = {"__metadata__": {"format": "prov.batch-example.v2", "index": str(index), "step": str(step)}}
        offset, data = 0, b""
        for name in sorted(tensors):
            row = tensors[name][position].astype("<i8").tobytes()
            header[name] = {"data_offsets": [offset, offset + len(row)], "dtype": "I64",
                            "shape": [1, tensors[name].shape[1]]}
            offset += len(row)
            data += row
        head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        head += b" " * (-len(head) % 8)
        example = len(head).to_bytes(8, "little") + head + data
        salt = hmac.new(key, step.to_bytes(8, "big") + index.to_bytes(8, "big"), hashlib.sha256).digest()
        leaves.append(hashlib.sha256(b"\x00" + salt + example).digest())
    rank_leaves = []
    n = len(indices)
    for r in range(world):
        shard = leaves[r * n // world:(r + 1) * n // world]
        doc = {"examples": len(shard), "rank": r, "root": merkle.root(shard).hex()}
        rank_leaves.append(hashlib.sha256(b"\x00" + json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())
                           .digest())
    top = {"format": "prov.batch.v2", "ranks": world, "root": merkle.root(rank_leaves).hex(), "step": step}
    return "sha256:" + hashlib.sha256(json.dumps(top, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 9), world=st.integers(1, 4), step=st.integers(0, 2**40), seed=st.integers(0, 2**32 - 1))
def test_batch_commitment_matches_the_naive_reference(n: int, world: int, step: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    indices = sorted(rng.choice(1000, size=n, replace=False).tolist())
    ids = rng.integers(0, 50_000, size=(n, 6), dtype=np.int64)
    mask = (rng.random((n, 6)) < 0.8).astype(np.int64)
    tensors = {"input_ids": ids, "attention_mask": mask, "labels": np.where(mask == 1, ids, -100)}
    found = batches.batch_digest(BATCH_KEY, step=step, indices=indices, tensors=tensors, world_size=world)
    assert str(found) == naive_batch_digest(BATCH_KEY, step, indices, tensors, world)


def test_batch_commitment_binds_every_part_and_hides_without_the_key() -> None:
    t = batch_tensors()
    base = batches.batch_digest(BATCH_KEY, step=7, indices=[3, 11, 42], tensors=t)
    other_key = batches.batch_digest(bytes(32), step=7, indices=[3, 11, 42], tensors=t)
    assert other_key != base  # salted: without the key a guess cannot be checked
    assert batches.batch_digest(BATCH_KEY, step=8, indices=[3, 11, 42], tensors=t) != base
    assert batches.batch_digest(BATCH_KEY, step=7, indices=[3, 11, 43], tensors=t) != base
    assert batches.batch_digest(BATCH_KEY, step=7, indices=[3, 11, 42], tensors=t, world_size=2) != base
    for name in batches.TENSOR_NAMES:
        changed = {k: v.copy() for k, v in t.items()}
        changed[name][2, 1] += 1
        assert batches.batch_digest(BATCH_KEY, step=7, indices=[3, 11, 42], tensors=changed) != base, name


def test_unsorted_or_misaligned_batches_are_refused() -> None:
    t = batch_tensors()
    with pytest.raises(FormatError, match="sorted"):
        batches.batch_digest(BATCH_KEY, step=7, indices=[11, 3, 42], tensors=t)
    with pytest.raises(FormatError, match="one row per example"):
        batches.batch_digest(BATCH_KEY, step=7, indices=[3, 11], tensors=t)


def test_empty_batches_differ_by_step() -> None:
    z = np.zeros((0, 4), dtype=np.int64)
    empty = {"input_ids": z, "attention_mask": z, "labels": z}
    a = batches.batch_digest(BATCH_KEY, step=1, indices=[], tensors=empty)
    b = batches.batch_digest(BATCH_KEY, step=2, indices=[], tensors=empty)
    assert a != b


def test_stats_commitment_hides_and_binds() -> None:
    base = stats_commitment(STATS_KEY, step=3, loss=2.5, clipped_fraction=0.25)
    assert stats_commitment(STATS_KEY, step=3, loss=2.5, clipped_fraction=0.25) == base
    assert stats_commitment(bytes(32), step=3, loss=2.5, clipped_fraction=0.25) != base
    assert stats_commitment(STATS_KEY, step=4, loss=2.5, clipped_fraction=0.25) != base
    assert stats_commitment(STATS_KEY, step=3, loss=2.5000000000000004, clipped_fraction=0.25) != base
    assert stats_commitment(STATS_KEY, step=3, loss=2.5, clipped_fraction=0.5) != base
    salt = hmac.new(STATS_KEY, (3).to_bytes(8, "big"), hashlib.sha256).digest()
    body = b'{"clipped_fraction":"0.25","loss":"2.5"}'
    assert base == Digest.of(b"prov.stats.v1\x00" + salt + body)
    assert StepStats(3, 2.5, 0.25).commitment(STATS_KEY) == base
    assert StepStats.from_json(canonical.decode(canonical.encode(StepStats(3, 2.5, 0.25).to_json()))) == \
        StepStats(3, 2.5, 0.25)


def test_step_records_of_both_formats_parse_and_v2_publishes_no_statistics() -> None:
    v2 = StepRecord(step=1, batch=Digest.of(b"b"), examples=2, lr=0.001, noise_index=1, stats=Digest.of(b"s"))
    assert step_record_from_json(canonical.decode(v2.encode())) == v2
    assert "loss" not in v2.to_json() and "clipped_fraction" not in v2.to_json()
    v1 = StepRecordV1(step=1, batch=Digest.of(b"b"), examples=2, lr=0.001, loss=2.0, clipped_fraction=0.5,
                      noise_index=1)
    assert step_record_from_json(canonical.decode(v1.encode())) == v1
    assert v1.to_json()["format"] == STEP_FORMAT_V1 and v1.leaf_hash() != v2.leaf_hash()
    bad = dict(v2.to_json(), loss="2.0")
    with pytest.raises(FormatError, match="unexpected"):
        step_record_from_json(bad)
    with pytest.raises(FormatError, match="format"):
        step_record_from_json(dict(v2.to_json(), format="prov.step.v9"))


def test_secret_derivations_are_independent_and_keyed() -> None:
    s = Secrets(bytes(range(32)), bytes(range(32, 64)))
    assert len(s.noise_key(0)) == 16 and s.noise_key(0) != s.noise_key(1)
    assert s.stats_key() != s.batch_key()
    assert Secrets(bytes(32), s.dataset_key).stats_key() != s.stats_key()
    assert Secrets(s.noise_seed, bytes(32)).batch_key() != s.batch_key()
    assert Secrets(bytes(32), s.dataset_key).batch_key() == s.batch_key()  # the batch key needs only the data key
