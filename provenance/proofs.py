"""Proof that one record was in a run's training set, and in which steps it was sampled, revealing nothing else.

`prove_example(run_dir, index=i, registry=...)` (by the trainer, who holds the secrets) builds `prov.example-proof.v1`
(docs/compliance.md, "Proving one record was used"): the run's public manifest (its digest is registered on chain;
it fixes the dataset kind, size and `max_length` and the world size the checker uses); the **dataset opening** (record
i's canonical form, its salt `HMAC(dataset_key, "example" || u64(i))`, the RFC 6962 path to the registered dataset
root); and one **step opening** per committed step whose Poisson batch held record i (the step record, the example's
batch salt `HMAC(batch key, u64(step) || u64(i))` and tensors, its path to its rank's root, the rank leaf's fields and
path to the batch commitment, and the step record's path to a step-log root committed on chain).

`check_example(proof, registry=...)` (by anyone: a data subject, a rights holder) recomputes every leaf and path and
compares the roots with the on-chain run; with the base model it also re-tokenizes the record and compares the
tensors. Other records appear only as hashes of salted data; the salts revealed open only this record.

What this cannot prove (docs/compliance.md has the long form): that a record was **not** used (the dataset tree is
ordered by position, not content: non-membership needs a content-sorted commitment); that the listed steps are
**all** the steps the record was in (that needs every step's sampler key, whose publication would remove the privacy
amplification by subsampling). A step opening removes subsampling amplification for this one record.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from provenance import batches, canonical, merkle
from provenance.dataset import KINDS, detect_kind, example_record
from provenance.errors import FormatError, ProofError, UsageError, VerificationError
from provenance.fsutil import atomic_write, read_input
from provenance.hashing import Digest
from provenance.manifest import run_id_of, run_manifest_digest, validate_run_manifest
from provenance.ports import RegistryReader, RunHistory
from provenance.records import StepRecord, StepRecordV3, step_record_from_json

PROOF_FORMAT = "prov.example-proof.v1"
MAX_PROOF_BYTES = 64 * 1024 * 1024
MAX_PATH = 64  # nodes in one RFC 6962 path
NEVER_PROVEN = (
    "that the listed steps are all the steps the record was sampled in (that needs the run's secret sampler keys; an "
    "auditor with the secrets can confirm it)",
    "anything about other records, or that any record was NOT used (the dataset commitment is ordered by position, "
    "not content: non-membership has no short proof)",
    "that the adapter was trained as the step log says (`prov verify --replay` checks that)")


# --- strict parsing (a proof is untrusted input: every field has one accepted form) --------------------------------


def _fields(value: Any, names: set[str], what: str) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != names:
        raise FormatError(f"{what} must be an object with exactly {', '.join(sorted(names))}")
    return value


def _count(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise FormatError(f"{what} must be a non-negative integer")
    return value


def _hash(value: Any, what: str) -> bytes:
    try:
        out = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        out = b""
    if len(out) != 32 or out.hex() != value:
        raise FormatError(f"{what} must be 64 lowercase hex digits")
    return out


def _path(value: Any, what: str) -> tuple[bytes, ...]:
    if not isinstance(value, list) or len(value) > MAX_PATH:
        raise FormatError(f"{what} must be a list of at most {MAX_PATH} hashes")
    return tuple(_hash(v, what) for v in value)


def _tensors(value: Any, length: int) -> dict[str, tuple[int, ...]]:
    value = _fields(value, set(batches.TENSOR_NAMES), "tensors")
    for name in batches.TENSOR_NAMES:
        row = value[name]
        if not isinstance(row, list) or len(row) != length or not all(
                type(x) is int and -2**63 <= x < 2**63 for x in row):
            raise FormatError(f"tensor {name} must be {length} int64 values (the run's max_length)")
    return {name: tuple(value[name]) for name in batches.TENSOR_NAMES}


def _hexes(values: Sequence[bytes]) -> list[str]:
    return [v.hex() for v in values]


# --- the format -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DatasetOpening:
    """Record `index` of the committed dataset (`prov.dataset.v1`), how it is tokenized, and its path to the root."""

    index: int
    size: int
    kind: str
    max_length: int
    record: dict[str, Any]
    salt: bytes
    path: tuple[bytes, ...]

    def leaf(self) -> bytes:
        return merkle.hash_leaf(self.salt + canonical.encode(self.record))

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "kind": self.kind, "max_length": self.max_length, "path": _hexes(self.path),
                "record": self.record, "salt": self.salt.hex(), "size": self.size}

    @classmethod
    def from_json(cls, value: Any) -> DatasetOpening:
        d = _fields(value, {"index", "kind", "max_length", "path", "record", "salt", "size"}, "dataset")
        if d["kind"] not in KINDS:
            raise FormatError(f"dataset kind must be one of {', '.join(KINDS)}")
        if not isinstance(d["record"], dict) or example_record(d["record"]) != d["record"] \
                or detect_kind(d["record"]) != d["kind"]:
            raise FormatError(f"the record is not a canonical {d['kind']} record")
        return cls(index=_count(d["index"], "dataset index"), size=_count(d["size"], "dataset size"), kind=d["kind"],
                   max_length=_count(d["max_length"], "max_length"), record=d["record"],
                   salt=_hash(d["salt"], "salt"), path=_path(d["path"], "dataset path"))


@dataclass(frozen=True, kw_only=True)
class StepOpening:
    """Record `index`'s leaf in one step's `prov.batch.v2` commitment, and that step's record in the step log."""

    record: StepRecord | StepRecordV3
    salt: bytes
    tensors: dict[str, tuple[int, ...]]
    ranks: int
    rank: int
    rank_examples: int
    position: int  # of the example within its rank's shard
    example_path: tuple[bytes, ...]
    rank_path: tuple[bytes, ...]
    log_size: int
    log_path: tuple[bytes, ...]

    def example_leaf(self, index: int) -> bytes:
        row = {name: np.asarray(values, dtype=np.int64) for name, values in self.tensors.items()}
        return merkle.hash_leaf(self.salt + batches.example_bytes(step=self.record.step, index=index, row=row))

    def to_json(self) -> dict[str, Any]:
        return {"example": {"path": _hexes(self.example_path), "position": self.position, "salt": self.salt.hex(),
                            "tensors": {n: list(v) for n, v in self.tensors.items()}},
                "log": {"path": _hexes(self.log_path), "size": self.log_size},
                "rank": {"examples": self.rank_examples, "path": _hexes(self.rank_path), "rank": self.rank,
                         "ranks": self.ranks},
                "record": self.record.to_json()}

    @classmethod
    def from_json(cls, value: Any, *, max_length: int) -> StepOpening:
        v = _fields(value, {"example", "log", "rank", "record"}, "a step opening")
        ex = _fields(v["example"], {"path", "position", "salt", "tensors"}, "a step's example")
        rank = _fields(v["rank"], {"examples", "path", "rank", "ranks"}, "a step's rank")
        log = _fields(v["log"], {"path", "size"}, "a step's log")
        record = step_record_from_json(v["record"])
        if not isinstance(record, StepRecord | StepRecordV3):
            raise FormatError("a step opening needs a v2 or v3 step record (v1 batches have no per-example leaves)")
        return cls(record=record, salt=_hash(ex["salt"], "batch salt"),
                   tensors=_tensors(ex["tensors"], max_length), ranks=_count(rank["ranks"], "ranks"),
                   rank=_count(rank["rank"], "rank"), rank_examples=_count(rank["examples"], "rank examples"),
                   position=_count(ex["position"], "position"), example_path=_path(ex["path"], "example path"),
                   rank_path=_path(rank["path"], "rank path"), log_size=_count(log["size"], "log size"),
                   log_path=_path(log["path"], "log path"))


