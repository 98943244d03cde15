"""The step engine: the DP step's arithmetic against naive references (per-sample clipping, noise added once,
division by the expected batch size), micro-batches and rank shards, the no-op / non-finite guard, the loss, and
the plan (ε, δ, schedules)."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch

from provenance.errors import ConfigError
from training import engine as engine_module
from training.config import TrainConfig, with_overrides
from training.dpstep import micro_batches, per_sample_loss
from training.engine import ShardDropout, TrainingGuardError
from training.noise import step_noise
from training.plan import Plan, epsilon_after, resolve


def _flat_grads(engine: Any) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for _, p in engine.named_params])


def _naive_clipped_sum(engine: Any, batch: dict[str, Any], clip: float) -> tuple[torch.Tensor, int]:
    """One sample at a time: its own backward, its own norm over all adapter parameters, Opacus' clip factor."""
    total = torch.zeros(engine.math.count)
    clipped = 0
    for i in range(batch["input_ids"].shape[0]):
        engine.peft_model.zero_grad(set_to_none=True)
        out = engine.peft_model(input_ids=torch.from_numpy(batch["input_ids"][i : i + 1]),
                                attention_mask=torch.from_numpy(batch["attention_mask"][i : i + 1]), use_cache=False)
        per_sample_loss(out.logits, torch.from_numpy(batch["labels"][i : i + 1])).sum().backward()
        grad = _flat_grads(engine)
        norm = float(grad.norm())
        clipped += norm + 1e-6 > clip
        total += grad * min(1.0, clip / (norm + 1e-6))
    for _, p in engine.named_params:
        p.grad, p.grad_sample = None, None
    return total, clipped


def test_clipped_sums_match_a_per_sample_reference(tiny_engine: Any) -> None:
    clip = 0.5  # tiny model, step 0: per-sample norms 0.3..0.8, so some samples are clipped and some are not
    engine = tiny_engine(**{"lora.dropout": 0.0, "dp.max_grad_norm": clip, "training.batch_size": 16})
    engine.module.train()
    indices = engine.indices(0)
    batch = engine.batches(0, indices)
    expected, expected_clipped = _naive_clipped_sum(engine, batch, clip)
    assert 0 < expected_clipped < len(indices)
    for micro in (0, 1, 5):
        shard = engine.math.shard_sum(batch, micro_size=micro)
        assert torch.allclose(shard.grad_sum, expected, atol=1e-7, rtol=1e-5), micro
        assert shard.clipped == expected_clipped
        assert len(shard.losses) == len(indices)


def test_a_dp_step_adds_the_noise_once_and_divides_by_the_expected_batch_size(tiny_engine: Any,
                                                                              fixed_secrets: Any) -> None:
    engine = tiny_engine(**{"lora.dropout": 0.0, "optimizer.name": "sgd", "optimizer.lr": 1.0,
                            "dp.noise_multiplier": 0.5, "dp.max_grad_norm": 0.1})
    before = torch.cat([p.detach().reshape(-1).clone() for _, p in engine.named_params])
    engine.module.train()
    batch = engine.batches(0, engine.indices(0))
    grad_sum = engine.math.shard_sum(batch, micro_size=0).grad_sum
    noise = step_noise(fixed_secrets, 0, count=engine.math.count, std=0.5 * 0.1, dtype=torch.float32)
    expected = (grad_sum + noise) / engine.plan.expected_batch_size
    result = engine.step(0)
    after = torch.cat([p.detach().reshape(-1) for _, p in engine.named_params])
    assert torch.allclose(before - after, expected, atol=1e-6)  # SGD, lr 1: the update is the gradient
    assert result.record is not None and result.stats.examples == len(result.indices)
    assert engine.accountant is not None and engine.accountant.history == [(0.5, engine.plan.sample_rate, 1)]


def test_non_private_steps_average_the_unclipped_gradients(tiny_engine: Any) -> None:
    engine = tiny_engine(**{"lora.dropout": 0.0, "optimizer.name": "sgd", "optimizer.lr": 1.0, "dp.enabled": False})
    before = torch.cat([p.detach().reshape(-1).clone() for _, p in engine.named_params])
    engine.module.train()
    indices = engine.indices(0)
    shard = engine.math.shard_sum(engine.batches(0, indices), micro_size=0)
    result = engine.step(0)
    after = torch.cat([p.detach().reshape(-1) for _, p in engine.named_params])
    assert torch.allclose(before - after, shard.grad_sum / len(indices), atol=1e-6)
    assert result.stats.clipped_fraction == 0.0 and engine.accountant is None


