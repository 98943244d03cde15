"""Run `prov` in a child process and measure what it cost: wall time, peak RSS (the child's own rusage, from
os.wait4, so no other child of the test process counts) and its exit status, so a hostile-input test can assert
the verifier's bounds from outside."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

RSS_ALLOWANCE = 300 << 20  # the bound: at most 300 MiB above the verifier's own baseline
WALL_LIMIT = 30.0


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str
    seconds: float
    peak_rss: int  # bytes


def run_child(argv: list[str], *, cwd: Path | None = None, timeout: float = 90.0,
              env: dict[str, str] | None = None) -> Outcome:
    """Run `argv`, killing it past `timeout` (then failing); its output goes through temp files (no pipe to fill)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        child = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                 env={**os.environ, **(env or {})})
        timer = threading.Timer(timeout, child.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(child.pid, 0)
        finally:
            timer.cancel()
        child.returncode = os.waitstatus_to_exitcode(status)  # so Popen never waits on the reaped pid
        seconds = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace")
    if seconds >= timeout:
        raise AssertionError(f"{argv} still running after {timeout}s (killed): {stderr[-500:]}")
    return Outcome(child.returncode, stdout, stderr, seconds, usage.ru_maxrss * 1024)


def run_prov(*args: str, cwd: Path | None = None, timeout: float = 90.0, env: dict[str, str] | None = None) -> Outcome:
    """`python -m provenance ARGS` in a child."""
    return run_child([sys.executable, "-m", "provenance", *args], cwd=cwd, timeout=timeout, env=env)


_baseline: list[int] = []


def baseline_rss() -> int:
    """Peak RSS of a child that imports the CLI and the libraries `prov verify` loads (measured once)."""
    if not _baseline:
        code = "import provenance.cli, provenance.chain, provenance.store, provenance.verify, web3, requests"
        _baseline.append(run_child([sys.executable, "-c", code]).peak_rss)
    return _baseline[0]


def assert_bounded(outcome: Outcome, *, code: int = 2, wall: float = WALL_LIMIT) -> str:
    """The child exited with `code`, in time, under the RSS allowance, printing one `prov: error:` line on stderr
    (no traceback, no internal error). Returns that line."""
    assert outcome.code == code, (outcome.code, outcome.stdout[-500:], outcome.stderr[-2000:])
    assert outcome.seconds <= wall, f"took {outcome.seconds:.1f}s"
    assert outcome.peak_rss <= baseline_rss() + RSS_ALLOWANCE, f"peak RSS {outcome.peak_rss >> 20} MiB"
    assert "Traceback" not in outcome.stderr and "internal error" not in outcome.stderr, outcome.stderr[-2000:]
    errors = [line for line in outcome.stderr.splitlines() if line.startswith("prov: error:")]
    assert len(errors) == 1, outcome.stderr
    return errors[0]
