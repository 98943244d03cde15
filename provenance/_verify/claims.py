"""Which on-chain claim a file's lineage is verified against.

A v2 registry lets any number of runs claim the same weights (no first-come ownership that a copied transaction
could steal), and a re-encoded copy of the same tensors has another file digest, so the verifier gathers every
claim — by file digest and by metadata-independent tensor digest — and selects one:

1. claims whose run id and checkpoint index equal the file's own metadata (`prov.run_id`, `prov.checkpoint`) first,
   file-digest matches before tensor-only matches, then the earliest block;
2. a claim is rejected when its run's manifest names an owner (`owner`) and the run was registered by another
   account: that is a copied registration (front-running), not the trainer's run.

The others are reported ("also claimed by run … at block …"). When the manifest names no owner and several
accounts registered the same run id, which of them trained it cannot be decided from the record: the earliest is
shown, with a warning.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from provenance._verify.checks import CheckFailed
from provenance.errors import StoreError
from provenance.hashing import Digest
from provenance.manifest import decode_run_manifest, run_id_of
from provenance.ports import RegistryReader, StoreReader

MANIFEST_LIMIT = 16 * 1024 * 1024


@dataclass(frozen=True)
class Claim:
    record: Any  # CheckpointRecord
    match: str  # "weights" | "tensors"
    selected: bool = False
    note: str = ""


@dataclass(frozen=True)
class Chosen:
    record: Any
    history: Any
    manifest: dict[str, Any]
    summary: str
    warnings: list[str] = field(default_factory=list)


def find(registry: RegistryReader, *, weights: Digest, tensors: Digest | None) -> list[Claim]:
    """Every claim of these weights (file digest) or these tensors (tensor digest), oldest first, no duplicates."""
    out: dict[tuple[bytes, int], Claim] = {}
    for record in registry.claims(weights=weights, tensors=tensors):  # one query, each run's history built once
        match = "weights" if record.weights_digest == weights else "tensors"
        out.setdefault((record.run_key, record.index), Claim(record, match))
    return sorted(out.values(), key=lambda c: (c.record.block_number, c.record.index))


def _rank(claim: Claim, metadata: Mapping[str, str]) -> tuple[int, int, int, int]:
    record = claim.record
    named = metadata.get("prov.run_id") == record.run_id.hex() and metadata.get("prov.checkpoint") == str(record.index)
    return (0 if named else 1, 0 if claim.match == "weights" else 1, record.block_number, record.index)


def _candidate_problem(record: Any, history: Any, data: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(manifest, None) when this claim's run is consistent; (None, why) when it is not the trainer's run."""
    run = history.registration
    if Digest.of(data) != run.manifest_digest:
        return None, f"its stored run manifest is not the registered one ({Digest.of(data)} ≠ {run.manifest_digest})"
    manifest = decode_run_manifest(data, source=f"run manifest {run.manifest_cid}")
    if manifest.get("run_id") != run_id_of(manifest) or manifest["run_id"] != record.run_id.hex():
        return None, "its run id is not the hash of its manifest (a manifest forged to borrow another run's id)"
    owner = manifest.get("owner")
    if isinstance(owner, str) and owner.lower() != str(run.owner).lower():
        return None, (f"registered by {run.owner}, but its manifest names owner {owner}: a copied registration, "
                      "not the trainer's run")
    return manifest, None


def select(found: list[Claim], *, metadata: Mapping[str, str], registry: RegistryReader, store: StoreReader,
           expected_run: bytes | None) -> Chosen:
    """The claim to verify (see the module docstring); rejected and other claims are annotated in `found`.

    Every claim is examined (a claim whose manifest cannot be read or does not fit is annotated and skipped, so a
    copier cannot make an honest file fail or error); among the consistent ones, the one the file's metadata names
    wins, then one whose manifest binds its owner, then a file-digest match, then the earliest."""
    rejected: list[str] = []
    valid: list[tuple[tuple[Any, ...], int, Any, dict[str, Any]]] = []
    unreadable: StoreError | None = None
    for position, claim in enumerate(found):
        record = claim.record
        if expected_run is not None and expected_run not in (record.run_id, record.run_key):
            found[position] = Claim(record, claim.match, note="another run than the one asked for (--run)")
            continue
        history = registry.run(record.run_key)
        try:
            data = store.get_bytes(history.registration.manifest_cid, max_size=MANIFEST_LIMIT)
        except StoreError as exc:
            unreadable = unreadable or exc
            found[position] = Claim(record, claim.match, note=f"its run manifest could not be read ({exc})")
            continue
        manifest, problem = _candidate_problem(record, history, data)
        if manifest is None:
            found[position] = Claim(record, claim.match, note=f"rejected: {problem}")
            rejected.append(f"run key {record.run_key.hex()[:12]}…: {problem}")
            continue
        named, _, block, index = _rank(claim, metadata)
        key = (named, 0 if isinstance(manifest.get("owner"), str) else 1, claim.match != "weights", block, index)
        valid.append((key, position, history, manifest))
    if not valid:
        if unreadable is not None and not rejected:
            raise unreadable
        if expected_run is not None and not rejected:
            raise CheckFailed("this file belongs to another run than the one asked for", expected=expected_run.hex(),
                              found=", ".join(sorted({c.record.run_id.hex() for c in found})))
        raise CheckFailed("every on-chain claim of this file belongs to a run that is not what it says it is",
                          expected="a consistent registration by the manifest's owner", found="; ".join(rejected))
    _, position, history, manifest = min(valid, key=lambda item: item[0])
    record = found[position].record
    found[position] = Claim(record, found[position].match, selected=True)
    run = history.registration
    summary = (f"checkpoint {record.index} of run {record.run_id.hex()[:12]}… (owner {run.owner}), block "
               f"{record.block_number}")
    others = sum(1 for c in found if not c.selected)
    if others:
        summary += f"; {others} other claim(s) listed"
    return Chosen(record, history, manifest, summary, _ambiguity(found, position, manifest))


def _ambiguity(found: list[Claim], position: int, manifest: Mapping[str, Any]) -> list[str]:
    chosen = found[position].record
    if manifest.get("owner") is not None:
        return []
    rivals = {str(c.record.committer) for c in found
              if c.record.run_id == chosen.run_id and c.record.run_key != chosen.run_key}
    if not rivals:
        return []
    return [f"run {chosen.run_id.hex()[:12]}… was also registered by {', '.join(sorted(rivals))}; its manifest does "
            "not name an owner, so which account trained it cannot be decided from the record (the earliest claim "
            "is shown)"]
