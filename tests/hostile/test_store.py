"""A hostile store (#22): DAG bombs that declare a terabyte, 1 GiB blocks, slow drip and deep JSON from a Kubo
node, unsafe names. Every case stops at the auditor's budget or deadline, writes nothing beyond it, and is one
line (exit 2), never a crash."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from provenance import car, limits
from provenance._store import dag
from provenance._store.local import LocalStore
from provenance.cid import Cid
from provenance.errors import FormatError, StoreError
from provenance.store import Store, open_store
from tests.fixtures.store import CHUNK, BlockMap
from tests.hostile.child import assert_bounded, run_prov
from tests.hostile.servers import Behaviour, serve


def terabyte_dag(blocks: BlockMap, levels: int = 3) -> tuple[Cid, int]:
    """4 blocks (one leaf, three levels of 174 links to the level below) with honest, consistent sizes: the root
    truly declares 174³ × 256 KiB ≈ 1.4 TB. Every structural check passes; only a size budget stops it."""
    node, size = blocks.raw(b"\x5a" * CHUNK), CHUNK
    for _ in range(levels):
        node = blocks.file_node([(node, size)] * 174)
        size *= 174
    return node, size


@pytest.fixture
def bomb_store(tmp_path: Path) -> tuple[Path, Cid, int]:
    blocks = BlockMap()
    root, size = terabyte_dag(blocks)
    folder = blocks.directory({"state.json": root})
    path = tmp_path / "bomb.car"
    car.write_car(path, [folder], blocks.blocks.items())
    LocalStore(tmp_path / "store", durable=False).import_car(path)
    return tmp_path / "store", root, size


def _bytes_under(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def test_store_get_refuses_a_terabyte_dag_before_writing(bomb_store: tuple[Path, Cid, int], tmp_path: Path) -> None:
    store, root, size = bomb_store
    assert size > 1 << 40
    out = tmp_path / "out"
    out.mkdir()
    line = assert_bounded(run_prov("store", "--store", f"local:{store}", "get", str(root), str(out / "f")))
    assert str(root) in line and "declares" in line
    assert _bytes_under(out) == 0


def test_store_get_max_size_stops_a_smaller_bomb(tmp_path: Path) -> None:
    blocks = BlockMap()
    root, _ = terabyte_dag(blocks, levels=2)  # 174² chunks ≈ 7.9 GB: may fit the disk, not the budget
    LocalStore(tmp_path / "store", durable=False)
    car.write_car(tmp_path / "b.car", [root], blocks.blocks.items())
    LocalStore(tmp_path / "store", durable=False).import_car(tmp_path / "b.car")
    line = assert_bounded(run_prov("store", "--store", f"local:{tmp_path / 'store'}", "get", "--max-size",
                                   str(10 << 20), str(root), str(tmp_path / "f")))
    assert "--max-size" in line
    assert not (tmp_path / "f").exists() and not list(tmp_path.glob(".f.*"))


def test_a_verification_budget_stops_a_directory_bomb(bomb_store: tuple[Path, Cid, int], tmp_path: Path) -> None:
    store_dir, _, _ = bomb_store
    store = LocalStore(store_dir, durable=False)
    [folder] = store.pins()
    started = time.monotonic()
    with limits.active(limits.Budget(max_bytes=64 << 20)), pytest.raises(limits.BudgetExceeded, match="--max-bytes"):
        store.get_directory(folder, tmp_path / "subject")
    assert time.monotonic() - started < 5
    assert not (tmp_path / "subject").exists() and _bytes_under(tmp_path) < 2 << 20  # the store's own blocks


def test_a_budget_counts_every_block_read(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store", durable=False)
    cid = store.put_bytes(os.urandom(3 * CHUNK))
    budget = limits.Budget(max_bytes=CHUNK)
    with limits.active(budget), pytest.raises(limits.BudgetExceeded):
        store.get_bytes(cid)
    assert store.get_bytes(cid)  # outside the budget, nothing is limited


def test_a_deadline_stops_reads() -> None:
    budget = limits.Budget(timeout=0.05)
    time.sleep(0.1)
    with limits.active(budget), pytest.raises(limits.DeadlineExceeded, match="--timeout"):
        limits.request_timeout(30, "block/get x")


# -- a hostile Kubo node ----------------------------------------------------------------------------------


def _kubo(url: str, timeout: float = 3.0) -> Store:

    return open_store(f"kubo:{url}", timeout=timeout)


@pytest.mark.parametrize("declare", [1 << 30, None], ids=["declared", "undeclared"])
def test_a_1_gib_block_is_refused_after_2_mib(declare: int | None) -> None:
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cid = "bafkreihqjfk3m6yo3o6srx2yu26xo6326adczgy2bmpibkw3wfg4ymmjeu"
    with serve(Behaviour(mode="flood", declare=declare, flood_bytes=64 << 20)) as url, _kubo(url) as store, \
            pytest.raises(StoreError, match="limit") as info:
        store.get_bytes(cid)
    assert url in str(info.value) and "\n" not in str(info.value)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 << 10  # KiB: < 64 MiB more


@pytest.mark.slow
def test_a_slow_drip_kubo_node_is_cut_off() -> None:
    cid = "bafkreihqjfk3m6yo3o6srx2yu26xo6326adczgy2bmpibkw3wfg4ymmjeu"
    started = time.monotonic()
    with serve(Behaviour(mode="drip", drip_every=0.5, drip_bytes=100)) as url, _kubo(url, timeout=2.0) as store:
        with pytest.raises(StoreError, match="still answering"):
            store.get_bytes(cid)
        with pytest.raises(StoreError, match="still answering"):  # not waited for a second time
            store.get_bytes(cid)
    assert time.monotonic() - started < 15


def test_a_deep_json_error_body_is_one_line() -> None:
    cid = "bafkreihqjfk3m6yo3o6srx2yu26xo6326adczgy2bmpibkw3wfg4ymmjeu"
    with serve(Behaviour(mode="deep", status=500, depth=30_000)) as url, _kubo(url) as store, \
            pytest.raises(StoreError, match="nested deeper") as info:
        store.get_bytes(cid)
    assert "\n" not in str(info.value)


# -- names a DAG gives files ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["evil\u202etxt.json", "a\x1b[2Jb", "x" * 256], ids=["bidi", "escape", "long"])
def test_unsafe_entry_names_are_refused(name: str, tmp_path: Path) -> None:
    blocks = BlockMap()
    folder = blocks.directory({name: blocks.raw(b"x")})
    with pytest.raises(FormatError, match="entry name") as info:
        dag.write_directory(blocks.get, folder, tmp_path / "d")
    assert "\u202e" not in str(info.value) and "\x1b" not in str(info.value)
    assert not (tmp_path / "d").exists()


def test_an_over_long_destination_is_one_line(tmp_path: Path) -> None:
    store = tmp_path / "store"
    LocalStore(store, durable=False)
    cid = LocalStore(store, durable=False).put_bytes(b"hello")
    line = assert_bounded(run_prov("store", "--store", f"local:{store}", "get", cid, str(tmp_path / ("n" * 300))))
    assert "shorter" in line


def test_a_verification_inside_a_deadline_gets_only_what_is_left() -> None:
    """`prov verify --timeout T` counts connecting too: the verification's own budget ends at the outer deadline, and
    its error names the T the user gave."""
    alone = limits.Budget(timeout=30.0).within(None)
    assert alone.timeout == 30.0 and alone.seconds_left() is not None
    outer = limits.Budget(timeout=5.0)
    time.sleep(0.2)
    inner = limits.Budget(max_bytes=10, timeout=30.0).within(outer)
    assert inner.deadline == outer.deadline and inner.timeout == 5.0 and inner.max_bytes == 10
    assert limits.Budget(timeout=1.0).within(outer).timeout == 1.0  # an earlier inner deadline stays
    assert limits.Budget().within(outer).deadline == outer.deadline
    past = limits.Budget(timeout=0.01)
    time.sleep(0.05)
    with pytest.raises(limits.DeadlineExceeded, match=r"0\.01s deadline"):
        limits.Budget(timeout=30.0).within(past).check_time("reading")
