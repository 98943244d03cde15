"""Bounded work for one verification (or one `prov store get`): a byte budget and a wall-clock deadline.

Everything a trainer or a node chooses — how big a file says it is, how many blocks a DAG has, how slowly a server
answers — is bounded by the auditor, not by the content. While a `Budget` is active (`with limits.active(b):`),
every block a store reads is charged to it, every file a store writes is refused *before* the first byte when it
declares more than is left, and every store or RPC request is cut off at the deadline.

Exceeding a budget is the auditor's limit, not the trainer's fault: it raises a `StoreError` (`BudgetExceeded`) or
a `ChainUnavailable` (`DeadlineExceeded`), so the verdict is "error" (could not verify, exit 2), never FAILED.
The active budget is process-wide (a stack), so worker threads started inside a verification obey it too.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from provenance.errors import ChainUnavailable, StoreError, UsageError

__all__ = ["Budget", "BudgetExceeded", "DeadlineExceeded", "active", "budget_for", "current", "request_timeout"]


class BudgetExceeded(StoreError):
    """More bytes than the verification's budget were asked of the store (`--max-bytes` raises it)."""


class DeadlineExceeded(ChainUnavailable):
    """The whole run's deadline (`--timeout`) passed while waiting for a node."""


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n < 1 << 30 else f"{n / (1 << 30):.2f} GiB"


class Budget:
    """A byte allowance and a deadline shared by every store and RPC request made while it is active."""

    def __init__(self, *, max_bytes: int | None = None, timeout: float | None = None, what: str = "verification",
                 bytes_option: str = "--max-bytes", time_option: str = "--timeout") -> None:
        if max_bytes is not None and max_bytes < 0:
            raise UsageError(f"{bytes_option} must be a number of bytes ≥ 0, got {max_bytes}")
        if timeout is not None and not (timeout > 0 and math.isfinite(timeout)):
            raise UsageError(f"{time_option} must be a positive number of seconds, got {timeout}")
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.used = 0
        self.what = what
        self._bytes_option, self._time_option = bytes_option, time_option
        self._lock = threading.Lock()

    def remaining(self) -> int | None:
        """Bytes still allowed (None: unlimited)."""
        return None if self.max_bytes is None else max(0, self.max_bytes - self.used)

    def seconds_left(self) -> float | None:
        """Seconds to the deadline (None: none set); 0 once it has passed."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def _over(self, n: int, what: str) -> BudgetExceeded:
        return BudgetExceeded(
            f"{what} needs {_mib(n)} more, beyond this {self.what}'s {_mib(self.max_bytes or 0)} budget "
            f"({_mib(self.used)} used); the content may be hostile — if you trust its size, raise {self._bytes_option}")

    def reserve(self, n: int, what: str) -> None:
        """Refuse, before reading or writing any of it, content that declares more than the budget has left."""
        left = self.remaining()
        if left is not None and n > left:
            raise self._over(n, what)

    def charge(self, n: int, what: str) -> None:
        """Count `n` bytes read; refuse once the total passes the budget."""
        self.check_time(what)
        with self._lock:
            self.used += n
            over = self.max_bytes is not None and self.used > self.max_bytes
        if over:
            raise self._over(n, what)

    def within(self, outer: Budget | None) -> Budget:
        """This budget, ending no later than `outer`'s deadline (and then naming `outer`'s timeout): `prov verify
        --timeout T` starts its clock when it connects, so the verification inside gets what is left of T."""
        if outer is not None and outer.deadline is not None and (self.deadline is None
                                                                 or outer.deadline < self.deadline):
            self.deadline, self.timeout = outer.deadline, outer.timeout
        return self

    def check_time(self, what: str) -> None:
        """Raise once the deadline has passed."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise DeadlineExceeded(f"{what}: this {self.what} ran past its {self.timeout:g}s deadline; a node may "
                                   f"be answering slowly on purpose — raise {self._time_option} to wait longer")


BASE_BUDGET = 2 << 30  # manifests, step logs and states of a long run, with room to spare
PER_SUBJECT_BYTE = 32  # a checkpoint is ~3× its adapter (weights, optimizer state); replay fetches a few of them


def budget_for(files: Iterable[Path]) -> int:
    """The default byte budget of a verification, sized from what the auditor holds (the adapter or merged
    weights): 2 GiB plus 32 times their size. A trainer cannot raise it; the auditor can (`--max-bytes`)."""
    total = 0
    for path in files:
        with contextlib.suppress(OSError):
            total += path.stat().st_size
    return BASE_BUDGET + PER_SUBJECT_BYTE * total


_stack: list[Budget] = []
_stack_lock = threading.Lock()


def current() -> Budget | None:
    """The innermost active budget (None outside any)."""
    with _stack_lock:
        return _stack[-1] if _stack else None


@contextlib.contextmanager
def active(budget: Budget | None) -> Iterator[Budget | None]:
    """Make `budget` the one every store and RPC request obeys until the block ends (None: no change)."""
    if budget is None:
        yield None
        return
    with _stack_lock:
        _stack.append(budget)
    try:
        yield budget
    finally:
        with _stack_lock:
            _stack.remove(budget)


def request_timeout(default: float, what: str) -> float:
    """A request's wall-clock limit: `default`, or less when the active budget's deadline is nearer; raises
    DeadlineExceeded when that deadline has already passed."""
    budget = current()
    if budget is None:
        return default
    budget.check_time(what)
    left = budget.seconds_left()
    return default if left is None else max(0.05, min(default, left))
