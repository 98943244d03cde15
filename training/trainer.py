"""`train()` and `resume()`: DP-SGD LoRA training that records its provenance as it goes.

A new run is written by `training.rundir.prepare_run` (secrets, local settings, `run.json`) and then *continued*
like any resumed run: `_continue` hands the run to the outbox (registration is attempted before step 0 but never
waited on past `anchor.register_timeout`), restores the last complete checkpoint or writes checkpoint 0 (the
initial adapter: a function of the manifest alone), and runs the remaining steps. Each step's private statistics go
to `stats.jsonl`, then its record to the step log (written before the next step starts); every `checkpoint_every`
steps and at the end a checkpoint is written and handed to the outbox.

`resume(run_dir)` restarts from the last complete checkpoint: partial checkpoint temp dirs are removed, the step log
is rewound to that checkpoint's size (`StepLog.truncate`: cut records are set aside, not destroyed) and the stats
file cut back to it, every complete checkpoint is handed to the outbox again (idempotent by index), and the
remaining steps are re-run; determinism makes them reproduce what a run without the crash would have recorded.

Distributed (`run_rank`, called by `training.distributed` on every torchrun rank): rank 0 does all of the above;
the other ranks restore the same checkpoint, check that their weights equal rank 0's, and compute their shard of
every step. One process may also train a run of world size W alone (`LocalCollective`): the same bits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch

from provenance.basemodel import base_model_summary
from provenance.dataset import dataset_root
from provenance.errors import FormatError, ProvenanceError, UsageError
from provenance.secrets import SECRETS_NAME, Secrets, keys_anchored, load_anchor, run_secrets, save_anchor
from provenance.steplog import StepLog
from training import checkpoint as ckpt
from training import determinism, faults
from training.anchoring import OutboxLike, chain_warnings, finalize_run, open_outbox
from training.config import AnchorConfig, TrainConfig
from training.data import records_for_run
from training.engine import Collective, Engine, LocalCollective, load_engine
from training.model import quiet_libraries
from training.plan import EpsilonSchedule, checkpoint_steps, epsilon_after, resolve
from training.progress import Progress
from training.rundir import (
    TrainResult,
    default_model_dir,
    lock_run,
    prepare_run,
    read_inputs,
    run_settings,
    unlock_run,
)
from training.runinfo import RUN_FORMAT, read_local, read_manifest
from training.statslog import StatsLog

__all__ = ["TrainResult", "default_model_dir", "resume", "run_rank", "train"]


def train(cfg: TrainConfig, *, secrets: Secrets | None = None, quiet: bool = False, provenance: bool = True,
          stream: TextIO | None = None) -> TrainResult:
    """Start a new run in this process (W rank shards computed in order when `training.world_size` = W).
    `provenance=False` trains identically but records nothing (for overhead benchmarks)."""
    warnings = determinism.apply_profile(cfg.determinism.profile, device=cfg.model.device)
    inputs = read_inputs(cfg)
    if not provenance:
        return _bare(cfg, inputs.examples, inputs.model_dir, secrets or Secrets.generate(), quiet=quiet,
                     stream=stream)
    run_dir = prepare_run(cfg, secrets=secrets, inputs=inputs)
    return _locked(run_dir, quiet=quiet, anchor=None, stream=stream, fresh=True, warnings=warnings)


def resume(run_dir: str | Path, *, quiet: bool = False, anchor: AnchorConfig | None = None,
           stream: TextIO | None = None) -> TrainResult:
    """Continue a run from its last complete checkpoint with the same step log (see the module docstring)."""
    run_dir = Path(run_dir)
    if not (run_dir / "run.json").is_file():
        raise UsageError(f"{run_dir}: not a run directory (no run.json)")
    return _locked(run_dir, quiet=quiet, anchor=anchor, stream=stream, fresh=False, warnings=[])


def run_rank(run_dir: Path, collective: Collective, *, fresh: bool, quiet: bool = False,
             anchor: AnchorConfig | None = None, stream: TextIO | None = None) -> TrainResult | None:
    """One torchrun rank's part of a run: rank 0 records (returns the result), the others compute (None)."""
    if collective.rank == 0:
        return _locked(run_dir, quiet=quiet, anchor=anchor, stream=stream, fresh=fresh, warnings=[],
                       collective=collective)
    _follow(run_dir, collective)
    return None


