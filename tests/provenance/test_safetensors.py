"""The torch-free safetensors reader (every rule of the header) and the tensor digest `prov.tensors.v1`."""

from __future__ import annotations

import json
import re
import struct
import tracemalloc
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from provenance import records, safetensors
from provenance.errors import FormatError, UsageError
from provenance.hashing import Digest, hash_file

Entries = Mapping[str, tuple[str, Sequence[int], bytes]]
ENTRIES: Entries = {"b.weight": ("F32", [2], bytes(range(8))), "a.bias": ("I8", [3], b"\x01\x02\x03"),
                    "c": ("BF16", [0, 5], b"")}

# The known answer, written out by hand from the definition: the canonical header of ENTRIES (names sorted,
# offsets in that order, metadata {"format": "prov.tensors.v1"}, padded with spaces to 224 = 28 × 8 bytes)
# after its 8-byte length, then the tensors' bytes in name order. Its SHA-256 is the tensor digest.
KAT_HEADER = (b'{"__metadata__":{"format":"prov.tensors.v1"},"a.bias":{"data_offsets":[0,3],"dtype":"I8",'
              b'"shape":[3]},"b.weight":{"data_offsets":[3,11],"dtype":"F32","shape":[2]},"c":{"data_offsets":'
              b'[11,11],"dtype":"BF16","shape":[0,5]}}   ')
KAT_BYTES = struct.pack("<Q", 224) + KAT_HEADER + b"\x01\x02\x03" + bytes(range(8))
KAT_DIGEST = "sha256:772148e3c3f37e1f66b3ce7c656c4e10de2a61463ab1940acb11d2e0794c9c7d"


