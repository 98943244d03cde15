"""Progress bars with an ETA for prov's long work (training steps, replay segments, verification stages, record
proofs, model building, store transfers): one small wrapper around tqdm, so every command looks and behaves alike.

Bars go to stderr and only when it is a terminal: piped or captured output (CI logs, `--json` consumers, tests)
stays clean, and `silenced()` (what `--json` and `--quiet` use) turns them off for a block of work even on a
terminal. `PROV_PROGRESS=0` turns them off everywhere; `PROV_PROGRESS=1` forces them on (for demos and tests).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TextIO

ENV = "PROV_PROGRESS"
_silenced: contextvars.ContextVar[bool] = contextvars.ContextVar("prov_progress_silenced", default=False)


def enabled(stream: TextIO | None = None) -> bool:
    """Whether a bar would be drawn on `stream` (default stderr) now."""
    if _silenced.get():
        return False
    setting = os.environ.get(ENV, "").strip()
    if setting == "0":
        return False
    if setting == "1":
        return True
    target = stream if stream is not None else sys.stderr
    return bool(getattr(target, "isatty", lambda: False)())


@contextlib.contextmanager
def silenced(active: bool = True) -> Iterator[None]:
    """No bars inside this block (when `active`): for --json and --quiet."""
    token = _silenced.set(True) if active else None
    try:
        yield
    finally:
        if token is not None:
            _silenced.reset(token)


class Bar:
    """One bar: `advance(n)`, `describe(text)` (what is being done now), `note(text)` (a right-hand status)."""

    def __init__(self, impl: Any) -> None:
        self._impl = impl

    def advance(self, n: int = 1) -> None:
        if self._impl is not None:
            self._impl.update(n)

    def describe(self, text: str) -> None:
        if self._impl is not None:
            self._impl.set_description_str(text, refresh=False)

    def note(self, text: str) -> None:
        if self._impl is not None:
            self._impl.set_postfix_str(text, refresh=False)

    def write(self, text: str) -> None:
        """A message line above the bar (or nothing when no bar is drawn)."""
        if self._impl is not None:
            self._impl.write(text, file=self._impl.fp)

    def close(self) -> None:
        if self._impl is not None:
            self._impl.close()
            self._impl = None

    @property
    def active(self) -> bool:
        return self._impl is not None


def start(description: str, *, total: int | None = None, unit: str = "it", initial: int = 0,
          stream: TextIO | None = None, unit_scale: bool = False) -> Bar:
    """A progress bar with rate and ETA (close it with `Bar.close`); a no-op `Bar` when bars are off."""
    if not enabled(stream):
        return Bar(None)
    from tqdm import tqdm

    return Bar(tqdm(total=total, desc=description, unit=unit, initial=initial, file=stream or sys.stderr,
                    dynamic_ncols=True, leave=False, mininterval=0.2, unit_scale=unit_scale, unit_divisor=1024))


@contextlib.contextmanager
def bar(description: str, *, total: int | None = None, unit: str = "it", initial: int = 0,
        stream: TextIO | None = None, unit_scale: bool = False) -> Iterator[Bar]:
    """`start` for the length of a block."""
    handle = start(description, total=total, unit=unit, initial=initial, stream=stream, unit_scale=unit_scale)
    try:
        yield handle
    finally:
        handle.close()


@contextlib.contextmanager
def polled(description: str, *, total: int | None, count: Callable[[], int], unit: str = "it",
           stream: TextIO | None = None, unit_scale: bool = False) -> Iterator[Bar]:
    """A bar for work that reports no events of its own (verification stages): a daemon thread reads `count()` a
    few times a second and moves the bar to it. No thread when bars are off."""
    handle = start(description, total=total, unit=unit, stream=stream, unit_scale=unit_scale)
    if not handle.active:
        yield handle
        return
    stop = threading.Event()
    shown = [0]

    def poll() -> None:
        while not stop.wait(0.2):
            now = count()
            handle.advance(now - shown[0])
            shown[0] = now

    thread = threading.Thread(target=poll, name="prov-progress", daemon=True)
    thread.start()
    try:
        yield handle
    finally:
        stop.set()
        thread.join()
        handle.advance(count() - shown[0])  # the bar ends at the real count, however quick the work was
        handle.close()