def test_micro_batches_and_rank_shards_change_order_not_meaning(tiny_engine: Any) -> None:
    """The exact fields of a record never depend on micro-batching; the update agrees to rounding; rank shards
    change the batch commitment (it commits to the world size) but not the examples. (No dropout and SGD here:
    dropout masks depend on the shard and micro-batch layout, and Adam magnifies rounding in tiny gradients.)"""
    runs = {}
    for micro, world in ((0, 1), (3, 1), (2, 2)):
        engine = tiny_engine(**{"training.physical_batch_size": micro, "training.world_size": world,
                                "lora.dropout": 0.0, "optimizer.name": "sgd", "optimizer.lr": 0.1})
        results = [engine.step(k) for k in range(2)]
        runs[(micro, world)] = (results, torch.cat([p.detach().reshape(-1) for _, p in engine.named_params]))
    (base, w_base), (micro3, w_micro), (sharded, w_sharded) = runs.values()
    for a, b in zip(base, micro3, strict=True):
        assert (a.record.batch, a.stats.examples, a.record.lr, a.record.noise_index) == (
            b.record.batch, b.stats.examples, b.record.lr, b.record.noise_index)
        assert a.stats.loss == pytest.approx(b.stats.loss, rel=1e-5)
    for a, c in zip(base, sharded, strict=True):
        assert a.indices == c.indices and a.record.batch != c.record.batch
    assert torch.allclose(w_base, w_micro, atol=1e-6) and torch.allclose(w_base, w_sharded, atol=1e-6)


def _steps(engine: Any, steps: int) -> tuple[list[Any], list[torch.Tensor], torch.Tensor]:
    results = [engine.step(k) for k in range(steps)]
    return results, [p.detach().clone() for _, p in engine.named_params], torch.get_rng_state()


@pytest.mark.parametrize(("world", "threads", "dropout", "private"),
                         [(2, 2, 0.1, True), (3, 2, 0.0, True), (2, 2, 0.1, False)])
def test_shards_on_threads_give_the_rank_order_bits(tiny_engine: Any, world: int, threads: int, dropout: float,
                                                    private: bool) -> None:
    """A one-process replay computes a W-rank step's shards concurrently (`ShardThreads`, replicas with their own
    dropout generators): records, statistics, weights, optimizer moves and the generator state left behind are
    bit for bit those of computing the shards in rank order, as the W ranks did — with LoRA dropout on, with
    more ranks than threads, and without DP."""
    overrides = {"training.world_size": world, "training.physical_batch_size": 3, "lora.dropout": dropout,
                 "training.batch_size": 12, "dp.enabled": private}
    serial = tiny_engine(**overrides)
    threaded = tiny_engine(shard_threads=threads, **overrides)
    assert serial.shard_threads is None and threaded.shard_threads is not None
    assert len(threaded.shard_threads.maths) == threads
    a, b = _steps(serial, 3), _steps(threaded, 3)
    assert threaded.shard_threads.active
    assert [r.record for r in a[0]] == [r.record for r in b[0]] and [r.stats for r in a[0]] == [r.stats for r in b[0]]
    assert all(torch.equal(x, y) for x, y in zip(a[1], b[1], strict=True)) and torch.equal(a[2], b[2])
    if dropout:  # the masks matter: without them the weights differ
        plain = tiny_engine(shard_threads=threads, **{**overrides, "lora.dropout": 0.0})
        assert not all(torch.equal(x, y) for x, y in zip(a[1], _steps(plain, 3)[1], strict=True))


