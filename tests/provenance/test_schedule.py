"""The learning-rate schedule the trainer records and the verifier recomputes exactly: the same bits on every
machine (its cosine does not depend on the platform's C library)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provenance.schedule import SCHEDULE_V1, cos_pi, lr_at, lr_of_manifest


def test_cos_pi_known_answers() -> None:
    # cos(π/3) = 1/2 and cos(π) = -1 exactly; 0.3 pinned from the 50-digit evaluation (the function's definition).
    assert cos_pi(0.0) == 1.0 and cos_pi(1.0) == -1.0
    assert cos_pi(1 / 3) == pytest.approx(0.5, abs=1e-16)
    assert cos_pi(0.3) == 0.5877852522924731
    assert abs(cos_pi(0.5)) < 1e-40


@given(st.floats(0.0, 1.0))
def test_cos_pi_agrees_with_the_platform_to_a_few_ulps(x: float) -> None:
    assert cos_pi(x) == pytest.approx(math.cos(math.pi * x), abs=4e-16)


def test_schedules_warm_up_and_decay_to_the_floor() -> None:
    # prov.schedule.v1 reaches the floor on the last step; a manifest without `schedule.format` is v1
    common = {"base": 1e-3, "warmup_steps": 2, "min_lr_ratio": 0.1, "steps": 12, "fmt": SCHEDULE_V1}
    assert lr_at(name="constant", step=0, **common) == 1e-3 / 2
    assert lr_at(name="constant", step=7, **common) == 1e-3
    assert lr_at(name="linear", step=11, **common) == pytest.approx(1e-4)
    assert lr_at(name="cosine", step=2, **common) == 1e-3
    assert lr_at(name="cosine", step=11, **common) == pytest.approx(1e-4)
    training = {"optimizer": {"lr": "0.001"}, "steps": 12,
                "schedule": {"name": "cosine", "warmup_steps": 2, "min_lr_ratio": "0.1"}}
    assert [lr_of_manifest(training, k) for k in range(12)] == [lr_at(name="cosine", step=k, **common)
                                                              for k in range(12)]
