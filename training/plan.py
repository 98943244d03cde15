"""The resolved training plan: every number a step depends on, as recorded in the run manifest's `training`.

The trainer resolves a `TrainConfig` against the dataset (sample rate q = batch_size / N, δ default
`1 / N**1.1`, noise multiplier from a target ε) into a `Plan`, writes `plan.to_json()` into the run manifest, and
then — like the verifier's replay — trains from `Plan.from_json(manifest["training"])`, so a replay can never use a
number the manifest does not commit to. Floats are stored as `repr` strings (exact round trip).

Learning-rate schedule (`lr_at`): linear warmup from lr/warmup over `warmup_steps`, then `constant`, `linear`
decay towards `min_lr_ratio * lr`, or `cosine` decay towards the same floor; `prov.schedule.v2` (Hugging Face's
convention: the last executed step keeps a positive lr), manifests without `schedule.format` are v1. Pure function
of the step.

Plan checks before step 0: a batch size at or above the data size (sample rate 1: every step sees every example,
and DP's subsampling amplification is gone) is a `ConfigError` saying what to change, never a silent clamp.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from provenance.errors import ConfigError, FormatError
from provenance.schedule import SCHEDULE_V1, lr_at
from training.config import LoraSettings, OptimizerConfig, ScheduleConfig, TrainConfig, _build

DEFAULT_NOISE_MULTIPLIER = 1.0
LOSS_DEFINITION = (
    "per-sample mean token cross-entropy (next-token, labels -100 ignored); step loss = mean of the per-sample "
    "losses summed in float64 in batch order"
)
NOISE_DEFINITION = (
    "prov.noise.v2: Philox-4x64 keyed HMAC-SHA256(noise_seed, b'noise' || uint64_be(step))[:16]; Box-Muller in "
    "float64; (sum of 4 normals) / 2 per coordinate; sigma * C * z cast to the parameter dtype"
)
DROPOUT_DEFINITION = (
    "prov.dropout.v2: torch.manual_seed(HMAC-SHA256(noise_seed, b'dropout' || uint64_be(step) || uint64_be(rank))"
    "[:8]) before rank r's shard of each step; torch.manual_seed(HMAC-SHA256(noise_seed, b'dropout' || "
    "uint64_be(step))[:8]) after the step"
)
STEP_DEFINITION = (
    "prov.dpstep.v1: sorted logical batch split into world_size rank shards, each into micro-batches of "
    "physical_batch_size (0 = whole shard); per micro-batch clipped per-sample sum (factor min(1, C/(norm+1e-6))); "
    "micro-batch sums added in order into the shard sum; shard sums added in rank order; + noise; / expected batch "
    "size (non-private: / examples, no clipping or noise); optimizer step (foreach=False)"
)


def default_delta(dataset_size: int) -> float:
    """δ when none is configured: 1 / N**1.1 (strictly below 1/N, as DP guidance asks)."""
    return 1.0 / float(dataset_size) ** 1.1


@dataclass(frozen=True)
class Plan:
    mode: str  # "dp" | "non-private"
    noise_multiplier: float | None
    max_grad_norm: float | None
    sample_rate: float
    expected_batch_size: int
    delta: float | None
    accountant: str | None
    target_epsilon: float | None
    epsilon_budget: float | None
    steps: int
    checkpoint_every: int
    seed: int
    dataset_size: int
    lora: LoraSettings
    optimizer: OptimizerConfig
    schedule: ScheduleConfig
    physical_batch_size: int = 0  # micro-batch size; 0 = each rank's whole shard at once
    world_size: int = 1  # rank shards of every logical batch (the processes of a torchrun run)

    @property
    def private(self) -> bool:
        return self.mode == "dp"

    def lr_at(self, step: int) -> float:
        """The scheduled lr of `step`: `provenance.schedule.lr_at`, the function the verifier recomputes it with."""
        return lr_at(base=self.optimizer.lr, name=self.schedule.name, warmup_steps=self.schedule.warmup_steps,
                     min_lr_ratio=self.schedule.min_lr_ratio, steps=self.steps, step=step, fmt=self.schedule.format)

    def to_json(self) -> dict[str, Any]:
        def f(x: float | None) -> str | None:
            return None if x is None else repr(float(x))

        return {
            "batch": {"expected_batch_size": self.expected_batch_size,
                      "physical_batch_size": self.physical_batch_size, "sampler": "prov.poisson.v1"},
            "checkpoint_every": self.checkpoint_every,
            "dataset_size": self.dataset_size,
            "dp": {
                "accountant": self.accountant,
                "delta": f(self.delta),
                "epsilon_budget": f(self.epsilon_budget),
                "max_grad_norm": f(self.max_grad_norm),
                "mode": self.mode,
                "noise_multiplier": f(self.noise_multiplier),
                "sample_rate": f(self.sample_rate),
                "secure_mode": False,
                "target_epsilon": f(self.target_epsilon),
            },
            "dropout": DROPOUT_DEFINITION,
            "lora": {"alpha": self.lora.alpha, "dropout": f(self.lora.dropout), "r": self.lora.r,
                     "target_modules": list(self.lora.target_modules)},
            "loss": LOSS_DEFINITION,
            "noise": NOISE_DEFINITION,
            "optimizer": {k: (f(v) if isinstance(v, float) else v) for k, v in vars(self.optimizer).items()},
            "schedule": {k: (f(v) if isinstance(v, float) else v) for k, v in vars(self.schedule).items()},
            "seed": self.seed,
            "step": STEP_DEFINITION,
            "steps": self.steps,
            "world_size": self.world_size,
        }

    @classmethod
    def from_json(cls, value: Any) -> Plan:
        """Rebuild the plan from a run manifest's `training` section (read at a trust boundary)."""
        try:
            dp = value["dp"]

            def f(x: Any) -> float | None:
                return None if x is None else float(x)

            lora = value["lora"]
            return cls(
                mode=dp["mode"],
                noise_multiplier=f(dp["noise_multiplier"]),
                max_grad_norm=f(dp["max_grad_norm"]),
                sample_rate=float(dp["sample_rate"]),
                expected_batch_size=int(value["batch"]["expected_batch_size"]),
                delta=f(dp["delta"]),
                accountant=dp["accountant"],
                target_epsilon=f(dp["target_epsilon"]),
                epsilon_budget=f(dp["epsilon_budget"]),
                steps=int(value["steps"]),
                checkpoint_every=int(value["checkpoint_every"]),
                seed=int(value["seed"]),
                dataset_size=int(value["dataset_size"]),
                lora=LoraSettings(r=int(lora["r"]), alpha=int(lora["alpha"]), dropout=float(lora["dropout"]),
                                  target_modules=tuple(lora["target_modules"])),
                optimizer=_build(OptimizerConfig, value["optimizer"], "training.optimizer"),
                schedule=_build(ScheduleConfig, {"format": SCHEDULE_V1, **value["schedule"]}, "training.schedule"),
                physical_batch_size=_count(value["batch"].get("physical_batch_size", 0)),
                world_size=_count(value.get("world_size", 1), minimum=1),
            )
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise FormatError(f"run manifest: training section is incomplete or malformed ({exc})") from None


