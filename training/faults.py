"""Fault injection for crash tests: `PROV_TRAIN_FAULT=<point>:<n>` makes the trainer SIGKILL itself at that point.

Points: `step:<k>` (step k computed, not yet logged), `logged:<k>` (step k logged, next step not started),
`checkpoint-write:<i>` (checkpoint i half written in its temp directory), `checkpoint-done:<i>` (checkpoint i in
place, not yet handed to the outbox), `anchor:<i>` (checkpoint i handed to the outbox). Unset: no effect.
`raise:<point>:<n>` raises a RuntimeError there instead (a bug, as opposed to a crash).
"""

from __future__ import annotations

import os
import signal

ENV = "PROV_TRAIN_FAULT"


def point(name: str, index: int) -> None:
    spec = os.environ.get(ENV)
    if spec and spec == f"{name}:{index}":
        os.kill(os.getpid(), signal.SIGKILL)
    if spec and spec == f"raise:{name}:{index}":
        raise RuntimeError(f"injected fault at {name} {index}")
