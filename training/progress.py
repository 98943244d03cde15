"""Training progress: step, loss, ε spent, rate, ETA and anchoring status.

On a terminal it is a tqdm bar (`provenance.progress`: rate and ETA, the rest as its status); otherwise it prints a
line every 10% of the run, with the ETA. `quiet` prints nothing.

ε: the PRV accountant costs ~0.1-0.3 s, too slow to run every step, so the exact value is shown only at a step where
it is known (the start, each checkpoint: `ε 0.643`). Between them the display says what is true without computing:
the ε of the next checkpoint once the worker has it is an upper bound on what has been spent (`ε ≤ 0.881 (step
12)`), and before that only when the next value comes (`ε next at step 12`); it never shows a stale value as current.
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
        self.epsilon_step: int | None = None  # the step `epsilon` is exact at (None: exact whatever the step)
        self.epsilon_next: tuple[int, float | None] | None = None  # the next checkpoint's step and ε when known
        self.anchor = ""
        from provenance import progress

        self._bar = progress.start("train", total=total, initial=start_step, unit="step", stream=self.stream) \
            if not quiet and progress.enabled(self.stream) else progress.Bar(None)
        self._shown = start_step

    def status(self, loss: float) -> str:
        return f"loss {loss:.4f}  {self._epsilon_text(self._shown)}  anchor: {self.anchor}"

    def _epsilon_text(self, step: int) -> str:
        if self.epsilon is None:
            return "ε off"
        if self.epsilon_step is None or step == self.epsilon_step or self.epsilon_next is None:
            return f"ε {self.epsilon:.3f}"
        at, bound = self.epsilon_next
        return f"ε next at step {at}" if bound is None else f"ε ≤ {bound:.3f} (step {at})"

    def line(self, step: int, loss: float) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = (step - self.start_step) / elapsed
        eta = f"  ETA {_duration((self.total - step) / rate)}" if rate > 0 and step < self.total else ""
        return (f"step {step}/{self.total}  loss {loss:.4f}  {self._epsilon_text(step)}  {rate:.2f} steps/s{eta}  "
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