def write_raw(path: Path, header: dict[str, Any] | bytes, data: bytes) -> Path:
    """A safetensors file with exactly this header (a dict is dumped as given: any order, any spacing)."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def laid_out(entries: Entries, *, order: Sequence[str], metadata: dict[str, str] | None = None,
             indent: int | None = None, pad: int = 0) -> tuple[bytes, bytes]:
    """Header and data of `entries` with the tensors stored in `order` (another layout, same tensors)."""
    header: dict[str, Any] = {} if metadata is None else {"__metadata__": metadata}
    data = b""
    for name in order:
        dtype, shape, payload = entries[name]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [len(data), len(data) + len(payload)]}
        data += payload
    return json.dumps(header, indent=indent).encode() + b" " * pad, data


def reference_digest(entries: Entries) -> Digest:
    return Digest.of(records.encode_safetensors(entries, {"format": safetensors.TENSORS_FORMAT}))


# -- the tensor digest -----------------------------------------------------------------------------------


def test_known_answer(tmp_path: Path) -> None:
    assert str(Digest.of(KAT_BYTES)) == KAT_DIGEST
    assert records.encode_safetensors(ENTRIES, {"format": "prov.tensors.v1"}) == KAT_BYTES
    path = write_raw(tmp_path / "x.safetensors", *laid_out(ENTRIES, order=["c", "b.weight", "a.bias"]))
    assert str(safetensors.tensor_digest(path)) == KAT_DIGEST


def test_metadata_order_and_whitespace_do_not_change_it(tmp_path: Path) -> None:
    variants = [
        laid_out(ENTRIES, order=["a.bias", "b.weight", "c"]),
        laid_out(ENTRIES, order=["b.weight", "c", "a.bias"], metadata={"prov.run_id": "ab", "format": "pt"}),
        laid_out(ENTRIES, order=["c", "a.bias", "b.weight"], metadata={}, indent=3, pad=13),
    ]
    paths = [write_raw(tmp_path / f"{i}.safetensors", *v) for i, v in enumerate(variants)]
    paths.append(tmp_path / "canonical.safetensors")
    paths[-1].write_bytes(records.encode_safetensors(ENTRIES, {"anything": "else"}))
    assert {str(safetensors.tensor_digest(p)) for p in paths} == {KAT_DIGEST}
    assert len({hash_file(p) for p in paths}) == len(paths)  # the files themselves all differ


@pytest.mark.parametrize("change", ["byte", "dtype", "shape", "name"])
def test_any_change_to_the_tensors_changes_it(tmp_path: Path, change: str) -> None:
    entries = dict(ENTRIES)
    if change == "byte":
        entries["b.weight"] = ("F32", [2], bytes(range(7)) + b"\x08")
    elif change == "dtype":
        entries["b.weight"] = ("I32", [2], bytes(range(8)))
    elif change == "shape":
        entries["b.weight"] = ("F32", [1, 2], bytes(range(8)))
    else:
        entries["b.weights"] = entries.pop("b.weight")
    path = tmp_path / "x.safetensors"
    path.write_bytes(records.encode_safetensors(entries, {}))
    assert str(safetensors.tensor_digest(path)) != KAT_DIGEST
    assert safetensors.tensor_digest(path) == reference_digest(entries)


DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "U8": np.uint8, "I8": np.int8, "F64": np.float64,
          "I32": np.int32, "BOOL": np.bool_}
tensor_sets = st.dictionaries(
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12).filter(
        lambda n: n != "__metadata__"),
    st.tuples(st.sampled_from(sorted(DTYPES)), st.lists(st.integers(0, 4), max_size=3), st.randoms()),
    max_size=6,
)


def materialise(spec: dict[str, tuple[str, list[int], Any]]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, (dtype, shape, rng) in spec.items():
        count = int(np.prod(shape, dtype=np.int64))
        out[name] = np.frombuffer(rng.randbytes(count * np.dtype(DTYPES[dtype]).itemsize),
                                  dtype=DTYPES[dtype]).reshape(shape)
    return out


def entries_of(arrays: dict[str, np.ndarray]) -> Entries:
    code = {np.dtype(v): k for k, v in DTYPES.items()}
    return {name: (code[a.dtype], a.shape, a.tobytes()) for name, a in arrays.items()}


@settings(max_examples=40, deadline=None)
@given(spec=tensor_sets, metadata=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3))
def test_streamed_digest_equals_the_canonical_encoding(tmp_path_factory: pytest.TempPathFactory,
                                                       spec: dict[str, Any], metadata: dict[str, str]) -> None:
    entries = entries_of(materialise(spec))
    path = tmp_path_factory.mktemp("st") / "x.safetensors"
    path.write_bytes(records.encode_safetensors(entries, metadata))
    assert safetensors.tensor_digest(path) == reference_digest(entries)


@settings(max_examples=25, deadline=None)
@given(spec=tensor_sets.filter(bool))
def test_files_written_by_the_safetensors_library(tmp_path_factory: pytest.TempPathFactory,
                                                  spec: dict[str, Any]) -> None:
    arrays = materialise(spec)
    path = tmp_path_factory.mktemp("st") / "lib.safetensors"
    save_file(arrays, str(path), metadata={"format": "np"})
    header = safetensors.read_header(path)
    assert [t.name for t in header.tensors] == sorted(arrays) and header.metadata == {"format": "np"}
    assert safetensors.tensor_digest(path) == reference_digest(entries_of(arrays))


def test_shards_together_equal_one_file(tmp_path: Path) -> None:
    one = tmp_path / "one.safetensors"
    one.write_bytes(records.encode_safetensors(ENTRIES, {}))
    first = tmp_path / "model-00001.safetensors"
    second = tmp_path / "model-00002.safetensors"
    first.write_bytes(records.encode_safetensors({"c": ENTRIES["c"], "a.bias": ENTRIES["a.bias"]}, {"n": "1"}))
    second.write_bytes(records.encode_safetensors({"b.weight": ENTRIES["b.weight"]}, {"n": "2"}))
    assert str(safetensors.tensor_digest_of_files([second, first])) == KAT_DIGEST == str(
        safetensors.tensor_digest(one))
    with pytest.raises(FormatError, match=r"'a\.bias' is in both"):
        safetensors.tensor_digest_of_files([first, one])
    with pytest.raises(UsageError, match="at least one"):
        safetensors.tensor_digest_of_files([])


def test_streaming_keeps_memory_small(tmp_path: Path) -> None:
    size = 40 << 20
    path = tmp_path / "big.safetensors"
    path.write_bytes(records.encode_safetensors({"w": ("U8", [size], b"\x07" * size)}, {}))
    tracemalloc.start()
    try:
        digest = safetensors.tensor_digest(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 12 << 20  # one 8 MiB read buffer, not the 40 MiB file
    assert digest == reference_digest({"w": ("U8", [size], b"\x07" * size)})


# -- header validation -----------------------------------------------------------------------------------


def entry(dtype: str = "F32", shape: Any = None, offsets: Any = None, **extra: Any) -> dict[str, Any]:
    return {"dtype": dtype, "shape": [2] if shape is None else shape,
            "data_offsets": [0, 8] if offsets is None else offsets, **extra}


@pytest.mark.parametrize(("header", "data", "reason"), [
    ({"w": entry(dtype="F33")}, 8, "unknown dtype 'F33'"),
    ({"w": entry(shape=[-2])}, 8, "not a list of non-negative integers"),
    ({"w": entry(shape=[True, 2])}, 8, "not a list of non-negative integers"),
    ({"w": entry(shape=[2**62, 2**62])}, 8, "more elements than the file has bits"),
    ({"w": entry(offsets=[0, 4])}, 8, "needs 8 bytes, data_offsets give 4"),
    ({"w": entry(offsets=[8, 0])}, 8, "run backwards"),
    ({"w": entry(offsets=[0, "8"])}, 8, "no valid data_offsets"),
    ({"w": entry(extra=1)}, 8, "exactly dtype, shape and data_offsets"),
    ({"w": entry(dtype="F4", shape=[3], offsets=[0, 1])}, 1, "not a whole number of bytes"),
    ({"w": entry(), "v": entry(offsets=[4, 12])}, 12, "overlaps the previous tensor"),
    ({"w": entry(), "v": entry(offsets=[9, 17])}, 17, "leaves a gap at byte 8"),
    ({"w": entry()}, 9, "1 bytes after its last tensor"),
    ({"w": entry()}, 7, "truncated"),
    ({"__metadata__": {"a": 1}, "w": entry()}, 8, "__metadata__ must map strings to strings"),
    ({"__metadata__": ["a"], "w": entry()}, 8, "__metadata__ must map strings to strings"),
    (b'{"w":' * 100 + b"1" + b"}" * 100, 0, "nested deeper than 64"),
    (b'{"w":1,"w":2}', 0, "appears twice"),
    (b' {"w":{}}', 0, "does not start with '{'"),
    (b'{"w":{}', 0, "malformed JSON"),
])
def test_invalid_headers_are_one_line_errors(tmp_path: Path, header: Any, data: int, reason: str) -> None:
    path = write_raw(tmp_path / "bad.safetensors", header, b"\x00" * data)
    with pytest.raises(FormatError) as info:
        safetensors.read_header(path)
    message = str(info.value)
    assert reason in message and str(path) in message and "\n" not in message


def test_every_dtype_of_the_specification(tmp_path: Path) -> None:
    header: dict[str, Any] = {}
    offset = 0
    for name, bits in sorted(safetensors.DTYPE_BITS.items()):
        size = 8 * bits // 8  # 8 elements: a whole number of bytes for the 4- and 6-bit types too
        header[name] = entry(dtype=name, shape=[8], offsets=[offset, offset + size])
        offset += size
    parsed = safetensors.read_header(write_raw(tmp_path / "all.safetensors", header, b"\x00" * offset))
    assert {t.dtype: t.nbytes for t in parsed.tensors}["F6_E2M3"] == 6 and len(parsed.tensors) == 22


def test_a_header_of_128_bytes_is_not_mistaken_for_a_pickle(tmp_path: Path) -> None:
    # The length's first byte is then 0x80, a pickle's first byte: the old check refused such a valid file.
    body = json.dumps({"w": entry()}).encode()
    body += b" " * (128 - len(body))
    path = write_raw(tmp_path / "x.safetensors", body, b"\x00" * 8)
    assert path.read_bytes()[:1] == b"\x80"
    assert safetensors.read_header(path).tensors[0].name == "w"


@pytest.mark.parametrize(("content", "reason"), [
    (b"\x80\x04\x95pickle", "a pickle / PyTorch .bin file"),
    (b"PK\x03\x04zip-of-pickles", "a pickle / PyTorch .bin file"),
    (b"abc", "too short"),
    (b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":", "or truncated (header of 16 bytes in a 13-byte file)"),
])
def test_non_safetensors_files(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "adapter.bin"
    path.write_bytes(content)
    with pytest.raises(FormatError, match=re.escape(reason)):
        safetensors.read_safetensors_metadata(path)
    with pytest.raises(UsageError, match="no such file"):
        safetensors.read_header(tmp_path / "missing")
