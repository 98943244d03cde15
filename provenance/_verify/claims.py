"""Which on-chain claim a file's lineage is verified against.

A v2 registry lets any number of runs claim the same weights (no first-come ownership that a copied transaction
could steal), and a re-encoded copy of the same tensors has another file digest, so the verifier gathers every
claim — by file digest and by metadata-independent tensor digest — and selects one:

1. claims whose run id and checkpoint index equal the file's own metadata (`prov.run_id`, `prov.checkpoint`) first,
   file-digest matches before tensor-only matches, then the earliest block;
2. a claim is rejected when its run's manifest names an owner (`owner`) and the run was registered by another
   account: that is a copied registration (front-running), not the trainer's run.

Anyone can register a run and claim any digest, so a claim is a candidate, never a verdict: one whose manifest is
missing from the store, malformed (not UTF-8, absurdly nested, fields missing), inconsistent with its registration,
or whose stored checkpoint does not hold the claimed adapter (a stranger committing the victim's tensor digest over
a checkpoint of its own) is rejected with its reason and listed; it never decides the verdict on another claim.
Candidates are examined in rank order and the first consistent claim the file's metadata names ends the search;
the others are examined within a count (`MAX_EXAMINED`) and a wall-clock budget (`EXAMINE_SECONDS`), so spam
claims cannot stall a verification. A node that lies about the record (a log omitted, storage and events
disagreeing) raises a chain error: the verdict is then "could not verify", never FAILED.

The others are reported ("also claimed by run … at block …"). When the manifest names no owner and several
accounts registered the same run id, which of them trained it cannot be decided from the record: the earliest is
shown, with a warning.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from provenance._verify.checks import CheckFailed, CheckInconclusive
from provenance.cid import CidMismatch
from provenance.errors import ChainError, ProvenanceError, StoreError, one_line
from provenance.hashing import Digest
from provenance.limits import BudgetExceeded
from provenance.manifest import decode_run_manifest, run_id_of
from provenance.ports import RegistryReader, StoreReader

MANIFEST_LIMIT = 16 * 1024 * 1024
ADAPTER_FILE = "adapter_model.safetensors"
ADAPTER_LIMIT = 1 << 30  # a stored adapter larger than this is not fetched to check it (the checkpoint check still is)
MAX_EXAMINED = 32  # candidates examined at most, in rank order (the first, the one the metadata names, always is)
EXAMINE_SECONDS = 120.0  # wall-clock budget for examining candidates, after the first
# Content faults a stranger can publish (the candidate is rejected); anything else from the store is a reach
# problem (the candidate could not be read: "could not verify" if nothing else is consistent).
_CONTENT_FAULTS = (ProvenanceError, LookupError, TypeError, ValueError, RecursionError, UnicodeError)


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


def find(registry: RegistryReader, *, weights: Digest, tensors: Digest | None,
         metadata: Mapping[str, str] | None = None) -> list[Claim]:
    """Every claim of these weights (file digest) or these tensors (tensor digest), oldest first, no duplicates.

    With the file's `metadata`: when it names a run and checkpoint and no claim of that run came back, the node is
    asked for that run's registrations and each one's history (folded to its stored head): a node that hid the
    claim's log is found out (InconsistentChain: "could not verify", never FAILED)."""
    out: dict[tuple[bytes, int], Claim] = {}
    for record in registry.claims(weights=weights, tensors=tensors):  # one query, each run's history built once
        match = "weights" if record.weights_digest == weights else "tensors"
        out.setdefault((record.run_key, record.index), Claim(record, match))
    found = sorted(out.values(), key=lambda c: (c.record.block_number, c.record.index))
    if metadata is not None:
        _check_named_claim_returned(registry, found, metadata, weights=weights, tensors=tensors)
    return found


