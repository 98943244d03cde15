"""Step log: append/reopen, tamper detection, torn tails, and crash safety under kill -9."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provenance import merkle
from provenance.errors import FormatError, TamperedRecord, TornTail, UsageError
from provenance.hashing import Digest
from provenance.records import StepRecord
from provenance.steplog import LOG_NAME, MAX_LINE, StepLog, parse_records, verify_log
from tests.fixtures.records import rec, write_log


def test_append_reopen_and_roots(tmp_path: Path) -> None:
    log = write_log(tmp_path, 37)
    roots = [log.root_at(s) for s in range(38)]
    expected = merkle.root([rec(i).leaf_hash() for i in range(37)])
    assert log.root() == expected == roots[-1]
    log.close()
    again = StepLog.open(tmp_path)
    assert again.size == 37 and again.root() == expected
    assert verify_log(tmp_path) == (37, expected)
    again.append(rec(37))
    assert again.size == 38


def test_append_refuses_out_of_sequence(tmp_path: Path) -> None:
    log = write_log(tmp_path, 3)
    with pytest.raises(UsageError, match="expects step 3"):
        log.append(rec(5))
    with pytest.raises(UsageError):
        log.append(rec(2))


def test_segment_parses_back(tmp_path: Path) -> None:
    log = write_log(tmp_path, 20)
    segment = log.segment(5, 12)
    assert parse_records(segment, first_step=5) == [rec(i) for i in range(5, 12)]
    with pytest.raises(TamperedRecord):
        parse_records(segment, first_step=6)


def _lines(tmp_path: Path) -> list[bytes]:
    return (tmp_path / LOG_NAME).read_bytes().splitlines(keepends=True)


@pytest.mark.parametrize("how", ["alter", "drop", "duplicate", "reorder", "insert"])
def test_tampering_is_detected_on_reopen(tmp_path: Path, how: str) -> None:
    write_log(tmp_path, 10).close()
    lines = _lines(tmp_path)
    if how == "alter":
        lines[4] = lines[4].replace(b'"examples":4', b'"examples":3')
    elif how == "drop":
        del lines[4]
    elif how == "duplicate":
        lines.insert(4, lines[4])
    elif how == "reorder":
        lines[3], lines[4] = lines[4], lines[3]
    else:
        other = tmp_path / "other"
        write_log(other, 10).close()
        lines.insert(4, _lines(other)[4].replace(b'"examples":4', b'"examples":0'))
    (tmp_path / LOG_NAME).write_bytes(b"".join(lines))
    with pytest.raises(TamperedRecord) as info:
        StepLog.open(tmp_path)
    assert info.value.index in (3, 4, 5)  # the first line that no longer fits
    with pytest.raises(TamperedRecord):
        verify_log(tmp_path)


def test_torn_tail_is_reported_then_set_aside(tmp_path: Path) -> None:
    write_log(tmp_path, 8).close()
    data = (tmp_path / LOG_NAME).read_bytes()
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    cut = random.Random(1).randrange(last_start + 1, len(data) - 1)
    (tmp_path / LOG_NAME).write_bytes(data[:cut])
    with pytest.raises(TornTail) as info:
        StepLog.open(tmp_path)
    assert info.value.valid_records == 7
    log = StepLog.open(tmp_path, repair=True)
    assert log.size == 7 and log.repaired_bytes == cut - last_start
    assert (tmp_path / f"{LOG_NAME}.torn-0").read_bytes() == data[last_start:cut]
    log.append(rec(7))
    log.close()
    assert verify_log(tmp_path)[0] == 8


def test_truncate_sets_records_aside(tmp_path: Path) -> None:
    log = write_log(tmp_path, 12)
    root6 = log.root_at(6)
    log.truncate(6)
    assert log.size == 6 and log.root() == root6
    log.append(rec(6))
    log.close()
    assert StepLog.open(tmp_path).size == 7
    assert len((tmp_path / f"{LOG_NAME}.rewound-0").read_bytes().splitlines()) == 6


WRITER = """
import sys
from provenance.hashing import Digest
from provenance.records import StepRecord
from provenance.steplog import StepLog
log = StepLog.open(sys.argv[1], repair=True, fsync_every=int(sys.argv[2]))
i = log.size
while True:
    log.append(StepRecord(step=i, batch=Digest.of(i.to_bytes(4, "big")), examples=i % 7, lr=0.001,
                          noise_index=i, stats=Digest.of(i.to_bytes(8, 'big') + b's')))
    print(i, flush=True)
    i += 1
"""


@pytest.mark.slow
def test_kill_9_at_random_moments_never_loses_a_confirmed_record(tmp_path: Path) -> None:
    """A writer is killed with SIGKILL at random moments, 25 times over the same log; after each kill the log
    reopens, keeps every record the writer confirmed, and stays a consecutive, verifiable log."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    log_dir = tmp_path / "log"
    rnd = random.Random(1234)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    for round_ in range(25):
        proc = subprocess.Popen([sys.executable, str(script), str(log_dir), str(round_ % 2)],
                                stdout=subprocess.PIPE, env=env)
        assert proc.stdout is not None
        first = proc.stdout.readline()  # wait until it is really writing
        assert first, "writer did not start"
        time.sleep(rnd.uniform(0, 0.05))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        confirmed = [int(x) for x in (first + out).split()]
        log = StepLog.open(log_dir, repair=True)
        assert log.size > confirmed[-1], f"round {round_}: lost confirmed step {confirmed[-1]}"
        assert [r.step for r in log.records()] == list(range(log.size))
        log.close()
    size, root = verify_log(log_dir)
    assert root == merkle.root([rec_leaf(i) for i in range(size)])


def rec_leaf(i: int) -> bytes:
    return StepRecord(step=i, batch=Digest.of(i.to_bytes(4, "big")), examples=i % 7, lr=0.001,
                      noise_index=i, stats=Digest.of(i.to_bytes(8, 'big') + b's')).leaf_hash()


@pytest.mark.parametrize("line", [
    b'{"leaf":"00","record":' + b"[" * 10_000 + b"]" * 10_000 + b',"root":"00"}',  # RecursionError before
    b'{"leaf":"' + b"0" * (MAX_LINE + 1) + b'"}',
])
def test_hostile_lines_are_one_line_errors(tmp_path: Path, line: bytes) -> None:
    with pytest.raises(FormatError) as parsed:
        parse_records(line + b"\n", source="seg")
    assert str(parsed.value).startswith("seg line 1: ") and "\n" not in str(parsed.value)
    write_log(tmp_path, 2).close()
    with (tmp_path / LOG_NAME).open("ab") as log:
        log.write(line + b"\n")
    with pytest.raises(TamperedRecord, match="step 2 is unreadable") as opened:
        StepLog.open(tmp_path)
    assert "\n" not in str(opened.value)
