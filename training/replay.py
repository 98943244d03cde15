"""Replay: restore a checkpoint in this process and re-run logged steps bit for bit (the verifier builds on it).

`replay_segment(checkpoint_dir, ...)` loads the base model, adds LoRA exactly as the run manifest says, restores
the checkpoint (adapter weights, full optimizer state, RNG, accountant, step), and re-runs steps with the same
engine the trainer used: same sampler, same batches, noise reseeded per step from the noise seed. It returns each
step's `StepRecord` (compare with the logged records to find the first diverging step) and the bytes and digest
of `adapter_model.safetensors` the trainer would have written at the end (compare with the next checkpoint's
weights digest).

Bitwise equality needs the recorded thread count (applied here) and CPU capability (checked; set
`ATEN_CPU_CAPABILITY` from `training.determinism.environment_for(manifest)` in a subprocess if this machine
differs). `python -m training.replay` runs one replay and prints JSON, for replays in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provenance.batches import Batch, TokenizedDataset
from provenance.errors import ProvenanceError, UsageError
from provenance.hashing import Digest
from provenance.records import StepRecord
from provenance.secrets import Secrets
from training import determinism
from training.checkpoint import adapter_bytes, read_checkpoint, restore
from training.engine import BatchSource, load_engine
from training.runinfo import read_manifest

GivenBatches = Sequence[tuple[Sequence[int], Batch]]
BatchesArg = TokenizedDataset | Sequence[str] | Callable[[int, Sequence[int]], Batch] | GivenBatches
"""What `replay_segment` accepts as batches:

