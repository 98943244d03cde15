"""One optimizer step, computed the same way by the trainer (one process or every rank of a torchrun run), by
resume and by the replay worker.

A step k: Poisson-sample the logical batch from the noise seed (`provenance.sampler`), fetch its tensors, set the
scheduled lr, then compute the gradient sum in the fixed order of `training.dpstep` (rank shards → micro-batches →
clipped per-sample sums), gather the shards' sums in rank order (`Collective`: all of them in one process, an
all-gather under torchrun), add the step's noise (`training.noise`, `prov.noise.v2`: every rank derives the same
noise from the secret key, so it is added exactly once and no broadcast is needed), divide by the expected batch
size (Opacus' `loss_reduction="mean"`), and take the optimizer step. An empty Poisson batch is a real step: only
noise moves the adapter (the accountant and the log count it). Non-private mode: same structure, unclipped sums
divided by the number of examples, no noise; an empty batch there changes nothing.

Rank 0 (or the only process) records the step: `prov.step.v3` record with the salted batch commitment
(`provenance.batches.batch_digest`, `world_size` = W) and the hiding commitment to the step's statistics and
example count (`prov.stats.v2`); the statistics themselves (`StepStats`) are returned for `stats.jsonl` only.

The guard: after every step the adapter must be finite and, whenever the step should move it (a non-empty batch,
or any DP step), differ from before; otherwise `TrainingGuardError` stops training. A silent no-op LoRA update
under DP (parameters not reaching the optimizer) is exactly what this catches.
"""

from __future__ import annotations

import copy
import errno
import os
import random
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from provenance.batches import Batch, batch_digest, shard_bounds
from provenance.errors import ProvenanceError
from provenance.records import StepRecordV3, StepStats
from provenance.sampler import poisson_indices
from provenance.secrets import Secrets
from training import determinism
from training.data import tokenized_for
from training.dpstep import ShardResult, StepMath, combine, rank_dropout_seed
from training.model import add_lora, load_base_model, trainable_parameters
from training.noise import step_noise
from training.plan import Plan, epsilon_of, make_accountant

BatchSource = Callable[[int, Sequence[int]], Batch]
"""Called as `batches(step, indices)`; returns the int64 arrays fed for those dataset indices."""


class TrainingGuardError(ProvenanceError):
    """A step left the adapter unchanged when it had to move, or made it non-finite."""


class Collective(Protocol):
    """How the shards of a step are spread over processes: which ranks this process computes, and the gather."""

    @property
    def world_size(self) -> int: ...
    @property
    def rank(self) -> int: ...
    @property
    def local_ranks(self) -> tuple[int, ...]: ...

    def all_gather(self, local: Mapping[int, torch.Tensor]) -> list[torch.Tensor]:
        """Every rank's tensor in rank order (each process passes those of its `local_ranks`)."""
        ...


@dataclass(frozen=True)
class LocalCollective:
    """One process computing every shard in rank order (training with W = 1, or emulating W ranks on replay)."""

    world_size: int = 1
    rank: int = 0

    @property
    def local_ranks(self) -> tuple[int, ...]:
        return tuple(range(self.world_size))

    def all_gather(self, local: Mapping[int, torch.Tensor]) -> list[torch.Tensor]:
        return [local[r] for r in range(self.world_size)]


@dataclass(frozen=True)
class StepResult:
    record: StepRecordV3 | None  # None when the engine does not record (other ranks, benchmarks)
    stats: StepStats
    indices: list[int]


