"""The arithmetic of one DP-SGD step in a fixed, recorded order (`prov.dpstep.v1`), independent of the world size.

The step's sorted logical batch is split into W rank shards (`provenance.batches.shard_bounds`), each shard into
micro-batches of `physical_batch_size` examples (0 = the whole shard). Per micro-batch (`micro_batch`): forward,
per-sample mean-token loss, backward of their *sum* (so each sample's gradient is its own; Opacus' hooks, with
`loss_reduction="sum"`, give it per sample), per-sample norm over all adapter parameters, clip factor
`min(1, C / (norm + 1e-6))` exactly as Opacus computes it, and the clipped sum of the micro-batch as one flat vector
(trainable-parameter order). Micro-batch sums are added in order into the shard's partial sum (`shard_sum`); the
shards' partial sums are added in rank order (`combine`), on every process of a torchrun run after an all-gather and
in one process when replaying, so the bits are the same. Non-private mode keeps the structure without clipping
(the per-micro-batch gradient of the summed loss). Per-sample gradients are released after every micro-batch, so
memory does not grow with the logical batch.

LoRA dropout (`prov.dropout.v2`): the global torch generator is seeded from (step, rank) before each shard and from
the step after it, so neither the masks nor the generator state recorded in a checkpoint depend on how shards were
spread over processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from provenance.batches import IGNORE_INDEX, Batch
from provenance.secrets import DROPOUT_LABEL, Secrets, seed_of

CLIP_EPSILON = 1e-6  # Opacus: factor = C / (norm + 1e-6), at most 1


@dataclass(frozen=True)
class ShardResult:
    """One rank's part of a step: its clipped gradient sum and the statistics of its examples."""

    grad_sum: torch.Tensor  # flat, trainable-parameter order, parameter dtype, on the model's device
    losses: list[float]  # per-sample losses in shard order (float64 values)
    clipped: int  # examples whose gradient was scaled down


def rank_dropout_seed(secrets: Secrets, step: int, rank: int) -> int:
    """`HMAC(noise_seed, b"dropout" || u64(step) || u64(rank))[:8]`: the generator seed of rank `rank`'s shard."""
    message = DROPOUT_LABEL + step.to_bytes(8, "big") + rank.to_bytes(8, "big")
    return seed_of(hmac.new(secrets.noise_seed, message, hashlib.sha256).digest())


def per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of each sample over its non-ignored label tokens (shape (n,), float32)."""
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    mask = (shift_labels != IGNORE_INDEX).to(shift_logits.dtype)
    ce = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
        reduction="none", ignore_index=IGNORE_INDEX,
    ).view(shift_labels.shape)
    return (ce * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def micro_batches(count: int, size: int) -> list[tuple[int, int]]:
    """Positions `[start, end)` of the micro-batches of a shard of `count` examples (size 0 = one micro-batch)."""
    if count == 0:
        return []
    step = count if size <= 0 else size
    return [(start, min(start + step, count)) for start in range(0, count, step)]


class StepMath:
    """Computes shard sums for one model: holds the module (Opacus' `GradSampleModule` in DP mode) and the
    trainable parameters in order."""

    def __init__(self, *, module: Any, params: Sequence[torch.nn.Parameter], private: bool,
                 max_grad_norm: float | None, device: torch.device, autocast_dtype: torch.dtype | None) -> None:
        self.module = module
        self.params = list(params)
        self.private = private
        self.max_grad_norm = max_grad_norm
        self.device = device
        self.autocast_dtype = autocast_dtype
        self.sizes = [p.numel() for p in self.params]
        self.count = sum(self.sizes)
        self.dtype = self.params[0].dtype

    def zeros(self) -> torch.Tensor:
        return torch.zeros(self.count, dtype=self.dtype, device=self.device)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def shard_sum(self, batch: Batch, *, micro_size: int) -> ShardResult:
        """The shard's gradient sum: its micro-batches' clipped sums added in order."""
        total = self.zeros()
        losses: list[float] = []
        clipped = 0
        n = int(np.asarray(batch["input_ids"]).shape[0])
        for start, end in micro_batches(n, micro_size):
            part = {name: array[start:end] for name, array in batch.items()}
            grad, part_losses, part_clipped = self.micro_batch(part)
            total += grad
            losses.extend(part_losses)
            clipped += part_clipped
        return ShardResult(total, losses, clipped)

    def micro_batch(self, batch: Batch) -> tuple[torch.Tensor, list[float], int]:
        """Forward and backward of one micro-batch; returns (clipped gradient sum, per-sample losses, clipped)."""
        device = self.device
        with self._autocast():
            out = self.module(input_ids=_tensor(batch["input_ids"], device),
                              attention_mask=_tensor(batch["attention_mask"], device), use_cache=False)
        losses = per_sample_loss(out.logits, _tensor(batch["labels"], device))
        del out
        losses.sum().backward()
        values = [float(v) for v in losses.detach().to("cpu", torch.float64).tolist()]
        if self.private:
            grad, clipped = self._clipped_sum(len(values))
        else:
            grad, clipped = self._plain_sum(), 0
        for p in self.params:  # release per-sample and accumulated gradients: memory stays flat
            p.grad = None
            if hasattr(p, "grad_sample"):
                p.grad_sample = None
        return grad, values, clipped

    def _clipped_sum(self, n: int) -> tuple[torch.Tensor, int]:
        assert self.max_grad_norm is not None
        samples = [_grad_sample(p, n).to(self.dtype) for p in self.params]
        norms = torch.stack([g.reshape(n, -1).norm(2, dim=-1) for g in samples], dim=1).norm(2, dim=1)
        factor = (self.max_grad_norm / (norms + CLIP_EPSILON)).clamp(max=1.0)
        clipped = int((norms + CLIP_EPSILON > self.max_grad_norm).sum().item())
        out = torch.empty(self.count, dtype=self.dtype, device=self.device)
        offset = 0
        for g, size in zip(samples, self.sizes, strict=True):
            out[offset : offset + size] = torch.einsum("i,i...->...", factor, g).reshape(-1)
            offset += size
        return out, clipped

    def _plain_sum(self) -> torch.Tensor:
        parts = [torch.zeros_like(p).reshape(-1) if p.grad is None else p.grad.reshape(-1) for p in self.params]
        return torch.cat(parts).to(self.dtype)

    def split(self, flat: torch.Tensor) -> Iterator[tuple[torch.nn.Parameter, torch.Tensor]]:
        """Each parameter with its slice of a flat vector (viewed in the parameter's shape)."""
        offset = 0
        for p, size in zip(self.params, self.sizes, strict=True):
            yield p, flat[offset : offset + size].view_as(p)
            offset += size


def combine(shard_sums: Sequence[torch.Tensor]) -> torch.Tensor:
    """The step's gradient sum: the shards' partial sums added in rank order (the same on every process)."""
    total = shard_sums[0].clone()
    for part in shard_sums[1:]:
        total += part
    return total


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


def _grad_sample(p: torch.nn.Parameter, n: int) -> torch.Tensor:
    sample = getattr(p, "grad_sample", None)
    if isinstance(sample, list):  # accumulated over several backward passes: never happens in a step
        raise RuntimeError("per-sample gradients were accumulated over several backward passes")
    if sample is None:  # a parameter the batch did not reach contributes zero per sample
        return torch.zeros((n, *p.shape), dtype=p.dtype, device=p.device)
    return sample
