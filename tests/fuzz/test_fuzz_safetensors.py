"""Fuzz: safetensors headers and files. Random bytes; valid headers with one field mutated (dtype, shape,
offsets, metadata); huge declared header lengths; deep nesting; and the tensor digest of whatever parses."""

from __future__ import annotations

import io
import itertools
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provenance import safetensors
from provenance.safetensors import Header
from tests.fixtures.store import FUZZ, FUZZ_SLOW, value_or_one_line_error

_SERIAL = itertools.count()
json_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=6)
                | st.floats(allow_nan=False, allow_infinity=False))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=8)


@st.composite
def valid_header(draw: st.DrawFn) -> tuple[dict[str, Any], int]:
    header: dict[str, Any] = {}
    offset = 0
    for name in draw(st.lists(st.text(min_size=1, max_size=5), max_size=4, unique=True)):
        if name == "__metadata__":
            continue
        dtype = draw(st.sampled_from(sorted(safetensors.DTYPE_BITS)))
        shape = draw(st.lists(st.integers(0, 4), max_size=3))
        count = 1
        for dim in shape:
            count *= dim
        size = count * safetensors.DTYPE_BITS[dtype] // 8
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    if draw(st.booleans()):
        header["__metadata__"] = draw(st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=3))
    return header, offset


@st.composite
def mutated_file(draw: st.DrawFn) -> bytes:
    header, size = draw(valid_header())
    names = [n for n in header if n != "__metadata__"]
    how = draw(st.sampled_from(["field", "entry", "metadata", "length", "deep", "data", "none"]))
    if how == "field" and names:
        entry = header[draw(st.sampled_from(names))]
        entry[draw(st.sampled_from(["dtype", "shape", "data_offsets"]))] = draw(json_values)
    elif how == "entry" and names:
        header[draw(st.sampled_from(names))] = draw(json_values)
    elif how == "metadata":
        header["__metadata__"] = draw(json_values)
    elif how == "deep":
        depth = draw(st.integers(60, 3000))
        raw = b'{"__metadata__":' + b"[" * depth + b"]" * depth + b"}"
        return struct.pack("<Q", len(raw)) + raw + bytes(size)
    raw = json.dumps(header, indent=draw(st.none() | st.integers(0, 2))).encode()
    length = len(raw)
    if how == "length":
        length = draw(st.sampled_from([0, 1, len(raw) - 1, len(raw) + 1, 2**31, 2**64 - 1]))
    data = bytes(max(0, size + (draw(st.integers(-2, 2)) if how == "data" else 0)))
    return struct.pack("<Q", max(0, length)) + raw + data


inputs = st.binary(max_size=120) | mutated_file()


def check(data: bytes, folder: Path) -> None:
    outcome = value_or_one_line_error(lambda: safetensors.header_of(io.BytesIO(data), size=len(data), source="f"))
    if not isinstance(outcome, Header):
        return
    covered = sum(t.nbytes for t in outcome.tensors)
    assert outcome.data_start + covered == len(data)  # a header that parses accounts for every byte
    path = folder / f"fuzz-{next(_SERIAL)}.safetensors"
    path.write_bytes(data)
    try:
        value_or_one_line_error(lambda: safetensors.tensor_digest(path))
    finally:
        path.unlink()


@FUZZ
@given(inputs)
def test_safetensors_headers(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    check(data, tmp_path_factory.getbasetemp())


@pytest.mark.slow
@FUZZ_SLOW
@given(inputs)
def test_safetensors_headers_long(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    check(data, tmp_path_factory.getbasetemp())