@dataclass(frozen=True, kw_only=True)
class ExampleProof:
    """A `prov.example-proof.v1` document. `log_size`: the committed step log the trainer searched."""

    chain_id: int
    registry: str
    run_key: bytes
    run_id: bytes
    manifest: dict[str, Any]
    dataset: DatasetOpening
    log_size: int
    steps: tuple[StepOpening, ...]

    def to_json(self) -> dict[str, Any]:
        return {"chain_id": self.chain_id, "dataset": self.dataset.to_json(), "format": PROOF_FORMAT,
                "log_size": self.log_size, "manifest": self.manifest, "registry": self.registry,
                "run_id": self.run_id.hex(), "run_key": self.run_key.hex(), "steps": [s.to_json() for s in self.steps]}

    def write(self, path: Path) -> None:
        """Write the proof as JSON, atomically, mode 0644 (it is meant to be handed out)."""
        atomic_write(path, (json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n").encode(), mode=0o644)

    def describe(self) -> str:
        """One line: which record, and in how many of the committed steps the trainer found it."""
        steps = [s.record.step for s in self.steps]
        return (f"record {self.dataset.index} of {self.dataset.size}: sampled in {len(steps)} of the {self.log_size} "
                f"committed steps" + (f" ({_steps_text(steps)})" if steps else ""))

    @classmethod
    def read(cls, path: Path) -> ExampleProof:
        """Parse a proof file; anything but a well-formed v1 proof is a one-line error (exit 2)."""
        data = read_input(path, missing="no such proof file", unreadable="cannot read the proof file")
        if data[:1] == b"\x80":
            raise FormatError(f"{path}: looks like a Python pickle; prov never unpickles (a proof is JSON)")
        return cls.from_json(canonical.decode(data, source=str(path), max_size=MAX_PROOF_BYTES), source=str(path))

    @classmethod
    def from_json(cls, value: Any, *, source: str = "example proof") -> ExampleProof:
        if not isinstance(value, dict) or value.get("format") != PROOF_FORMAT:
            raise FormatError(f"{source}: not a {PROOF_FORMAT} document")
        try:
            v = _fields(value, {"chain_id", "dataset", "format", "log_size", "manifest", "registry", "run_id",
                                "run_key", "steps"}, "the document")
            dataset = DatasetOpening.from_json(v["dataset"])
            if not isinstance(v["steps"], list) or not re.fullmatch(r"0x[0-9a-fA-F]{40}", str(v["registry"])):
                raise FormatError("steps must be a list and registry a 0x address")
            steps = tuple(StepOpening.from_json(s, max_length=dataset.max_length) for s in v["steps"])
            return cls(chain_id=_count(v["chain_id"], "chain id"), registry=v["registry"],
                       run_key=_hash(v["run_key"], "run key"), run_id=_hash(v["run_id"], "run id"),
                       manifest=validate_run_manifest(v["manifest"], source="run manifest"), dataset=dataset,
                       log_size=_count(v["log_size"], "log size"), steps=steps)
        except FormatError as exc:
            raise FormatError(f"{source}: malformed example proof: {exc}") from None


def _steps_text(steps: Sequence[int]) -> str:
    return ("step " if len(steps) == 1 else "steps ") + ", ".join(str(s) for s in steps)


# --- checking -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ExampleCheck:
    """What a checked proof establishes, and what it does not (each a sentence)."""

    chain_id: int
    registry: str
    run_id: str
    run_key: str
    owner: str
    index: int
    size: int
    record: dict[str, Any]
    steps: tuple[int, ...]
    tokens_checked: bool
    proves: tuple[str, ...]
    not_proven: tuple[str, ...]

    @property
    def summary(self) -> str:
        where = f"sampled in {_steps_text(self.steps)}" if self.steps else "no step opened"
        return (f"record {self.index} of {self.size} is in the training set of run {self.run_id[:12]}… "
                f"(chain {self.chain_id}, registry {self.registry}); {where}")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "holds": True, "summary": self.summary}


def check_step_opening(opening: StepOpening, *, index: int, log_roots: dict[int, bytes]) -> None:
    """Raise a VerificationError unless the opening leads from record `index`'s tensors to the step's batch
    commitment and from the step record to a committed log root (`log_roots`: size -> root)."""
    step, ranks, rank = opening.record.step, opening.ranks, opening.rank
    if not 0 <= rank < ranks:
        raise ProofError(f"step {step}: rank {rank} is not one of the step's {ranks} ranks")
    if isinstance(opening.record, StepRecord):  # a v2 record publishes the count: the shard must fit it
        start, end = batches.shard_bounds(opening.record.examples, ranks)[rank]
        if end - start != opening.rank_examples:
            raise ProofError(f"step {step}: rank {rank} of {ranks} cannot hold {opening.rank_examples} of the "
                             f"step's {opening.record.examples} examples")
    # (a v3 record keeps the count private: the rank leaf below binds the shard's count into the batch commitment)
    rank_root = merkle.root_from_inclusion_proof(opening.example_leaf(index), opening.position,
                                                 opening.rank_examples, list(opening.example_path))
    rank_leaf = batches.rank_leaf(rank=rank, examples=opening.rank_examples, root=rank_root)
    batch_root = merkle.root_from_inclusion_proof(rank_leaf, rank, ranks, list(opening.rank_path))
    digest = Digest.of(canonical.encode({"format": batches.BATCH_FORMAT, "ranks": ranks, "root": batch_root.hex(),
                                         "step": step}))
    if digest != opening.record.batch:
        raise ProofError(f"step {step}: the example's opening does not lead to the step's batch commitment",
                         expected=opening.record.batch, found=digest)
    committed = log_roots.get(opening.log_size)
    if committed is None:
        raise ProofError(f"step {step}: no checkpoint of the run committed a step log of size {opening.log_size}",
                         expected=sorted(log_roots), found=opening.log_size)
    try:
        merkle.verify_inclusion(opening.record.leaf_hash(), step, opening.log_size, list(opening.log_path), committed)
    except VerificationError as exc:
        raise ProofError(f"step {step}: its record is not in the committed step log ({exc})") from None


def _check_run(proof: ExampleProof, history: RunHistory) -> None:
    """The proof's run, manifest and dataset settings against the registered run."""
    run, manifest = history.registration, proof.manifest
    if run.run_id != proof.run_id:
        raise VerificationError("the proof is for another run", expected=run.run_id.hex(), found=proof.run_id.hex())
    digest = run_manifest_digest(manifest)
    if digest != run.manifest_digest or not run_id_of(manifest) == manifest["run_id"] == proof.run_id.hex():
        raise VerificationError("the proof's run manifest is not the one the run registered",
                                expected=run.manifest_digest, found=digest)
    owner = manifest.get("owner")
    if isinstance(owner, str) and owner.lower() != run.owner.lower():
        raise VerificationError("the run was registered by another account than its manifest names",
                                expected=owner, found=run.owner)
    dataset = manifest["dataset"]
    if Digest.parse(dataset["root"]) != run.dataset_root:
        raise VerificationError("the run's manifest commits another dataset root than the run registered",
                                expected=run.dataset_root, found=dataset["root"])
    committed = (dataset.get("kind", "text"), dataset.get("max_length"), dataset.get("size"))
    opened = (proof.dataset.kind, proof.dataset.max_length, proof.dataset.size)
    if committed != opened:
        raise VerificationError("the proof's dataset settings (kind, max_length, size) are not the run's",
                                expected=committed, found=opened)
    world = manifest["training"].get("world_size", 1)
    if any(s.ranks != world for s in proof.steps):
        raise VerificationError("a step opening names another world size than the run's", expected=world,
                                found=sorted({s.ranks for s in proof.steps}))


def check_example(proof: ExampleProof, *, registry: RegistryReader, base_model: Path | None = None) -> ExampleCheck:
    """Check `proof` against the on-chain run in `registry`; with `base_model`, also re-tokenize the record and
    compare the opened tensors. Raises a VerificationError (exit 1) naming what does not hold."""
    info = registry.chain_info()
    if (registry.address or "").lower() != proof.registry.lower() or int(info.chain_id) != proof.chain_id:
        raise VerificationError(f"the proof is for registry {proof.registry} on chain {proof.chain_id}, checked here "
                                f"against {registry.address} on chain {info.chain_id} (pass --rpc/--registry for the "
                                "proof's registry if you trust it)")
    history = registry.run(proof.run_key)
    run = history.registration
    _check_run(proof, history)
    d = proof.dataset
    root = merkle.root_from_inclusion_proof(d.leaf(), d.index, d.size, list(d.path))
    if root != run.dataset_root.value:
        raise VerificationError("the record is not in this run's committed dataset (its opening leads to another "
                                "root)", expected=run.dataset_root, found=Digest(root))
    log_roots = {0: merkle.EMPTY_ROOT, **{int(c.log_size): c.log_root.value for c in history.checkpoints}}
    if proof.log_size not in log_roots:
        raise VerificationError("the proof searched a step log the run never committed",
                                expected=sorted(log_roots), found=proof.log_size)
    steps = tuple(s.record.step for s in proof.steps)
    if list(steps) != sorted(set(steps)) or any(s >= proof.log_size for s in steps):
        raise VerificationError(f"the step openings must be distinct committed steps in order (< {proof.log_size})",
                                found=list(steps))
    if any(s.log_size != proof.log_size for s in proof.steps):
        raise VerificationError("a step opening uses another step log than the proof searched",
                                expected=proof.log_size, found=sorted({s.log_size for s in proof.steps}))
    if any(s.tensors != proof.steps[0].tensors for s in proof.steps):
        raise VerificationError("the step openings feed different tensors for the same record")
    for opening in proof.steps:
        check_step_opening(opening, index=d.index, log_roots=log_roots)
    tokens_checked = base_model is not None and bool(proof.steps)
    if base_model is not None and proof.steps:
        _check_tokens(proof, base_model=base_model, registered=run.base_model_digest)
    proves = [f"record {d.index} of {d.size} is in the dataset committed by run {proof.run_id.hex()} (registered by "
              f"{run.owner} in block {run.block_number}): its salted leaf leads to the registered dataset root "
              f"{run.dataset_root}"]
    not_proven = []
    if steps:
        proves.append(f"it was committed in the step's batch for {_steps_text(steps)}: each opening leads to the "
                      f"step's committed batch digest, and each step record to the step-log root committed for "
                      f"{proof.log_size} steps")
    else:
        not_proven.append(f"that it influenced training: the trainer opened no step (it states the record was sampled "
                          f"in none of the {proof.log_size} committed steps, which this proof cannot confirm)")
    if tokens_checked:
        proves.append(f"the tensors committed in the step's batch are this record's tokens ({d.kind}, max_length "
                      f"{d.max_length}) under the run's base-model tokenizer (that the optimizer consumed them is "
                      "proven only by replaying the step)")
    elif steps:
        not_proven.append("that the opened tensors are this record's tokens (not compared: pass --base-model)")
    return ExampleCheck(chain_id=proof.chain_id, registry=proof.registry, run_id=proof.run_id.hex(),
                        run_key=proof.run_key.hex(), owner=run.owner, index=d.index, size=d.size, record=d.record,
                        steps=steps, tokens_checked=tokens_checked, proves=tuple(proves),
                        not_proven=(*not_proven, *NEVER_PROVEN))


def _check_tokens(proof: ExampleProof, *, base_model: Path, registered: Digest) -> None:
    """The record tokenized with the run's base model (its digest checked first) equals the tensors opened."""
    from provenance.basemodel import base_model_manifest, load_tokenizer
    from provenance.determinism import installed_versions

    found = base_model_manifest(base_model).digest()
    if found != registered:
        raise UsageError(f"{base_model}: not this run's base model (digest {found}, the run registered {registered})")
    d = proof.dataset
    row = batches.tokenize_records([d.record], load_tokenizer(base_model), kind=d.kind,
                                   max_length=d.max_length).batch([0])
    differing = [n for n in batches.TENSOR_NAMES if tuple(int(x) for x in row[n][0]) != proof.steps[0].tensors[n]]
    if differing:
        versions, here = (proof.manifest.get("software") or {}).get("versions") or {}, installed_versions()
        other = [f"{n} {versions.get(n)} (here {here.get(n)})" for n in ("tokenizers", "transformers")
                 if isinstance(versions, dict) and versions.get(n) not in (None, here.get(n))]
        if other:
            raise UsageError(f"the record's tokens differ here, but the run tokenized with {', '.join(other)}: "
                             "check with those versions, or without --base-model")
        raise VerificationError(f"the tensors opened are not this record's tokens ({', '.join(differing)} differ)")