class Engine:
    """Holds the LoRA model, the optimizer and the accountant; `step(k)` runs step k."""

    def __init__(self, *, peft_model: Any, plan: Plan, secrets: Secrets, batches: BatchSource, device: str = "cpu",
                 dtype: str = "float32", record: bool = True, guard: bool = True,
                 collective: Collective | None = None, shard_threads: int = 1) -> None:
        self.plan = plan
        self.peft_model = peft_model
        self.secrets = secrets
        self.batches = batches
        self.record = record
        self.guard = guard
        self.device = torch.device(device)
        self.collective: Collective = collective if collective is not None else LocalCollective(plan.world_size)
        if self.collective.world_size != plan.world_size:
            raise ProvenanceError(f"the run has world size {plan.world_size}; got {self.collective.world_size} ranks")
        self.named_params = trainable_parameters(peft_model)
        params = [p for _, p in self.named_params]
        self.base_optimizer = make_optimizer(plan, params)
        self._autocast_dtype = torch.bfloat16 if dtype == "bfloat16" else None
        replicas = ShardThreads.replicas(peft_model, ranks=len(self.collective.local_ranks), device=self.device,
                                         threads=shard_threads)  # copied before Opacus hooks the model
        self.math = self._step_math(peft_model)
        self.module: Any = self.math.module
        self.shard_threads = ShardThreads(self, replicas) if replicas else None
        self.accountant = make_accountant(plan) if plan.private else None
        self.next_step = 0
        self._batch_key = secrets.batch_key()
        self._stats_key = secrets.stats_key()
        self._previous = [p.detach().clone() for p in params] if guard else []

    # --- one step -------------------------------------------------------------------------------------

    def indices(self, step: int) -> list[int]:
        return poisson_indices(self.secrets.sample_secret, step, self.plan.dataset_size, self.plan.sample_rate)

    def step(self, step: int, *, indices: Sequence[int] | None = None, batch: Batch | None = None) -> StepResult:
        """Run step `step` (must be `next_step`). `indices`/`batch` default to the sampler and batch source."""
        if step != self.next_step:
            raise ProvenanceError(f"engine is at step {self.next_step}; cannot run step {step}")
        chosen = self.indices(step) if indices is None else [int(i) for i in indices]
        tensors = self.batches(step, chosen) if batch is None else batch
        n = len(chosen)
        lr = self.plan.lr_at(step)
        for group in self.base_optimizer.param_groups:
            group["lr"] = lr
        self.module.train()
        self.base_optimizer.zero_grad(set_to_none=True)
        total, losses, clipped = self._gradient_sum(step, n, tensors)
        if self.plan.private:
            assert self.plan.noise_multiplier is not None and self.plan.max_grad_norm is not None
            std = self.plan.noise_multiplier * self.plan.max_grad_norm
            noise = step_noise(self.secrets, step, count=self.math.count, std=std, dtype=self.math.dtype)
            self._apply((total + noise.to(self.device)) / float(self.plan.expected_batch_size))
            assert self.accountant is not None
            self.accountant.step(noise_multiplier=self.plan.noise_multiplier, sample_rate=self.plan.sample_rate)
        elif n:
            self._apply(total / float(n))
        loss = _mean(losses)
        stats = StepStats(step=step, loss=loss, clipped_fraction=clipped / n if n and self.plan.private else 0.0,
                          examples=n)  # the count is private: committed in `stats`, never in the record
        if self.guard:
            self._check(step, moved=bool(n) or self.plan.private, loss=loss)
        self.next_step = step + 1
        record = None
        if self.record:
            digest = batch_digest(self._batch_key, step=step, indices=chosen, tensors=tensors,
                                  world_size=self.plan.world_size)
            record = StepRecordV3(step=step, batch=digest, lr=lr, noise_index=step,
                                  stats=stats.commitment(self._stats_key))
        return StepResult(record=record, stats=stats, indices=chosen)

    def _step_math(self, peft_model: Any) -> StepMath:
        """The step arithmetic over `peft_model` (wrapped in Opacus' `GradSampleModule` in DP mode)."""
        from opacus import GradSampleModule

        module = GradSampleModule(peft_model, batch_first=True, loss_reduction="sum") if self.plan.private \
            else peft_model
        return StepMath(module=module, params=[p for _, p in trainable_parameters(peft_model)],
                        private=self.plan.private, max_grad_norm=self.plan.max_grad_norm, device=self.device,
                        autocast_dtype=self._autocast_dtype)

    def shard(self, math: StepMath, bounds: tuple[int, int], tensors: Batch) -> ShardResult:
        """One rank's shard of the step's batch (positions `bounds`), computed with `math`."""
        start, end = bounds
        return math.shard_sum({k: v[start:end] for k, v in tensors.items()}, micro_size=self.plan.physical_batch_size)

    def _gradient_sum(self, step: int, n: int, tensors: Batch) -> tuple[torch.Tensor, list[float], int]:
        """This step's gradient sum over all shards (gathered in rank order), per-sample losses and clip count."""
        bounds = shard_bounds(n, self.plan.world_size)
        width = max(end - start for start, end in bounds)
        shards = self.shard_threads.run(step, bounds, tensors) if self.shard_threads is not None else None
        if shards is None:
            shards = {}
            for rank in self.collective.local_ranks:
                torch.manual_seed(rank_dropout_seed(self.secrets, step, rank))
                shards[rank] = self.shard(self.math, bounds[rank], tensors)
        sums: dict[int, torch.Tensor] = {}
        packed: dict[int, torch.Tensor] = {}
        for rank, shard in shards.items():
            sums[rank] = shard.grad_sum
            stats = torch.zeros(width + 1, dtype=torch.float64)
            stats[: len(shard.losses)] = torch.tensor(shard.losses, dtype=torch.float64)
            stats[width] = float(shard.clipped)
            packed[rank] = stats.to(self.device)
        torch.manual_seed(self.secrets.dropout_seed(step))
        total = combine(self.collective.all_gather(sums))
        losses: list[float] = []
        clipped = 0
        for (start, end), stats in zip(bounds, self.collective.all_gather(packed), strict=True):
            values = stats.to("cpu").tolist()
            losses.extend(values[: end - start])
            clipped += int(values[width])
        return total, losses, clipped

    def _apply(self, update: torch.Tensor) -> None:
        for p, grad in self.math.split(update):
            p.grad = grad
        self.base_optimizer.step()
        for p in self.math.params:
            p.grad = None

    def _check(self, step: int, *, moved: bool, loss: float) -> None:
        changed = False
        for (name, p), before in zip(self.named_params, self._previous, strict=True):
            if not bool(torch.isfinite(p).all()):
                raise TrainingGuardError(f"step {step}: adapter parameter {name} is not finite (loss {loss}); "
                                         "lower optimizer.lr or raise dp.max_grad_norm")
            if not changed and not torch.equal(p, before):
                changed = True
            before.copy_(p.detach())
        if moved and not changed:
            raise TrainingGuardError(
                f"step {step}: the LoRA update changed no adapter weight (a silent no-op update); "
                "check that the adapter parameters are trainable and reach the optimizer"
            )

    # --- state ----------------------------------------------------------------------------------------

    def epsilon(self) -> float | None:
        return epsilon_of(self.plan, self.accountant) if self.plan.private else None

    def sync_guard(self) -> None:
        """Refresh the guard's copy of the weights after they were loaded from a checkpoint."""
        if self.guard:
            self._previous = [p.detach().clone() for _, p in self.named_params]


