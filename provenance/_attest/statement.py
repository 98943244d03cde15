"""What auditors sign: the attestation statement (canonical JSON, `prov.attestation.v1`) and the 32-byte message
derived from it, which AttestationRegistry recomputes on chain from the checkpoint it finds by weights digest.

Statement fields: chain id and ProvenanceRegistry address; run id and checkpoint index; weights digest, checkpoint
digest, step-log size and root, and the checkpoint's on-chain record hash (which covers all of them and ε, the
manifest CID and the committer); the verification-result digest; the report's CID ("" when not stored).

Message: `keccak256(abi.encode(keccak256("prov.attestation.v1"), chainId, registry, runId, index, weightsDigest,
recordHash, verificationDigest, keccak256(reportCid)))` — exactly `AttestationRegistry.attestationMessage`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from provenance import canonical
from provenance._attest.errors import WrongCheckpoint
from provenance._chain.records import checkpoint_record_hash
from provenance.errors import FormatError
from provenance.hashing import Digest

STATEMENT_FORMAT = "prov.attestation.v1"
# Report fields that differ between two honest runs of the verifier on the same checkpoint (when, where, how).
_VOLATILE_TOP = ("generated_at", "prov_version", "store", "exit_code", "verdict_text")
_VOLATILE_NESTED = {"subject": ("path", "kind"), "chain": ("rpc_url",)}


def stable_json(value: Any) -> Any:
    """`value` with floats as their repr strings (canonical JSON has no floats)."""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {k: stable_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [stable_json(v) for v in value]
    return value


def verification_digest(report: dict[str, Any]) -> Digest:
    """SHA-256 of the canonical verify report without its volatile fields (time, tool version, local paths, RPC URL,
    store backend), so two auditors verifying the same checkpoint with the same options get the same digest."""
    kept = {k: v for k, v in report.items() if k not in _VOLATILE_TOP}
    for section, fields in _VOLATILE_NESTED.items():
        if isinstance(kept.get(section), dict):
            kept[section] = {k: v for k, v in kept[section].items() if k not in fields}
    return Digest.of(canonical.encode(stable_json(kept)))


@dataclass(frozen=True)
class Statement:
    """An attestation statement; `message()` is what every co-signer signs."""

    chain_id: int
    registry: str
    run_id: bytes
    checkpoint_index: int
    weights_digest: Digest
    checkpoint_digest: Digest
    log_size: int
    log_root: Digest
    record_hash: bytes
    verification_digest: Digest
    report_cid: str = ""

    @classmethod
    def for_checkpoint(cls, record: Any, *, chain_id: int, registry: str, verification: Digest,
                       report_cid: str = "") -> Statement:
        """The statement for a registry CheckpointRecord (its record hash recomputed from the checked event)."""
        record_hash = checkpoint_record_hash(
            record.run_id, record.index, weights_digest=record.weights_digest.value,
            checkpoint_digest=record.checkpoint_digest.value, log_size=record.log_size,
            log_root=record.log_root.value, epsilon_micro=record.epsilon_micro, manifest_cid=record.manifest_cid,
            committer=record.committer)
        return cls(chain_id=chain_id, registry=_checksum(registry), run_id=record.run_id,
                   checkpoint_index=record.index, weights_digest=record.weights_digest,
                   checkpoint_digest=record.checkpoint_digest, log_size=record.log_size, log_root=record.log_root,
                   record_hash=record_hash, verification_digest=verification, report_cid=report_cid)

    def message(self) -> bytes:
        from eth_abi import encode
        from eth_utils import keccak

        return keccak(encode(
            ["bytes32", "uint256", "address", "bytes32", "uint64", "bytes32", "bytes24", "bytes32", "bytes32"],
            [keccak(STATEMENT_FORMAT.encode()), self.chain_id, self.registry, self.run_id, self.checkpoint_index,
             self.weights_digest.value, self.record_hash, self.verification_digest.value,
             keccak(self.report_cid.encode("utf-8"))]))

    def to_json(self) -> dict[str, Any]:
        return {"format": STATEMENT_FORMAT, "chain_id": self.chain_id, "registry": self.registry,
                "run_id": self.run_id.hex(), "checkpoint_index": self.checkpoint_index,
                "weights_digest": str(self.weights_digest), "checkpoint_digest": str(self.checkpoint_digest),
                "log_size": self.log_size, "log_root": str(self.log_root),
                "record_hash": "0x" + self.record_hash.hex(),
                "verification_digest": str(self.verification_digest), "report_cid": self.report_cid}

    def encode(self) -> bytes:
        return canonical.encode(self.to_json())

    @classmethod
    def from_json(cls, value: Any, *, source: str = "attestation statement") -> Statement:
        try:
            if value["format"] != STATEMENT_FORMAT:
                raise FormatError(f"{source}: format {value['format']!r}, expected {STATEMENT_FORMAT}")
            record_hash = bytes.fromhex(value["record_hash"].removeprefix("0x"))
            if len(record_hash) != 24:
                raise FormatError(f"{source}: record_hash is 24 bytes")
            run_id = bytes.fromhex(value["run_id"])
            if len(run_id) != 32:
                raise FormatError(f"{source}: run_id is 32 bytes")
            return cls(chain_id=int(value["chain_id"]), registry=_checksum(value["registry"]), run_id=run_id,
                       checkpoint_index=int(value["checkpoint_index"]),
                       weights_digest=Digest.parse(value["weights_digest"]),
                       checkpoint_digest=Digest.parse(value["checkpoint_digest"]), log_size=int(value["log_size"]),
                       log_root=Digest.parse(value["log_root"]), record_hash=record_hash,
                       verification_digest=Digest.parse(value["verification_digest"]),
                       report_cid=str(value["report_cid"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FormatError(f"{source}: malformed ({type(exc).__name__}: {exc})") from None

    def check_same_checkpoint(self, other: Statement) -> None:
        """Raise WrongCheckpoint naming the first field where `other` is about something else than this one."""
        mine, theirs = self.to_json(), other.to_json()
        for name in ("chain_id", "registry", "run_id", "checkpoint_index", "weights_digest", "checkpoint_digest",
                     "log_size", "log_root", "record_hash", "verification_digest", "report_cid"):
            if mine[name] != theirs[name]:
                raise WrongCheckpoint(f"the attestation is for another checkpoint or statement: {name} differs",
                                      expected=mine[name], found=theirs[name])


def _checksum(address: str) -> str:
    from eth_utils import is_address, to_checksum_address

    if not isinstance(address, str) or not is_address(address):
        raise FormatError(f"{address!r} is not a chain address")
    return str(to_checksum_address(address))