def _count(value: Any, *, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"expected an integer >= {minimum}, got {value!r}")
    return value


def check_batch(cfg: TrainConfig, *, dataset_size: int) -> None:
    """Refuse a sample rate of 1 (or a batch at least as large as the data) before step 0: it used to be clamped
    silently, and with q = 1 every step reads every example, so DP-SGD loses its subsampling amplification."""
    t = cfg.training
    if dataset_size < 1:
        raise ConfigError("the data holds no examples: point data.path at a non-empty dataset")
    if t.sample_rate is not None:
        if t.sample_rate >= 1.0:
            raise ConfigError(f"training.sample_rate = {t.sample_rate:g}: every step would read all {dataset_size} "
                              "examples; set training.sample_rate below 1 (e.g. 0.05) in the config, or leave it unset "
                              f"and use a training.batch_size below {dataset_size}")
        return
    if t.batch_size >= dataset_size:
        raise ConfigError(f"training.batch_size = {t.batch_size} is not below the {dataset_size} examples of the data "
                          f"(sample rate would be 1): use --batch-size {max(1, dataset_size // 8)} or less, or add "
                          "data")


def resolve(cfg: TrainConfig, *, dataset_size: int) -> Plan:
    """Turn a config into a plan for a dataset of `dataset_size` examples (may compute the noise multiplier)."""
    t = cfg.training
    check_batch(cfg, dataset_size=dataset_size)
    q = t.sample_rate if t.sample_rate is not None else min(1.0, t.batch_size / dataset_size)
    expected = max(1, round(q * dataset_size))
    common: dict[str, Any] = {
        "sample_rate": q, "expected_batch_size": expected, "steps": t.steps, "checkpoint_every": t.checkpoint_every,
        "seed": t.seed, "dataset_size": dataset_size, "lora": cfg.lora, "optimizer": cfg.optimizer,
        "schedule": cfg.schedule, "physical_batch_size": t.physical_batch_size, "world_size": t.world_size,
    }
    if not cfg.dp.enabled:
        return Plan(mode="non-private", noise_multiplier=None, max_grad_norm=None, delta=None, accountant=None,
                    target_epsilon=None, epsilon_budget=None, **common)
    delta = cfg.dp.delta if cfg.dp.delta is not None else default_delta(dataset_size)
    if dataset_size < 2:
        raise ConfigError(f"a DP run needs at least 2 examples; the data holds {dataset_size}")
    if delta >= 1.0 / dataset_size:
        raise ConfigError(f"dp.delta = {delta:g} is at least 1/N = {1.0 / dataset_size:.3g} (N = {dataset_size} "
                          "examples): it would allow publishing a whole record with probability δ; use δ < 1/N "
                          "(leave it unset for 1/N**1.1)")
    if cfg.dp.target_epsilon is not None:
        from opacus.accountants.utils import get_noise_multiplier

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Optimal order is the largest alpha.*")
            try:
                sigma = float(get_noise_multiplier(target_epsilon=cfg.dp.target_epsilon, target_delta=delta,
                                                   sample_rate=q, steps=t.steps, accountant=cfg.dp.accountant))
            except ValueError as exc:
                raise ConfigError(f"dp.target_epsilon: cannot reach ε={cfg.dp.target_epsilon} ({exc})") from None
    else:
        sigma = cfg.dp.noise_multiplier if cfg.dp.noise_multiplier is not None else DEFAULT_NOISE_MULTIPLIER
    budget = cfg.dp.epsilon_budget if cfg.dp.epsilon_budget is not None else cfg.dp.target_epsilon
    plan = Plan(mode="dp", noise_multiplier=sigma, max_grad_norm=cfg.dp.max_grad_norm, delta=delta,
                accountant=cfg.dp.accountant, target_epsilon=cfg.dp.target_epsilon, epsilon_budget=budget, **common)
    if cfg.dp.epsilon_budget is not None:
        planned = epsilon_after(plan, plan.steps)
        if planned is not None and planned > cfg.dp.epsilon_budget:
            raise ConfigError(f"dp.epsilon_budget: the planned run spends ε={planned:.3f} > budget "
                              f"{cfg.dp.epsilon_budget} (raise the noise multiplier or lower training.steps)")
    return plan


