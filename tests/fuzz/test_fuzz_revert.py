"""Fuzz: revert data a chain node returns (provenance._chain.errors). Random bytes; each custom error's selector
(and Error(string) / Panic(uint256)) followed by random or well-formed ABI bodies; and exceptions shaped the way
py-evm, anvil and Hardhat report reverts, with random payloads.

The decoder returns the typed error (or None) rather than raising it, so the property is: a value, or a raised
one-line ProvenanceError. The returned error's own message is checked separately below: it is printed to users.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
from eth_abi import encode
from eth_utils import keccak
from hypothesis import given
from hypothesis import strategies as st

from provenance._chain import artifact
from provenance._chain.errors import RevertDecoder
from provenance.errors import ProvenanceError
from tests.fixtures.store import FUZZ, FUZZ_SLOW, value_or_one_line_error


@cache
def decoder() -> RevertDecoder:
    return RevertDecoder(artifact.load().errors())


@cache
def signatures() -> list[tuple[bytes, list[str]]]:
    out = [(bytes.fromhex("08c379a0"), ["string"]), (bytes.fromhex("4e487b71"), ["uint256"])]
    for item in artifact.load().errors():
        types = [i["type"] for i in item["inputs"]]
        out.append((keccak(text=f"{item['name']}({','.join(types)})")[:4], types))
    return out


def values_for(abi_type: str) -> st.SearchStrategy[Any]:
    if abi_type == "address":
        return st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
    if abi_type == "string":
        return st.text(max_size=40) | st.text("ab\n\r\x00", max_size=8)
    if abi_type == "bytes":
        return st.binary(max_size=40)
    if abi_type.startswith("bytes"):
        size = int(abi_type[5:])
        return st.binary(min_size=size, max_size=size)
    bits = int(abi_type[4:] or 256) if abi_type.startswith("uint") else 64
    return st.integers(0, 2**bits - 1)


@st.composite
def revert_data(draw: st.DrawFn) -> bytes:
    selector, types = draw(st.sampled_from(signatures()))
    if draw(st.booleans()):
        return selector + draw(st.binary(max_size=200))
    body = encode(types, [draw(values_for(t)) for t in types])
    if body and draw(st.booleans()):  # one byte changed: a length, an offset or padding
        at = draw(st.integers(0, len(body) - 1))
        body = body[:at] + bytes([draw(st.integers(0, 255))]) + body[at + 1 :]
    return selector + body


payloads = st.binary(max_size=120) | revert_data()


def exception_around(data: bytes, shape: int) -> BaseException:
    """The shapes backends use: raw bytes in args, a hex string in a JSON-RPC `data`, a bytes repr in a message."""
    if shape == 0:
        return Exception("execution reverted", data)
    if shape == 1:
        error = Exception("execution reverted")
        error.data = {"message": "reverted", "data": "0x" + data.hex()}  # type: ignore[attr-defined]
        return error
    if shape == 2:
        return Exception(f"execution reverted: {data!r}")
    inner = Exception({"code": 3, "data": "0x" + data.hex()})
    outer = Exception("call failed")
    outer.__cause__ = inner
    return outer


# Found by this suite (and fixed): eth_abi raises OverflowError for an ABI length word too large for an index, and
# UnicodeDecodeError for an Error(string) whose bytes are not UTF-8; an Error(string) reason could span lines.
_ERROR_STRING = bytes.fromhex("08c379a0") + (0x20).to_bytes(32, "big")
HUGE_REASON = _ERROR_STRING + (1 << 64).to_bytes(32, "big")  # a length of 2^64, nothing after it
NOT_UTF8_REASON = _ERROR_STRING + (2).to_bytes(32, "big") + b"\x00\x80" + bytes(30)


def check(data: bytes, shape: int) -> None:
    for call in (lambda: decoder().decode(data), lambda: decoder().from_exception(exception_around(data, shape))):
        outcome = value_or_one_line_error(call)
        assert outcome is None or isinstance(outcome, ProvenanceError)


@pytest.mark.parametrize("data", [HUGE_REASON, NOT_UTF8_REASON], ids=["length-2^64", "not-utf8"])
def test_malformed_error_strings_are_not_tracebacks(data: bytes) -> None:
    value_or_one_line_error(lambda: decoder().decode(data))


def test_a_decoded_revert_reason_is_one_line() -> None:
    error = decoder().decode(bytes.fromhex("08c379a0") + encode(["string"], ["bad\nline"]))
    assert error is not None and "\n" not in str(error)


@FUZZ
@given(payloads, st.integers(0, 3))
def test_revert_data(data: bytes, shape: int) -> None:
    check(data, shape)


@pytest.mark.slow
@FUZZ_SLOW
@given(payloads, st.integers(0, 3))
def test_revert_data_long(data: bytes, shape: int) -> None:
    check(data, shape)