@pytest.mark.parametrize("disturbance", ["torch", "python", "numpy", "buffer"])
def test_a_shard_that_touches_shared_state_falls_back_to_rank_order(
        tiny_engine: Any, monkeypatch: pytest.MonkeyPatch, disturbance: str) -> None:
    """Random numbers drawn from a process-wide generator by concurrent shards would race, and a buffer changed
    in forward would have been carried from shard to shard in rank order: the engine sees it, drops that step's
    threaded result, computes it in rank order, and stays there — the bits are the rank order's."""
    import random

    import numpy as np

    overrides = {"training.world_size": 2, "lora.dropout": 0.1, "training.batch_size": 8}
    serial = _steps(tiny_engine(**overrides), 2)
    original = ShardDropout.forward

    def racing(self: ShardDropout, x: torch.Tensor) -> torch.Tensor:
        if disturbance == "torch":
            torch.rand(1)
        elif disturbance == "python":
            random.random()
        elif disturbance == "numpy":
            np.random.rand()
        return original(self, x)

    monkeypatch.setattr(ShardDropout, "forward", racing)
    engine = tiny_engine(shard_threads=2, **overrides)
    if disturbance == "buffer":  # a module that updates its own buffer in forward
        def update(_module: Any, _args: Any, _output: Any) -> None:
            for model in engine.shard_threads.models:
                next(model.buffers()).mul_(1.0001)

        engine.shard_threads.models[0].register_forward_hook(update)
    threaded = _steps(engine, 2)
    assert engine.shard_threads is not None and not engine.shard_threads.active
    assert all(torch.equal(x, y) for x, y in zip(serial[1], threaded[1], strict=True))
    assert [r.record for r in serial[0]] == [r.record for r in threaded[0]]


@pytest.mark.parametrize("error", ["broken", "oom"])
def test_a_shard_that_raises_stops_every_shard_first(tiny_engine: Any, monkeypatch: pytest.MonkeyPatch,
                                                    error: str) -> None:
    """An error in one shard is raised only once every shard has stopped (no replica is still in use when the
    next request arrives), and the engine computes in rank order from then on; a shard that ran out of memory
    (W replicas hold their activations at once) makes the engine compute that step in rank order instead, with the
    same bits."""
    import time

    failing_generator: list[torch.Generator] = []
    finished: list[int] = []
    original = ShardDropout.forward
    message = ("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes. Error code 12"
               if error == "oom" else "shape mismatch in shard 0")

    def failing(self: ShardDropout, x: torch.Tensor) -> torch.Tensor:
        if self.generator is failing_generator[0]:
            raise RuntimeError(message)
        time.sleep(0.01)  # the other shard is slower: it is still running when shard 0 fails
        finished.append(1)
        return original(self, x)

    overrides = {"training.world_size": 2, "lora.dropout": 0.1, "training.batch_size": 8}
    serial = _steps(tiny_engine(**overrides), 1)
    monkeypatch.setattr(ShardDropout, "forward", failing)
    engine = tiny_engine(shard_threads=2, **overrides)
    failing_generator.append(engine.shard_threads.generators[0])
    if error == "oom":
        threaded = _steps(engine, 1)
        assert all(torch.equal(x, y) for x, y in zip(serial[1], threaded[1], strict=True))
    else:
        with pytest.raises(RuntimeError, match="shape mismatch in shard 0"):
            engine.step(0)
    count = len(finished)
    time.sleep(0.3)
    assert not engine.shard_threads.active and count > 0 and len(finished) == count