def make_accountant(plan: Plan, history: list[tuple[float, float, int]] | None = None) -> Any:
    from opacus.accountants import create_accountant

    accountant = create_accountant(plan.accountant or "prv")
    accountant.history = list(history or [])
    return accountant


def epsilon_of(plan: Plan, accountant: Any) -> float | None:
    """ε spent so far at the plan's δ (None for a non-private run; 0.0 before the first step)."""
    if not plan.private:
        return None
    if not accountant.history:
        return 0.0
    assert plan.delta is not None
    return float(accountant.get_epsilon(delta=plan.delta))


def epsilon_after(plan: Plan, steps: int) -> float | None:
    """ε the run will have spent after `steps` steps (constant σ and q, so it is known in advance)."""
    if not plan.private or steps == 0:
        return None if not plan.private else 0.0
    assert plan.noise_multiplier is not None
    return epsilon_of(plan, make_accountant(plan, [(plan.noise_multiplier, plan.sample_rate, steps)]))


def checkpoint_steps(plan: Plan) -> list[int]:
    """Steps done at checkpoints 0, 1, 2, ...: 0, every k steps, and the last step."""
    points = list(range(0, plan.steps, plan.checkpoint_every))
    return [*points, plan.steps]


class EpsilonSchedule:
    """ε at each checkpoint step, computed ahead of time on a worker thread (the PRV accountant takes ~0.1 s).

    With σ and q fixed, the accountant's history after n steps is exactly `[(σ, q, n)]`, so `epsilon_after(plan, n)`
    is the same number `Engine.epsilon()` gives at step n; computing it early only moves the work off the
    training thread.
    """

    def __init__(self, plan: Plan, steps: list[int]) -> None:
        from concurrent.futures import Future, ThreadPoolExecutor

        self.plan = plan
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prov-epsilon") if plan.private else None
        self._futures: dict[int, Future[float | None]] = {}
        if self._pool is not None:
            for n in steps:
                self._futures[n] = self._pool.submit(epsilon_after, plan, n)

    def at(self, steps: int) -> float | None:
        if not self.plan.private:
            return None
        future = self._futures.get(steps)
        return future.result() if future is not None else epsilon_after(self.plan, steps)

    def ready(self, steps: int) -> float | None:
        """ε after `steps` if the worker has already computed it, else None; never waits (the progress display)."""
        future = self._futures.get(steps)
        if future is None or not future.done() or future.cancelled() or future.exception() is not None:
            return None
        return future.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
