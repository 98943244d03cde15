"""Fuzz: reading CAR v1 files. Random bytes, and valid archives with a byte flipped, a length varint replaced
(huge declared sizes), a header rewritten, or the file cut short."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provenance import car
from provenance.cid import RAW, Cid, encode_varint
from tests.fixtures.store import FUZZ, FUZZ_SLOW, value_or_one_line_error

_SERIAL = itertools.count()


@st.composite
def valid_car(draw: st.DrawFn) -> bytes:
    payloads = draw(st.lists(st.binary(max_size=64), max_size=4))
    items = [(Cid.of(RAW, p), p) for p in payloads]
    roots = [cid for cid, _ in items[:2]] or [Cid.of(RAW, b"")]
    out = car.encode_header(roots)
    for cid, block in items:
        out += encode_varint(len(bytes(cid)) + len(block)) + bytes(cid) + block
    return out


@st.composite
def mutated_car(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(valid_car()))
    at = draw(st.integers(0, len(data) - 1))
    how = draw(st.sampled_from(["flip", "varint", "cut", "header"]))
    if how == "flip":
        data[at] ^= 1 << draw(st.integers(0, 7))
        return bytes(data)
    if how == "varint":
        huge = draw(st.sampled_from([2**31, 2**40, 2**63 - 1, car.MAX_SECTION, car.MAX_SECTION + 1]))
        return bytes(data[:at]) + encode_varint(huge) + bytes(data[at + 1 :])
    if how == "cut":
        return bytes(data[:at])
    body = draw(st.binary(max_size=60))  # an arbitrary dag-cbor-ish header
    return encode_varint(len(body)) + body + bytes(data[len(car.encode_header([Cid.of(RAW, b"")])):])


inputs = st.binary(max_size=200) | valid_car() | mutated_car()


def check(data: bytes, folder: Path) -> None:
    path = folder / f"fuzz-{next(_SERIAL)}.car"
    path.write_bytes(data)
    try:
        outcome = value_or_one_line_error(lambda: car.read_car(path))
    finally:
        path.unlink()
    if isinstance(outcome, tuple):
        roots, blocks = outcome
        assert all(Cid.of(cid.codec, block) == cid for cid, block in blocks)  # only verified blocks come out
        assert len(roots) <= car.MAX_ROOTS


@FUZZ
@given(inputs)
def test_read_car(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    check(data, tmp_path_factory.getbasetemp())


@pytest.mark.slow
@FUZZ_SLOW
@given(inputs)
def test_read_car_long(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    check(data, tmp_path_factory.getbasetemp())
