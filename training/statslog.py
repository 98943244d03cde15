"""`RUN_DIR/stats.jsonl`: the private per-step statistics (loss, clipped fraction) that the public step records only
commit to (`prov.stats.v1`). Never put in a checkpoint or the store; handed to auditors with the secrets.

One canonical `StepStats` line per step (`{"clipped_fraction", "loss", "step"}`), mode 0600 from creation. Each line
is one `write(2)` on an `O_APPEND` descriptor, written *before* the step's record goes to the step log, so the
stats file never has fewer whole lines than the log; it is fsynced whenever the step log is before a checkpoint
(`sync`). Reopening drops a torn last line (the step in flight) and `truncate(size)` cuts it back to the log's size
on resume: the steps after it are re-run and produce the same lines.
"""

from __future__ import annotations

import os
from pathlib import Path

from provenance import canonical
from provenance.errors import FormatError, UsageError
from provenance.records import StepStats

STATS_NAME = "stats.jsonl"


def encode_stats(stats: StepStats) -> bytes:
    return canonical.encode(stats.to_json()) + b"\n"


def read_stats(path: str | os.PathLike[str]) -> list[StepStats]:
    """Every whole line of a stats file, checked (steps 0, 1, 2, ...); a torn last line is ignored."""
    p = Path(path)
    data = p.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]
    out: list[StepStats] = []
    for number, line in enumerate(whole.splitlines(), start=1):
        value = canonical.decode(line, source=f"{p} line {number}", strict=True)
        stats = StepStats.from_json(value, source=f"{p} line {number}")
        if stats.step != len(out):
            raise FormatError(f"{p} line {number}: holds step {stats.step}, expected {len(out)}")
        out.append(stats)
    return out


class StatsLog:
    """The open stats file of a run (rank 0 only). Append the stats of step `size` next."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / STATS_NAME
        if not self.path.exists():
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
        self._stats = read_stats(self.path)
        whole = sum(len(encode_stats(s)) for s in self._stats)
        if self.path.stat().st_size != whole:  # a torn line of the step in flight
            os.truncate(self.path, whole)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND)

    @property
    def size(self) -> int:
        return len(self._stats)

    def append(self, stats: StepStats) -> None:
        if self._fd is None:
            raise UsageError(f"{self.path}: stats file is closed")
        if stats.step != self.size:
            raise UsageError(f"stats file expects step {self.size} next, got step {stats.step}")
        line = encode_stats(stats)
        if os.write(self._fd, line) != len(line):
            raise OSError(f"{self.path}: short write; is the disk full?")
        self._stats.append(stats)

    def truncate(self, size: int) -> None:
        """Cut back to `size` steps (the step log's size on resume)."""
        if size > self.size:
            raise FormatError(f"{self.path}: holds {self.size} steps; the step log needs {size} "
                              "(the private statistics of logged steps were lost)")
        keep = sum(len(encode_stats(s)) for s in self._stats[:size])
        os.truncate(self.path, keep)
        del self._stats[size:]

    def sync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