def _check_named_claim_returned(registry: RegistryReader, found: list[Claim], metadata: Mapping[str, str], *,
                                weights: Digest, tensors: Digest | None) -> None:
    """Raise InconsistentChain when the run the file's metadata names holds a checkpoint claiming this file that the
    node's claim query left out (an omitted log). Registries without per-run-id lookups are not asked."""
    from provenance._chain.errors import InconsistentChain

    named, index = metadata.get("prov.run_id", ""), metadata.get("prov.checkpoint", "")
    reader = getattr(registry, "event_reader", None)
    if reader is None or int(getattr(registry, "version", 1)) < 2 or len(named) != 64 or not index.isdigit():
        return
    try:
        run_id = bytes.fromhex(named)
    except ValueError:
        return
    if any(c.record.run_id == run_id for c in found):
        return
    at = int(registry.web3.eth.block_number)  # type: ignore[attr-defined]
    start = registry.deployment_block(at) if hasattr(registry, "deployment_block") else 0
    for event in reader.query([reader.topic("RunRegistered"), None, run_id], from_block=start, to_block=at):
        history = registry.run(bytes(event.args["runKey"]))  # a hidden event fails the fold: InconsistentChain
        record = history.checkpoints[int(index)] if int(index) < len(history.checkpoints) else None
        if record is not None and (record.weights_digest == weights or
                                   (tensors is not None and record.tensor_digest == tensors)):
            raise InconsistentChain(f"the node's answer to the claims query left out checkpoint {index} of run "
                                    f"{named[:12]}…, which that run's verified history holds (an omitted log): "
                                    "do not trust this node's answers; verify with another node")


def _rank(claim: Claim, metadata: Mapping[str, str]) -> tuple[int, int, int, int]:
    record = claim.record
    named = metadata.get("prov.run_id") == record.run_id.hex() and metadata.get("prov.checkpoint") == str(record.index)
    return (0 if named else 1, 0 if claim.match == "weights" else 1, record.block_number, record.index)