RESOURCE_ERRNOS = frozenset({errno.ENOMEM, errno.ENOSPC, errno.EDQUOT})
OOM_MESSAGES = ("can't allocate memory", "out of memory", "error code 12")


def resource_shortage(exc: BaseException) -> str | None:
    """"memory" or "disk space" when `exc` says this machine ran short (Python's MemoryError, torch's allocator
    errors, which are RuntimeErrors, ENOMEM/ENOSPC/EDQUOT); None for any other error."""
    if isinstance(exc, (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))):
        return "memory"
    if isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS:
        return "memory" if exc.errno == errno.ENOMEM else "disk space"
    if isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in OOM_MESSAGES):
        return "memory"
    return None


class ShardThreads:
    """Computes a step's W rank shards concurrently in one process: a thread per group of ranks, each on its own
    replica of the LoRA model, each op with the recorded intra-op thread count. A shard is the same kernels on the
    same inputs as on its rank, so the bits are those of the W-process run, while a one-process replay on a
    machine with W spare cores takes about as long as the run did instead of W times as long.

    A replica is a deep copy of the unwrapped LoRA model that shares the frozen base weights (no second copy of the
    base model) and owns its trainable parameters (Opacus keeps per-sample gradients on the parameter
    itself); they are copied from the engine's parameters before every step. The global torch generator is one per
    process, so a replica's LoRA dropout (`torch.nn.Dropout`) is replaced by `ShardDropout`, which draws the same
    bits from the replica's own generator, seeded per shard exactly as a rank seeds the global one
    (`rank_dropout_seed`). Models that draw random numbers any other way (attention or hidden dropout in the base
    model's config, other dropout modules) run in rank order. After every step the process-wide generators (torch,
    Python's, numpy's) and the replicas' buffers are checked: a step whose shards drew from a shared generator or
    changed a buffer (which the rank order would have carried from shard to shard) is computed again in rank
    order, as are all later steps. A shard that raises is reported once every shard has stopped; if it ran out of
    memory (W replicas hold their activations at once) the step is computed again in rank order instead.
    """

    SENTINEL_SEED = 0x5EED

    def __init__(self, engine: Engine, replicas: Sequence[tuple[Any, torch.Generator]]) -> None:
        self.engine = engine
        self.models = [model for model, _ in replicas]
        self.maths = [engine._step_math(model) for model in self.models]
        self.generators = [generator for _, generator in replicas]
        self.pool = ThreadPoolExecutor(max_workers=len(replicas), thread_name_prefix="prov-shard")
        self.active = True

    @staticmethod
    def replicas(peft_model: Any, *, ranks: int, device: torch.device,
                 threads: int) -> list[tuple[Any, torch.Generator]]:
        """`min(threads, ranks)` replicas of an unwrapped LoRA model with their dropout generators, or none where
        the shards must run in rank order (one thread or rank, not on CPU, or a model that draws random numbers
        other than through `torch.nn.Dropout`)."""
        threads = min(threads, ranks)
        if threads < 2 or device.type != "cpu" or _draws_random_otherwise(peft_model):
            return []
        # Frozen weights are shared; buffers are copied (small, and a module may update its own in forward).
        shared = {id(p): p for p in peft_model.parameters() if not p.requires_grad}
        out = []
        for _ in range(threads):
            replica = copy.deepcopy(peft_model, memo=dict(shared))
            generator = torch.Generator()
            for module in list(replica.modules()):
                for name, child in list(module.named_children()):
                    if type(child) is torch.nn.Dropout:
                        setattr(module, name, ShardDropout(child.p, generator))
            out.append((replica, generator))
        return out

    def run(self, step: int, bounds: Sequence[tuple[int, int]],
            tensors: Batch) -> dict[int, ShardResult] | None:
        """Every local rank's shard, or None (and rank order from now on) when the step must be computed in rank
        order: a shard touched a process-wide generator or a buffer, or ran out of memory."""
        if not self.active:
            return None
        engine = self.engine
        with torch.no_grad():
            for math in self.maths:
                math.module.train()
                for mine, theirs in zip(math.params, engine.math.params, strict=True):
                    mine.copy_(theirs)
        ranks = engine.collective.local_ranks
        groups = [ranks[i :: len(self.maths)] for i in range(len(self.maths))]
        torch.manual_seed(self.SENTINEL_SEED)
        before = torch.get_rng_state(), random.getstate(), np.random.get_state()

        def group(i: int) -> dict[int, ShardResult]:
            out = {}
            for rank in groups[i]:
                self.generators[i].manual_seed(rank_dropout_seed(engine.secrets, step, rank))
                out[rank] = engine.shard(self.maths[i], bounds[rank], tensors)
            return out

        futures = [self.pool.submit(group, i) for i in range(len(self.maths))]
        wait(futures)  # every shard has stopped before anything is raised or reused
        errors = [e for e in (f.exception() for f in futures) if e is not None]
        if errors:
            self.active = False
            if all(resource_shortage(e) == "memory" for e in errors):
                return None  # one shard at a time needs less memory
            raise errors[0]
        if self._shared_state_moved(before):
            self.active = False
            return None
        results: dict[int, ShardResult] = {}
        for future in futures:
            results.update(future.result())
        return results

    def _shared_state_moved(self, before: tuple[torch.Tensor, Any, Any]) -> bool:
        """Whether the shards drew from a process-wide generator or changed a buffer of their replica."""
        torch_state, python_state, numpy_state = before
        now = np.random.get_state()
        if (not torch.equal(torch.get_rng_state(), torch_state) or random.getstate() != python_state
                or not all(np.array_equal(a, b) for a, b in zip(numpy_state, now, strict=True))):
            return True
        main = list(self.engine.peft_model.buffers())
        return any(not all(torch.equal(a, b) for a, b in zip(main, model.buffers(), strict=True))
                   for model in self.models)


