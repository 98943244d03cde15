"""CIDs: known answers from a real daemon, a naive reference builder, parsing, and the dag-pb codec."""

from __future__ import annotations

import hashlib
import io
import os
import socket
from pathlib import Path
from typing import BinaryIO, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provenance._store import unixfs
from provenance.cid import (
    DAG_PB,
    RAW,
    Cid,
    CidMismatch,
    cid_text,
    decode_varint,
    encode_varint,
    parse_cid,
    verify_block,
)
from provenance.errors import DigestMismatch, FormatError, UsageError
from provenance.store import bytes_cid, directory_cid, file_cid
from tests.fixtures.store import KNOWN_1K_CHUNK_CIDS, KNOWN_FILE_CIDS, SMALL_CHUNK, chunked_cid, kat_data

CHUNK = 262_144

# The empty UnixFS directory, as CIDv0 and CIDv1 (the well-known pair every IPFS implementation prints).
EMPTY_DIR_V0 = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
EMPTY_DIR_V1 = "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"


def reference_cid(data: bytes, chunk_size: int, max_links: int) -> str:
    """A naive reference: js-ipfs's importer reduced to its rule — chunk, then group level by level."""
    chunks = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)] or [b""]
    level = [(cid_bytes_raw(c), len(c), len(c)) for c in chunks]
    if len(level) == 1:
        return cid_text(level[0][0])
    while True:
        parents = []
        for start in range(0, len(level), max_links):
            group = level[start : start + max_links]
            links = [unixfs.Link(cid, "", tsize) for cid, tsize, _ in group]
            sizes = [size for _, _, size in group]
            block = unixfs.encode_node(links, unixfs.file_data(sum(sizes), sizes))
            cid = bytes(Cid.of(DAG_PB, block))
            parents.append((cid, len(block) + sum(t for _, t, _ in group), sum(sizes)))
        if len(parents) == 1:
            return cid_text(parents[0][0])
        level = parents


def cid_bytes_raw(chunk: bytes) -> bytes:
    return bytes(Cid.of(RAW, chunk))


# -- known answers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", sorted(KNOWN_FILE_CIDS))
def test_file_cid_matches_daemon_known_answers(size: int) -> None:
    assert bytes_cid(kat_data(size)) == KNOWN_FILE_CIDS[size]


@pytest.mark.parametrize("size", sorted(KNOWN_1K_CHUNK_CIDS))
def test_deeper_trees_match_daemon_with_small_chunks(size: int) -> None:
    data = hashlib.shake_256(b"prov-kat").digest(size)
    assert chunked_cid(data, SMALL_CHUNK) == KNOWN_1K_CHUNK_CIDS[size]


def test_file_cid_of_path_and_stream_agree_with_bytes(tmp_path: Path) -> None:
    data = kat_data(3 * CHUNK + 17)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    expected = bytes_cid(data)
    assert file_cid(path) == expected
    assert file_cid(str(path)) == expected
    assert file_cid(io.BytesIO(data)) == expected


