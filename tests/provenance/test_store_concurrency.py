"""The local store under concurrent writers and gc, and after a writer is killed mid-put."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from provenance._store.local import LocalStore
from provenance.cid import parse_cid
from provenance.store import bytes_cid

CHUNK = 262_144


def content(writer: int, item: int) -> bytes:
    # Every item starts with the same chunk, so writers race on shared blocks.
    shared = hashlib.shake_256(b"shared").digest(CHUNK)
    return shared + hashlib.shake_256(f"{writer}/{item}".encode()).digest(CHUNK + writer * 1000 + item)


def _writer(root: str, writer: int, items: int, out: multiprocessing.Queue) -> None:
    store = LocalStore(Path(root))
    out.put([store.put_bytes(content(writer, item)) for item in range(items)])


def _collector(root: str, rounds: int) -> None:
    store = LocalStore(Path(root))
    for _ in range(rounds):
        store.put_bytes(os.urandom(1000), pin=False)  # garbage for gc to find
        store.gc()


def test_concurrent_writers_and_gc_lose_nothing(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    writers = [ctx.Process(target=_writer, args=(str(tmp_path), w, 6, results)) for w in range(4)]
    collector = ctx.Process(target=_collector, args=(str(tmp_path), 15))
    for process in [*writers, collector]:
        process.start()
    cids = [cid for _ in writers for cid in results.get(timeout=120)]
    for process in [*writers, collector]:
        process.join(timeout=120)
        assert process.exitcode == 0
    store = LocalStore(tmp_path)
    assert sorted(cids) == store.pins() and len(cids) == 24
    store.gc()
    for writer in range(4):
        for item in range(6):
            expected = content(writer, item)
            assert store.get_bytes(bytes_cid(expected)) == expected


_CHILD = """
import os, sys, time
from pathlib import Path
real_fsync = os.fsync
def slow_fsync(fd):
    time.sleep(0.01)  # stretch the put so the parent can kill it half-way
    real_fsync(fd)
os.fsync = slow_fsync
from provenance._store.local import LocalStore
print("started", flush=True)
LocalStore(Path(sys.argv[1])).put_file(sys.argv[2])
print("finished", flush=True)
"""


def test_killed_writer_leaves_only_whole_blocks_and_no_pin(tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(hashlib.shake_256(b"crash").digest(300 * CHUNK))
    root = tmp_path / "store"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(root), str(source)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "started"
    deadline = time.monotonic() + 60
    store = LocalStore(root)
    while len(store.blocks()) < 30 and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    written = store.blocks()
    assert 30 <= len(written) < 301, "the writer was not killed mid-put"
    # Every block that made it into blocks/ is whole; the pin was never written.
    for name in written:
        path = root / "blocks" / name[-3:-1] / name
        store.get_block(parse_cid(name))  # re-hashes: raises if the block were torn
        assert path.stat().st_size > 0
    assert store.pins() == []
    # A retry completes the artifact, and gc sweeps the interrupted write's leftovers.
    cid = store.put_file(source)
    assert store.get_bytes(cid, max_size=None) == source.read_bytes()
    store.gc()
    assert list((root / "tmp").iterdir()) == []
    assert store.pins() == [cid]
