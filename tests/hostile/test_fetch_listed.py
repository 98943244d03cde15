"""A committed checkpoint directory is fetched by its committed manifest, not by the store's listing (#22): an
extra file the listing adds (declaring 2 GiB) is never read, a listed file the store serves at another size is
refused before its first byte, and nothing beyond the listed files is written."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from provenance import car, limits
from provenance._store.local import LocalStore
from provenance._verify.checks import CheckFailed
from provenance._verify.fetch import fetch_listed
from provenance.cid import Cid, parse_cid
from provenance.hashing import Digest
from provenance.manifest import MANIFEST_NAME, CheckpointManifest, FileEntry, hash_directory
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


def test_a_committed_manifest_declaring_a_2_gib_state_is_refused_before_fetching(tmp_path: Path) -> None:
    """The trainer commits a checkpoint whose own manifest declares a 2 GiB state.json (the DAG holds one): the
    commitment is consistent, so only the per-kind cap stops it, before a byte of it is fetched or written."""
    folder = _checkpoint(tmp_path)
    store = CountingStore(tmp_path / "store")
    honest = store.put_directory(folder)
    blocks = BlockMap()
    bomb, size = _two_gib(blocks)
    committed = hash_directory(folder)
    manifest = CheckpointManifest(tuple(FileEntry(e.path, Digest.of(b"declared"), size) if e.path == "state.json"
                                        else e for e in committed.files))
    manifest_cid = blocks.raw(manifest.encode())
    car.write_car(tmp_path / "bomb.car", [bomb, manifest_cid], blocks.blocks.items())
    store.import_car(tmp_path / "bomb.car")
    hostile, _ = _hostile_listing(store, honest, tmp_path, **{"state.json": bomb, MANIFEST_NAME: manifest_cid})
    store.asked.clear()
    with pytest.raises(CheckFailed) as info:
        fetch_listed(store, Record(3, hostile, manifest.digest()), tmp_path / "out")
    assert "declares state.json at" in str(info.value) and "more than any trainer writes" in str(info.value)
    assert bomb not in store.asked and not (tmp_path / "out").exists()


def test_a_manifest_that_is_not_the_committed_one_fails_first(tmp_path: Path) -> None:
    folder = _checkpoint(tmp_path)
    store = CountingStore(tmp_path / "store")
    cid = store.put_directory(folder)
    other = Digest.of(b"another checkpoint")
    with pytest.raises(CheckFailed, match="not the committed one"):
        fetch_listed(store, Record(1, cid, other), tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_run_whose_checkpoints_list_a_2_gib_extra_file_verifies_without_reading_it(
        tmp_path: Path, tiny_run: Any, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end: every checkpoint directory the trainer stores lists an extra 2 GiB file beside the committed
    ones. The step-log walk refuses the listing (it must equal the manifest) and the checkpoint check fetches only
    the listed files: FAILED naming the difference, in seconds, and the bomb's root block is never asked for."""
    pytest.importorskip("torch", reason="needs a trained run: install the train extra (scripts/setup does)")
    from tests.fixtures.verify import VerifyEnv, check, data_options, last

    env = VerifyEnv(tmp_path)
    store = env.store
    blocks = BlockMap()
    bomb, _ = _two_gib(blocks)
    car.write_car(tmp_path / "bomb.car", [bomb], blocks.blocks.items())
    store.import_car(tmp_path / "bomb.car")
    honest_put = store.put_directory

    def hostile_put(path: Any, *, pin: bool = True) -> str:
        honest = honest_put(path, pin=pin)
        return _hostile_listing(store, honest, tmp_path / Path(path).name, **{"extra.bin": bomb})[0] \
            if (Path(path) / MANIFEST_NAME).exists() else honest

    monkeypatch.setattr(store, "put_directory", hostile_put)
    run = env.copy(tiny_run.run_dir)
    env.anchor(run)
    monkeypatch.setattr(store, "put_directory", honest_put)
    asked: set[Cid] = set()
    get_block = store.get_block

    def counting(cid: Cid) -> bytes:
        asked.add(cid)
        return get_block(cid)

    monkeypatch.setattr(store, "get_block", counting)
    started = time.monotonic()
    report = env.verify(last(run) / "adapter_model.safetensors", replay="0", **data_options(run, tiny_model_dir))
    assert time.monotonic() - started < 30
    assert report["verdict"] == "failed" and check(report, "checkpoint")["status"] == "passed"
    assert check(report, "step_log")["status"] == "failed"
    assert "stored files differ" in check(report, "step_log")["summary"]
    assert bomb not in asked and asked  # committed checkpoints were fetched, the extra file never