class _Trickle(io.RawIOBase):
    """A stream that returns at most 1000 bytes a read, like a pipe or a socket."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), len(self._data), 1000)
        buffer[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


def test_short_reads_do_not_move_chunk_boundaries() -> None:
    data = kat_data(CHUNK + 5000)
    assert file_cid(cast(BinaryIO, _Trickle(data))) == bytes_cid(data)
    assert file_cid(cast(BinaryIO, _Trickle(kat_data(CHUNK + 1)))) == KNOWN_FILE_CIDS[CHUNK + 1]


def test_empty_directory_is_the_well_known_cid(tmp_path: Path) -> None:
    assert directory_cid(tmp_path) == EMPTY_DIR_V1
    assert str(parse_cid(EMPTY_DIR_V0)) == EMPTY_DIR_V1


# -- the streaming builder against the naive reference ---------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(size=st.integers(0, 2000), chunk=st.integers(1, 16), max_links=st.integers(2, 6))
def test_streaming_builder_equals_reference(size: int, chunk: int, max_links: int) -> None:
    data = hashlib.shake_256(b"ref").digest(size) if size else b""
    assert chunked_cid(data, chunk, max_links) == reference_cid(data, chunk, max_links)


@pytest.mark.parametrize("leaves", [1, 2, 3, 4, 8, 9, 10, 26, 27, 28, 81, 82])
def test_builder_at_exact_level_boundaries(leaves: int) -> None:
    data = bytes(range(256)) * ((leaves * 3) // 256 + 1)
    data = data[: leaves * 3]
    assert chunked_cid(data, 3, 3) == reference_cid(data, 3, 3)


def test_sink_receives_every_block_children_first() -> None:
    seen: list[tuple[bytes, bytes]] = []
    builder = unixfs.FileBuilder(lambda cid, block: seen.append((cid, bytes(block))), chunk_size=4, max_links=2)
    builder.add_all(memoryview(b"0123456789abcdef0"))
    root = builder.finish().cid
    # 5 distinct leaves, then levels of 3, 2 and 1 nodes.
    assert len(seen) == 11 and len({cid for cid, _ in seen}) == 11
    assert seen[-1][0] == root
    position = {cid: i for i, (cid, _) in enumerate(seen)}
    for cid, block in seen:
        assert Cid.of(cid[1], block) == Cid.from_bytes(cid)[0]
        if cid[1] == DAG_PB:
            assert all(position[link.cid] < position[cid] for link in unixfs.decode_links(block))


# -- parsing and text forms ------------------------------------------------------------------------------


def test_parse_round_trip_and_normalisation() -> None:
    text = KNOWN_FILE_CIDS[1]
    cid = parse_cid(text)
    assert cid.codec == RAW and str(cid) == text
    assert str(parse_cid(text.upper())) == text  # base32 upper, prefix 'B'
    assert str(parse_cid(f"  {text}\n")) == text
    # js-ipfs answers base58btc CIDv1 unless asked otherwise; this pair was seen from its `block stat`.
    assert str(parse_cid("zb2rhmy65F3REf8SZp7De11gxtECBGgUKaLdiDj7MCGCHxbDW")) == KNOWN_FILE_CIDS[0]
    assert Cid.from_bytes(bytes(cid)) == (cid, 36)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "unknown multibase"),
        ("x", "unknown multibase"),
        ("b", "unknown multibase"),
        ("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyk1", "unknown multibase"),  # '1' not base32
        ("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvy", "truncated CID"),
        ("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvykuaa", "trailing bytes"),
        ("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvykua", "invalid base32 length"),
        ("bafyreidepjmjhvhlvp5eyxqpmyyi7rxwvl7wsglwai3cnvq63komq4tdya", "codec 0x71"),  # dag-cbor
        (
            "bafkrgqfevpkejdcjkywyfaiv2e5b7thksj7vfngviwjjp6fuhzbnvcjdrpatmjxehxftrxnqqjeisj7msbh3iicxiq4yh2"
            "efqulz2ucvdl7ge",
            "multihash 0x13",  # sha2-512
        ),
        ("QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3N0", "base58"),  # '0' is not base58
    ],
)
def test_parse_rejects_with_one_line_error(text: str, reason: str) -> None:
    with pytest.raises(FormatError) as info:
        parse_cid(text)
    message = str(info.value)
    assert "not a CID" in message and reason in message and "\n" not in message


def test_parse_rejects_non_text() -> None:
    with pytest.raises(FormatError):
        parse_cid(b"bafk")  # type: ignore[arg-type]


def test_verify_block_names_the_cid() -> None:
    cid = Cid.of(RAW, b"hello")
    verify_block(cid, b"hello")
    with pytest.raises(CidMismatch) as info:
        verify_block(cid, b"hellO")
    assert str(cid) in str(info.value)
    assert isinstance(info.value, DigestMismatch)


@given(st.integers(0, 2**63 - 1))
def test_varint_round_trip(value: int) -> None:
    encoded = encode_varint(value)
    assert decode_varint(encoded) == (value, len(encoded))


def test_varint_rejects_non_minimal_and_truncated() -> None:
    with pytest.raises(FormatError):
        decode_varint(b"\x80\x00")
    with pytest.raises(FormatError):
        decode_varint(b"\x80")


# -- dag-pb codec ----------------------------------------------------------------------------------------


def test_node_round_trip() -> None:
    links = [unixfs.Link(bytes(Cid.of(RAW, b"a")), "a", 1), unixfs.Link(bytes(Cid.of(RAW, b"bb")), "b", 2)]
    node = unixfs.decode_node(unixfs.encode_node(links, unixfs.file_data(3, [1, 2])))
    assert node.links == links and node.type == unixfs.FILE
    assert node.filesize == 3 and node.blocksizes == [1, 2]


@pytest.mark.parametrize(
    "block",
    [
        b"\x0a\x02\x08\x02\x12\x00",  # Data before Links
        b"\x0a\x02\x08\x02\x0a\x02\x08\x02",  # Data twice
        b"\x12\x02\x12\x00\x0a\x02\x08\x02",  # a link without Hash
        b"\x12\x05\x0a\x03abc\x0a\x02\x08\x02",  # a link whose Hash is not a CID
        b"\x1a\x00",  # unknown field
        b"\x12\x20",  # truncated
        b"",  # no UnixFS data
    ],
)
def test_decode_rejects_malformed_nodes(block: bytes) -> None:
    with pytest.raises(FormatError):
        unixfs.decode_node(block, where="test")


# -- directories -----------------------------------------------------------------------------------------


def test_directory_entries_are_sorted_and_hidden_files_included(tmp_path: Path) -> None:
    (tmp_path / "b").write_bytes(b"2")
    (tmp_path / "a").write_bytes(b"1")
    (tmp_path / ".hidden").write_bytes(b"3")
    seen: dict[bytes, bytes] = {}
    built = unixfs.build_directory(tmp_path, sink=lambda cid, block: seen.__setitem__(cid, bytes(block)))
    node = unixfs.decode_node(seen[built.cid])
    assert [link.name for link in node.links] == [".hidden", "a", "b"]
    assert node.type == unixfs.DIRECTORY


def test_directory_refuses_symlinks_and_special_files(tmp_path: Path) -> None:
    (tmp_path / "target").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    with pytest.raises(UsageError, match="symbolic links"):
        directory_cid(tmp_path)
    (tmp_path / "link").unlink()
    sock = socket.socket(socket.AF_UNIX)
    sock_path = tmp_path / "s"
    try:
        sock.bind(str(sock_path))
        with pytest.raises(UsageError, match="not a regular file"):
            directory_cid(tmp_path)
    finally:
        sock.close()


def test_directory_refuses_non_utf8_names(tmp_path: Path) -> None:
    with open(os.path.join(os.fsencode(tmp_path), b"bad\xff"), "wb") as f:
        f.write(b"x")
    with pytest.raises(UsageError, match="UTF-8"):
        directory_cid(tmp_path)


def test_directory_refuses_what_kubo_would_shard(tmp_path: Path) -> None:
    # 1,200 entries of 200-byte names: estimated 1,200 × (200 + 36) bytes ≥ 256 KiB, Kubo's HAMT threshold.
    for i in range(1200):
        (tmp_path / f"{i:04d}".ljust(200, "x")).touch()
    with pytest.raises(UsageError, match="HAMT"):
        directory_cid(tmp_path)


def test_directory_cid_of_missing_or_file_path(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such directory"):
        directory_cid(tmp_path / "missing")
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(UsageError, match="not a directory"):
        directory_cid(tmp_path / "f")
    with pytest.raises(UsageError, match="is a directory"):
        file_cid(tmp_path)
