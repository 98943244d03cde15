"""The progress line: step, loss, ε spent, steps/s and anchoring status, redrawn at most 5 times a second.

On a terminal it redraws one line (`\\r`); otherwise it prints a line every 10% of the run. `quiet` prints nothing.
ε shown is the value at the last checkpoint (the PRV accountant costs ~0.1 s, too slow to run every step).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, *, total: int, quiet: bool = False, stream: TextIO | None = None, start_step: int = 0) -> None:
        self.total = total
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.monotonic()
        self.start_step = start_step
        self._last_draw = 0.0
        self._last_bucket = -1
        self.epsilon: float | None = None
        self.anchor = ""

    def line(self, step: int, loss: float) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = (step - self.start_step) / elapsed
        eps = "off" if self.epsilon is None else f"{self.epsilon:.3f}"
        return f"step {step}/{self.total}  loss {loss:.4f}  ε {eps}  {rate:.2f} steps/s  anchor: {self.anchor}"

    def update(self, step: int, loss: float, *, force: bool = False) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if self.tty:
            if force or now - self._last_draw >= 0.2:
                self.stream.write("\r\x1b[K" + self.line(step, loss))
                self.stream.flush()
                self._last_draw = now
            return
        bucket = step * 10 // max(self.total, 1)
        if force or bucket != self._last_bucket:
            self._last_bucket = bucket
            self.stream.write(self.line(step, loss) + "\n")
            self.stream.flush()

    def message(self, text: str) -> None:
        if self.quiet:
            return
        if self.tty:
            self.stream.write("\r\x1b[K")
        self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if not self.quiet and self.tty:
            self.stream.write("\n")
            self.stream.flush()