def _candidate_problem(record: Any, history: Any, data: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(manifest, None) when this claim's run is consistent; (None, why) when it is not the trainer's run."""
    run = history.registration
    if Digest.of(data) != run.manifest_digest:
        return None, f"its stored run manifest is not the registered one ({Digest.of(data)} ≠ {run.manifest_digest})"
    try:
        manifest = decode_run_manifest(data, source=f"run manifest {run.manifest_cid}")
        expected_id = run_id_of(manifest)
    except _CONTENT_FAULTS as exc:  # published by whoever registered it: this candidate only
        return None, f"its run manifest is malformed ({one_line(exc, 200)})"
    if manifest.get("run_id") != expected_id or manifest["run_id"] != record.run_id.hex():
        return None, "its run id is not the hash of its manifest (a manifest forged to borrow another run's id)"
    owner = manifest.get("owner")
    if isinstance(owner, str) and owner.lower() != str(run.owner).lower():
        return None, (f"registered by {run.owner}, but its manifest names owner {owner}: a copied registration, "
                      "not the trainer's run")
    return manifest, None


NOT_FETCHED = "its stored adapter is larger than this check fetches"


def _stored_problem(claim: Claim, store: StoreReader) -> str | None:
    """Why this claim's stored checkpoint does not hold the adapter the claim is about, or None when it does.

    A claim found by file digest must store an adapter with that digest; one found by tensor digest an adapter with
    those tensors. Anyone can commit the victim's tensor digest over a checkpoint of its own: such a claim is not
    a candidate for the victim's file. (The whole checkpoint is checked against its digest once selected.)"""
    from provenance.safetensors import tensor_digest_of_bytes
    from provenance.store import ContentTooLarge

    record = claim.record
    if claim.match not in ("weights", "tensors"):
        return None  # a merged model's claim: the checkpoint holds the adapter, not the merged file
    try:
        entry = store.list_directory(record.manifest_cid).get(ADAPTER_FILE)
        if entry is None:
            return f"its stored checkpoint has no {ADAPTER_FILE}"
        try:
            data = store.get_bytes(entry, max_size=ADAPTER_LIMIT)
        except ContentTooLarge:
            return NOT_FETCHED  # ranked after the claims checked here; the selected one is still checked in full
        if claim.match == "weights":
            holds = Digest.of(data) == record.weights_digest
        else:
            holds = record.tensor_digest is not None and tensor_digest_of_bytes(data) == record.tensor_digest
    except (StoreError, CidMismatch, ChainError):
        raise
    except _CONTENT_FAULTS as exc:
        return f"its stored checkpoint cannot be read as a checkpoint ({one_line(exc, 200)})"
    if not holds:
        what = "file digest" if claim.match == "weights" else "tensor digest"
        return (f"its stored checkpoint does not hold the adapter it claims (the stored {ADAPTER_FILE} has another "
                f"{what} than the one committed)")
    return None


def _examine(claim: Claim, registry: RegistryReader, store: StoreReader) -> tuple[Any, dict[str, Any] | None, str]:
    """(history, manifest, "") for a consistent candidate; (history, None, why) for a rejected one. Reach problems
    (StoreError, CidMismatch) and a lying node (ChainError) are raised."""
    record = claim.record
    history = registry.run(record.run_key)  # a ChainError here is the node's fault: the verdict becomes "error"
    try:
        data = store.get_bytes(history.registration.manifest_cid, max_size=MANIFEST_LIMIT)
    except (StoreError, CidMismatch, ChainError):
        raise
    except _CONTENT_FAULTS as exc:  # a CID that is not one, a directory: what the registrant published
        return history, None, f"its run manifest cannot be fetched as a file ({one_line(exc, 200)})"
    manifest, problem = _candidate_problem(record, history, data)
    if manifest is None:
        return history, None, str(problem)
    stored = _stored_problem(claim, store)
    if stored is not None and stored != NOT_FETCHED:
        return history, None, stored
    return history, manifest, stored or ""  # NOT_FETCHED: consistent as far as it was checked


def select(found: list[Claim], *, metadata: Mapping[str, str], registry: RegistryReader, store: StoreReader,
           expected_run: bytes | None) -> Chosen:
    """The claim to verify (see the module docstring); rejected and other claims are annotated in `found`.

    Candidates are examined in rank order (the file's metadata first, then file-digest matches, then the earliest);
    one whose manifest cannot be read, does not fit or whose stored checkpoint does not hold the file is annotated
    and skipped, so a stranger cannot make an honest file fail. The first consistent claim the metadata names is
    taken at once; otherwise, among the consistent ones examined within the limits, one whose manifest binds its
    owner wins, then a file-digest match, then the earliest."""
    rejected: list[str] = []
    valid: list[tuple[tuple[Any, ...], int, Any, dict[str, Any]]] = []
    unreadable: ProvenanceError | None = None
    named_unreadable: ProvenanceError | None = None  # then no claim the metadata does not name may be chosen
    examined = skipped = 0
    started = time.monotonic()
    for position in sorted(range(len(found)), key=lambda i: _rank(found[i], metadata)):
        claim = found[position]
        record = claim.record
        if expected_run is not None and expected_run not in (record.run_id, record.run_key):
            found[position] = Claim(record, claim.match, note="another run than the one asked for (--run)")
            continue
        named = _rank(claim, metadata)[0] == 0
        if valid and valid[0][0][0] == 0:
            found[position] = Claim(record, claim.match, note="not examined: the claim this file's metadata names "
                                                              "is consistent")
            continue
        if examined and (examined >= MAX_EXAMINED or time.monotonic() - started > EXAMINE_SECONDS):
            skipped += 1
            found[position] = Claim(record, claim.match, note=f"not examined (limit: {MAX_EXAMINED} claims, "
                                                              f"{EXAMINE_SECONDS:.0f} s)")
            continue
        examined += 1
        try:
            history, manifest, problem = _examine(claim, registry, store)
        except (StoreError, CidMismatch) as exc:
            if isinstance(exc, BudgetExceeded):
                raise  # the auditor's byte budget is spent: could not verify (raise --max-bytes), not a choice
            unreadable = unreadable or exc
            if named:
                named_unreadable = named_unreadable or exc
            found[position] = Claim(record, claim.match, note=f"could not be read ({one_line(exc, 200)})")
            continue
        if manifest is None:
            found[position] = Claim(record, claim.match, note=f"rejected: {problem}")
            rejected.append(f"run key {record.run_key.hex()[:12]}…: {problem}")
            continue
        _, _, block, index = _rank(claim, metadata)
        key = (0 if named else 1, 1 if problem == NOT_FETCHED else 0, 0 if isinstance(manifest.get("owner"), str)
               else 1, claim.match != "weights", block, index)
        valid.append((key, position, history, manifest))
        valid.sort(key=lambda item: item[0])
    if not valid:
        if unreadable is not None:
            raise unreadable  # one that could not be read may be the trainer's: could not verify, never FAILED
        if skipped:
            raise CheckInconclusive(f"none of the {examined} claims examined is consistent and {skipped} more were "
                                    "not examined within the limits: pass --run with the run id or run key to verify")
        if expected_run is not None and not rejected:
            raise CheckFailed("this file belongs to another run than the one asked for", expected=expected_run.hex(),
                              found=", ".join(sorted({c.record.run_id.hex() for c in found})))
        raise CheckFailed("every on-chain claim of this file belongs to a run that is not what it says it is",
                          expected="a consistent registration by the manifest's owner", found="; ".join(rejected))
    if named_unreadable is not None and valid[0][0][0] != 0:
        # the run the file names could not be read: another claim that merely holds the same file must not
        # be shown as its lineage
        raise named_unreadable
    _, position, history, manifest = valid[0]
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
