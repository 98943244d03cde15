"""Digest, canonical JSON, batch/step/manifest encodings. Golden files pin every persisted format's bytes:
a change of format must be deliberate (regenerate with `python -m tests.fixtures.golden`, and bump the
version in the format name)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import given, settings
from hypothesis import strategies as st

from provenance import canonical, merkle
from provenance.errors import FormatError, UsageError
from provenance.hashing import BLOCK_SIZE, Digest, hash_file, hash_stream
from provenance.manifest import (
    MANIFEST_NAME,
    CheckpointManifest,
    decode_run_manifest,
    hash_directory,
    run_manifest_digest,
)
from provenance.records import StepRecordV1 as StepRecord
from provenance.records import batch_digest_v1 as batch_digest
from tests.fixtures.golden import CASES, GOLDEN, batch_bytes, checkpoint_manifest, run_manifest, step_record


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_bytes(name: str) -> None:
    assert CASES[name]() == (GOLDEN / name).read_bytes(), f"format of {name} changed"


# --- Digest ---------------------------------------------------------------------------------------------

def test_digest_known_answer_and_text_form() -> None:
    # SHA-256("abc") from FIPS 180-2, appendix B.1.
    d = Digest.of(b"abc")
    assert str(d) == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert Digest.parse(str(d)) == d
    assert Digest.from_hex("0x" + d.hex) == d


@pytest.mark.parametrize("text", [
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",          # no algorithm
    "sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD",   # upper case
    "sha256:ba7816bf",                                                           # short
    "sha512:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",   # other algorithm
    "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad ",  # trailing space
    "",
])
def test_digest_parse_is_strict(text: str) -> None:
    with pytest.raises(FormatError):
        Digest.parse(text)


@pytest.mark.parametrize("size", [0, 1, BLOCK_SIZE - 1, BLOCK_SIZE, BLOCK_SIZE + 1, 2 * BLOCK_SIZE + 17])
def test_hash_file_matches_hashlib_at_block_boundaries(tmp_path, size: int) -> None:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    path = tmp_path / "f"
    path.write_bytes(data)
    seen: list[tuple[int, int]] = []
    assert hash_file(path, progress=lambda d, t: seen.append((d, t))).value == hashlib.sha256(data).digest()
    assert (seen[-1] == (size, size)) if size else not seen
    assert hash_stream(io.BytesIO(data), block_size=1000).value == hashlib.sha256(data).digest()


def test_hash_file_errors_are_one_line(tmp_path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        hash_file(tmp_path / "missing")
    with pytest.raises(UsageError, match="is a directory"):
        hash_file(tmp_path)


# --- canonical JSON -------------------------------------------------------------------------------------

def test_canonical_sorts_keys_and_rejects_floats() -> None:
    assert canonical.encode({"b": 1, "a": [True, None, "é"]}) == '{"a":[true,null,"é"],"b":1}'.encode()
    for bad in ({"x": 1.5}, {"x": float("nan")}, {1: 2}, {"x": b"bytes"}, {"x": 2**64}):
        with pytest.raises(FormatError):
            canonical.encode(bad)


def test_canonical_decode_rejects_bad_input() -> None:
    for bad in (b"{", b"\xff\xfe", b'{"a":1.5}', b'{"a":NaN}'):
        with pytest.raises(FormatError):
            canonical.decode(bad)
    with pytest.raises(FormatError, match="canonical"):
        canonical.decode(b'{"b":1, "a":2}', strict=True)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20,
)


@given(json_values)
def test_canonical_roundtrip(value: object) -> None:
    data = canonical.encode(value)
    assert canonical.encode(canonical.decode(data, strict=True)) == data


def nesting(value: object) -> int:
    """Reference depth: how many lists/objects enclose the deepest value (a scalar is 0)."""
    if isinstance(value, list):
        return 1 + max(map(nesting, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(nesting, value.values()), default=0)
    return 0


def nested(depth: int, leaf: object = 1) -> object:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


@pytest.mark.parametrize("depth", [canonical.MAX_DEPTH - 1, canonical.MAX_DEPTH])
def test_decode_accepts_nesting_up_to_the_limit(depth: int) -> None:
    data = canonical.encode(nested(depth))
    assert nesting(canonical.decode(data, strict=True)) == depth


@pytest.mark.parametrize("data", [
    b"[" * (canonical.MAX_DEPTH + 1) + b"]" * (canonical.MAX_DEPTH + 1),
    b"[" * 100_000,  # would be a RecursionError in json.loads, not even well formed
    b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
    b'["\\\\",' + b"[" * 70 + b"]" * 70 + b"]",  # an escaped backslash ends right before the closing quote
])
def test_decode_refuses_deep_nesting_before_parsing(data: bytes) -> None:
    with pytest.raises(FormatError) as info:
        canonical.decode(data, source="doc.json")
    assert str(info.value) == f"doc.json: JSON nested deeper than {canonical.MAX_DEPTH} levels"


def test_brackets_inside_strings_do_not_count() -> None:
    text = "[" * 500 + '\\"{' * 100
    assert canonical.decode(canonical.encode([text]), strict=True) == [text]


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.integers(0, 9) | st.text(alphabet='[]{}"\\ab', max_size=6),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text("[]{}\"\\", max_size=3),
                                                                                 inner, max_size=3),
                    max_leaves=150))
def test_depth_scan_agrees_with_the_parsed_depth(value: object) -> None:
    data = canonical.encode(value)
    if nesting(value) > canonical.MAX_DEPTH:
        with pytest.raises(FormatError, match="nested deeper"):
            canonical.decode(data)
    else:
        assert canonical.decode(data, strict=True) == value


def test_decode_bounds_size_integers_and_keys() -> None:
    with pytest.raises(FormatError, match="more than the 10-byte limit"):
        canonical.decode(b'{"a":"0123456789"}', source="m", max_size=10)
    for text in (b"9223372036854775808", b"-9223372036854775808", b"1" * 5_000):  # 5,000 digits: a ValueError once
        with pytest.raises(FormatError, match="out of range"):
            canonical.decode(text)
    assert canonical.decode(b"-9223372036854775807") == -(2**63 - 1)
    with pytest.raises(FormatError, match="'a' appears twice"):
        canonical.decode(b'{"a":1,"a":2}')
    with pytest.raises(FormatError, match="lone UTF-16 surrogate"):
        canonical.decode(b'["\\ud800"]', strict=True)


# --- batch and step records -----------------------------------------------------------------------------

def test_batch_encoding_is_valid_safetensors_with_metadata() -> None:
    data = batch_bytes()
    tensors = safetensors.numpy.load(data)
    assert tensors["input_ids"].tolist() == np.arange(12).reshape(3, 4).tolist()
    assert len(data) % 8 == 0  # header padded to 8 bytes, then 3 tensors of 96 bytes


def test_batch_digest_depends_on_every_part() -> None:
    ids = np.arange(8, dtype=np.int64).reshape(2, 4)
    base = batch_digest(step=1, indices=[1, 2], tensors={"input_ids": ids})
    assert batch_digest(step=2, indices=[1, 2], tensors={"input_ids": ids}) != base
    assert batch_digest(step=1, indices=[1, 3], tensors={"input_ids": ids}) != base
    assert batch_digest(step=1, indices=[1, 2], tensors={"input_ids": ids.astype(np.int32)}) != base
    assert batch_digest(step=1, indices=[1, 2], tensors={"input_ids": ids.reshape(4, 2)}) != base
    assert batch_digest(step=1, indices=[1, 2], tensors={"input_ids": np.asfortranarray(ids)}) == base


def test_step_record_roundtrip_and_leaf() -> None:
    rec = step_record()
    parsed = StepRecord.from_json(canonical.decode(rec.encode()))
    assert parsed == rec
    assert rec.leaf_hash() == merkle.hash_leaf((GOLDEN / "step.v1.json").read_bytes())


@pytest.mark.parametrize("mutate", [
    lambda d: d.pop("loss"),
    lambda d: d.update(extra=1),
    lambda d: d.update(step=-1),
    lambda d: d.update(lr="1e-3"),          # not repr form ("0.001")
    lambda d: d.update(batch="sha256:00"),
    lambda d: d.update(format="prov.step.v0"),
])
def test_step_record_rejects_malformed(mutate) -> None:
    value = step_record().to_json()
    mutate(value)
    with pytest.raises(FormatError):
        StepRecord.from_json(value)


# --- manifests ------------------------------------------------------------------------------------------

def test_checkpoint_digest_is_the_rfc6962_root_of_sorted_entries() -> None:
    manifest = checkpoint_manifest()
    expected = merkle.root_of_data(e.leaf() for e in manifest.files)
    assert manifest.digest().value == expected
    assert CheckpointManifest.decode((GOLDEN / "checkpoint.v1.json").read_bytes()).digest() == manifest.digest()


def test_hash_directory(tmp_path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.bin").write_bytes(b"z")
    (tmp_path / "a.json").write_bytes(b"{}")
    (tmp_path / MANIFEST_NAME).write_bytes(b"ignored")
    manifest = hash_directory(tmp_path)
    assert [f.path for f in manifest.files] == ["a.json", "b/z.bin"]
    before = manifest.digest()
    (tmp_path / "b" / "z.bin").write_bytes(b"Z")
    assert hash_directory(tmp_path).digest() != before
    (tmp_path / "link").symlink_to(tmp_path / "a.json")
    with pytest.raises(UsageError, match="regular files"):
        hash_directory(tmp_path)


@pytest.mark.parametrize("bad", [
    b'{"files":[{"digest":"sha256:00","path":"a","size":1}],"format":"prov.checkpoint.v1"}',
    b'{"files":[{"digest":"' + str(Digest.of(b"")).encode() + b'","path":"../x","size":1}],'
    b'"format":"prov.checkpoint.v1"}',
    b'{"files":[],"format":"prov.checkpoint.v2"}',
    b"not json",
])
def test_checkpoint_manifest_rejects_malformed(bad: bytes) -> None:
    with pytest.raises(FormatError):
        CheckpointManifest.decode(bad)


def test_run_manifest_digest_and_validation() -> None:
    doc = run_manifest()
    data = (GOLDEN / "run.v1.json").read_bytes()
    assert decode_run_manifest(data) == doc
    assert run_manifest_digest(doc) == Digest.of(data)
    doc2 = dict(doc)
    del doc2["dataset"]
    with pytest.raises(FormatError, match="dataset"):
        run_manifest_digest(doc2)


def test_atomic_write_modes(tmp_path) -> None:
    import stat

    from provenance.fsutil import atomic_write

    atomic_write(tmp_path / "public.json", b"{}")
    atomic_write(tmp_path / "secret.json", b"{}", mode=0o600)
    assert stat.S_IMODE((tmp_path / "public.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "secret.json").stat().st_mode) == 0o600
    assert not list(tmp_path.glob(".*.tmp"))


def test_read_document_names_the_file_and_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "doc.json"
    with pytest.raises(UsageError, match="nothing here"):
        canonical.read_document(path, "prov.x.v1", missing=UsageError("nothing here"))
    path.write_bytes(canonical.encode({"format": "prov.y.v1"}))
    with pytest.raises(FormatError, match=r"doc\.json: not a prov\.x\.v1 record$"):
        canonical.read_document(path, "prov.x.v1", missing=UsageError("-"), what="record")
    path.write_bytes(b'{"format": "prov.x.v1", ')
    with pytest.raises(FormatError, match=r"doc\.json: malformed JSON"):
        canonical.read_document(path, "prov.x.v1", missing=UsageError("-"))
    with pytest.raises(FormatError, match="cannot be read"):
        canonical.read_document(tmp_path, "prov.x.v1", missing=UsageError("-"))
    path.write_bytes(canonical.encode({"format": "prov.x.v1", "n": 1}))
    assert canonical.read_document(path, "prov.x.v1", missing=UsageError("-")) == {"format": "prov.x.v1", "n": 1}
