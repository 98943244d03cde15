"""One optimizer step, computed the same way by the trainer, by resume and by the verifier's replay.

A step k: Poisson-sample the batch from the noise seed (`training.sampler`), fetch its tensors, hash them (batch
digest), set the scheduled lr, reseed the global torch RNG for LoRA dropout, compute the per-sample mean loss,
back-propagate (Opacus hooks give per-sample gradients), then `DPOptimizer.step()` with its noise generator
reseeded for step k: clip each sample to `max_grad_norm`, add N(0, σ²C²) noise, divide by the expected batch size.
An empty Poisson batch is a real step: its per-sample gradients are zero-length, so only noise moves the adapter
(the accountant and the log count it). Non-private mode uses the same sampler and loss with a plain optimizer;
an empty batch there changes nothing and records loss 0.0.

The guard: after every step the adapter must be finite and, whenever the step should move it (a non-empty batch,
or any DP step with σ > 0), differ from before; otherwise `TrainingGuardError` stops training. A silent no-op
LoRA update under DP (parameters not reaching the optimizer) is exactly what this catches.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from provenance.batches import IGNORE_INDEX, Batch, TokenizedDataset, tokenize
from provenance.errors import ProvenanceError
from provenance.records import StepRecordV1 as StepRecord
from provenance.records import batch_digest_v1 as batch_digest
from provenance.sampler import poisson_indices
from provenance.secrets import Secrets
from training.model import add_lora, load_base_model, trainable_parameters
from training.noise import noise_generator
from training.plan import Plan, epsilon_of, make_accountant

BatchSource = Callable[[int, Sequence[int]], Batch]
"""Called as `batches(step, indices)`; returns the int64 arrays fed for those dataset indices."""


class TrainingGuardError(ProvenanceError):
    """A step left the adapter unchanged when it had to move, or made it non-finite."""


@dataclass(frozen=True)
class StepResult:
    record: StepRecord
    indices: list[int]


def per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of each sample over its non-ignored label tokens (shape (n,))."""
    shift_logits = logits[:, :-1, :]
    shift_labels = labels[:, 1:]
    mask = (shift_labels != IGNORE_INDEX).to(shift_logits.dtype)
    ce = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
        reduction="none", ignore_index=IGNORE_INDEX,
    ).view(shift_labels.shape)
    return (ce * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def make_optimizer(plan: Plan, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    o = plan.optimizer
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, weight_decay=o.weight_decay,
                                 foreach=False)
    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, foreach=False)


