"""The step log: an append-only, crash-safe file of step records with its RFC 6962 tree persisted alongside.

On disk, `<dir>/steps.jsonl` holds one line per optimizer step, canonical JSON
`{"leaf": <hex>, "record": {...}, "root": <hex>}` + `\\n`, where `leaf` is the record's Merkle leaf hash and
`root` the tree root after appending it. Each line is written with one `write(2)` on an `O_APPEND` descriptor,
so a killed process leaves at most one partial line at the end (a *torn tail*); nothing before it changes.

Durability: every append reaches the OS before `append` returns (survives the process being killed). It reaches
the disk (`fsync`) every `fsync_every` appends (default 1: every step; 0 = only at `sync()`), and at every
`sync()`/`close()`; the trainer syncs before each checkpoint is written. See bench/bench_steplog.py for the cost.

Reopening re-derives every leaf and root from the records and refuses a log whose stored values disagree
(`TamperedRecord` naming the step), or whose step numbers are not 0, 1, 2, ...; a torn tail raises `TornTail`
unless opened with `repair=True`, which moves the torn bytes to `steps.jsonl.torn-<n>` (kept for inspection)
and truncates the log to its last whole record.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from provenance import canonical, merkle
from provenance.errors import FormatError, TamperedRecord, TornTail, UsageError
from provenance.fsutil import atomic_write, fsync_dir
from provenance.records import AnyStepRecord, step_record_from_json

LOG_NAME = "steps.jsonl"
MAX_LINE = 64 * 1024  # a step line is a few hundred bytes; a longer one is refused before it is parsed


def encode_line(record: AnyStepRecord, leaf: bytes, root: bytes) -> bytes:
    return canonical.encode({"leaf": leaf.hex(), "record": record.to_json(), "root": root.hex()}) + b"\n"


def parse_records(data: bytes, *, first_step: int = 0, source: str = LOG_NAME) -> list[AnyStepRecord]:
    """Parse whole lines of a step log (or a segment of one starting at `first_step`).

    Only the records are trusted input here: stored leaves and roots are ignored, since the caller recomputes
    the tree from the records and compares it with a committed root. Step numbers must run consecutively.
    """
    if data and not data.endswith(b"\n"):
        raise FormatError(f"{source}: ends in a partial line (truncated)")
    records: list[AnyStepRecord] = []
    for number, line in enumerate(data.splitlines(), start=1):
        value = canonical.decode(line, source=f"{source} line {number}", strict=True, max_size=MAX_LINE)
        if not isinstance(value, dict) or "record" not in value:
            raise FormatError(f"{source} line {number}: not a step-log line")
        record = step_record_from_json(value["record"])
        expected = first_step + len(records)
        if record.step != expected:
            raise TamperedRecord(
                f"{source} line {number}: steps out of sequence", index=expected, expected=expected, found=record.step
            )
        records.append(record)
    return records


class StepLog:
    """An open step log. Use `StepLog.open(dir)`; append records whose `step` equals `size`."""

    def __init__(self, directory: Path, records: list[AnyStepRecord], leaves: list[bytes], *, fsync_every: int) -> None:
        self.directory = directory
        self.path = directory / LOG_NAME
        self._records = records
        self._leaves = leaves
        self._range = merkle.CompactRange()
        for leaf in leaves:
            self._range.append(leaf)
        self._fsync_every = fsync_every
        self._unsynced = 0
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.repaired_bytes = 0

    # --- opening --------------------------------------------------------------------------------------

    @classmethod
    def open(
        cls, directory: str | os.PathLike[str], *, create: bool = True, repair: bool = False, fsync_every: int = 1
    ) -> StepLog:
        root = Path(directory)
        path = root / LOG_NAME
        if not path.exists():
            if not create:
                raise UsageError(f"{root}: no step log here (expected {LOG_NAME})")
            root.mkdir(parents=True, exist_ok=True)
            path.touch()
            fsync_dir(root)
        data = path.read_bytes()
        whole, torn = _split_torn(data)
        records, leaves = _check_lines(whole, source=str(path))
        if torn and not repair:
            raise TornTail(
                f"{path}: ends in a partial record of {len(torn)} bytes after {len(records)} whole records "
                "(a crash mid-write); reopen with repair to keep the whole records and set the tail aside",
                valid_records=len(records),
                torn_bytes=len(torn),
            )
        log = cls(root, records, leaves, fsync_every=fsync_every)
        if torn:
            log._set_aside(len(whole), torn, "torn")
            log.repaired_bytes = len(torn)
        return log

    def _set_aside(self, keep: int, tail: bytes, tag: str) -> None:
        """Move bytes past `keep` to a numbered side file, then truncate: nothing written is ever destroyed."""
        n = 0
        while (side := self.path.with_name(f"{LOG_NAME}.{tag}-{n}")).exists():
            n += 1
        atomic_write(side, tail)
        os.truncate(self.path, keep)
        assert self._fd is not None
        os.fsync(self._fd)

    # --- reading --------------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return len(self._records)

    def root(self) -> bytes:
        return self._range.root()

    def root_at(self, size: int) -> bytes:
        if not 0 <= size <= self.size:
            raise UsageError(f"step log has {self.size} steps; no root at size {size}")
        return merkle.root(self._leaves[:size])

    @property
    def leaf_hashes(self) -> list[bytes]:
        return list(self._leaves)

    def records(self) -> Iterator[AnyStepRecord]:
        return iter(list(self._records))

    def record(self, step: int) -> AnyStepRecord:
        return self._records[step]

    def segment(self, start: int, end: int) -> bytes:
        """The log lines for steps [start, end): what a checkpoint stores as its part of the log."""
        if not 0 <= start <= end <= self.size:
            raise UsageError(f"step log has {self.size} steps; no segment [{start}, {end})")
        out = bytearray()
        rng = merkle.CompactRange()
        for leaf in self._leaves[:start]:
            rng.append(leaf)
        for i in range(start, end):
            rng.append(self._leaves[i])
            out += encode_line(self._records[i], self._leaves[i], rng.root())
        return bytes(out)

    # --- writing --------------------------------------------------------------------------------------

    def append(self, record: AnyStepRecord) -> int:
        """Append one step; returns its index. The record must be the next step."""
        if self._fd is None:
            raise UsageError(f"{self.path}: step log is closed")
        if record.step != self.size:
            raise UsageError(f"step log expects step {self.size} next, got step {record.step}")
        leaf = record.leaf_hash()
        self._range.append(leaf)
        line = encode_line(record, leaf, self._range.root())
        written = os.write(self._fd, line)
        if written != len(line):  # a short write to a regular file means the disk is full
            raise OSError(f"{self.path}: short write ({written} of {len(line)} bytes); is the disk full?")
        self._records.append(record)
        self._leaves.append(leaf)
        self._unsynced += 1
        if self._fsync_every and self._unsynced >= self._fsync_every:
            self.sync()
        return record.step

    def truncate(self, size: int) -> None:
        """Rewind to `size` steps (resume from an older checkpoint). The cut records go to a side file."""
        if not 0 <= size <= self.size:
            raise UsageError(f"step log has {self.size} steps; cannot rewind to {size}")
        if size == self.size:
            return
        data = self.path.read_bytes()
        cut = 0
        for _ in range(size):  # the byte offset just past the line of step size-1
            cut = data.index(b"\n", cut) + 1
        self._set_aside(cut, data[cut:], "rewound")
        del self._records[size:]
        del self._leaves[size:]
        self._range = merkle.CompactRange()
        for leaf in self._leaves:
            self._range.append(leaf)

    def sync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            self._unsynced = 0

    def close(self) -> None:
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StepLog:
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.close()


def _split_torn(data: bytes) -> tuple[bytes, bytes]:
    end = data.rfind(b"\n") + 1
    return data[:end], data[end:]


def _check_lines(data: bytes, *, source: str) -> tuple[list[AnyStepRecord], list[bytes]]:
    """Parse whole lines and check each stored leaf and root against the records (tamper detection)."""
    records: list[AnyStepRecord] = []
    leaves: list[bytes] = []
    rng = merkle.CompactRange()
    for number, line in enumerate(data.splitlines(), start=1):
        index = number - 1
        try:
            value = canonical.decode(line, source=f"{source} line {number}", strict=True, max_size=MAX_LINE)
            if not isinstance(value, dict) or set(value) != {"leaf", "record", "root"}:
                raise FormatError(f"{source} line {number}: not a step-log line")
            record = step_record_from_json(value["record"])
            stored_leaf, stored_root = bytes.fromhex(value["leaf"]), bytes.fromhex(value["root"])
        except (FormatError, ValueError, TypeError) as exc:
            raise TamperedRecord(f"{source}: step {index} is unreadable: {exc}", index=index) from None
        if record.step != index:
            raise TamperedRecord(f"{source}: line {number} holds the wrong step", index=index,
                                 expected=index, found=record.step)
        leaf = record.leaf_hash()
        if leaf != stored_leaf:
            raise TamperedRecord(f"{source}: step {index} was altered after it was written", index=index,
                                 expected=stored_leaf, found=leaf)
        rng.append(leaf)
        if rng.root() != stored_root:
            raise TamperedRecord(f"{source}: tree root after step {index} does not match", index=index,
                                 expected=stored_root, found=rng.root())
        records.append(record)
        leaves.append(leaf)
    return records, leaves


def verify_log(directory: str | os.PathLike[str]) -> tuple[int, bytes]:
    """Recompute and check a step log without modifying it; returns (size, root). Raises on any problem."""
    path = Path(directory) / LOG_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{directory}: no step log here (expected {LOG_NAME})") from None
    whole, torn = _split_torn(data)
    records, leaves = _check_lines(whole, source=str(path))
    if torn:
        raise TornTail(
            f"{path}: ends in a partial record of {len(torn)} bytes after {len(records)} whole records",
            valid_records=len(records), torn_bytes=len(torn),
        )
    return len(records), merkle.root(leaves)
