"""Fuzz: dag-pb / UnixFS decoding, and reading whole file and directory DAGs a hostile store serves.

Blocks come three ways: random bytes; valid nodes with one byte or one varint changed; and whole DAGs built with
correct CIDs but arbitrary (lying) sizes, types, names and shapes, as a trainer controlling its store can serve.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provenance._store import dag, dagpb, unixfs
from provenance.cid import DAG_PB, RAW, Cid, encode_varint
from tests.fixtures.store import FUZZ, FUZZ_SLOW, BlockMap, value_or_one_line_error

LEAF = bytes(Cid.of(RAW, b"leaf"))
_SERIAL = itertools.count()


@st.composite
def valid_nodes(draw: st.DrawFn) -> bytes:
    links = [unixfs.Link(LEAF, draw(st.text(max_size=6)), draw(st.integers(0, 2**40)))
             for _ in range(draw(st.integers(0, 4)))]
    sizes = draw(st.lists(st.integers(0, 2**40), max_size=5))
    data = unixfs.file_data(draw(st.integers(0, 2**40)), sizes) if draw(st.booleans()) else b"\x08\x01"
    return unixfs.encode_node(links, data)


@st.composite
def mutated_nodes(draw: st.DrawFn) -> bytes:
    block = bytearray(draw(valid_nodes()))
    if not block:
        return bytes(block)
    at = draw(st.integers(0, len(block) - 1))
    if draw(st.booleans()):
        block[at] = draw(st.integers(0, 255))
        return bytes(block)
    return bytes(block[:at]) + encode_varint(draw(st.integers(0, 2**63 - 1))) + bytes(block[at + 1 :])


blocks = st.binary(max_size=300) | valid_nodes() | mutated_nodes()


# A DAG spec: a raw leaf, or a dag-pb node of some UnixFS type over children with sizes that may lie.
dag_specs = st.recursive(
    st.binary(max_size=40).map(lambda b: ("raw", b)),
    lambda inner: st.tuples(
        st.just("node"),
        st.sampled_from([dagpb.FILE, dagpb.FILE, dagpb.UNIXFS_RAW, dagpb.DIRECTORY, dagpb.HAMT_SHARD,
                         dagpb.SYMLINK, 9]),
        st.lists(st.tuples(st.text(max_size=4), inner), max_size=4),
        st.none() | st.integers(0, 200),  # filesize
        st.none() | st.lists(st.integers(0, 100), max_size=5),  # blocksizes (None: honest)
        st.binary(max_size=8),  # inline data
    ),
    max_leaves=12,
)


def build(blocks_: BlockMap, spec: Any) -> tuple[Cid, int]:
    """Put `spec`'s blocks; returns the root and the size it honestly holds."""
    if spec[0] == "raw":
        return blocks_.raw(spec[1]), len(spec[1])
    _, kind, children, filesize, blocksizes, data = spec
    built = [(name, *build(blocks_, child)) for name, child in children]
    honest = [size for _, _, size in built]
    sizes = honest if blocksizes is None else blocksizes
    payload = b"\x08" + encode_varint(kind) + (b"\x12" + encode_varint(len(data)) + data if data else b"")
    if filesize is not None:
        payload += b"\x18" + encode_varint(filesize)
    payload += b"".join(b"\x20" + encode_varint(size) for size in sizes)
    links = [unixfs.Link(bytes(cid), name, size) for name, cid, size in built]
    return blocks_.put(DAG_PB, unixfs.encode_node(links, payload)), len(data) + sum(honest)


def check_block(block: bytes) -> None:
    value_or_one_line_error(lambda: dagpb.decode_node(block, where="fuzz"))
    value_or_one_line_error(lambda: dagpb.decode_links(block, where="fuzz"))


def check_dag(spec: Any, out: Path) -> None:
    store = BlockMap()
    root, _ = build(store, spec)
    stat = value_or_one_line_error(lambda: dag.stat(store.get, root))

    def read() -> int:
        return sum(len(piece) for piece in dag.iter_file(store.get, root))

    produced = value_or_one_line_error(read)
    if isinstance(stat, tuple) and stat[0] == "file" and isinstance(produced, int):
        assert produced == stat[1]  # a file read in full is exactly the size its root declares
    value_or_one_line_error(lambda: dag.read_directory(store.get, root))
    target = out / f"dag-{next(_SERIAL)}"
    value_or_one_line_error(lambda: dag.write_directory(store.get, root, target))


@FUZZ
@given(blocks)
def test_decode_dag_pb(block: bytes) -> None:
    check_block(block)


@FUZZ
@given(dag_specs)
def test_read_hostile_dags(tmp_path_factory: pytest.TempPathFactory, spec: Any) -> None:
    check_dag(spec, tmp_path_factory.getbasetemp())


@pytest.mark.slow
@FUZZ_SLOW
@given(blocks)
def test_decode_dag_pb_long(block: bytes) -> None:
    check_block(block)


@pytest.mark.slow
@FUZZ_SLOW
@given(dag_specs)
def test_read_hostile_dags_long(tmp_path_factory: pytest.TempPathFactory, spec: Any) -> None:
    check_dag(spec, tmp_path_factory.getbasetemp())
