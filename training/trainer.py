"""`train()` and `resume()`: DP-SGD LoRA training that records its provenance as it goes.

Order of work for a new run: load and hash the base model, load the data and compute the salted dataset root,
resolve the plan, write `secrets.json` then `run.json`, hand the run to the outbox (registration is attempted
before step 0 but never waited on past `anchor.register_timeout`), write checkpoint 0 (the initial adapter), then
for each step: run it, append its record to the step log (written before the next step starts), and every
`checkpoint_every` steps and at the end write a checkpoint and hand it to the outbox.

`resume(run_dir)` restarts from the last complete checkpoint (checkpoint 0 is rebuilt if the run died before it was
in place: it depends only on the manifest): partial checkpoint temp dirs are removed, the step
log is rewound to that checkpoint's size (`StepLog.truncate`: cut records are set aside, not destroyed), every
complete checkpoint is handed to the outbox again (idempotent by index), and the remaining steps are re-run;
determinism makes them reproduce what a run without the crash would have recorded.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from provenance.basemodel import base_model_summary, check_model_dir
from provenance.config import subdir
from provenance.dataset import dataset_root, dataset_summary, load_examples
from provenance.errors import FormatError, UsageError
from provenance.hashing import Digest
from provenance.secrets import SECRETS_NAME, Secrets
from provenance.steplog import StepLog
from training import checkpoint as ckpt
from training import determinism, faults
from training.anchoring import OutboxLike, open_outbox
from training.config import AnchorConfig, TrainConfig
from training.data import DEMO_DATA
from training.engine import Engine, load_engine
from training.model import quiet_libraries
from training.plan import EpsilonSchedule, Plan, checkpoint_steps, epsilon_after, resolve
from training.progress import Progress
from training.runinfo import build_manifest, read_local, read_manifest, write_local, write_manifest


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path | None
    run_id: str
    steps: int
    checkpoints: list[int]
    weights: Digest | None  # digest of the last checkpoint's adapter_model.safetensors
    epsilon: float | None
    anchored: bool  # the outbox was empty at the end


def default_model_dir() -> Path:
    """Where `prov init-model --tiny` puts the demo model when given no directory."""
    return subdir("models", create=False) / "tiny"


LOCK_FILE = "train.lock"


def _lock_run(run_dir: Path) -> int:
    """Hold an exclusive lock on the run so a second `prov train --resume` cannot interleave steps with ours."""
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UsageError(f"{run_dir}: another prov train is running on this run") from None
    return fd


def _unlock_run(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _new_run_dir(out: Path | None, run_id: str) -> Path:
    run_dir = out if out is not None else subdir("runs") / run_id[:16]
    if run_dir.exists():
        if (run_dir / "run.json").exists():
            raise UsageError(f"{run_dir}: already holds a run; continue it with --resume {run_dir}")
        if any(run_dir.iterdir()):
            raise UsageError(f"{run_dir}: directory is not empty; choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def train(cfg: TrainConfig, *, secrets: Secrets | None = None, quiet: bool = False, provenance: bool = True,
          stream: TextIO | None = None) -> TrainResult:
    """Start a new run. `provenance=False` trains identically but records nothing (for overhead benchmarks)."""
    model_dir = Path(cfg.model.path) if cfg.model.path else default_model_dir()
    check_model_dir(model_dir)
    data_path = Path(cfg.data.path) if cfg.data.path else DEMO_DATA
    examples = load_examples(data_path, format=cfg.data.format, text_field=cfg.data.text_field)
    secrets = secrets or Secrets.generate()
    threads = determinism.apply_threads(cfg.training.threads)
    plan = resolve(cfg, dataset_size=len(examples))
    settings = determinism.settings(threads=threads, dtype=cfg.model.dtype,
                                    attn_implementation=cfg.model.attn_implementation)
    progress = Progress(total=plan.steps, quiet=quiet, stream=stream)
    if not provenance:  # the same steps with nothing hashed, logged, checkpointed or anchored
        bare = {"training": plan.to_json(), "determinism": settings, "dataset": {"max_length": cfg.data.max_length}}
        engine = load_engine(bare, secrets, model_dir, examples=examples, record=False)
        for k in range(plan.steps):
            result = engine.step(k)
            progress.update(k + 1, result.record.loss)
        progress.finish()
        return TrainResult(None, "", plan.steps, [], None, engine.epsilon(), False)
    manifest = build_manifest(
        base_model=base_model_summary(model_dir),
        dataset=dataset_summary(examples, secrets.dataset_key, path=data_path, max_length=cfg.data.max_length,
                                text_field=cfg.data.text_field),
        secrets=secrets.commitments(),
        training=plan.to_json(),
        config=cfg.committed_json(),
        software=determinism.software_versions(),
        determinism=settings,
    )
    run_dir = _new_run_dir(Path(cfg.out) if cfg.out else None, manifest["run_id"])
    lock = _lock_run(run_dir)
    try:
        return _start(run_dir, manifest, cfg, secrets, model_dir, data_path, examples, plan, progress)
    finally:
        _unlock_run(lock)


def _start(run_dir: Path, manifest: dict[str, Any], cfg: TrainConfig, secrets: Secrets, model_dir: Path,
           data_path: Path, examples: list[str], plan: Plan, progress: Progress) -> TrainResult:
    """Write the run's documents and checkpoint 0, hand them to the outbox, then train (run lock held)."""
    secrets.save(run_dir / SECRETS_NAME)
    write_local(run_dir, model_dir=model_dir, data_path=data_path, anchor=cfg.anchor)
    manifest_path = write_manifest(run_dir, manifest)
    progress.message(f"run {manifest['run_id'][:16]} in {run_dir}")
    outbox = open_outbox(run_dir, cfg.anchor)
    outbox.enqueue_run(run_id=bytes.fromhex(manifest["run_id"]), manifest_path=manifest_path)
    # registration is sent while the model loads and checkpoint 0 is written; waited for (bounded) before step 0
    schedule = EpsilonSchedule(plan, checkpoint_steps(plan))
    engine = load_engine(manifest, secrets, model_dir, examples=examples)
    log = StepLog.open(run_dir)
    first = ckpt.write_checkpoint(run_dir, index=0, engine=engine, log=log, run_id=manifest["run_id"],
                                  base_model_digest=manifest["base_model"]["digest"], segment_start=0,
                                  epsilon=schedule.at(0))
    outbox.enqueue_checkpoint(index=0, checkpoint_dir=first)
    if not outbox.wait_registered(timeout=cfg.anchor.register_timeout):
        progress.message("run registration still pending; training continues (the outbox retries)")
    return _loop(run_dir, engine, manifest, log, outbox, progress, cfg.anchor, schedule, last_index=0)


