"""The trainer's side of record proofs: `prove_example` builds a `prov.example-proof.v1` (format and checking in
`provenance.proofs`) from a run directory, which holds the secrets, the data's location and the step log."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from provenance import batches, canonical, merkle
from provenance.dataset import example_record
from provenance.errors import UsageError
from provenance.hashing import Digest
from provenance.manifest import run_manifest_digest
from provenance.ports import RegistryReader, RunHistory
from provenance.proofs import DatasetOpening, ExampleProof, StepOpening
from provenance.records import StepRecord, StepRecordV3


def open_step(commitment: batches.BatchCommitment, *, record: StepRecord | StepRecordV3, index: int,
              tensors: batches.Batch, world_size: int, batch_key: bytes, log_leaves: Sequence[bytes]) -> StepOpening:
    """The opening of dataset record `index` in a step's batch commitment (of `tensors`, on `world_size` ranks), and
    of the step's record in the committed log whose leaves are `log_leaves`."""
    position = commitment.indices.index(index)
    bounds = batches.shard_bounds(len(commitment.indices), world_size)
    rank = next(r for r, (a, b) in enumerate(bounds) if a <= position < b)
    start, end = bounds[rank]
    return StepOpening(
        record=record, salt=batches.example_salt(batch_key, step=record.step, index=index),
        tensors={n: tuple(int(x) for x in tensors[n][position]) for n in batches.TENSOR_NAMES}, ranks=world_size,
        rank=rank, rank_examples=end - start, position=position - start,
        example_path=tuple(merkle.inclusion_proof(position - start, list(commitment.example_leaves[start:end]))),
        rank_path=tuple(merkle.inclusion_proof(rank, list(commitment.rank_leaves))), log_size=len(log_leaves),
        log_path=tuple(merkle.inclusion_proof(record.step, list(log_leaves))))


def prove_example(run_dir: Path, *, index: int, registry: RegistryReader, data: Path | None = None,
                  base_model: Path | None = None) -> ExampleProof:
    """The proof for record `index` of the run in `run_dir` (its secrets, step log and local.json, which gives the
    default `data` and `base_model`) against the run's on-chain history in `registry`. What is opened is first
    checked against what the run committed: a wrong data file, base model or step log is a one-line UsageError."""
    from provenance.basemodel import load_tokenizer
    from provenance.dataset import dataset_leaves, example_salt, load_committed
    from provenance.manifest import decode_run_manifest
    from provenance.secrets import run_secrets
    from provenance.steplog import StepLog

    if not (run_dir / "run.json").is_file():
        raise UsageError(f"{run_dir}: not a run directory (no run.json)")
    manifest = decode_run_manifest((run_dir / "run.json").read_bytes(), source=str(run_dir / "run.json"))
    secrets = run_secrets(run_dir, manifest)  # prov.keys.v1 runs: the keys anchored by keys.json
    data, base_model = data or _local_path(run_dir, "data"), base_model or _local_path(run_dir, "model")
    data_format = str(((manifest.get("config") or {}).get("data") or {}).get("format", "auto"))
    records = load_committed(data, manifest["dataset"], format=data_format)
    if not 0 <= index < len(records):
        raise UsageError(f"--index {index}: the run's dataset has {len(records)} records (0..{len(records) - 1})")
    leaves = dataset_leaves(records, secrets.dataset_key)
    if Digest(merkle.root(leaves)) != Digest.parse(manifest["dataset"]["root"]):
        raise UsageError(f"{data}: not the run's data (its dataset root differs from the manifest's)")
    history = _find_run(registry, run_dir, run_id=bytes.fromhex(manifest["run_id"]), owner=manifest.get("owner"))
    if history.registration.manifest_digest != run_manifest_digest(manifest):
        raise UsageError(f"{run_dir}: the run on chain registered another manifest than run.json")
    with StepLog.open(run_dir, create=False) as log:
        logged = list(log.records())
    last = max(history.checkpoints, key=lambda c: int(c.log_size), default=None)
    log_size = int(last.log_size) if last is not None else 0
    log_leaves = [r.leaf_hash() for r in logged[:log_size]]
    if last is not None and (len(log_leaves) != log_size or Digest(merkle.root(log_leaves)) != last.log_root):
        raise UsageError(f"{run_dir}: the local step log does not hold the {log_size} steps the run committed")
    kind, max_length = str(manifest["dataset"].get("kind", "text")), int(manifest["dataset"]["max_length"])
    dataset = DatasetOpening(index=index, size=len(records), kind=kind, max_length=max_length,
                             record=example_record(records[index]), salt=example_salt(secrets.dataset_key, index),
                             path=tuple(merkle.inclusion_proof(index, leaves)))
    openings = _open_steps(logged[:log_size], records, index=index, manifest=manifest, secrets=secrets,
                           tokenizer=lambda: load_tokenizer(base_model), log_leaves=log_leaves)
    return ExampleProof(chain_id=int(registry.chain_info().chain_id), registry=str(registry.address),
                        run_key=history.registration.run_key, run_id=history.registration.run_id, manifest=manifest,
                        dataset=dataset, log_size=log_size, steps=tuple(openings))


