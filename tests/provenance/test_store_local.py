"""The local blockstore: round trips, verification on every read, pins and gc, CAR, and failure paths."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from provenance import car
from provenance._store import dag, unixfs
from provenance._store.local import LocalStore
from provenance.cid import DAG_PB, RAW, Cid, parse_cid
from provenance.config import update_section
from provenance.errors import FormatError, UsageError
from provenance.store import (
    BlockNotFound,
    CidMismatch,
    ContentTooLarge,
    NotPinned,
    StoreAddressError,
    StoreError,
    StoreWriteError,
    bytes_cid,
    directory_cid,
    file_cid,
    open_store,
)
from tests.fixtures.ipfs import make_sample_tree, tree_snapshot

CHUNK = unixfs.CHUNK_SIZE


def data(size: int, label: str = "local") -> bytes:
    return hashlib.shake_256(label.encode()).digest(size) if size else b""


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def block_file(store: LocalStore, cid: str) -> Path:
    return store.root / "blocks" / cid[-3:-1] / cid


def leaves_of(store: LocalStore, root: str) -> list[str]:
    return [str(c) for c, _ in dag.iter_dag(store.get_block, parse_cid(root)) if c.codec == RAW]


# -- round trips -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7])
def test_bytes_round_trip_and_cid(store: LocalStore, size: int) -> None:
    content = data(size)
    cid = store.put_bytes(content)
    assert cid == bytes_cid(content)
    assert store.get_bytes(cid) == content
    assert store.has(cid) and cid in store.pins()


def test_file_round_trip_streams_with_progress(store: LocalStore, tmp_path: Path) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(data(40 * CHUNK + 3))
    calls: list[tuple[int, int]] = []
    cid = store.put_file(source, progress=lambda done, total: calls.append((done, total)))
    assert cid == file_cid(source)
    assert calls[-1] == (source.stat().st_size, source.stat().st_size)
    out = tmp_path / "out" / "copy.bin"
    assert store.get_file(cid, out) == source.stat().st_size
    assert out.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in out.parent.iterdir()) == ["copy.bin"]  # no temp file left
    assert out.stat().st_mode & 0o777 == dag.default_mode(directory=False)  # not the temp file's 0600


def test_directory_round_trip(store: LocalStore, tmp_path: Path) -> None:
    tree = make_sample_tree(tmp_path / "ckpt")
    cid = store.put_directory(tree)
    assert cid == directory_cid(tree)
    listing = store.list_directory(cid)
    assert listing["adapter_model.safetensors"] == file_cid(tree / "adapter_model.safetensors")
    assert set(listing) == {p.name for p in tree.iterdir()}
    assert store.get_directory(cid, tmp_path / "back") == 11  # files, not folders
    assert tree_snapshot(tmp_path / "back") == tree_snapshot(tree)
    assert (tmp_path / "back").stat().st_mode & 0o777 == dag.default_mode(directory=True)
    assert store.stat(cid) == ("directory", len(listing))


def test_put_and_get_dispatch_on_kind(store: LocalStore, tmp_path: Path) -> None:
    tree = make_sample_tree(tmp_path / "ckpt")
    assert store.put(tree) == directory_cid(tree)
    assert store.put(tree / "state.json") == file_cid(tree / "state.json")
    store.get(directory_cid(tree), tmp_path / "d")
    store.get(file_cid(tree / "state.json"), tmp_path / "f.json")
    assert (tmp_path / "f.json").read_bytes() == (tree / "state.json").read_bytes()


def test_wrong_kind_and_existing_destination(store: LocalStore, tmp_path: Path) -> None:
    tree = make_sample_tree(tmp_path / "ckpt")
    dir_cid = store.put_directory(tree)
    file_id = store.put_bytes(b"x")
    with pytest.raises(dag.NotAFile):
        store.get_bytes(dir_cid)
    with pytest.raises(dag.NotAFile):
        store.get_file(dir_cid, tmp_path / "f")
    with pytest.raises(dag.NotADirectory):
        store.get_directory(file_id, tmp_path / "d")
    with pytest.raises(UsageError, match="already exists"):
        store.get_directory(dir_cid, tree)
    assert not (tmp_path / "f").exists() and not (tmp_path / "d").exists()


def test_get_bytes_size_limit(store: LocalStore) -> None:
    cid = store.put_bytes(data(CHUNK + 10))
    with pytest.raises(ContentTooLarge, match="get_file"):
        store.get_bytes(cid, max_size=CHUNK)
    assert len(store.get_bytes(cid, max_size=None)) == CHUNK + 10


def test_put_missing_path_is_a_usage_error(store: LocalStore, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        store.put_file(tmp_path / "missing")
    with pytest.raises(UsageError, match="no such directory"):
        store.put_directory(tmp_path / "missing")


# -- verification on every read --------------------------------------------------------------------------


def test_corrupted_block_is_detected_and_nothing_is_written(store: LocalStore, tmp_path: Path) -> None:
    cid = store.put_bytes(data(3 * CHUNK))
    victim = leaves_of(store, cid)[1]
    path = block_file(store, victim)
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0x40
    path.write_bytes(bytes(raw))
    with pytest.raises(CidMismatch) as info:
        store.get_bytes(cid)
    assert victim in str(info.value)
    with pytest.raises(CidMismatch):
        store.get_file(cid, tmp_path / "out.bin")
    assert list(tmp_path.glob("out.bin*")) == [] and list(tmp_path.glob(".out.bin*")) == []


def test_corrupted_block_inside_directory_leaves_no_partial_tree(store: LocalStore, tmp_path: Path) -> None:
    tree = make_sample_tree(tmp_path / "ckpt")
    cid = store.put_directory(tree)
    victim = store.list_directory(cid)["state.json"]
    block_file(store, victim).write_bytes(b"tampered")
    with pytest.raises(CidMismatch, match=victim):
        store.get_directory(cid, tmp_path / "back")
    assert not (tmp_path / "back").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt", "store"]


def test_missing_block_names_the_cid(store: LocalStore) -> None:
    cid = store.put_bytes(data(2 * CHUNK + 1))
    victim = leaves_of(store, cid)[-1]
    block_file(store, victim).unlink()
    with pytest.raises(BlockNotFound, match=victim):
        store.get_bytes(cid)
    with pytest.raises(BlockNotFound, match=victim):
        store.pin(cid)  # a pin needs the whole DAG
    unknown = bytes_cid(b"never stored")
    assert not store.has(unknown)
    with pytest.raises(BlockNotFound, match=unknown):
        store.get_bytes(unknown)


# -- pins and gc ------------------------------------------------------------------------------------------


def test_gc_keeps_pinned_and_removes_the_rest(store: LocalStore) -> None:
    shared = data(CHUNK, "shared")
    kept = store.put_bytes(shared + data(CHUNK, "a"))
    dropped = store.put_bytes(shared + data(CHUNK, "b"))
    loose = store.put_bytes(data(10, "loose"), pin=False)
    assert store.pins() == sorted([kept, dropped])
    store.unpin(dropped)
    with pytest.raises(NotPinned):
        store.unpin(dropped)
    before = set(store.blocks())
    removed = store.gc()
    after = set(store.blocks())
    # The unpinned root and its own leaf go, and the loose raw block; the shared leaf stays.
    assert removed == 3 == len(before - after)
    assert {dropped, loose} <= before - after
    assert store.get_bytes(kept) == shared + data(CHUNK, "a")
    assert store.gc() == 0


def test_gc_clears_interrupted_writes_and_never_serves_them(store: LocalStore) -> None:
    cid = store.put_bytes(b"whole")
    leftover = store.root / "tmp" / "block.crashed"
    leftover.write_bytes(b"half a blo")
    assert store.get_bytes(cid) == b"whole"
    store.gc()
    assert not leftover.exists()


def test_gc_refuses_to_run_over_a_damaged_pin(store: LocalStore) -> None:
    cid = store.put_bytes(data(2 * CHUNK + 1))
    loose = store.put_bytes(b"loose", pin=False)
    block_file(store, cid).unlink()
    with pytest.raises(StoreError, match="damaged"):
        store.gc()
    assert store.has(loose)  # nothing was deleted


# -- CAR --------------------------------------------------------------------------------------------------


def test_car_moves_a_directory_between_stores(store: LocalStore, tmp_path: Path) -> None:
    tree = make_sample_tree(tmp_path / "ckpt")
    cid = store.put_directory(tree)
    exported = tmp_path / "ckpt.car"
    count = store.export_car(cid, exported)
    assert count == len(list(dag.iter_dag(store.get_block, parse_cid(cid))))
    other = LocalStore(tmp_path / "other")
    assert other.import_car(exported) == [cid]
    assert other.pins() == [cid]
    other.get_directory(cid, tmp_path / "back")
    assert tree_snapshot(tmp_path / "back") == tree_snapshot(tree)
    roots, blocks = car.read_car(exported)
    assert roots == [parse_cid(cid)] and blocks[0][0] == parse_cid(cid)  # root first (pre-order)


def test_import_of_incomplete_car_keeps_nothing(store: LocalStore, tmp_path: Path) -> None:
    cid = store.put_bytes(data(3 * CHUNK))
    roots, blocks = car.read_car(_export(store, cid, tmp_path))
    partial = tmp_path / "partial.car"
    car.write_car(partial, roots, blocks[:-1])
    other = LocalStore(tmp_path / "other")
    with pytest.raises(BlockNotFound, match=str(blocks[-1][0])):
        other.import_car(partial)
    assert other.blocks() == [] and other.pins() == []


def test_import_of_tampered_car_keeps_nothing(store: LocalStore, tmp_path: Path) -> None:
    cid = store.put_bytes(data(3 * CHUNK))
    exported = _export(store, cid, tmp_path)
    raw = bytearray(exported.read_bytes())
    raw[-5] ^= 1
    exported.write_bytes(bytes(raw))
    other = LocalStore(tmp_path / "other")
    with pytest.raises(CidMismatch):
        other.import_car(exported)
    assert other.blocks() == [] and other.pins() == []


def _export(store: LocalStore, cid: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{cid[-8:]}.car"
    store.export_car(cid, path)
    return path


@pytest.mark.parametrize("name", ["..", "../escape", "a/b", ".", ""])
def test_hostile_directory_names_are_refused(store: LocalStore, tmp_path: Path, name: str) -> None:
    leaf = b"payload"
    leaf_cid = Cid.of(RAW, leaf)
    block = unixfs.encode_node([unixfs.Link(bytes(leaf_cid), name, len(leaf))], b"\x08\x01")
    root = Cid.of(DAG_PB, block)
    path = tmp_path / "evil.car"
    car.write_car(path, [root], [(root, block), (leaf_cid, leaf)])
    assert store.import_car(path) == [str(root)]
    with pytest.raises(FormatError, match="unsafe entry name"):
        store.get_directory(str(root), tmp_path / "out" / "x")
    assert not (tmp_path / "out" / "x").exists() and not (tmp_path / "escape").exists()


def test_duplicate_directory_names_are_refused(store: LocalStore, tmp_path: Path) -> None:
    leaf_cid = Cid.of(RAW, b"x")
    links = [unixfs.Link(bytes(leaf_cid), "same", 1)] * 2
    block = unixfs.encode_node(links, b"\x08\x01")
    root = Cid.of(DAG_PB, block)
    path = tmp_path / "dup.car"
    car.write_car(path, [root], [(root, block), (leaf_cid, b"x")])
    store.import_car(path)
    with pytest.raises(FormatError, match="twice"):
        store.list_directory(str(root))


# -- failures while writing ------------------------------------------------------------------------------


def test_disk_full_leaves_nothing_behind(store: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kept = store.put_bytes(data(CHUNK, "kept"))
    before = store.blocks()
    source = tmp_path / "big.bin"
    source.write_bytes(data(CHUNK, "kept") + data(6 * CHUNK, "new"))  # shares a block with `kept`
    real_write = os.write
    calls = {"n": 0}

    def failing_write(fd: int, buf: object) -> int:
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, buf)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "write", failing_write)
    with pytest.raises(StoreWriteError) as info:
        store.put_file(source)
    monkeypatch.undo()
    assert "no space left on device" in str(info.value) and "\n" not in str(info.value)
    assert store.blocks() == before and store.pins() == [kept]
    assert list((store.root / "tmp").iterdir()) == []
    assert store.get_bytes(kept) == data(CHUNK, "kept")


def test_failed_fsync_leaves_nothing_behind(store: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "f.bin"
    source.write_bytes(data(5 * CHUNK))

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(StoreWriteError, match="Input/output error"):
        store.put_file(source)
    monkeypatch.undo()
    assert store.blocks() == [] and store.pins() == []


def test_symlink_inside_directory_aborts_the_put(store: LocalStore, tmp_path: Path) -> None:
    tree = make_sample_tree(tmp_path / "ckpt")
    (tree / "zz-link").symlink_to(tree / "state.json")
    with pytest.raises(UsageError, match="symbolic links"):
        store.put_directory(tree)
    assert store.blocks() == [] and store.pins() == []


# -- opening stores --------------------------------------------------------------------------------------


def test_open_store_specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    default = open_store(home=home)
    assert isinstance(default, LocalStore) and default.root == home / "store"
    explicit = open_store(f"local:{tmp_path / 'elsewhere'}")
    assert isinstance(explicit, LocalStore) and explicit.root == tmp_path / "elsewhere"
    update_section("store", {"spec": f"local:{tmp_path / 'configured'}"}, home=home)
    configured = open_store(home=home)
    assert isinstance(configured, LocalStore) and configured.root == tmp_path / "configured"
    for bad in ("bogus", "kubo:", "ftp:x"):
        with pytest.raises(StoreAddressError):
            open_store(bad)
