"""The local blockstore: one file per block in a content-addressed folder, no daemon.

Layout under the store root (default `<state_dir>/store`):
  blocks/<2 chars>/<cid>   each block, named by its base32 CID; shard = the two characters before the last
                           (Kubo's flatfs `next-to-last/2`)
  pins/<cid>               an empty file per recursive pin
  tmp/                     blocks being written; never read, emptied by gc
  lock                     flock: writers share it, gc takes it alone

Crash safety: a block is written to tmp/, fsynced, then renamed into place, so a reader sees a whole block or
none; reads re-hash anyway. A pin is recorded only after the whole DAG is present. A failed put removes the
blocks it added (unless a pin reaches them), so a full disk leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from provenance import car
from provenance._store import dag, unixfs
from provenance._store.base import BlockNotFound, NotPinned, Store, StoreError, StoreWriteError
from provenance.cid import MAX_BLOCK_SIZE, Cid, cid_text, parse_cid
from provenance.errors import ProvenanceError
from provenance.fsutil import fsync_dir
from provenance.hashing import ProgressCallback


class LocalStore(Store):
    """A blockstore in a folder; safe for concurrent processes and against crashes mid-write."""

    def __init__(self, root: Path, *, durable: bool = True) -> None:
        self.root = Path(root)
        self.spec = f"local:{self.root}"
        self.durable = durable  # fsync every block; tests may turn it off for speed
        self._blocks = self.root / "blocks"
        self._pins = self.root / "pins"
        self._tmp = self.root / "tmp"

    # -- layout and locking -------------------------------------------------------------------------------

    def _ensure(self) -> None:
        try:
            for folder in (self._blocks, self._pins, self._tmp):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreWriteError(f"local store {self.root}: cannot create ({exc.strerror or exc})") from None

    def _block_path(self, text: str) -> Path:
        return self._blocks / text[-3:-1] / text

    @contextlib.contextmanager
    def _lock(self, *, exclusive: bool) -> Iterator[None]:
        self._ensure()
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # -- reads --------------------------------------------------------------------------------------------

    def _read_block(self, cid: Cid) -> bytes:
        text = str(cid)
        try:
            with self._block_path(text).open("rb") as f:
                return f.read(MAX_BLOCK_SIZE + 1)  # get_block refuses anything longer without reading it all
        except FileNotFoundError:
            raise BlockNotFound(text, f"not in the local store {self.root}") from None
        except OSError as exc:
            raise StoreError(f"local store {self.root}: cannot read block {text} ({exc.strerror})") from None

    def has(self, cid: str) -> bool:
        return self._block_path(str(parse_cid(cid))).is_file()

    def _exists(self, cid: Cid) -> bool:
        return self._block_path(str(cid)).is_file()

    # -- writes -------------------------------------------------------------------------------------------

    def put_bytes(self, data: bytes, *, pin: bool = True) -> str:
        def build(sink: _Writer) -> bytes:
            builder = unixfs.FileBuilder(sink)
            builder.add_all(memoryview(data))
            return builder.finish().cid

        return self._put(build, pin=pin, what="bytes")

    def put_file(self, path: str | os.PathLike[str], *, pin: bool = True,
                 progress: ProgressCallback | None = None) -> str:
        source = Path(path)

        def build(sink: _Writer) -> bytes:
            with unixfs.open_input(source) as stream:
                total = os.fstat(stream.fileno()).st_size
                report = None if progress is None else (lambda done: progress(done, total))
                return unixfs.build_file(stream, sink=sink, progress=report).cid

        return self._put(build, pin=pin, what=str(source))

    def put_directory(self, path: str | os.PathLike[str], *, pin: bool = True) -> str:
        source = Path(path)
        return self._put(lambda sink: unixfs.build_directory(source, sink=sink).cid, pin=pin, what=str(source))

    def _put(self, build: Callable[[_Writer], bytes], *, pin: bool, what: str) -> str:
        with self._writing(what) as writer:
            cid = Cid.from_bytes(build(writer))[0]
            writer.finish()
            if pin:
                self._pin(cid)
        return str(cid)

    @contextlib.contextmanager
    def _writing(self, what: str) -> Iterator[_Writer]:
        """Hold the shared lock while writing; on any failure remove what was written, keep errors one-line."""
        writer = _Writer(self)
        try:
            with self._lock(exclusive=False):
                yield writer
        except BaseException as exc:
            writer.abort()
            self._discard(writer.created)
            if isinstance(exc, OSError):
                raise _write_error(self.root, exc, what) from None
            raise

    def _discard(self, created: list[Path]) -> None:
        """Remove blocks a failed put created, except those a pin reaches (another writer may share them)."""
        if not created:
            return
        with contextlib.suppress(ProvenanceError, OSError), self._lock(exclusive=True):
            keep = self._reachable()
            for path in created:
                if path.name not in keep:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()

    # -- pins and gc --------------------------------------------------------------------------------------

    def pin(self, cid: str) -> None:
        root = parse_cid(cid)
        with self._lock(exclusive=False):
            self._pin(root)

    def _pin(self, root: Cid) -> None:
        for _ in dag.walk_links(self.get_block, root, self._exists):
            pass  # raises BlockNotFound naming the first missing block: never pin a partial DAG
        marker = self._pins / str(root)
        if not marker.exists():
            try:
                marker.touch()
                if self.durable:
                    fsync_dir(self._pins)
            except OSError as exc:
                raise _write_error(self.root, exc, f"pin {root}") from None

    def unpin(self, cid: str) -> None:
        root = parse_cid(cid)
        try:
            (self._pins / str(root)).unlink()
        except FileNotFoundError:
            raise NotPinned(f"{root} is not pinned in the local store {self.root}") from None

    def pins(self) -> list[str]:
        if not self._pins.is_dir():
            return []
        found = []
        for name in os.listdir(self._pins):
            with contextlib.suppress(ProvenanceError):
                found.append(str(parse_cid(name)))
        return sorted(found)

    def _reachable(self) -> set[str]:
        keep: set[str] = set()
        for text in self.pins():
            try:
                keep.update(str(c) for c in dag.walk_links(self.get_block, parse_cid(text), self._exists))
            except ProvenanceError as exc:
                raise StoreError(f"pinned {text} is damaged ({exc}); re-import it before running gc") from None
        return keep

    def gc(self) -> int:
        """Delete every block no pin reaches, and leftovers of interrupted writes."""
        removed = 0
        with self._lock(exclusive=True):
            keep = self._reachable()
            for shard in list(self._blocks.iterdir()):
                for path in list(shard.iterdir()):
                    if path.name not in keep:
                        path.unlink()
                        removed += 1
            for leftover in self._tmp.iterdir():  # no writer holds the lock, so these are all stale
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()
        return removed

    def blocks(self) -> list[str]:
        """Every block CID held, sorted (for tests and `prov store ls --blocks`)."""
        if not self._blocks.is_dir():
            return []
        return sorted(p.name for shard in self._blocks.iterdir() for p in shard.iterdir())

    # -- CAR ----------------------------------------------------------------------------------------------

    def import_car(self, path: str | os.PathLike[str]) -> list[str]:
        source = Path(path)
        with self._writing(str(source)) as writer:
            with car.CarReader(source) as reader:
                roots = reader.roots
                for cid, block in reader:
                    writer(bytes(cid), block)
            writer.finish()
            for root in roots:
                self._pin(root)
        return [str(root) for root in roots]


class _Writer:
    """The block sink of one put: writes new blocks crash-safely, remembers what it created.

    Each block is written to tmp/ at once (the data is a view the builder reuses), then fsynced and renamed
    into place on a small thread pool: fsync waits on the disk and releases the GIL, and overlapping them
    makes a durable put several times faster than one fsync after another.
    """

    FSYNC_THREADS = 8
    MAX_PENDING = 64  # bounds open file descriptors

    def __init__(self, store: LocalStore) -> None:
        self.store = store
        self.created: list[Path] = []
        self._dirs: set[Path] = set()
        self._pending: deque[Future[None]] = deque()
        self._pool: ThreadPoolExecutor | None = None
        self._claimed: set[Path] = set()

    def __call__(self, binary: bytes, data: bytes | memoryview) -> None:
        store = self.store
        target = store._block_path(cid_text(binary))
        if target in self._claimed or target.exists():
            return
        if not target.parent.is_dir():
            target.parent.mkdir(exist_ok=True)
            self._dirs.add(store._blocks)
        fd, tmp = tempfile.mkstemp(dir=store._tmp, prefix="block.")
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            _abandon(fd, tmp)
            raise
        self._claimed.add(target)
        if not store.durable:
            self._commit(fd, tmp, target)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.FSYNC_THREADS, thread_name_prefix="prov-store-fsync")
        self._pending.append(self._pool.submit(self._commit, fd, tmp, target))
        if len(self._pending) >= self.MAX_PENDING:
            self._pending.popleft().result()

    def _commit(self, fd: int, tmp: str, target: Path) -> None:
        try:
            if self.store.durable:
                os.fsync(fd)
            os.close(fd)
            fd = -1
            os.replace(tmp, target)
        except BaseException:
            _abandon(fd, tmp)
            raise
        self.created.append(target)
        self._dirs.add(target.parent)

    def _drain(self) -> None:
        """Wait for every pending block; re-raise the first failure after all have settled."""
        error: BaseException | None = None
        while self._pending:
            try:
                self._pending.popleft().result()
            except BaseException as exc:  # keep draining, so no rename lands after a cleanup
                error = error or exc
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if error is not None:
            raise error

    def abort(self) -> None:
        """Settle pending writes after a failure (their errors are superseded by the first one)."""
        with contextlib.suppress(BaseException):
            self._drain()

    def finish(self) -> None:
        """Make every block and rename durable before anything (a pin) refers to them."""
        self._drain()
        if self.store.durable and self._dirs:
            with ThreadPoolExecutor(self.FSYNC_THREADS) as pool:
                list(pool.map(fsync_dir, self._dirs))
        self._dirs.clear()


def _abandon(fd: int, tmp: str) -> None:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


def _write_error(root: Path, exc: OSError, what: str) -> StoreWriteError:
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    reason = "no space left on device" if full else exc.strerror or str(exc)
    return StoreWriteError(f"local store {root}: cannot store {what}: {reason}; nothing was kept")

