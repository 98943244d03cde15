"""The step engine: the no-op / non-finite guard, the loss, the plan (ε, δ, schedules)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from provenance.dataset import load_examples
from provenance.errors import ConfigError
from training.config import TrainConfig, with_overrides
from training.data import DEMO_DATA
from training.engine import TrainingGuardError, load_engine, per_sample_loss
from training.plan import Plan, epsilon_after, resolve


def _engine(tiny_config: Any, fixed_secrets: Any, tiny_model_dir: Path, **overrides: Any) -> Any:
    from provenance.basemodel import base_model_summary
    from training import determinism

    cfg = tiny_config(None, **overrides)
    plan = resolve(cfg, dataset_size=256)
    manifest = {
        "training": plan.to_json(),
        "determinism": determinism.settings(threads=1, dtype="float32", attn_implementation="eager"),
        "dataset": {"max_length": 32},
        "base_model": base_model_summary(tiny_model_dir),
    }
    return load_engine(manifest, fixed_secrets, tiny_model_dir, examples=load_examples(DEMO_DATA))


def test_guard_stops_a_silent_noop_update(tiny_config: Any, fixed_secrets: Any, tiny_model_dir: Path) -> None:
    engine = _engine(tiny_config, fixed_secrets, tiny_model_dir)
    engine.step(0)  # a real step passes the guard
    engine.base_optimizer.step = lambda *a, **k: None  # the update never reaches the weights
    with pytest.raises(TrainingGuardError, match="step 1: the LoRA update changed no adapter weight"):
        engine.step(1)


def test_guard_stops_non_finite_weights(tiny_config: Any, fixed_secrets: Any, tiny_model_dir: Path) -> None:
    engine = _engine(tiny_config, fixed_secrets, tiny_model_dir)
    original = engine.base_optimizer.step

    def poisoned(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        with torch.no_grad():
            engine.named_params[0][1].fill_(float("nan"))
        return out

    engine.base_optimizer.step = poisoned
    with pytest.raises(TrainingGuardError, match="not finite"):
        engine.step(0)


def test_per_sample_loss_is_mean_over_real_tokens() -> None:
    logits = torch.zeros(2, 4, 5)  # uniform predictions: every token costs ln 5
    labels = torch.tensor([[1, 2, 3, 4], [1, 2, -100, -100]])
    losses = per_sample_loss(logits, labels)
    assert torch.allclose(losses, torch.full((2,), math.log(5)))
    labels_none = torch.tensor([[1, -100, -100, -100]])
    assert per_sample_loss(torch.zeros(1, 4, 5), labels_none).item() == 0.0


def test_plan_round_trips_through_the_manifest() -> None:
    cfg = with_overrides(TrainConfig(), {"schedule.name": "cosine", "schedule.warmup_steps": 2,
                                         "optimizer.name": "sgd", "lora.dropout": 0.05})
    plan = resolve(cfg, dataset_size=1000)
    assert Plan.from_json(plan.to_json()) == plan
    assert plan.sample_rate == 8 / 1000 and plan.expected_batch_size == 8
    assert plan.delta == pytest.approx(1000**-1.1)


def test_schedules() -> None:
    def lrs(name: str) -> list[float]:
        cfg = with_overrides(TrainConfig(), {"schedule.name": name, "schedule.warmup_steps": 2,
                                             "training.steps": 10, "optimizer.lr": 1.0})
        plan = resolve(cfg, dataset_size=100)
        return [plan.lr_at(k) for k in range(10)]

    assert lrs("constant") == [0.5, 1.0] + [1.0] * 8
    linear = lrs("linear")
    assert linear[:3] == [0.5, 1.0, 1.0] and linear[-1] == pytest.approx(0.0)
    cosine = lrs("cosine")
    assert cosine[2] == 1.0 and cosine[-1] == pytest.approx(0.0)
    assert all(a >= b for a, b in itertools.pairwise(cosine[2:]))


def test_target_epsilon_and_budget() -> None:
    cfg = with_overrides(TrainConfig(), {"dp.target_epsilon": 2.0, "training.steps": 50})
    plan = resolve(cfg, dataset_size=256)
    assert plan.noise_multiplier is not None and plan.epsilon_budget == 2.0
    spent = epsilon_after(plan, 50)
    assert spent is not None and 1.8 < spent <= 2.0
    tight = with_overrides(TrainConfig(), {"dp.noise_multiplier": 0.5, "dp.epsilon_budget": 1.0,
                                           "training.steps": 50})
    with pytest.raises(ConfigError, match=r"dp\.epsilon_budget"):
        resolve(tight, dataset_size=256)