def _locked(run_dir: Path, *, quiet: bool, anchor: AnchorConfig | None, stream: TextIO | None, fresh: bool,
            warnings: list[str], collective: Collective | None = None) -> TrainResult:
    lock = lock_run(run_dir)
    try:
        return _continue(run_dir, quiet=quiet, anchor=anchor, stream=stream, fresh=fresh, warnings=warnings,
                         collective=collective)
    finally:
        unlock_run(lock)


@dataclass(frozen=True)
class _Run:
    manifest: dict[str, Any]
    secrets: Secrets
    model_dir: Path
    examples: Sequence[Any]
    anchor: AnchorConfig
    local_anchor: AnchorConfig


OWNERLESS_WARNING = ("this run's manifest names no owner (it was started with anchoring off): whoever registers it "
                     "first owns its record, and a verifier reports it INCONCLUSIVE when several accounts have; "
                     "start runs you will anchor with anchoring on")


def _open_run(run_dir: Path, *, anchor: AnchorConfig | None, check_inputs: bool) -> _Run:
    """Read and check what continuing the run needs: manifest, secrets, model, data, this environment."""
    manifest = read_manifest(run_dir)
    if manifest["format"] != RUN_FORMAT:
        raise UsageError(f"{run_dir}: written by an older prov ({manifest['format']}); it cannot be continued by "
                         "this version (its noise generator is not replayable)")
    secrets = Secrets.load(run_dir / SECRETS_NAME)
    secrets.check_commitments(manifest["secrets"])
    recorded = load_anchor(run_dir) if keys_anchored(manifest) else None
    if recorded is not None:  # prov.keys.v1: the registration block this run's sampling and noise keys derive from
        secrets = secrets.anchored(recorded[0])
    model_dir, data_path, local_anchor = read_local(run_dir)
    determinism.apply_threads(int(manifest["determinism"]["threads"]))
    mismatches = [m for m in determinism.check(manifest) if not m.startswith("threads")]
    if mismatches:
        raise UsageError(f"cannot resume bit-compatibly: {'; '.join(mismatches)}")
    examples = records_for_run(data_path, manifest)
    if check_inputs:
        base = base_model_summary(model_dir)
        if base["digest"] != manifest["base_model"]["digest"]:
            raise UsageError(f"{model_dir}: base model differs from the run's (expected "
                             f"{manifest['base_model']['digest']}, found {base['digest']})")
        if str(dataset_root(examples, secrets.dataset_key)) != manifest["dataset"]["root"]:
            raise UsageError(f"{data_path}: dataset differs from the run's (dataset root mismatch)")
    return _Run(manifest, secrets, model_dir, examples, anchor or local_anchor, local_anchor)


