"""Plan checks before step 0: Hugging Face's schedule convention (the last executed step keeps a positive lr, so a
cosine or linear run finishes with its final checkpoint), old manifests keep their v1 schedule, and a sample rate of
1 is refused with what to change."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

from provenance.errors import ConfigError
from provenance.schedule import SCHEDULE_V1, SCHEDULE_V2, lr_at, lr_of_manifest
from training.config import TrainConfig, with_overrides
from training.plan import Plan, resolve


def test_v2_schedules_never_reach_zero_on_an_executed_step() -> None:
    common = {"base": 1.0, "warmup_steps": 2, "min_lr_ratio": 0.0, "steps": 10}
    for name in ("linear", "cosine"):
        v2 = [lr_at(name=name, step=k, **common) for k in range(10)]
        v1 = [lr_at(name=name, step=k, fmt=SCHEDULE_V1, **common) for k in range(10)]
        assert v2[-1] > 0 and v1[-1] == pytest.approx(0.0)
        assert v2[:3] == v1[:3] == [0.5, 1.0, 1.0]
    # Hugging Face's linear: (T - t) / (T - W) after warmup; step 9 of 10 with W = 2 is 1/8
    assert lr_at(name="linear", step=9, **common) == pytest.approx(1 / 8)
    with pytest.raises(Exception, match="schedule format"):
        lr_at(name="linear", step=1, fmt="prov.schedule.v9", **common)


def test_manifests_without_a_schedule_format_keep_v1() -> None:
    cfg = with_overrides(TrainConfig(), {"schedule.name": "cosine", "training.steps": 10})
    plan = resolve(cfg, dataset_size=100)
    doc = plan.to_json()
    assert doc["schedule"]["format"] == SCHEDULE_V2 and Plan.from_json(doc) == plan
    legacy = {**doc, "schedule": {k: v for k, v in doc["schedule"].items() if k != "format"}}
    old = Plan.from_json(legacy)
    assert old.schedule.format == SCHEDULE_V1 and old.lr_at(9) == 0.0 and plan.lr_at(9) > 0
    assert lr_of_manifest(legacy, 9) == old.lr_at(9) and lr_of_manifest(doc, 9) == plan.lr_at(9)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"training.batch_size": 256}, r"training\.batch_size = 256 is not below the 196 examples.*--batch-size 24"),
    ({"training.batch_size": 400}, r"sample rate would be 1"),
    ({"training.sample_rate": 1.0}, r"training\.sample_rate = 1: every step would read all 196"),
])
def test_a_sample_rate_of_one_is_refused_with_what_to_change(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve(with_overrides(TrainConfig(), overrides), dataset_size=196)
    assert resolve(with_overrides(TrainConfig(), {"training.batch_size": 195}), dataset_size=196).sample_rate < 1


@pytest.mark.parametrize("name", ["cosine", "linear"])
def test_cosine_and_linear_runs_finish_with_their_final_checkpoint(name: str, tiny_config: Any, fixed_secrets: Any,
                                                                   tmp_path: Path, isolated_state: Path) -> None:
    from training.trainer import train

    cfg = tiny_config(tmp_path / "run", **{"schedule.name": name, "training.steps": 4,
                                          "training.checkpoint_every": 2})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no third-party warning reaches the user
        result = train(cfg, secrets=fixed_secrets, quiet=True)
    assert (result.run_dir / "checkpoints" / "000002").is_dir()  # 0, 2, and the last step's
    assert result.epsilon is not None and result.epsilon > 0
    if name == "cosine":  # the v1 schedule's lr of 0 on the last step made the update a no-op and stopped training
        from training.engine import TrainingGuardError

        with pytest.raises(TrainingGuardError, match="changed no adapter weight"):
            train(tiny_config(tmp_path / "v1", **{"schedule.name": name, "schedule.format": SCHEDULE_V1,
                                                 "training.steps": 4, "training.checkpoint_every": 2}),
                  secrets=fixed_secrets, quiet=True)