def _local_path(run_dir: Path, key: str) -> Path:
    """The data file or base model directory (`key` "data" or "model") the run trained with, from its local.json."""
    path = run_dir / "local.json"
    local = canonical.decode(path.read_bytes(), source=str(path)) if path.is_file() else {}
    if not isinstance(local, dict) or not isinstance(local.get(key), str):
        raise UsageError(f"{path}: names no {key} path; pass --data and --base-model")
    return Path(local[key])


def _open_steps(steps: Sequence[Any], records: Sequence[Any], *, index: int, manifest: dict[str, Any], secrets: Any,
                tokenizer: Callable[[], Any], log_leaves: Sequence[bytes]) -> list[StepOpening]:
    """An opening for every logged step whose Poisson batch held `index`; only those batches are tokenized."""
    from provenance.sampler import poisson_indices

    training = manifest["training"]
    size, rate = int(training["dataset_size"]), float(training["dp"]["sample_rate"])
    world = int(training.get("world_size", 1))
    chosen: dict[int, list[int]] = {}
    for record in steps:
        if not isinstance(record, StepRecord | StepRecordV3):
            raise UsageError("this run logged v1 step records, whose batches have no per-example commitment to open")
        drawn = poisson_indices(secrets.sample_secret, record.step, size, rate)
        if index in drawn:
            chosen[record.step] = drawn
    if not chosen:
        return []
    needed = sorted({i for drawn in chosen.values() for i in drawn})
    row_of = {i: row for row, i in enumerate(needed)}
    tokenized = batches.tokenize_records([records[i] for i in needed], tokenizer(),
                                         kind=str(manifest["dataset"].get("kind", "text")),
                                         max_length=int(manifest["dataset"]["max_length"]))
    batch_key, openings = secrets.batch_key(), []
    for step, drawn in chosen.items():
        tensors = tokenized.batch([row_of[i] for i in drawn])
        commitment = batches.commit_batch(batch_key, step=step, indices=drawn, tensors=tensors, world_size=world)
        if commitment.digest != steps[step].batch:
            raise UsageError(f"step {step}: the batch recomputed here differs from the logged one (not the run's base "
                             "model or tokenizer version?)")
        openings.append(open_step(commitment, record=steps[step], index=index, tensors=tensors, world_size=world,
                                  batch_key=batch_key, log_leaves=log_leaves))
    return openings


def _find_run(registry: RegistryReader, run_dir: Path, *, run_id: bytes, owner: Any) -> RunHistory:
    """The run's on-chain history: by (owner, run id) on a v2 registry (or, when the manifest names no owner, the one
    run claiming its last checkpoint with this run id); by run id on a v1 one."""
    if registry.version == 1:
        return registry.run(run_id)
    if isinstance(owner, str):
        from provenance.chain import run_key_of

        return registry.run(run_key_of(owner, run_id))
    from provenance.hashing import hash_file

    checkpoints = sorted((run_dir / "checkpoints").glob("[0-9]" * 6))
    if not checkpoints:
        raise UsageError(f"{run_dir}: no checkpoint to find the run's on-chain record by")
    keys = {c.run_key for c in registry.claims(weights=hash_file(checkpoints[-1] / "adapter_model.safetensors"))
            if c.run_id == run_id}
    if len(keys) != 1:
        raise UsageError(f"{run_dir}: the run's manifest names no owner and {len(keys)} on-chain runs claim its last "
                         "checkpoint: cannot tell which registration is the run's")
    return registry.run(keys.pop())