def _continue(run_dir: Path, *, quiet: bool, anchor: AnchorConfig | None, stream: TextIO | None, fresh: bool,
              warnings: list[str], collective: Collective | None) -> TrainResult:
    run = _open_run(run_dir, anchor=anchor, check_inputs=not fresh)
    manifest = run.manifest
    progress = Progress(total=int(manifest["training"]["steps"]), quiet=quiet, stream=stream)
    if run.anchor.enabled and manifest.get("owner") is None:  # started with anchoring off, anchored now
        warnings = [*warnings, OWNERLESS_WARNING]
    for line in [*warnings, *chain_warnings(run.anchor)]:
        progress.message(f"warning: {line}")
    ckpt.clear_partial(run_dir)
    complete = ckpt.complete_checkpoints(run_dir)
    # the sending thread starts once the engine is loaded: its chain client's imports (web3, py-evm) never run
    # beside the engine's (transformers, peft), so neither thread can see a module the other is half-way importing
    outbox = open_outbox(run_dir, run.anchor, reuse_target=not fresh and run.anchor == run.local_anchor, start=False)
    outbox.enqueue_run(run_id=bytes.fromhex(manifest["run_id"]), manifest_path=run_dir / "run.json")
    log = StepLog.open(run_dir, repair=True)
    stats = StatsLog(run_dir)
    try:
        start = complete[-1] if complete else -1
        if collective is not None:
            start = _broadcast_int(collective, start)
        engine = load_engine(manifest, run.secrets, run.model_dir, examples=run.examples, collective=collective)
        if complete:
            last = ckpt.read_checkpoint(ckpt.checkpoint_dir(run_dir, complete[-1]))
            _rewind(run_dir, log, stats, last, complete[-1])
            ckpt.restore(engine, last)
        else:  # a new run, or one killed before checkpoint 0 was in place: it depends only on the manifest
            log.truncate(0)
            stats.truncate(0)
            ckpt.write_checkpoint(run_dir, index=0, engine=engine, log=log, run_id=manifest["run_id"],
                                  base_model_digest=manifest["base_model"]["digest"], segment_start=0,
                                  epsilon=epsilon_after(engine.plan, 0), layout=ckpt.adapter_layout(manifest))
            complete = [0]
        if collective is not None:
            _check_same_weights(engine, collective)
        outbox.start()
    except BaseException:
        log.close()
        stats.close()
        outbox.close()
        raise
    for i in complete:
        outbox.enqueue_checkpoint(index=i, checkpoint_dir=ckpt.checkpoint_dir(run_dir, i))
    if keys_anchored(manifest):  # no step before the keys are fixed by the registration's (final) block
        try:
            engine.secrets = _anchored_keys(run_dir, run, outbox, progress)
        except BaseException:
            log.close()
            stats.close()
            outbox.close()
            raise
        if collective is not None:
            _broadcast_int(collective, 1)  # the other ranks read keys.json now (_follow)
    elif engine.next_step == 0 and not outbox.wait_registered(timeout=run.anchor.register_timeout):
        progress.message("run registration still pending; training continues (the outbox retries)")
    if not fresh:
        progress.message(f"resuming run {manifest['run_id'][:16]} at step {engine.next_step} "
                         f"(checkpoint {complete[-1]})")
    else:
        progress.message(f"run {manifest['run_id'][:16]} in {run_dir}")
    schedule = EpsilonSchedule(engine.plan, [n for n in checkpoint_steps(engine.plan) if n >= engine.next_step])
    progress.start_step = engine.next_step
    progress.epsilon = schedule.at(engine.next_step)
    progress.epsilon_step = engine.next_step
    return _loop(run_dir, engine, manifest, log, stats, outbox, progress, run.anchor, schedule,
                 last_index=complete[-1], model_dir=run.model_dir)


REGISTRATION_NEEDED = ("this run's sampling and noise keys derive from the block that includes its registration "
                       "(prov.keys.v1), and {why}: no step can be taken before it. Resume with `prov train --resume "
                       "{run_dir}` once `prov anchor status {run_dir}` shows the registration final")


