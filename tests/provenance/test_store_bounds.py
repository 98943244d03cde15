"""Bounded reads of hostile DAGs (#14.7): a store's content is never trusted to be the size it says.

Every DAG here is built by hand with correct CIDs, which is all a hostile trainer controlling its store needs.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from provenance import car
from provenance._store import dag, unixfs
from provenance._store.local import LocalStore
from provenance.cid import DAG_PB, MAX_BLOCK_SIZE, RAW, Cid
from provenance.errors import FormatError
from provenance.store import bytes_cid
from tests.fixtures.store import CHUNK, BlockMap, amplifying_dag, value_or_one_line_error


def read_all(blocks: BlockMap, root: Cid) -> tuple[int, FormatError | None]:
    """Bytes `iter_file` produced before it stopped, and the error it stopped with (if any)."""
    produced = 0
    try:
        for piece in dag.iter_file(blocks.get, root):
            produced += len(piece)
    except FormatError as exc:
        return produced, exc
    return produced, None


# -- the 312 KB / > 2 GiB attack -------------------------------------------------------------------------


@pytest.mark.parametrize("with_blocksizes", [False, True], ids=["no-blocksizes", "small-blocksizes"])
def test_amplifying_dag_fails_fast_with_bounded_memory(with_blocksizes: bool) -> None:
    blocks = BlockMap()
    root = amplifying_dag(blocks, declared=100, with_blocksizes=with_blocksizes)
    assert len(blocks.blocks) == 8 and 300_000 < sum(map(len, blocks.blocks.values())) < 320_000
    started = time.monotonic()
    outcome = value_or_one_line_error(lambda: read_all(blocks, root), memory_limit=4 << 20)
    assert isinstance(outcome, tuple)
    produced, error = outcome
    assert isinstance(error, FormatError) and "blocksizes" in str(error)
    assert produced == 0  # refused before a single byte of content is yielded
    assert blocks.fetches <= 8 and time.monotonic() - started < 1.0  # at most one fetch a block on one path


def test_amplifying_dag_through_a_store(tmp_path: Path) -> None:
    blocks = BlockMap()
    root = amplifying_dag(blocks)
    path = tmp_path / "attack.car"
    car.write_car(path, [root], blocks.blocks.items())
    store = LocalStore(tmp_path / "store", durable=False)
    assert store.import_car(path) == [str(root)]  # every block is present and hashes right: it imports
    for read in (lambda: store.get_bytes(str(root)), lambda: store.get_file(str(root), tmp_path / "out")):
        with pytest.raises(FormatError, match="links but 0 blocksizes") as info:
            read()
        assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_consistent_sizes_make_the_declared_size_honest() -> None:
    # With sizes that agree at every level, the root must declare what the reuse really expands to, so a
    # size-limited read refuses it up front instead of streaming it.
    blocks = BlockMap()
    leaf = blocks.raw(b"x" * CHUNK)
    level1 = blocks.file_node([(leaf, CHUNK)] * 174)
    root = blocks.file_node([(level1, 174 * CHUNK)] * 174)
    assert dag.stat(blocks.get, root) == ("file", 174 * 174 * CHUNK)


# -- each rule on its own --------------------------------------------------------------------------------


def test_a_child_must_declare_what_its_parent_says() -> None:
    blocks = BlockMap()
    leaf = blocks.raw(b"a" * 10)
    honest = blocks.file_node([(leaf, 10)] * 3)
    root = blocks.file_node([(honest, 5)])  # says 5 bytes below, the child declares 30
    produced, error = read_all(blocks, root)
    assert produced == 0 and error is not None and "declares 30 bytes, blocksizes says 5" in str(error)


def test_a_raw_leaf_must_be_as_long_as_its_blocksize() -> None:
    blocks = BlockMap()
    root = blocks.file_node([(blocks.raw(b"b" * 10), 4)])
    produced, error = read_all(blocks, root)
    assert produced == 0 and error is not None and "holds 10 bytes, blocksizes says 4" in str(error)


def test_filesize_must_equal_data_plus_blocksizes() -> None:
    blocks = BlockMap()
    root = blocks.file_node([(blocks.raw(b"c"), 1)], filesize=2)
    with pytest.raises(FormatError, match="filesize says 2 bytes"):
        dag.stat(blocks.get, root)
    with pytest.raises(FormatError, match="filesize says 2 bytes"):
        list(dag.iter_file(blocks.get, root))


def test_too_many_links_in_a_file_node() -> None:
    blocks = BlockMap()
    leaf = blocks.raw(b"d")
    assert dag.stat(blocks.get, blocks.file_node([(leaf, 1)] * dag.MAX_FILE_LINKS)) == ("file", dag.MAX_FILE_LINKS)
    with pytest.raises(FormatError, match="1025 links"):
        dag.stat(blocks.get, blocks.file_node([(leaf, 1)] * (dag.MAX_FILE_LINKS + 1)))


def test_too_deep_a_file_tree() -> None:
    blocks = BlockMap()
    node = blocks.raw(b"e")
    for _ in range(dag.MAX_FILE_DEPTH):
        node = blocks.file_node([(node, 1)])
    assert b"".join(dag.iter_file(blocks.get, node)) == b"e"  # 32 levels of nodes: still read
    deeper = blocks.file_node([(node, 1)])
    with pytest.raises(FormatError, match="deeper than 32"):
        list(dag.iter_file(blocks.get, deeper))


def test_a_link_back_to_an_ancestor_is_refused() -> None:
    # Content addressing makes a real cycle impossible; a store that serves a block under another CID can
    # still fake one if reads were not verified, so the walker refuses it on its own as well.
    blocks = BlockMap()
    leaf = blocks.raw(b"f")
    looping_cid = Cid(DAG_PB, Cid.of(RAW, b"placeholder").digest)
    blocks.blocks[looping_cid] = unixfs.encode_node([unixfs.Link(bytes(leaf), "", 1),
                                                     unixfs.Link(bytes(looping_cid), "", 1)],
                                                    unixfs.file_data(2, [1, 1]))
    with pytest.raises(FormatError, match="ancestor"):
        list(dag.iter_file(blocks.get, looping_cid))


def test_reused_blocks_are_fine_when_sizes_agree() -> None:
    # Kubo reuses identical chunks (a file of zeros is one leaf linked many times): reuse is not an attack.
    blocks = BlockMap()
    builder = unixfs.FileBuilder(lambda cid, block: blocks.blocks.__setitem__(Cid.from_bytes(cid)[0], bytes(block)),
                                 chunk_size=16, max_links=4)
    builder.add_all(memoryview(bytes(16 * 20)))
    root = Cid.from_bytes(builder.finish().cid)[0]
    assert len(blocks.blocks) < 10
    assert b"".join(dag.iter_file(blocks.get, root)) == bytes(16 * 20)


# -- directories and blocks ------------------------------------------------------------------------------


def test_directory_entry_cap() -> None:
    blocks = BlockMap()
    leaf = blocks.raw(b"g")
    ok = blocks.directory({f"{i:05d}": leaf for i in range(dag.MAX_DIRECTORY_ENTRIES)})
    assert dag.stat(blocks.get, ok) == ("directory", dag.MAX_DIRECTORY_ENTRIES)
    big = blocks.directory({f"{i:05d}": leaf for i in range(dag.MAX_DIRECTORY_ENTRIES + 1)})
    for read in (dag.stat, dag.read_directory):
        with pytest.raises(FormatError, match="8193 entries"):
            read(blocks.get, big)


def test_directory_expansion_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = BlockMap()
    inner = blocks.directory({f"f{i}": blocks.raw(b"h") for i in range(10)})
    outer = blocks.directory({f"d{i}": inner for i in range(10)})  # 10 folders + 100 files from 3 blocks
    assert dag.write_directory(blocks.get, outer, tmp_path / "ok") == 100
    monkeypatch.setattr(dag, "MAX_TREE_ENTRIES", 50)
    with pytest.raises(FormatError, match="more than 50 files and folders"):
        dag.write_directory(blocks.get, outer, tmp_path / "capped")
    assert not (tmp_path / "capped").exists()


def test_oversized_block_is_refused(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store", durable=False)
    huge = b"i" * (MAX_BLOCK_SIZE + 1)
    cid = bytes_cid(huge[:10])  # a real block, then replaced by an oversized one under another real CID
    store.put_bytes(huge[:10])
    oversized = Cid.of(RAW, huge)
    path = store.root / "blocks" / str(oversized)[-3:-1] / str(oversized)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(huge)
    with pytest.raises(FormatError, match="more than any IPFS node moves"):
        store.get_bytes(str(oversized))
    assert store.get_bytes(cid) == huge[:10]
