"""stats.jsonl (private per-step statistics) and the in-memory log the replay worker writes checkpoints from."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from provenance.errors import FormatError, UsageError
from provenance.hashing import Digest
from provenance.records import StepRecord, StepStats
from provenance.steplog import StepLog
from training.checkpoint import MemoryLog
from training.statslog import STATS_NAME, StatsLog, read_stats


def _stats(k: int) -> StepStats:
    return StepStats(step=k, loss=1.0 / (k + 1), clipped_fraction=k / 10)


def test_stats_file_is_private_appends_and_cuts_back(tmp_path: Path) -> None:
    log = StatsLog(tmp_path)
    assert stat.S_IMODE((tmp_path / STATS_NAME).stat().st_mode) == 0o600
    for k in range(5):
        log.append(_stats(k))
    with pytest.raises(UsageError, match="expects step 5"):
        log.append(_stats(7))
    log.truncate(3)
    log.append(_stats(3))
    log.close()
    assert read_stats(tmp_path / STATS_NAME) == [_stats(k) for k in range(4)]
    with open(tmp_path / STATS_NAME, "ab") as f:
        f.write(b'{"clipped_fraction":"0.')  # the step in flight when the process was killed
    reopened = StatsLog(tmp_path)
    assert reopened.size == 4 and (tmp_path / STATS_NAME).read_bytes().endswith(b"\n")
    with pytest.raises(FormatError, match="private statistics of logged steps were lost"):
        reopened.truncate(6)
    reopened.close()


def test_stats_lines_are_checked(tmp_path: Path) -> None:
    path = tmp_path / STATS_NAME
    path.write_text('{"clipped_fraction":"0.0","loss":"1.0","step":1}\n')
    with pytest.raises(FormatError, match="expected 0"):
        read_stats(path)


def _record(k: int) -> StepRecord:
    return StepRecord(step=k, batch=Digest.of(b"batch%d" % k), examples=k, lr=0.001, noise_index=k,
                      stats=Digest.of(b"stats%d" % k))


def test_memory_log_gives_the_step_logs_roots_and_segment_bytes(tmp_path: Path) -> None:
    from provenance import merkle

    with StepLog.open(tmp_path) as log:
        for k in range(7):
            log.append(_record(k))
        rng = merkle.CompactRange()
        for leaf in log.leaf_hashes[:3]:
            rng.append(leaf)
        memory = MemoryLog(size=3, hashes=rng.hashes)
        for k in range(3, 7):
            memory.append(_record(k))
        assert memory.root_at(3) == log.root_at(3) and memory.root_at(7) == log.root_at(7)
        assert memory.segment(3, 7) == log.segment(3, 7)
    with pytest.raises(UsageError, match="no root at size 2"):
        memory.root_at(2)
    with pytest.raises(UsageError, match="expects step 7"):
        memory.append(_record(9))