def _loop(run_dir: Path, engine: Engine, manifest: dict[str, Any], log: StepLog, outbox: OutboxLike,
          progress: Progress, anchor: AnchorConfig, schedule: EpsilonSchedule, *, last_index: int) -> TrainResult:
    plan = engine.plan
    run_id = manifest["run_id"]
    index = last_index
    segment_start = engine.next_step
    progress.anchor = outbox.status_line()
    progress.epsilon = schedule.at(engine.next_step) if engine.next_step == 0 else progress.epsilon
    quiet_libraries()  # warning filters again: libraries on the outbox thread may have reset them
    loss = 0.0
    try:
        for k in range(engine.next_step, plan.steps):
            result = engine.step(k)
            faults.point("step", k)
            log.append(result.record)
            faults.point("logged", k)
            loss = result.record.loss
            done = k + 1
            if done % plan.checkpoint_every == 0 or done == plan.steps:
                index += 1
                path = ckpt.write_checkpoint(run_dir, index=index, engine=engine, log=log, run_id=run_id,
                                             base_model_digest=manifest["base_model"]["digest"],
                                             segment_start=segment_start, epsilon=schedule.at(done))
                segment_start = done
                faults.point("checkpoint-done", index)
                outbox.enqueue_checkpoint(index=index, checkpoint_dir=path)
                faults.point("anchor", index)
                progress.epsilon = schedule.at(done)
                progress.anchor = outbox.status_line()
                progress.update(done, loss, force=True)
            else:
                progress.update(done, loss)
        progress.finish()
        anchored = outbox.flush(timeout=anchor.flush_timeout)
        progress.anchor = outbox.status_line()
        if not anchored:
            progress.message(f"anchoring pending ({progress.anchor}); run `prov anchor flush` later")
    finally:
        schedule.close()
        log.close()
        outbox.close()
    final = ckpt.checkpoint_dir(run_dir, index)
    state = ckpt.read_checkpoint(final)
    eps = state.state["epsilon"]
    return TrainResult(run_dir, run_id, plan.steps, list(range(index + 1)), state.weights,
                       None if eps is None else float(eps), anchored)


