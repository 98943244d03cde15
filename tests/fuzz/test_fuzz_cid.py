"""Fuzz: CID parsing, text and binary. Random input, and valid CIDs with one character, byte or varint mutated."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provenance.cid import DAG_PB, RAW, Cid, encode_varint, parse_cid
from tests.fixtures.store import FUZZ, FUZZ_SLOW, value_or_one_line_error

VALID = [Cid.of(RAW, b"a"), Cid.of(DAG_PB, b"b")]
TEXTS = [str(c) for c in VALID] + ["QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn",
                                   "zb2rhmy65F3REf8SZp7De11gxtECBGgUKaLdiDj7MCGCHxbDW"]


@st.composite
def mutated_text(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(TEXTS))
    where = draw(st.integers(0, len(text)))
    how = draw(st.sampled_from(["replace", "insert", "cut", "repeat"]))
    char = draw(st.characters())
    if how == "replace":
        return text[:where] + char + text[where + 1 :]
    if how == "insert":
        return text[:where] + char + text[where:]
    if how == "cut":
        return text[:where]
    return text[0] + text[1:] * draw(st.integers(2, 40))  # long claims: base58 decoding must stay bounded


@st.composite
def mutated_binary(draw: st.DrawFn) -> bytes:
    binary = bytes(draw(st.sampled_from(VALID)))
    field = draw(st.integers(0, 3))  # version, codec, hash code, digest length: each a varint
    value = draw(st.integers(0, 2**64) | st.sampled_from([0, 1, 0x55, 0x70, 0x12, 0x20, 0x7F, 0x80]))
    head = list(binary[:4])
    encoded = [encode_varint(v) for v in head]
    encoded[field] = encode_varint(value)
    return b"".join(encoded) + binary[4:] + draw(st.binary(max_size=4))


text_inputs = st.text(max_size=120) | mutated_text()
binary_inputs = st.binary(max_size=80) | mutated_binary()


def check_text(text: str) -> None:
    outcome = value_or_one_line_error(lambda: parse_cid(text))
    if isinstance(outcome, Cid):
        assert parse_cid(str(outcome)) == outcome  # what parses, round-trips


def check_binary(data: bytes) -> None:
    outcome = value_or_one_line_error(lambda: Cid.from_bytes(data))
    if isinstance(outcome, tuple):
        cid, end = outcome
        assert bytes(cid) == data[:end] or data[:2] == b"\x12\x20"  # v1 re-encodes exactly; v0 is normalised


@FUZZ
@given(text_inputs)
def test_parse_cid_text(text: str) -> None:
    check_text(text)


@FUZZ
@given(binary_inputs)
def test_parse_cid_binary(data: bytes) -> None:
    check_binary(data)


@pytest.mark.slow
@FUZZ_SLOW
@given(text_inputs)
def test_parse_cid_text_long(text: str) -> None:
    check_text(text)


@pytest.mark.slow
@FUZZ_SLOW
@given(binary_inputs)
def test_parse_cid_binary_long(data: bytes) -> None:
    check_binary(data)