class ShardDropout(torch.nn.Module):
    """`torch.nn.Dropout(p)` drawing from its own generator: the same arithmetic as ATen's CPU dropout (a
    Bernoulli(1 - p) mask divided by 1 - p, times the input), so the same bits as `nn.Dropout` after the global
    generator was given the same seed."""

    def __init__(self, p: float, generator: torch.Generator) -> None:
        super().__init__()
        self.p = p
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0 or not self.training or x.numel() == 0:
            return x
        if self.p == 1:
            return x * torch.zeros((), dtype=x.dtype, device=x.device)
        noise = torch.empty_like(x).bernoulli_(1 - self.p, generator=self.generator)
        noise.div_(1 - self.p)
        return x * noise


def _draws_random_otherwise(model: Any) -> bool:
    """Whether a training-mode forward of `model` may draw random numbers other than through `nn.Dropout`."""
    config = getattr(model, "config", None)
    for name in ("attention_dropout", "hidden_dropout", "dropout"):
        value = getattr(config, name, 0.0)
        if isinstance(value, (int, float)) and value > 0:
            return True
    return any(isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0
               and (type(m) is not torch.nn.Dropout or m.inplace) for m in model.modules())


def _mean(losses: Sequence[float]) -> float:
    """Mean of the per-sample losses, summed in float64 in batch order (0.0 for an empty batch)."""
    total = 0.0
    for value in losses:
        total += value
    return total / len(losses) if losses else 0.0


