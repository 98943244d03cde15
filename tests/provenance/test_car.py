"""CAR v1: golden header bytes, round trips, and clear errors for truncated, garbage and tampered files."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provenance import car
from provenance.cid import DAG_PB, RAW, Cid, CidMismatch, encode_varint, parse_cid
from provenance.errors import FormatError, UsageError

ROOT = parse_cid("bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354")  # the empty directory
EMPTY_DIR_BLOCK = b"\x0a\x02\x08\x01"  # dag-pb {Data: UnixFS {Type: Directory}}


def blocks(n: int) -> list[tuple[Cid, bytes]]:
    out = [(Cid.of(RAW, f"block {i}".encode() * (i + 1)), f"block {i}".encode() * (i + 1)) for i in range(n)]
    return out


def framed(body: bytes) -> bytes:
    return encode_varint(len(body)) + body


def test_header_golden_bytes() -> None:
    # Written out by hand from the CARv1 spec: dag-cbor map {"roots": [CID], "version": 1}, keys in dag-cbor
    # order, the CID as tag 42 over 0x00 + binary CID. js-ipfs's `dag export` starts with these same bytes
    # (checked live in test_store_kubo.py).
    body = (
        b"\xa2" + b"\x65roots" + b"\x81" + b"\xd8\x2a" + b"\x58\x25" + b"\x00" + bytes(ROOT)
        + b"\x67version" + b"\x01"
    )
    assert car.encode_header([ROOT]) == bytes([len(body)]) + body
    assert len(body) == 0x3A


def test_round_trip(tmp_path: Path) -> None:
    items = [(ROOT, EMPTY_DIR_BLOCK), *blocks(5)]
    path = tmp_path / "x.car"
    assert car.write_car(path, [ROOT, items[1][0]], items) == 6
    roots, read = car.read_car(path)
    assert roots == [ROOT, items[1][0]]
    assert read == items
    assert not [p for p in tmp_path.iterdir() if p.name != "x.car"]  # no temp file left


@settings(max_examples=30, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_round_trip_property(tmp_path_factory: pytest.TempPathFactory, payloads: list[bytes]) -> None:
    items = [(Cid.of(RAW, p), p) for p in payloads]
    path = tmp_path_factory.mktemp("car") / "p.car"
    car.write_car(path, [ROOT], items)
    assert car.read_car(path) == ([ROOT], items)


def test_every_truncation_is_an_error_or_a_shorter_valid_file(tmp_path: Path) -> None:
    full = tmp_path / "full.car"
    items = [(ROOT, EMPTY_DIR_BLOCK), *blocks(3)]
    car.write_car(full, [ROOT], items)
    data = full.read_bytes()
    header_end = len(car.encode_header([ROOT]))
    boundaries = {header_end}
    offset = header_end
    for cid, block in items:
        offset += len(encode_varint(len(bytes(cid)) + len(block))) + len(bytes(cid)) + len(block)
        boundaries.add(offset)
    cut = tmp_path / "cut.car"
    for n in range(len(data)):
        cut.write_bytes(data[:n])
        if n in boundaries:  # CAR v1 has no trailer: a cut between sections is a valid, shorter archive
            roots, read = car.read_car(cut)
            assert roots == [ROOT] and read == items[: len(read)]
            continue
        with pytest.raises(FormatError) as info:
            car.read_car(cut)
        message = str(info.value)
        assert str(cut) in message and "\n" not in message
        assert "truncated" in message or "empty file" in message or "not a CAR" in message


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"hello, this is not a CAR file at all", "truncated"),  # "h" reads as a 104-byte header
        (b"\x00", "header length 0"),
        (b"\x05\xa1\x61a\x01\x00", "header is not valid dag-cbor"),
        (framed(b"\xa1\x67version\x03"), "unsupported CAR version 3"),
        (framed(b"\xa1\x67version\x02"), "CAR v2"),
        (framed(b"\xa2\x65roots\x80\x66versio\x01"), "no version"),
        (framed(b"\xa2\x65roots\x81\x01\x67version\x01"), "list of CIDs"),
        (framed(b"\xa2\x65roots\x80\x67versio"), "not valid dag-cbor"),
    ],
)
def test_garbage_is_a_clear_format_error(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.car"
    path.write_bytes(content)
    with pytest.raises(FormatError) as info:
        car.read_car(path)
    assert reason in str(info.value) and str(path) in str(info.value)


def test_car_v2_pragma_is_named(tmp_path: Path) -> None:
    # Every CARv2 file starts with this 11-byte pragma (a CARv1-style header {"version": 2}).
    path = tmp_path / "v2.car"
    path.write_bytes(bytes.fromhex("0aa16776657273696f6e02") + b"\x00" * 40)
    with pytest.raises(FormatError, match="CAR v2"):
        car.read_car(path)


def test_tampered_block_names_its_cid(tmp_path: Path) -> None:
    path = tmp_path / "x.car"
    items = blocks(3)
    car.write_car(path, [items[0][0]], items)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # flip one bit of the last block
    path.write_bytes(bytes(data))
    with pytest.raises(CidMismatch) as info:
        car.read_car(path)
    assert str(items[-1][0]) in str(info.value)


def test_bad_cid_and_oversized_sections(tmp_path: Path) -> None:
    header = car.encode_header([ROOT])
    path = tmp_path / "x.car"
    path.write_bytes(header + encode_varint(40) + b"\x01\x55\x13\x40" + b"\x00" * 36)  # sha2-512 CID
    with pytest.raises(FormatError, match="bad CID"):
        car.read_car(path)
    path.write_bytes(header + encode_varint(car.MAX_SECTION + 1) + b"\x00")
    with pytest.raises(FormatError, match="exceeds"):
        car.read_car(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        car.read_car(tmp_path / "missing.car")
    with pytest.raises(UsageError, match="is a directory"):
        car.read_car(tmp_path)


def test_cidv0_sections_are_read(tmp_path: Path) -> None:
    # Older tools write CIDv0 (a bare sha2-256 multihash) in sections; they name the same dag-pb block.
    path = tmp_path / "v0.car"
    v0 = b"\x12\x20" + ROOT.digest
    path.write_bytes(car.encode_header([ROOT]) + encode_varint(len(v0) + 4) + v0 + EMPTY_DIR_BLOCK)
    assert car.read_car(path) == ([ROOT], [(Cid(DAG_PB, ROOT.digest), EMPTY_DIR_BLOCK)])


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    def broken() -> object:
        yield (ROOT, EMPTY_DIR_BLOCK)
        raise RuntimeError("source failed")

    with pytest.raises(RuntimeError):
        car.write_car(tmp_path / "x.car", [ROOT], broken())  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_total_budget_and_roots_cap(tmp_path: Path) -> None:
    path = tmp_path / "x.car"
    items = blocks(4)
    car.write_car(path, [ROOT], items)
    total = sum(len(bytes(cid)) + len(block) for cid, block in items)
    assert car.read_car(path, max_bytes=total)[1] == items
    with pytest.raises(FormatError, match=f"more than {total - 1} bytes"):
        car.read_car(path, max_bytes=total - 1)
    with pytest.raises(FormatError, match="more than 3 blocks"):
        car.read_car(path, max_blocks=3)
    car.write_car(path, [ROOT] * (car.MAX_ROOTS + 1), [])
    with pytest.raises(FormatError, match="1025 roots"):
        car.read_car(path)


def test_huge_declared_cbor_counts_fail_fast(tmp_path: Path) -> None:
    # A 14-byte header that declares 2^64-1 roots (and a map of 2^32 keys): refused by arithmetic, not by looping.
    path = tmp_path / "x.car"
    for body in (b"\xa2\x65roots\x9b" + b"\xff" * 8, b"\xba\xff\xff\xff\xff"):
        path.write_bytes(framed(body))
        with pytest.raises(FormatError, match="truncated"):
            car.read_car(path)
