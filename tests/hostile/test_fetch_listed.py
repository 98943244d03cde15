"""A committed checkpoint directory is fetched by its committed manifest, not by the store's listing (#22): an
extra file the listing adds (declaring 2 GiB) is never read, a listed file the store serves at another size is
refused before its first byte, and nothing beyond the listed files is written."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from provenance import car, limits
from provenance._store.local import LocalStore
from provenance._verify.checks import CheckFailed
from provenance._verify.fetch import fetch_listed
from provenance.cid import Cid, parse_cid
from provenance.hashing import Digest
from provenance.manifest import MANIFEST_NAME, hash_directory
from tests.fixtures.store import CHUNK, BlockMap

TWO_GIB_CHUNKS = (2 << 30) // CHUNK // 174 + 1  # links of 174-chunk nodes a 2 GiB (and a bit) file needs


@dataclass(frozen=True)
class Record:
    index: int
    manifest_cid: str
    checkpoint_digest: Digest


def _checkpoint(tmp_path: Path) -> Path:
    folder = tmp_path / "checkpoint"
    (folder / "sub").mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"w" * (CHUNK + 5))  # two chunks: a dag-pb file
    (folder / "state.json").write_bytes(b'{"step":6}')
    (folder / "sub" / "rng.json").write_bytes(b"{}")
    (folder / MANIFEST_NAME).write_bytes(hash_directory(folder).encode())
    return folder


def _two_gib(blocks: BlockMap) -> tuple[Cid, int]:
    leaf = blocks.raw(b"\x5a" * CHUNK)
    mid = blocks.file_node([(leaf, CHUNK)] * 174)
    return blocks.file_node([(mid, 174 * CHUNK)] * TWO_GIB_CHUNKS), 174 * CHUNK * TWO_GIB_CHUNKS


class CountingStore(LocalStore):
    """A local store that remembers every block it was asked for."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, durable=False)
        self.asked: set[Cid] = set()

    def get_block(self, cid: Cid) -> bytes:
        self.asked.add(cid)
        return super().get_block(cid)


def _hostile_listing(store: LocalStore, honest: str, tmp_path: Path, **replace: Cid) -> tuple[str, BlockMap]:
    """The honest directory's entries plus (or replaced by) `replace`, imported into `store` as a new root."""
    blocks = BlockMap()
    entries = {name: parse_cid(cid) for name, cid in store.list_directory(honest).items()}
    entries.update(replace)
    folder = blocks.directory(entries)
    car.write_car(tmp_path / "hostile.car", [folder], blocks.blocks.items())
    store.import_car(tmp_path / "hostile.car")
    return str(folder), blocks


def _bytes_under(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def test_an_extra_2_gib_file_in_the_listing_is_never_fetched(tmp_path: Path) -> None:
    folder = _checkpoint(tmp_path)
    store = CountingStore(tmp_path / "store")
    honest = store.put_directory(folder)
    blocks = BlockMap()
    bomb, size = _two_gib(blocks)
    assert size > 2 << 30
    car.write_car(tmp_path / "bomb.car", [bomb], blocks.blocks.items())
    store.import_car(tmp_path / "bomb.car")
    hostile, _ = _hostile_listing(store, honest, tmp_path, **{"extra.bin": bomb})
    record = Record(3, hostile, hash_directory(folder).digest())
    budget = limits.Budget(max_bytes=64 << 20, timeout=30)
    store.asked.clear()  # importing the CAR read its blocks back
    started = time.monotonic()
    with limits.active(budget):
        manifest = fetch_listed(store, record, tmp_path / "out")
    assert time.monotonic() - started < 5
    assert manifest.digest() == record.checkpoint_digest
    assert hash_directory(tmp_path / "out").digest() == record.checkpoint_digest
    assert not (tmp_path / "out" / "extra.bin").exists() and bomb not in store.asked
    assert _bytes_under(tmp_path / "out") < 1 << 20 and budget.used < 1 << 20
    # The same listing fetched whole (what the verifier did before) runs into the budget: the bomb is real.
    with limits.active(limits.Budget(max_bytes=64 << 20)), pytest.raises(limits.BudgetExceeded):
        store.get_directory(hostile, tmp_path / "whole")


def test_a_listed_file_served_at_another_size_is_refused_before_reading(tmp_path: Path) -> None:
    folder = _checkpoint(tmp_path)
    store = CountingStore(tmp_path / "store")
    honest = store.put_directory(folder)
    blocks = BlockMap()
    bomb, _ = _two_gib(blocks)
    car.write_car(tmp_path / "bomb.car", [bomb], blocks.blocks.items())
    store.import_car(tmp_path / "bomb.car")
    hostile, _ = _hostile_listing(store, honest, tmp_path, **{"state.json": bomb})
    record = Record(3, hostile, hash_directory(folder).digest())
    with pytest.raises(CheckFailed) as info:
        fetch_listed(store, record, tmp_path / "out")
    assert "state.json" in str(info.value) and "refused before reading" in str(info.value)
    assert not (tmp_path / "out" / "state.json").exists() and _bytes_under(tmp_path / "out") < 1 << 20


def test_a_manifest_that_is_not_the_committed_one_fails_first(tmp_path: Path) -> None:
    folder = _checkpoint(tmp_path)
    store = CountingStore(tmp_path / "store")
    cid = store.put_directory(folder)
    other = Digest.of(b"another checkpoint")
    with pytest.raises(CheckFailed, match="not the committed one"):
        fetch_listed(store, Record(1, cid, other), tmp_path / "out")
    assert not (tmp_path / "out").exists()
