"""The learning-rate schedule as a pure function of a run manifest's `training` section (no torch).

The trainer (`training.plan.Plan.lr_at`) and the verifier both call `lr_at`, so the lr recorded for every step is
recomputed exactly, on any machine. Linear warmup from lr/warmup over `warmup_steps`, then `constant`, `linear` decay
towards `min_lr_ratio * lr`, or `cosine` decay towards the same floor.

Two formats, named in the manifest's `training.schedule.format`: `prov.schedule.v2` (the default since it existed)
follows Hugging Face: step t of a decay of D = steps - warmup_steps steps is at progress (t - warmup) / D, so the
last executed step still has a positive lr even with `min_lr_ratio = 0` (an lr of 0 would make it a no-op).
`prov.schedule.v1` (manifests without the field) reached the floor exactly on the last step: (t - warmup) / (D - 1).

The cosine is not the platform's `math.cos` (C libraries may differ in the last bit, and the lr is compared
exactly): `cos_pi` evaluates cos(π·x) with decimal arithmetic at 50 digits and rounds once to the nearest float, the
same on every machine.
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping
from typing import Any

from provenance.errors import FormatError

SCHEDULES = ("constant", "linear", "cosine")
SCHEDULE_V1 = "prov.schedule.v1"
SCHEDULE_V2 = "prov.schedule.v2"
SCHEDULE_FORMATS = (SCHEDULE_V1, SCHEDULE_V2)


_PI = decimal.Decimal("3.14159265358979323846264338327950288419716939937510582097494459")


def cos_pi(x: float) -> float:
    """cos(π·x), correctly rounded to a float for the schedule's purposes: a Taylor series in 50-digit decimals
    (x is the exact binary value of the float), so every machine gets the same bits."""
    with decimal.localcontext() as ctx:
        ctx.prec = 50
        angle = decimal.Decimal(x) * _PI
        term, total, n = decimal.Decimal(1), decimal.Decimal(1), 0
        square = angle * angle
        while True:
            n += 2
            term = -term * square / (n * (n - 1))
            if abs(term) < decimal.Decimal("1e-45"):
                break
            total += term
        return float(total)


def lr_at(*, base: float, name: str, warmup_steps: int, min_lr_ratio: float, steps: int, step: int,
          fmt: str = SCHEDULE_V2) -> float:
    """The learning rate of step `step` (0-based) of a run of `steps` steps, in schedule format `fmt`."""
    if fmt not in SCHEDULE_FORMATS:
        raise FormatError(f"unknown learning-rate schedule format {fmt!r} "
                          f"(this prov reads {', '.join(SCHEDULE_FORMATS)})")
    if warmup_steps and step < warmup_steps:
        return base * (step + 1) / warmup_steps
    if name == "constant":
        return base
    span = max(1, steps - warmup_steps - (1 if fmt == SCHEDULE_V1 else 0))
    progress = min(1.0, (step - warmup_steps) / span)
    floor = min_lr_ratio
    if name == "linear":
        factor = 1.0 - (1.0 - floor) * progress
    else:  # cosine
        factor = floor + (1.0 - floor) * 0.5 * (1.0 + cos_pi(progress))
    return base * factor


def lr_of_manifest(training: Mapping[str, Any], step: int) -> float:
    """`lr_at` with the parameters a run manifest's `training` section records."""
    try:
        schedule = training["schedule"]
        name = str(schedule["name"])
        if name not in SCHEDULES:
            raise FormatError(f"run manifest: unknown learning-rate schedule {name!r}")
        return lr_at(base=float(training["optimizer"]["lr"]), name=name,
                     warmup_steps=int(schedule["warmup_steps"]), min_lr_ratio=float(schedule["min_lr_ratio"]),
                     steps=int(training["steps"]), step=step, fmt=str(schedule.get("format", SCHEDULE_V1)))
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"run manifest: learning-rate schedule incomplete ({type(exc).__name__}: {exc})") from None