def test_resource_shortage_names_memory_or_disk_and_nothing_else() -> None:
    from training.engine import resource_shortage

    assert resource_shortage(MemoryError()) == "memory"
    assert resource_shortage(torch.OutOfMemoryError("CUDA out of memory")) == "memory"
    assert resource_shortage(RuntimeError("DefaultCPUAllocator: can't allocate memory: Error code 12")) == "memory"
    assert resource_shortage(OSError(28, "No space left on device")) == "disk space"
    assert resource_shortage(OSError(13, "Permission denied")) is None
    assert resource_shortage(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None


def test_models_that_draw_random_numbers_otherwise_keep_rank_order(tiny_engine: Any) -> None:
    """Attention dropout in the base model's config, or a dropout module other than `nn.Dropout`, cannot be
    given a per-replica generator: no replicas are made."""
    engine = tiny_engine(**{"training.world_size": 2, "lora.dropout": 0.0})
    model = engine.peft_model
    assert not engine_module._draws_random_otherwise(model)
    model.config.attention_dropout = 0.1
    assert engine_module._draws_random_otherwise(model)
    assert engine_module.ShardThreads.replicas(model, ranks=2, device=torch.device("cpu"), threads=2) == []
    model.config.attention_dropout = 0.0
    model.add_module("extra", torch.nn.AlphaDropout(0.2))
    assert engine_module._draws_random_otherwise(model)
    assert engine_module.ShardThreads.replicas(model, ranks=2, device=torch.device("cpu"), threads=1) == []


def test_replicas_share_the_frozen_base_weights(tiny_engine: Any) -> None:
    """A replica owns its adapter parameters (per-sample gradients live on them) and shares every frozen base
    weight with the engine's model: no second copy of the base model."""
    engine = tiny_engine(shard_threads=2, **{"training.world_size": 2})
    frozen = {p.data_ptr() for p in engine.peft_model.parameters() if not p.requires_grad}
    trainable = {p.data_ptr() for p in engine.math.params}
    for replica in engine.shard_threads.maths:
        module = replica.module._module if hasattr(replica.module, "_module") else replica.module
        assert {p.data_ptr() for p in module.parameters() if not p.requires_grad} == frozen
        assert not {p.data_ptr() for p in replica.params} & trainable


def test_micro_batch_bounds() -> None:
    assert micro_batches(0, 4) == []
    assert micro_batches(5, 0) == [(0, 5)]
    assert micro_batches(5, 2) == [(0, 2), (2, 4), (4, 5)]
    assert micro_batches(4, 4) == [(0, 4)]


def test_guard_stops_a_silent_noop_update(tiny_engine: Any) -> None:
    engine = tiny_engine()
    engine.step(0)  # a real step passes the guard
    engine.base_optimizer.step = lambda *a, **k: None  # the update never reaches the weights
    with pytest.raises(TrainingGuardError, match="step 1: the LoRA update changed no adapter weight"):
        engine.step(1)


def test_guard_stops_non_finite_weights(tiny_engine: Any) -> None:
    engine = tiny_engine()
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
    assert per_sample_loss(torch.zeros(2, 4, 5, dtype=torch.bfloat16), labels).dtype == torch.float32


def test_plan_round_trips_through_the_manifest() -> None:
    cfg = with_overrides(TrainConfig(), {"schedule.name": "cosine", "schedule.warmup_steps": 2,
                                         "optimizer.name": "sgd", "lora.dropout": 0.05,
                                         "training.physical_batch_size": 4, "training.world_size": 3})
    plan = resolve(cfg, dataset_size=1000)
    assert Plan.from_json(plan.to_json()) == plan
    assert plan.to_json()["batch"]["physical_batch_size"] == 4 and plan.to_json()["world_size"] == 3
    assert plan.sample_rate == 8 / 1000 and plan.expected_batch_size == 8
    assert plan.delta == pytest.approx(1000**-1.1)
    legacy = plan.to_json()
    del legacy["world_size"], legacy["batch"]["physical_batch_size"]  # a v1 manifest
    assert Plan.from_json(legacy).world_size == 1 and Plan.from_json(legacy).physical_batch_size == 0


def test_schedules() -> None:
    def lrs(name: str) -> list[float]:
        cfg = with_overrides(TrainConfig(), {"schedule.name": name, "schedule.warmup_steps": 2,
                                             "training.steps": 10, "optimizer.lr": 1.0})
        plan = resolve(cfg, dataset_size=100)
        return [plan.lr_at(k) for k in range(10)]

    assert lrs("constant") == [0.5, 1.0] + [1.0] * 8
    linear = lrs("linear")
    assert linear[:3] == [0.5, 1.0, 1.0] and linear[-1] == pytest.approx(1 / 8)  # prov.schedule.v2: never 0
    cosine = lrs("cosine")
    assert cosine[2] == 1.0 and 0 < cosine[-1] < 0.05
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


def test_a_delta_of_at_least_one_over_n_is_refused() -> None:
    """δ ≥ 1/N would let the mechanism publish a whole record with probability δ: no DP run records it."""
    with pytest.raises(ConfigError, match=r"dp\.delta = 0\.01 is at least 1/N"):
        resolve(with_overrides(TrainConfig(), {"dp.delta": 0.01}), dataset_size=256)
    assert resolve(with_overrides(TrainConfig(), {"dp.delta": 1e-3}), dataset_size=256).delta == 1e-3