- a `TokenizedDataset` or the list of example texts (tokenized here with the model's tokenizer): the batch of
  step k is rebuilt from the sampler's indices, exactly as in training;
- a callable `batches(step, indices) -> Batch`;
- a list of `(indices, batch)` per replayed step, in order: used as given (the sampler is not consulted).
"""


@dataclass(frozen=True)
class ReplayedStep:
    record: StepRecord
    indices: list[int]
    weights: Digest | None  # adapter digest after this step (only with per_step_weights=True)


@dataclass(frozen=True)
class ReplayResult:
    checkpoint: int  # index of the checkpoint replay started from
    target_checkpoint: int  # index whose adapter metadata the final bytes carry
    start_step: int
    end_step: int  # steps done after the replay
    steps: list[ReplayedStep]
    adapter: bytes  # adapter_model.safetensors bytes after the last replayed step
    weights: Digest  # SHA-256 of `adapter`
    epsilon: float | None

    @property
    def records(self) -> list[StepRecord]:
        return [s.record for s in self.steps]


def _step_numbers(steps: int | range | Sequence[int] | None, *, start: int, total: int, every: int) -> list[int]:
    if steps is None:  # up to the next checkpoint boundary
        end = min((start // every + 1) * every, total)
        return list(range(start, end))
    numbers = list(range(start, start + steps)) if isinstance(steps, int) else [int(s) for s in steps]
    if numbers and numbers != list(range(start, start + len(numbers))):
        raise UsageError(f"replay steps must be consecutive from the checkpoint's step {start}, got {numbers[:3]}...")
    if numbers and numbers[-1] >= total:
        raise UsageError(f"the run has {total} steps; cannot replay step {numbers[-1]}")
    return numbers


def replay_segment(
    checkpoint_dir: str | os.PathLike[str],
    *,
    steps: int | range | Sequence[int] | None = None,
    batches: BatchesArg,
    secrets: Secrets,
    base_model_dir: str | os.PathLike[str],
    run_manifest: Mapping[str, Any] | None = None,
    target_checkpoint: int | None = None,
    per_step_weights: bool = False,
    check_environment: bool = True,
) -> ReplayResult:
    """Restore `checkpoint_dir` and re-run `steps`; return the replayed records and final adapter digest.

    `steps`: None = up to the next checkpoint boundary; an int = that many steps; a range/list = those step
    numbers (consecutive, starting at the checkpoint's step). `run_manifest` defaults to the `run.json` two levels
    up. `target_checkpoint` (default: this index + 1) sets the `prov.checkpoint` metadata of the returned adapter
    bytes, so `weights` equals the next checkpoint's weights digest when training was honest.
    Raises `UsageError` when the secrets do not open the manifest's commitments, or (with `check_environment`)
    when this process differs from the recorded determinism settings.
    """
    path = Path(checkpoint_dir)
    manifest = dict(run_manifest) if run_manifest is not None else read_manifest(path.parent.parent)
    secrets.check_commitments(manifest["secrets"])
    determinism.apply_threads(int(manifest["determinism"]["threads"]))
    if check_environment and (problems := determinism.check(manifest)):
        raise UsageError(f"replay would not be bitwise: {'; '.join(problems)}")
    loaded = read_checkpoint(path)
    if loaded.state["run_id"] != manifest["run_id"]:
        raise UsageError(f"{path}: checkpoint belongs to run {loaded.state['run_id']}, not {manifest['run_id']}")
    given: list[tuple[Sequence[int], Batch]] | None = None
    source: BatchSource | None = None
    examples: Sequence[str] | None = None
    if isinstance(batches, TokenizedDataset):
        source = _dataset_source(batches)
    elif callable(batches):
        source = batches
    elif batches and all(isinstance(b, str) for b in batches):
        examples = batches  # type: ignore[assignment]
    else:
        given = list(batches)  # type: ignore[arg-type]
        source = _no_source
    engine = load_engine(manifest, secrets, base_model_dir, examples=examples, batches=source)
    restore(engine, loaded)
    start = engine.next_step
    index = int(loaded.state["checkpoint"])
    target = index + 1 if target_checkpoint is None else target_checkpoint
    numbers = _step_numbers(steps, start=start, total=engine.plan.steps, every=engine.plan.checkpoint_every)
    if given is not None and len(given) != len(numbers):
        raise UsageError(f"got {len(given)} batches for {len(numbers)} replayed steps")
    replayed = []
    for i, k in enumerate(numbers):
        result = engine.step(k, indices=given[i][0], batch=given[i][1]) if given is not None else engine.step(k)
        weights = None
        if per_step_weights:
            weights = Digest.of(adapter_bytes(engine, run_id=manifest["run_id"], index=target, step=k + 1))
        replayed.append(ReplayedStep(result.record, result.indices, weights))
    final = adapter_bytes(engine, run_id=manifest["run_id"], index=target, step=engine.next_step)
    return ReplayResult(index, target, start, engine.next_step, replayed, final, Digest.of(final), engine.epsilon())


def _dataset_source(tokenized: TokenizedDataset) -> BatchSource:
    def source(_step: int, indices: Sequence[int]) -> Batch:
        return tokenized.batch(indices)

    return source


def _no_source(step: int, indices: Sequence[int]) -> Batch:
    raise ProvenanceError(f"no batch given for step {step}")


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m training.replay CHECKPOINT --model DIR --data FILE [--secrets FILE] [--steps N]`: JSON out."""
    from provenance.dataset import load_examples

    parser = argparse.ArgumentParser(prog="python -m training.replay")
    parser.add_argument("checkpoint")
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--secrets", help="secrets.json (default: the run directory's)")
    parser.add_argument("--steps", type=int)
    args = parser.parse_args(argv)
    run_dir = Path(args.checkpoint).parent.parent
    manifest = read_manifest(run_dir)
    try:
        secrets = Secrets.load(args.secrets or run_dir)
        examples = load_examples(args.data, text_field=manifest["dataset"]["text_field"])
        result = replay_segment(args.checkpoint, steps=args.steps, batches=examples, secrets=secrets,
                                base_model_dir=args.model, run_manifest=manifest)
    except ProvenanceError as exc:
        print(f"replay: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps({
        "checkpoint": result.checkpoint,
        "end_step": result.end_step,
        "epsilon": None if result.epsilon is None else repr(result.epsilon),
        "records": [s.record.to_json() for s in result.steps],
        "start_step": result.start_step,
        "weights": str(result.weights),
    }, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
