"""Walk a run's committed checkpoints: fetch each one's manifest, state and step-log segment from the store, check
them against the chain, and rebuild the step log, checking its root at every committed size and the RFC 6962
consistency of each committed tree with the next (history never rewritten).

Only three small files per checkpoint are fetched (`prov-checkpoint.json`, `state.json`, `steps.jsonl`), each
checked against the manifest, whose digest is checked against the chain; weights and optimizer state are fetched
only for the checkpoint being verified and for replay.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from provenance import canonical, merkle
from provenance._verify.checks import CheckFailed
from provenance._verify.fetch import KIND_LIMITS, MANIFEST_LIMIT, SEGMENT_FILE, STATE_FILE
from provenance.hashing import Digest
from provenance.manifest import MANIFEST_NAME, CheckpointManifest
from provenance.records import AnyStepRecord
from provenance.steplog import parse_records

ADAPTER_FILE = "adapter_model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
TRAINSTATE_FORMATS = ("prov.trainstate.v1", "prov.trainstate.v2")
CHECKPOINT_FILES = frozenset({ADAPTER_FILE, "adapter_config.json", OPTIMIZER_FILE, STATE_FILE, SEGMENT_FILE})


@dataclass(frozen=True)
class CheckpointFiles:
    record: Any  # provenance.chain.CheckpointRecord
    manifest: CheckpointManifest
    listing: dict[str, str]
    state: dict[str, Any]
    segment: bytes


def _verified_file(store: Any, listing: dict[str, str], manifest: CheckpointManifest, name: str, where: str) -> bytes:
    if name not in listing:
        raise CheckFailed(f"{where}: {name} is missing from the stored checkpoint", expected=name, found="nothing")
    declared = manifest.file(name).size
    cap = KIND_LIMITS.get(name)
    if cap is not None and declared > cap:  # refused before a byte is fetched: no trainer writes one this big
        raise CheckFailed(f"{where}: its manifest declares {name} at {declared} bytes, more than any trainer writes",
                          expected=f"at most {cap} bytes", found=f"{declared} bytes")
    data: bytes = store.get_bytes(listing[name], max_size=declared)  # its declared size bounds it
    found = Digest.of(data)
    expected = manifest.file(name).digest
    if found != expected:
        raise CheckFailed(f"{where}: {name} differs from the checkpoint manifest", expected=expected, found=found)
    return data


def fetch_checkpoint(store: Any, record: Any) -> CheckpointFiles:
    """The manifest, state and log segment of one committed checkpoint, each checked (CIDs by the store)."""
    where = f"checkpoint {record.index}"
    listing: dict[str, str] = store.list_directory(record.manifest_cid)
    if MANIFEST_NAME not in listing:
        raise CheckFailed(f"{where}: the stored checkpoint has no {MANIFEST_NAME}", expected=MANIFEST_NAME,
                          found=", ".join(sorted(listing)))
    manifest = CheckpointManifest.decode(store.get_bytes(listing[MANIFEST_NAME], max_size=MANIFEST_LIMIT),
                                         source=f"{where} manifest")
    if manifest.digest() != record.checkpoint_digest:
        raise CheckFailed(f"{where}: the stored manifest is not the one committed on chain",
                          expected=record.checkpoint_digest, found=manifest.digest())
    stored = set(listing) - {MANIFEST_NAME}
    listed = {f.path for f in manifest.files}
    if stored != listed:
        raise CheckFailed(f"{where}: stored files differ from its manifest", expected=sorted(listed),
                          found=sorted(stored))
    if listed != CHECKPOINT_FILES:
        raise CheckFailed(f"{where}: a checkpoint holds exactly the trainer's files", expected=sorted(CHECKPOINT_FILES),
                          found=sorted(listed))
    if manifest.file(ADAPTER_FILE).digest != record.weights_digest:
        raise CheckFailed(f"{where}: its adapter is not the committed weights", expected=record.weights_digest,
                          found=manifest.file(ADAPTER_FILE).digest)
    state = canonical.decode(_verified_file(store, listing, manifest, STATE_FILE, where), source=f"{where} state")
    segment = _verified_file(store, listing, manifest, SEGMENT_FILE, where)
    if not isinstance(state, dict):
        raise CheckFailed(f"{where}: its state.json is not an object", expected="an object", found=type(state).__name__)
    expected = {"format": TRAINSTATE_FORMATS, "run_id": record.run_id.hex(), "checkpoint": record.index,
                "step": record.log_size, "log_size": record.log_size, "log_root": record.log_root.hex,
                "weights": str(record.weights_digest)}
    for key, want in expected.items():
        found = state.get(key)
        if found not in want if isinstance(want, tuple) else found != want:
            raise CheckFailed(f"{where}: its state.json {key} does not match the commitment", expected=want,
                              found=found)
    return CheckpointFiles(record, manifest, listing, state, segment)


def check_history(records: list[Any], *, run: Any) -> list[int]:
    """Indices 0..k in order, checkpoint 0 before any step, log sizes never shrink, ε never decreases (a v2
    registry enforces these too). Returns the indices of checkpoints that add no step (a v1 registry allowed them;
    `check_zero_step` then requires them to hold the previous checkpoint's state unchanged)."""
    zero_step = []
    for position, record in enumerate(records):
        if record.index != position or record.run_id != run.run_id:
            raise CheckFailed("checkpoints are not sequential", expected=position, found=record.index)
        if position == 0 and record.log_size != 0:
            raise CheckFailed("checkpoint 0 must be the adapter before any training step (log size 0)",
                              expected=0, found=record.log_size)
        if position:
            before = records[position - 1]
            if record.log_size < before.log_size:
                raise CheckFailed(f"checkpoint {position}'s log is shorter than the previous one",
                                  expected=f">= {before.log_size}", found=record.log_size)
            if record.log_size == before.log_size:
                zero_step.append(position)
            if record.epsilon_micro < before.epsilon_micro:
                raise CheckFailed(f"ε decreased at checkpoint {position}", expected=f">= {before.epsilon}",
                                  found=record.epsilon)
    return zero_step


_STATE_KEYS_PER_CHECKPOINT = ("checkpoint", "weights")


def check_zero_step(store: Any, before: CheckpointFiles, after: CheckpointFiles) -> None:
    """A checkpoint that adds no step must hold exactly the previous checkpoint's tensors and state (only its own
    index and weights digest may differ): otherwise its weights could be anything, unreplayed."""
    from provenance.safetensors import tensor_digest_of_bytes

    where = f"checkpoint {after.record.index} adds no training step but"
    for name in (ADAPTER_FILE, OPTIMIZER_FILE):
        old = tensor_digest_of_bytes(_verified_file(store, before.listing, before.manifest, name, "checkpoint "
                                                    f"{before.record.index}"))
        new = tensor_digest_of_bytes(_verified_file(store, after.listing, after.manifest, name, "checkpoint "
                                                    f"{after.record.index}"))
        if old != new:
            raise CheckFailed(f"{where} its {name} tensors differ from checkpoint {before.record.index}'s",
                              expected=old, found=new)
    tensor_files = (ADAPTER_FILE, OPTIMIZER_FILE, STATE_FILE)
    for entry in after.manifest.files:
        if entry.path in tensor_files:
            continue
        previous = {f.path: f.digest for f in before.manifest.files}.get(entry.path)
        if previous != entry.digest:
            raise CheckFailed(f"{where} its {entry.path} differs from checkpoint {before.record.index}'s",
                              expected=previous, found=entry.digest)
    keep = {k: v for k, v in before.state.items() if k not in _STATE_KEYS_PER_CHECKPOINT}
    now = {k: v for k, v in after.state.items() if k not in _STATE_KEYS_PER_CHECKPOINT}
    if keep != now:
        changed = sorted(k for k in set(keep) | set(now) if keep.get(k) != now.get(k))
        raise CheckFailed(f"{where} its training state differs from checkpoint {before.record.index}'s",
                          expected="the same state", found=f"changed: {', '.join(changed)}")


def rebuild_log(files: list[CheckpointFiles], *, step_format: str) -> tuple[list[AnyStepRecord], list[bytes]]:
    """Concatenate the segments and check each committed root against the log they build, and that every record has
    the run's step format. Returns the records and their leaf hashes.

    Every committed root is recomputed from one growing list of leaves, so each committed tree is a prefix of the
    next by construction: that is what an RFC 6962 consistency proof establishes for a party holding only the two
    roots, and it needs no proof here (an auditor holding only roots can request one: `merkle.consistency_proof`)."""
    records: list[AnyStepRecord] = []
    leaves: list[bytes] = []
    rng = merkle.CompactRange()
    for item in files:
        record = item.record
        where = f"checkpoint {record.index}'s log segment"
        segment = parse_records(item.segment, first_step=len(records), source=where)
        for step in segment:
            if step.format != step_format:
                raise CheckFailed(f"{where}: step {step.step} is a {step.format} record in a {step_format} run",
                                  expected=step_format, found=step.format)
        if len(records) + len(segment) != record.log_size:
            raise CheckFailed(f"{where} does not reach the committed log size", expected=record.log_size,
                              found=len(records) + len(segment))
        for step in segment:
            leaf = step.leaf_hash()
            leaves.append(leaf)
            rng.append(leaf)
        records.extend(segment)
        root = rng.root()
        if root != record.log_root.value:
            raise CheckFailed(f"the step log up to checkpoint {record.index} does not match its committed root",
                              expected=record.log_root.hex, found=root.hex())
    return records, leaves


def check_committers(records: list[Any], fetch_events: Callable[[], list[Any]], *, run: Any) -> int:
    """Each checkpoint was committed by the owner or by a writer authorised (and not revoked) before it, in chain
    order (block, then position in the block). Writer events are fetched (`fetch_events`) only when some checkpoint
    was not committed by the owner."""
    if all(r.committer.lower() == run.owner.lower() for r in records):
        return 0
    events = fetch_events()
    writers: set[str] = set()
    timeline = sorted(
        [e for e in events if e.args.get("runKey", e.args.get("runId")) == getattr(run, "run_key", run.run_id)],
        key=lambda e: (e.block_number, getattr(e, "log_index", 0)),
    )
    position = 0
    for record in sorted(records, key=lambda r: (r.block_number, getattr(r, "log_index", 0))):
        here = (record.block_number, getattr(record, "log_index", 0))
        while position < len(timeline) and (timeline[position].block_number,
                                            getattr(timeline[position], "log_index", 0)) < here:
            event = timeline[position]
            if event.name == "WriterAuthorized":
                writers.add(str(event.args["writer"]).lower())
            elif event.name == "WriterRevoked":
                writers.discard(str(event.args["writer"]).lower())
            position += 1
        committer = record.committer.lower()
        if committer != run.owner.lower() and committer not in writers:
            raise CheckFailed(f"checkpoint {record.index} was committed by an account that may not write this run",
                              expected=f"{run.owner} or an authorised writer", found=record.committer)
    return len(writers)
