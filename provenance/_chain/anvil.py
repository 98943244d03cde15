"""A local anvil node: find the binary (npm `@foundry-rs/anvil-linux-amd64`), start it on a loopback port, parse
its listening line, stop it by PID.

Two ways to run it: attached (tests: stdout is a pipe drained by a thread, so the node never blocks on a full
pipe; `start_attached` serves any node that prints its URL, e.g. a Hardhat node) or detached (`prov chain up`: its
own session, output to a log file, outliving the command that started it).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from provenance.errors import ChainError

ENV_ANVIL = "PROV_ANVIL"
_NPM_BINARY = Path("node_modules", "@foundry-rs", "anvil-linux-amd64", "bin", "anvil")
_LISTENING = re.compile(r"Listening on (?P<url>(?:[0-9.]+|\[[0-9a-fA-F:]+\]):\d+)")


class AnvilError(ChainError):
    """anvil is missing, failed to start, or could not be stopped."""


def find_anvil() -> Path | None:
    """`$PROV_ANVIL`, else `node_modules/.../bin/anvil` in the working directory or a parent (or beside this
    package's source checkout), else `anvil` on PATH."""
    env = os.environ.get(ENV_ANVIL)
    if env:
        return Path(env)
    starts = [Path.cwd().resolve(), Path(__file__).resolve().parents[2]]
    for start in starts:
        for directory in (start, *start.parents):
            candidate = directory / _NPM_BINARY
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
    on_path = shutil.which("anvil")
    return Path(on_path) if on_path else None


@dataclass
class AnvilNode:
    """A running node. `process` is set when this process started it attached (then stopping it needs no PID
    check: it is our child)."""

    pid: int
    rpc_url: str
    process: subprocess.Popen[str] | None = None
    output: deque[str] = field(default_factory=lambda: deque(maxlen=200))
    drainer: threading.Thread | None = None

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None:
            stop(self.pid, timeout=timeout)
        else:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        if self.drainer is not None:
            self.drainer.join(timeout)  # it closes the pipe at EOF


def _command(binary: Path, *, host: str, port: int, state_file: Path | None, chain_id: int | None) -> list[str]:
    cmd = [str(binary), "--host", host, "--port", str(port)]
    if state_file is not None:
        # --state loads it at start and dumps on exit; the interval bounds what a hard kill can lose.
        cmd += ["--state", str(state_file), "--state-interval", "2"]
    if chain_id is not None:
        cmd += ["--chain-id", str(chain_id)]
    return cmd


def _url(match: re.Match[str]) -> str:
    url = match.group("url")
    return url.rstrip("/") if url.startswith("http") else f"http://{url}"


def start(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    state_file: Path | None = None,
    log_file: Path | None = None,
    chain_id: int | None = None,
    timeout: float = 30.0,
    binary: Path | None = None,
) -> AnvilNode:
    """Start anvil and wait until it listens. With `log_file` it runs detached, writing there."""
    binary = binary or find_anvil()
    if binary is None:
        raise AnvilError("anvil not found: run `npm ci` in the prov checkout (it installs "
                         "@foundry-rs/anvil-linux-amd64), or set PROV_ANVIL to the binary")
    cmd = _command(binary, host=host, port=port, state_file=state_file, chain_id=chain_id)
    if log_file is None:
        return start_attached(cmd, ready=_LISTENING, timeout=timeout)
    return _start_detached(cmd, log_file, timeout)


def start_attached(cmd: list[str], *, ready: re.Pattern[str], timeout: float = 30.0,
                   cwd: Path | None = None) -> AnvilNode:
    """Start a node as our child and wait for the line matching `ready` (its `url` group: URL or host:port)."""
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               text=True, bufsize=1, cwd=cwd)
    assert process.stdout is not None
    node = AnvilNode(pid=process.pid, rpc_url="", process=process)
    found = threading.Event()

    def drain(stream: IO[str]) -> None:
        with stream:
            for line in stream:
                node.output.append(line.rstrip("\n"))
                if not found.is_set() and (match := ready.search(line)):
                    node.rpc_url = _url(match)
                    found.set()
        found.set()  # EOF: the node exited

    node.drainer = threading.Thread(target=drain, args=(process.stdout,), name=f"node-{process.pid}", daemon=True)
    node.drainer.start()
    if not found.wait(timeout) or not node.rpc_url:
        process.kill()
        process.wait()
        node.drainer.join(timeout)
        tail = " | ".join(list(node.output)[-3:])
        raise AnvilError(f"{Path(cmd[0]).name} did not start within {timeout:.0f}s: {tail or 'no output'}")
    return node


def _start_detached(cmd: list[str], log_file: Path, timeout: float) -> AnvilNode:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_file.read_text(encoding="utf-8", errors="replace")
        if match := _LISTENING.search(text):
            return AnvilNode(pid=process.pid, rpc_url=_url(match))
        if process.poll() is not None:
            tail = " | ".join(text.strip().splitlines()[-3:])
            raise AnvilError(f"anvil exited with status {process.returncode}: {tail or 'no output'} (log {log_file})")
        time.sleep(0.05)
    process.kill()
    raise AnvilError(f"anvil did not start within {timeout:.0f}s (log {log_file})")


def is_anvil(pid: int) -> bool:
    """Whether `pid` is a live anvil process (so a recycled PID is never signalled)."""
    if not _alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: trust the recorded PID
    return bool(cmdline) and Path(cmdline[0].decode(errors="replace")).name == "anvil"


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our exited child
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return status.rsplit(")", 1)[-1].split()[0] != "Z"


def stop(pid: int, *, timeout: float = 10.0) -> bool:
    """SIGTERM anvil `pid` (it dumps its state on exit), SIGKILL after `timeout`. False if it was not running."""
    if not is_anvil(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        if not _alive(pid):
            return True
        time.sleep(0.05)
    raise AnvilError(f"anvil (pid {pid}) did not stop")