def _anchored_keys(run_dir: Path, run: _Run, outbox: OutboxLike, progress: Progress) -> Secrets:
    """The run's secrets with the keys' anchor: the one recorded in keys.json, else the registration's block once
    final (dev chains: at its receipt), recorded now so every resume and replay derives the same keys."""
    if run.secrets.anchor is not None:
        return run.secrets
    if not outbox.enabled:
        raise UsageError(REGISTRATION_NEEDED.format(why="anchoring is off", run_dir=run_dir))
    waiter = getattr(outbox, "registration_block", None)
    progress.message(f"waiting for the run's registration to be final (its block fixes the sampling and noise keys; "
                     f"at most anchor.register_timeout = {run.anchor.register_timeout:g} s)")
    found = waiter(timeout=run.anchor.register_timeout) if waiter is not None else None
    if found is None:
        why = (f"the registration is not final on chain after anchor.register_timeout = "
               f"{run.anchor.register_timeout:g} s ({outbox.status_line()})")
        raise UsageError(REGISTRATION_NEEDED.format(why=why, run_dir=run_dir))
    save_anchor(run_dir, block_hash=found[0], block_number=found[1])
    progress.message(f"sampling and noise keys fixed by the registration's block {found[1]}")
    return run.secrets.anchored(found[0])


def _rewind(run_dir: Path, log: StepLog, stats: StatsLog, last: ckpt.LoadedCheckpoint, index: int) -> None:
    size = int(last.state["log_size"])
    if log.size < size:
        raise FormatError(f"{run_dir}: step log has {log.size} steps; checkpoint {index} committed {size}")
    log.truncate(size)
    if log.root().hex() != last.state["log_root"]:
        raise FormatError(f"{run_dir}: step log root differs from checkpoint {index}'s committed root")
    stats.truncate(size)