def resume(run_dir: str | Path, *, quiet: bool = False, anchor: AnchorConfig | None = None,
           stream: TextIO | None = None) -> TrainResult:
    """Continue a run from its last complete checkpoint with the same step log (see the module docstring)."""
    run_dir = Path(run_dir)
    if not (run_dir / "run.json").is_file():
        raise UsageError(f"{run_dir}: not a run directory (no run.json)")
    lock = _lock_run(run_dir)
    try:
        return _resume_locked(run_dir, quiet=quiet, anchor=anchor, stream=stream)
    finally:
        _unlock_run(lock)


def _resume_locked(run_dir: Path, *, quiet: bool, anchor: AnchorConfig | None,
                   stream: TextIO | None) -> TrainResult:
    manifest = read_manifest(run_dir)
    secrets = Secrets.load(run_dir / SECRETS_NAME)
    secrets.check_commitments(manifest["secrets"])
    model_dir, data_path, local_anchor = read_local(run_dir)
    anchor = anchor or local_anchor
    determinism.apply_threads(int(manifest["determinism"]["threads"]))
    mismatches = [m for m in determinism.check(manifest) if not m.startswith("threads")]
    if mismatches:
        raise UsageError(f"cannot resume bit-compatibly: {'; '.join(mismatches)}")
    base = base_model_summary(model_dir)
    if base["digest"] != manifest["base_model"]["digest"]:
        raise UsageError(f"{model_dir}: base model differs from the run's (expected {manifest['base_model']['digest']},"
                         f" found {base['digest']})")
    dataset = manifest["dataset"]
    data_format = manifest.get("config", {}).get("data", {}).get("format", "auto")
    examples = load_examples(data_path, format=data_format, text_field=dataset["text_field"])
    if str(dataset_root(examples, secrets.dataset_key)) != dataset["root"]:
        raise UsageError(f"{data_path}: dataset differs from the run's (dataset root mismatch)")
    ckpt.clear_partial(run_dir)
    complete = ckpt.complete_checkpoints(run_dir)
    engine = load_engine(manifest, secrets, model_dir, examples=examples)
    log = StepLog.open(run_dir, repair=True)
    if complete:
        last = ckpt.read_checkpoint(ckpt.checkpoint_dir(run_dir, complete[-1]))
        size = int(last.state["log_size"])
        if log.size < size:
            log.close()
            raise FormatError(f"{run_dir}: step log has {log.size} steps; checkpoint {complete[-1]} committed {size}")
        log.truncate(size)
        if log.root().hex() != last.state["log_root"]:
            log.close()
            raise FormatError(f"{run_dir}: step log root differs from checkpoint {complete[-1]}'s committed root")
        ckpt.restore(engine, last)
    else:  # killed before checkpoint 0 was in place: it is a function of the manifest, so rebuild it
        log.truncate(0)
        ckpt.write_checkpoint(run_dir, index=0, engine=engine, log=log, run_id=manifest["run_id"],
                              base_model_digest=manifest["base_model"]["digest"], segment_start=0,
                              epsilon=epsilon_after(engine.plan, 0))
        complete = [0]
    size = engine.next_step
    progress = Progress(total=engine.plan.steps, quiet=quiet, stream=stream, start_step=size)
    progress.message(f"resuming run {manifest['run_id'][:16]} at step {size} (checkpoint {complete[-1]})")
    outbox = open_outbox(run_dir, anchor, reuse_target=anchor == local_anchor)
    outbox.enqueue_run(run_id=bytes.fromhex(manifest["run_id"]), manifest_path=run_dir / "run.json")
    for i in complete:
        outbox.enqueue_checkpoint(index=i, checkpoint_dir=ckpt.checkpoint_dir(run_dir, i))
    schedule = EpsilonSchedule(engine.plan, [n for n in checkpoint_steps(engine.plan) if n > size])
    progress.epsilon = None if not complete else _float_or_none(
        ckpt.read_checkpoint(ckpt.checkpoint_dir(run_dir, complete[-1])).state["epsilon"])
    return _loop(run_dir, engine, manifest, log, outbox, progress, anchor, schedule, last_index=complete[-1])


def _float_or_none(text: str | None) -> float | None:
    return None if text is None else float(text)