def make_optimizer(plan: Plan, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    o = plan.optimizer
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, weight_decay=o.weight_decay,
                                 foreach=False)
    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, foreach=False)


def load_engine(manifest: Mapping[str, Any], secrets: Secrets, model_dir: str | os.PathLike[str], *,
                examples: Sequence[Any] | None = None, batches: BatchSource | None = None,
                record: bool = True, collective: Collective | None = None, shard_threads: int = 1) -> Engine:
    """Load the base model, add LoRA and build the engine exactly as a run manifest says.

    Batches come from `batches`, or from `examples` tokenized with the model's tokenizer as the trainer does.
    Shared by the trainer, resume and replay, so all three compute steps identically. `shard_threads` > 1 computes
    the shards of a W-rank step concurrently in this one process (`ShardThreads`; the replay worker uses it).
    """
    plan = Plan.from_json(manifest["training"])
    det = manifest["determinism"]
    device = str(det.get("device", "cpu"))
    dtype = str(det["dtype"])
    determinism.apply_device(device)
    model, tokenizer = load_base_model(model_dir, dtype=dtype, attn_implementation=det["attn_implementation"])
    if batches is None:
        if examples is None:
            raise ProvenanceError("load_engine needs examples or a batch source")
        tokenized = tokenized_for(examples, tokenizer, manifest)

        def batches(_step: int, indices: Sequence[int]) -> Batch:
            return tokenized.batch(indices)

    peft_model = add_lora(model, plan.lora, seed=plan.seed).to(device)
    return Engine(peft_model=peft_model, plan=plan, secrets=secrets, batches=batches, device=device, dtype=dtype,
                  record=record, collective=collective, shard_threads=shard_threads)
