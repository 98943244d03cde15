"""`prov audit-dp RUN`: the one-run empirical DP audit of a run trained with canaries (provenance.canaries).

The canaries file is checked against the run manifest's commitment; the base model (local.json's path or the
auditor's) is checked against the manifest's base-model digest; each canary is tokenized as training tokenized it
(`training.data.tokenized_for`: same template, truncation and loss mask) and scored

    score_i = (mean token loss under the base model) - (mean token loss under the last checkpoint's adapter)

(the per-sample loss training minimises, `training.dpstep.per_sample_loss`): trained-on canaries should have lost
more. `provenance.dpaudit` turns the guesses into a lower bound on ε, reported beside the ε the run claims.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provenance.basemodel import base_model_summary
from provenance.canaries import CANARIES_NAME, CanarySet, check_commitment, load
from provenance.dpaudit import default_guesses, epsilon_lower_bound, guess
from provenance.errors import UsageError

AUDIT_FORMAT = "prov.dp-audit.v1"
_BATCH = 32


@dataclass(frozen=True)
class AuditResult:
    run_id: str
    checkpoint: int
    step: int
    canaries: int
    guesses: int
    correct: int
    confidence: float
    delta: float
    epsilon_lower: float
    epsilon_proven: float | None  # None: a non-private run claims no ε
    scores: dict[str, float]

    @property
    def consistent(self) -> bool:
        return self.epsilon_proven is None or self.epsilon_lower <= self.epsilon_proven

    def verdict_line(self) -> str:
        found = (f"empirical ε >= {self.epsilon_lower:.2f} ({self.confidence:.0%} confidence; {self.canaries} "
                 f"canaries, {self.guesses} guesses, {self.correct} correct)")
        if self.epsilon_proven is None:
            return f"{found}; non-private run: no proven ε to compare (δ = {_short(self.delta)} used)"
        against = f"against the proven ε <= {self.epsilon_proven:.2f} (δ = {_short(self.delta)})"
        return f"{found} {against}: consistent" if self.consistent else \
            f"INCONSISTENT: {found} exceeds the proven ε <= {self.epsilon_proven:.2f} (δ = {_short(self.delta)}): " \
            "the run's DP claim is contradicted"

    def to_json(self) -> dict[str, Any]:
        return {"canaries": self.canaries, "checkpoint": self.checkpoint, "confidence": self.confidence,
                "correct": self.correct, "delta": self.delta, "epsilon_lower_bound": self.epsilon_lower,
                "epsilon_proven": self.epsilon_proven, "format": AUDIT_FORMAT, "guesses": self.guesses,
                "run_id": self.run_id, "scores": self.scores, "step": self.step,
                "verdict": "no-claim" if self.epsilon_proven is None else
                "consistent" if self.consistent else "inconsistent"}


def _short(x: float) -> str:
    """3 significant digits, exponents without padding (1e-5, not 1e-05)."""
    text = f"{x:.3g}"
    if "e" not in text:
        return text
    mantissa, exponent = text.split("e")
    return f"{mantissa}e{int(exponent)}"


def audit_run(run_dir: Path, *, model_dir: Path | None = None, confidence: float = 0.95,
              guesses: int | None = None) -> AuditResult:
    """Score the run's canaries with its last checkpoint and bound ε from below (module docstring)."""
    from training.checkpoint import checkpoint_dir, complete_checkpoints, read_checkpoint
    from training.runinfo import read_local, read_manifest

    manifest = read_manifest(run_dir)
    if manifest.get("canaries") is None:
        raise UsageError(f"{run_dir}: this run was trained without canaries (prov train --canaries M)")
    canaries = load(run_dir / CANARIES_NAME)
    check_commitment(canaries, manifest, source=str(run_dir / CANARIES_NAME))
    m = canaries.count
    k = default_guesses(m) if guesses is None else guesses
    if not 1 <= k <= m // 2:
        raise UsageError(f"--guesses: must be in 1..{m // 2} for {m} canaries (guesses on each side), got {k}")
    if not 0.0 < confidence < 1.0:
        raise UsageError(f"--confidence: must be in (0, 1), got {confidence}")
    if model_dir is None:
        model_dir = read_local(run_dir)[0]
    base = base_model_summary(model_dir)
    if base["digest"] != manifest["base_model"]["digest"]:
        raise UsageError(f"{model_dir}: base model differs from the run's (expected "
                         f"{manifest['base_model']['digest']}, found {base['digest']})")
    complete = complete_checkpoints(run_dir)
    if not complete:
        raise UsageError(f"{run_dir}: no complete checkpoint to audit")
    last = read_checkpoint(checkpoint_dir(run_dir, complete[-1]))
    scores = score_canaries(manifest, model_dir, canaries, last.adapter)
    members = [c.member for c in canaries.canaries]
    found = guess(scores, members, k=k)
    dp = manifest["training"]["dp"]
    private = dp.get("mode") == "dp"
    delta = float(dp["delta"]) if private and dp.get("delta") is not None else 0.0
    eps = last.state.get("epsilon")
    bound = epsilon_lower_bound(m=m, r=found.guesses, v=found.correct, delta=delta, confidence=confidence)
    return AuditResult(manifest["run_id"], complete[-1], int(last.state["step"]), m, found.guesses, found.correct,
                       confidence, delta, bound, float(eps) if private and eps is not None else None,
                       _summary(scores, members))


def _summary(scores: Sequence[float], members: Sequence[bool]) -> dict[str, float]:
    inside = [s for s, b in zip(scores, members, strict=True) if b]
    outside = [s for s, b in zip(scores, members, strict=True) if not b]
    out = {"max": max(scores), "mean": statistics.fmean(scores), "median": statistics.median(scores),
           "min": min(scores)}
    if inside:
        out["members_mean"] = statistics.fmean(inside)
    if outside:
        out["non_members_mean"] = statistics.fmean(outside)
    return out


def score_canaries(manifest: Mapping[str, Any], model_dir: Path, canaries: CanarySet,
                   adapter: Mapping[str, Any]) -> list[float]:
    """Per canary: base-model loss minus the adapted model's loss, both as training computes a sample's loss."""
    import torch

    from training.data import tokenized_for
    from training.dpstep import per_sample_loss
    from training.model import add_lora, load_adapter_state, load_base_model
    from training.plan import Plan

    plan = Plan.from_json(manifest["training"])
    det = manifest["determinism"]
    model, tokenizer = load_base_model(model_dir, dtype=str(det["dtype"]),
                                       attn_implementation=str(det["attn_implementation"]))
    tokenized = tokenized_for([c.record for c in canaries.canaries], tokenizer, manifest)
    peft_model = add_lora(model, plan.lora, seed=plan.seed)
    load_adapter_state(peft_model, dict(adapter))
    peft_model.eval()  # LoRA dropout off

    def losses(adapted: bool) -> list[float]:
        out: list[float] = []
        for start in range(0, canaries.count, _BATCH):
            batch = tokenized.batch(range(start, min(start + _BATCH, canaries.count)))
            ids, mask, labels = (torch.from_numpy(batch[n].copy()) for n in ("input_ids", "attention_mask",
                                                                               "labels"))
            with torch.no_grad():
                if adapted:
                    logits = peft_model(input_ids=ids, attention_mask=mask, use_cache=False).logits
                else:
                    with peft_model.disable_adapter():
                        logits = peft_model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            out += [float(v) for v in per_sample_loss(logits, labels).to(torch.float64).tolist()]
        return out

    before, after = losses(False), losses(True)
    return [b - a for b, a in zip(before, after, strict=True)]