class Engine:
    """Holds the LoRA model, the (DP) optimizer and the accountant; `step(k)` runs step k."""

    def __init__(self, *, peft_model: Any, plan: Plan, secrets: Secrets, batches: BatchSource,
                 record: bool = True, guard: bool = True) -> None:
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer

        self.plan = plan
        self.peft_model = peft_model
        self.secrets = secrets
        self.batches = batches
        self.record = record
        self.guard = guard
        self.named_params = trainable_parameters(peft_model)
        params = [p for _, p in self.named_params]
        self.base_optimizer = make_optimizer(plan, params)
        self.module: Any
        self.optimizer: Any
        if plan.private:
            assert plan.noise_multiplier is not None and plan.max_grad_norm is not None
            self.module = GradSampleModule(peft_model, batch_first=True, loss_reduction="mean")
            self.optimizer = DPOptimizer(
                self.base_optimizer, noise_multiplier=plan.noise_multiplier, max_grad_norm=plan.max_grad_norm,
                expected_batch_size=plan.expected_batch_size, loss_reduction="mean", secure_mode=False,
            )
        else:
            self.module = peft_model
            self.optimizer = self.base_optimizer
        self.accountant = make_accountant(plan) if plan.private else None
        self.next_step = 0
        self._previous = [p.detach().clone() for p in params] if guard else []

    # --- one step -------------------------------------------------------------------------------------

    def indices(self, step: int) -> list[int]:
        return poisson_indices(self.secrets.noise_seed, step, self.plan.dataset_size, self.plan.sample_rate)

    def step(self, step: int, *, indices: Sequence[int] | None = None, batch: Batch | None = None) -> StepResult:
        """Run step `step` (must be `next_step`). `indices`/`batch` default to the sampler and batch source."""
        if step != self.next_step:
            raise ProvenanceError(f"engine is at step {self.next_step}; cannot run step {step}")
        chosen = self.indices(step) if indices is None else [int(i) for i in indices]
        tensors = self.batches(step, chosen) if batch is None else batch
        n = len(chosen)
        digest = batch_digest(step=step, indices=chosen, tensors=tensors) if self.record else None
        lr = self.plan.lr_at(step)
        for group in self.base_optimizer.param_groups:
            group["lr"] = lr
        torch.manual_seed(self.secrets.dropout_seed(step))
        self.module.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = 0.0
        if n:
            out = self.module(input_ids=torch.from_numpy(tensors["input_ids"]),
                              attention_mask=torch.from_numpy(tensors["attention_mask"]), use_cache=False)
            losses = per_sample_loss(out.logits, torch.from_numpy(tensors["labels"]))
            mean = losses.mean()
            mean.backward()
            loss = float(mean.detach().item())
        clipped = 0.0
        if self.plan.private:
            if not n:
                for _, p in self.named_params:
                    p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype)  # type: ignore[attr-defined]
            else:
                clipped = self._clipped_fraction(n)
            self.optimizer.generator = noise_generator(self.secrets, step)
            self.optimizer.step()
            assert self.accountant is not None and self.plan.noise_multiplier is not None
            self.accountant.step(noise_multiplier=self.plan.noise_multiplier, sample_rate=self.plan.sample_rate)
        elif n:
            self.optimizer.step()
        if self.guard:
            self._check(step, moved=bool(n) or self.plan.private, loss=loss)
        self.next_step = step + 1
        record = StepRecord(
            step=step, batch=digest if digest is not None else _NO_DIGEST, examples=n, lr=lr, loss=loss,
            clipped_fraction=clipped, noise_index=step,
        )
        return StepResult(record=record, indices=chosen)

    def _clipped_fraction(self, n: int) -> float:
        """Share of samples whose gradient norm Opacus scaled down (factor C / (norm + 1e-6) < 1)."""
        assert self.plan.max_grad_norm is not None
        norms = torch.stack(
            [p.grad_sample.reshape(n, -1).norm(2, dim=-1) for _, p in self.named_params],  # type: ignore[attr-defined]
            dim=1,
        ).norm(2, dim=1)
        return float((norms + 1e-6 > self.plan.max_grad_norm).sum().item()) / n

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


def load_engine(manifest: dict[str, Any], secrets: Secrets, model_dir: str | os.PathLike[str], *,
                examples: Sequence[str] | None = None, batches: BatchSource | None = None,
                record: bool = True) -> Engine:
    """Load the base model, add LoRA and build the engine exactly as a run manifest says.

    Batches come from `batches`, or from `examples` tokenized with the model's tokenizer as the trainer does.
    Shared by the trainer, resume and replay, so all three compute steps identically.
    """
    plan = Plan.from_json(manifest["training"])
    det = manifest["determinism"]
    model, tokenizer = load_base_model(model_dir, dtype=det["dtype"], attn_implementation=det["attn_implementation"])
    if batches is None:
        if examples is None:
            raise ProvenanceError("load_engine needs examples or a batch source")
        tokenized = tokenize(examples, tokenizer, max_length=int(manifest["dataset"]["max_length"]))
        batches = _from_dataset(tokenized)
    peft_model = add_lora(model, plan.lora, seed=plan.seed)
    return Engine(peft_model=peft_model, plan=plan, secrets=secrets, batches=batches, record=record)


def _from_dataset(tokenized: TokenizedDataset) -> BatchSource:
    def batches(_step: int, indices: Sequence[int]) -> Batch:
        return tokenized.batch(indices)

    return batches


_NO_DIGEST = batch_digest(step=0, indices=[], tensors={"none": np.zeros((0,), dtype=np.int64)})