def _loop(run_dir: Path, engine: Engine, manifest: dict[str, Any], log: StepLog, stats: StatsLog,
          outbox: OutboxLike, progress: Progress, anchor: AnchorConfig, schedule: EpsilonSchedule, *,
          last_index: int, model_dir: Path) -> TrainResult:
    plan = engine.plan
    run_id = manifest["run_id"]
    index = last_index
    segment_start = engine.next_step
    progress.anchor = outbox.status_line()
    quiet_libraries()  # warning filters again: libraries on the outbox thread may have reset them
    try:
        for k in range(engine.next_step, plan.steps):
            result = engine.step(k)
            assert result.record is not None
            faults.point("step", k)
            stats.append(result.stats)
            log.append(result.record)
            faults.point("logged", k)
            done = k + 1
            if done % plan.checkpoint_every == 0 or done == plan.steps:
                index += 1
                stats.sync()
                path = ckpt.write_checkpoint(run_dir, index=index, engine=engine, log=log, run_id=run_id,
                                             base_model_digest=manifest["base_model"]["digest"],
                                             segment_start=segment_start, epsilon=schedule.at(done),
                                             layout=ckpt.adapter_layout(manifest))
                segment_start = done
                faults.point("checkpoint-done", index)
                outbox.enqueue_checkpoint(index=index, checkpoint_dir=path)
                faults.point("anchor", index)
                progress.epsilon = schedule.at(done)
                progress.epsilon_step = done
                progress.anchor = outbox.status_line()
                progress.update(done, result.stats.loss, force=True)
            else:
                upcoming = min((done // plan.checkpoint_every + 1) * plan.checkpoint_every, plan.steps)
                progress.epsilon_next = (upcoming, schedule.ready(upcoming))  # shown as a bound, never waited on
                progress.update(done, result.stats.loss)
        progress.finish()
        ckpt.write_final(run_dir, index)  # the final adapter as a plain PEFT directory (RUN/final/)
        if anchor.finalize:
            _finalize(run_dir, outbox, progress, model_dir=model_dir, index=index, manifest=manifest)
        anchored = outbox.flush(timeout=anchor.flush_timeout) and outbox.enabled  # never "anchored" when off
        progress.anchor = outbox.status_line()
        if not anchored and outbox.enabled:
            progress.message(f"anchoring pending ({progress.anchor}); run `prov anchor flush` later")
    finally:
        schedule.close()
        stats.close()
        log.close()
        outbox.close()
    final = ckpt.read_checkpoint(ckpt.checkpoint_dir(run_dir, index))
    eps = final.state["epsilon"]
    return TrainResult(run_dir, run_id, plan.steps, list(range(index + 1)), final.weights,
                       None if eps is None else float(eps), anchored)


def _finalize(run_dir: Path, outbox: OutboxLike, progress: Progress, *, model_dir: Path, index: int,
              manifest: dict[str, Any]) -> None:
    """Every step is done: commit the merged weights' digest with the run's finalisation (training.anchoring). A
    merge that cannot be computed leaves the run open (a finalised run can never get its digest later)."""
    try:
        digest = finalize_run(run_dir, outbox, model_dir=model_dir, checkpoint_dir=ckpt.checkpoint_dir(run_dir, index),
                              base_model_digest=manifest["base_model"]["digest"])
    except ProvenanceError as exc:
        progress.message(f"run not finalised: the merged weights could not be computed ({exc})")
        return
    progress.message(f"merged weights {digest} (prov.merge.v1 of checkpoint {index}): the run's finalisation "
                     "commits them")


def _follow(run_dir: Path, collective: Collective) -> None:
    """A rank other than 0: restore what rank 0 restored, then compute this rank's shard of every step."""
    run = _open_run(run_dir, anchor=None, check_inputs=False)
    start = _broadcast_int(collective, -1)
    engine = load_engine(run.manifest, run.secrets, run.model_dir, examples=run.examples, collective=collective,
                         record=False)
    if start >= 0:
        ckpt.restore(engine, ckpt.read_checkpoint(ckpt.checkpoint_dir(run_dir, start)))
    _check_same_weights(engine, collective)
    if keys_anchored(run.manifest):  # rank 0 has recorded the registration block (keys.json): same keys here
        _broadcast_int(collective, -1)
        engine.secrets = run_secrets(run_dir, run.manifest)
    quiet_libraries()
    for k in range(engine.next_step, engine.plan.steps):
        engine.step(k)


def _broadcast_int(collective: Collective, value: int) -> int:
    """Rank 0's `value` on every rank (the checkpoint index every rank restores)."""
    gathered = collective.all_gather({collective.rank: torch.tensor([value], dtype=torch.int64,
                                                                     device=_device(collective))})
    return int(gathered[0].item())


def _device(collective: Collective) -> torch.device:
    return torch.device(getattr(collective, "device", "cpu"))


def _check_same_weights(engine: Engine, collective: Collective) -> None:
    """Every rank must start from the same adapter and step, or their sums would not belong together."""
    h = hashlib.sha256(str(engine.next_step).encode())
    for _, p in engine.named_params:
        h.update(p.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    mine = torch.frombuffer(bytearray(h.digest()), dtype=torch.uint8).to(_device(collective))
    digests = collective.all_gather({collective.rank: mine})
    if any(not torch.equal(d, digests[0]) for d in digests):
        raise ProvenanceError("the ranks of this torchrun run do not hold the same adapter state; "
                              "restart with `prov train --resume`")


def _bare(cfg: TrainConfig, examples: Sequence[Any], model_dir: Path, secrets: Secrets, *, quiet: bool,
          stream: TextIO | None) -> TrainResult:
    """The same steps with nothing hashed, logged, checkpointed or anchored (benchmarks)."""
    threads = determinism.apply_threads(cfg.training.threads)
    plan = resolve(cfg, dataset_size=len(examples))
    bare = {"training": plan.to_json(), "determinism": run_settings(cfg, threads=threads),
            "config": cfg.committed_json(), "dataset": {"max_length": cfg.data.max_length}}
    engine = load_engine(bare, secrets, model_dir, examples=examples, record=False,
                         collective=LocalCollective(plan.world_size))
    progress = Progress(total=plan.steps, quiet=quiet, stream=stream)
    for k in range(plan.steps):
        result = engine.step(k)
        progress.update(k + 1, result.stats.loss)
    progress.finish()
    return TrainResult(None, "", plan.steps, [], None, engine.epsilon(), False)

