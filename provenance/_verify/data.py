"""The auditor's data checks that need no training: the salted dataset root, and for **every** step the
Poisson-sampled indices, the example count, the scheduled learning rate, the noise index, the batch commitment of
exactly those examples as the model was fed them, and (given the private statistics) the statistics commitment.

A swapped example is caught here whichever segment it sits in, in seconds, not only when its segment happens to be
replayed. The batch commitment needs the base model's tokenizer (`--base-model`, and `transformers` installed);
without it the other fields are still checked and the check says what it could not cover.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provenance import batches, canonical
from provenance._verify.checks import CheckFailed, CheckInconclusive
from provenance.dataset import dataset_root, load_committed
from provenance.errors import FormatError, UsageError
from provenance.hashing import Digest
from provenance.records import AnyStepRecord, StepRecord, StepRecordV1, StepRecordV3, StepStats, batch_digest_v1
from provenance.sampler import poisson_indices
from provenance.schedule import lr_of_manifest
from provenance.secrets import Secrets

STATS_FILE = "stats.jsonl"
MAX_DATASET = 1 << 27  # the sampler draws 8 bytes per example and step


@dataclass(frozen=True)
class StepsResult:
    full: bool  # every field of every step, batch contents included, was recomputed
    summary: str
    loss: list[float] | None
    loss_status: str  # "checked" | "withheld" | "public-v1"


MAX_STATS_LINE = 512  # a canonical StepStats line is ~100 bytes (two float reprs, two counts)
STATS_SLACK_STEPS = 4096  # steps an unfinished run may have logged after its last committed checkpoint


def load_stats(path: Path, *, run_steps: int | None = None, finished: bool = False) -> dict[int, StepStats]:
    """The run's private per-step statistics (`stats.jsonl`, handed to auditors with the secrets), read bounded:
    with `run_steps` (the largest step log the run committed) a file longer than that many lines allow is refused
    before it is read, and so is a line for a step past the log — always for a `finished` (finalised) run; an
    unfinished one may have logged up to STATS_SLACK_STEPS more steps, which are ignored. A wrong file is the
    auditor's input: a one-line UsageError naming it (a FIFO or a 300 MiB file never blocks the verifier)."""
    import os
    import stat

    limit = None if run_steps is None else run_steps + (0 if finished else STATS_SLACK_STEPS)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise UsageError(f"{path}: statistics file not found") from None
    except OSError as exc:
        raise UsageError(f"{path}: the statistics file cannot be read ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as stream:
        info = os.fstat(stream.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"{path}: the statistics file is not a regular file; give the run's stats.jsonl")
        if limit is not None and info.st_size > (limit + 1) * MAX_STATS_LINE:
            raise UsageError(f"{path}: {info.st_size} bytes is more than statistics for the run's {run_steps} "
                             "logged steps can take; give this run's own stats.jsonl")
        data = stream.read()
    out: dict[int, StepStats] = {}
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        item = StepStats.from_json(canonical.decode(line, source=f"{path} line {number}"), source=f"{path} line "
                                                                                                 f"{number}")
        if run_steps is not None and item.step >= run_steps:
            if finished or limit is None or item.step >= limit:
                raise UsageError(f"{path} line {number}: statistics of step {item.step}, but the run's step log "
                                 f"has {run_steps} steps; give this run's own stats.jsonl")
            continue  # logged after the last commitment of a run still in progress: nothing to compare with
        out[item.step] = item
    return out


def default_stats_path(secrets: Path) -> Path | None:
    candidate = (secrets.parent if secrets.is_file() else secrets) / STATS_FILE
    return candidate if candidate.is_file() else None


def check_dataset(*, manifest: Mapping[str, Any], run: Any, secrets: Secrets, examples: Sequence[Any]) -> str:
    expected_key = manifest["secrets"].get("dataset_key_commitment")
    if str(Digest.of(secrets.dataset_key)) != expected_key:
        raise CheckFailed("the dataset key given does not open the run's commitment", expected=expected_key,
                          found=Digest.of(secrets.dataset_key))
    # a run trained with canaries (`prov train --canaries M`) trained on its RUN/data.jsonl: the user's records, then
    # the member canaries; the user's own file alone is not its training set
    hint = ("; this run was trained with canaries: give its data.jsonl (the trainer's records followed by the member "
            "canaries) as --data") if manifest.get("canaries") is not None else ""
    declared = manifest["dataset"].get("size")
    if declared != len(examples):
        raise CheckFailed(f"the data given does not have the committed number of examples{hint}", expected=declared,
                          found=len(examples))
    found = dataset_root(examples, secrets.dataset_key)
    if found != run.dataset_root:
        raise CheckFailed(f"the data given is not the committed training set (its salted root differs){hint}",
                          expected=run.dataset_root, found=found)
    summary = f"{len(examples)} examples; the salted root matches the commitment"
    note = duplicate_note(examples)
    return summary if note is None else f"{summary}; {note}"


def duplicates(examples: Sequence[Any]) -> tuple[int, int]:
    """(records that have an exact copy elsewhere in the data, the most copies of one record)."""
    counts: dict[bytes, int] = {}
    for example in examples:
        key = canonical.encode(example) if isinstance(example, dict | list | str | int) else repr(example).encode()
        counts[key] = counts.get(key, 0) + 1
    repeated = [n for n in counts.values() if n > 1]
    return sum(repeated), max(repeated, default=1)


def duplicate_note(examples: Sequence[Any]) -> str | None:
    """What exact duplicate records do to the per-person guarantee, or None when there are none.

    DP-SGD bounds what each *record* changes; a person whose record is in the data k times changes k records, so
    by group privacy the run is only (k·ε, k·e^((k-1)ε)·δ)-DP for that person."""
    copies, most = duplicates(examples)
    if not copies:
        return None
    return (f"{copies} records are exact copies of another (up to {most} of one): ε and δ bound each record, so a "
            f"person whose record appears k times is protected only at group-privacy level k·ε (and k·e^((k-1)ε)·δ), "
            f"here up to {most}·ε")


def read_examples(path: Path, manifest: Mapping[str, Any]) -> list[Any]:
    """The records of the data given, read as the run read them (kind and field names from its manifest)."""
    data_format = (manifest.get("config") or {}).get("data", {}).get("format", "auto")
    return list(load_committed(path, manifest["dataset"], format=data_format if data_format != "text" else "auto"))


def tokenizer_available() -> bool:
    return importlib.util.find_spec("transformers") is not None


def _mismatch(step: int, field: str, expected: Any, found: Any) -> CheckFailed:
    return CheckFailed(f"step {step}: the logged {field} is not what the committed data, secrets and plan give",
                       expected=expected, found=found)


def check_steps(*, manifest: Mapping[str, Any], steps: Sequence[AnyStepRecord], secrets: Secrets,
                tokenized: batches.TokenizedDataset | None, stats: Mapping[int, StepStats] | None,
                tokenizer_note: str | None = None) -> StepsResult:
    """Recompute everything about every logged step that needs no training; fail on the first mismatch.
    `tokenizer_note`: why this machine's tokenizer may not be the run's (other library versions): a batch that
    differs is then inconclusive, not a failure."""
    training = manifest["training"]
    try:
        size = int(training["dataset_size"])
        rate = float(training["dp"]["sample_rate"])
        world = int(training.get("world_size", 1))
    except (KeyError, TypeError, ValueError):
        raise FormatError("run manifest: training.dataset_size / dp.sample_rate missing") from None
    if size != manifest["dataset"].get("size"):
        raise CheckFailed("the plan's dataset size differs from the committed dataset's",
                          expected=manifest["dataset"].get("size"), found=size)
    if not 0 < size <= MAX_DATASET:
        raise CheckInconclusive(f"a dataset of {size} examples is beyond what this verifier samples in memory "
                                f"({MAX_DATASET}); the other checks stand")
    batch_key, stats_key = secrets.batch_key(), secrets.stats_key()
    loss: list[float] = []
    for record in steps:
        k = record.step
        indices = poisson_indices(secrets.sample_secret, k, size, rate)
        if isinstance(record, StepRecordV3):  # the count is private, inside the statistics commitment
            opened = stats.get(k) if stats is not None else None
            if opened is not None and opened.examples != len(indices):
                raise _mismatch(k, "example count", len(indices), opened.examples)
        elif record.examples != len(indices):
            raise _mismatch(k, "example count", len(indices), record.examples)
        lr = lr_of_manifest(training, k)
        if record.lr != lr:
            raise _mismatch(k, "learning rate", repr(lr), repr(record.lr))
        if record.noise_index != k:
            raise _mismatch(k, "noise index", k, record.noise_index)
        if tokenized is not None:
            tensors = tokenized.batch(indices)
            if isinstance(record, StepRecord | StepRecordV3):
                digest = batches.batch_digest(batch_key, step=k, indices=indices, tensors=tensors, world_size=world)
            else:
                digest = batch_digest_v1(step=k, indices=indices, tensors=tensors)
            if record.batch != digest:
                if tokenizer_note is not None:
                    raise CheckInconclusive(f"step {k}: the batch recomputed here differs from the logged one, and "
                                            f"{tokenizer_note}")
                raise _mismatch(k, "batch commitment (other examples or other tokens were fed)", digest,
                                record.batch)
        if isinstance(record, StepRecordV1):
            loss.append(record.loss)
        elif stats is not None:
            item = stats.get(k)
            if item is None:
                raise CheckFailed(f"step {k}: the statistics file given has no line for this step", expected=k,
                                  found="nothing")
            if item.commitment(stats_key) != record.stats:
                raise CheckFailed(f"step {k}: the statistics given do not open the step's commitment",
                                  expected=record.stats, found=item.commitment(stats_key))
            loss.append(item.loss)
    v1 = any(isinstance(r, StepRecordV1) for r in steps)
    status = "public-v1" if v1 else ("checked" if stats is not None else "withheld")
    covered = ["sampled indices", "example counts", "learning rates", "noise indices"]
    if tokenized is not None:
        covered.append("batch contents")
    if status == "checked":
        covered.append("statistics commitments")
    summary = f"all {len(steps)} steps: {', '.join(covered)} match"
    if tokenized is None:
        summary += ("; batch contents not checked (needs --base-model with the registered digest for the tokenizer, "
                    "and transformers)")
    return StepsResult(tokenized is not None, summary, loss if status != "withheld" else None, status)
