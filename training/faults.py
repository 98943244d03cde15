"""Fault injection for crash tests: `PROV_TRAIN_FAULT=<point>:<n>` makes the trainer SIGKILL itself at that point.

Points: `step:<k>` (step k computed, not yet logged), `logged:<k>` (step k logged, next step not started),
`checkpoint-write:<i>` (checkpoint i half written in its temp directory), `checkpoint-done:<i>` (checkpoint i in
place, not yet handed to the outbox), `anchor:<i>` (checkpoint i handed to the outbox). Unset: no effect.
"""

from __future__ import annotations

import os
import signal

ENV = "PROV_TRAIN_FAULT"


def point(name: str, index: int) -> None:
    spec = os.environ.get(ENV)
    if spec and spec == f"{name}:{index}":
        os.kill(os.getpid(), signal.SIGKILL)
