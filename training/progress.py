"""Training progress: step, loss, ε spent, rate, ETA and anchoring status.

On a terminal it is a tqdm bar (`provenance.progress`: rate and ETA, the rest as its status); otherwise it prints a
line every 10% of the run, with the ETA. `quiet` prints nothing. ε shown is the value at the last checkpoint (the
PRV accountant costs ~0.1 s, too slow to run every step).
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
        from provenance import progress

        self._bar = progress.start("train", total=total, initial=start_step, unit="step", stream=self.stream) \
            if not quiet and progress.enabled(self.stream) else progress.Bar(None)
        self._shown = start_step

    def status(self, loss: float) -> str:
        eps = "off" if self.epsilon is None else f"{self.epsilon:.3f}"
        return f"loss {loss:.4f}  ε {eps}  anchor: {self.anchor}"

    def line(self, step: int, loss: float) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = (step - self.start_step) / elapsed
        eta = f"  ETA {_duration((self.total - step) / rate)}" if rate > 0 and step < self.total else ""
        eps = "off" if self.epsilon is None else f"{self.epsilon:.3f}"
        return (f"step {step}/{self.total}  loss {loss:.4f}  ε {eps}  {rate:.2f} steps/s{eta}  "
                f"anchor: {self.anchor}")

    def update(self, step: int, loss: float, *, force: bool = False) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if self._bar.active:
            self._bar.advance(step - self._shown)
            self._shown = step
            if force or now - self._last_draw >= 0.2:
                self._bar.note(self.status(loss))
                self._last_draw = now
            return
        if self.tty:
            return
        bucket = step * 10 // max(self.total, 1)
        if force or bucket != self._last_bucket:
            self._last_bucket = bucket
            self.stream.write(self.line(step, loss) + "\n")
            self.stream.flush()

    def message(self, text: str) -> None:
        if self.quiet:
            return
        if self._bar.active:
            self._bar.write(text)
            return
        self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        self._bar.close()


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"
