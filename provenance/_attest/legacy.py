"""Version 1 attestation statements (`prov.attestation.v1`), kept readable so old signed-attestation files still
open and their signatures can still be checked off chain. They cannot be signed, aggregated or anchored any more:
v1 named a checkpoint through ProvenanceRegistry v1's per-checkpoint record hash, which v2 no longer stores, and
bound neither the AttestationRegistry nor the verification level.

v1 message: `keccak256(abi.encode(keccak256("prov.attestation.v1"), chainId, registry, runId, index, weightsDigest,
recordHash, verificationDigest, keccak256(reportCid)))`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from provenance._attest.errors import WrongCheckpoint
from provenance._attest.statement import checksum
from provenance.errors import FormatError
from provenance.hashing import Digest

STATEMENT_V1_FORMAT = "prov.attestation.v1"


@dataclass(frozen=True)
class StatementV1:
    """A version 1 statement, read from an old file (read-only: see the module docstring)."""

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

    format = STATEMENT_V1_FORMAT

    def message(self) -> bytes:
        from eth_abi import encode
        from eth_utils import keccak

        return keccak(encode(
            ["bytes32", "uint256", "address", "bytes32", "uint64", "bytes32", "bytes24", "bytes32", "bytes32"],
            [keccak(STATEMENT_V1_FORMAT.encode()), self.chain_id, self.registry, self.run_id, self.checkpoint_index,
             self.weights_digest.value, self.record_hash, self.verification_digest.value,
             keccak(self.report_cid.encode("utf-8"))]))

    def to_json(self) -> dict[str, Any]:
        return {"format": STATEMENT_V1_FORMAT, "chain_id": self.chain_id, "registry": self.registry,
                "run_id": self.run_id.hex(), "checkpoint_index": self.checkpoint_index,
                "weights_digest": str(self.weights_digest), "checkpoint_digest": str(self.checkpoint_digest),
                "log_size": self.log_size, "log_root": str(self.log_root),
                "record_hash": "0x" + self.record_hash.hex(),
                "verification_digest": str(self.verification_digest), "report_cid": self.report_cid}

    @classmethod
    def from_json(cls, value: Any, *, source: str = "attestation statement") -> StatementV1:
        try:
            if value["format"] != STATEMENT_V1_FORMAT:
                raise FormatError(f"{source}: format {value['format']!r}, expected {STATEMENT_V1_FORMAT}")
            record_hash = bytes.fromhex(value["record_hash"].removeprefix("0x"))
            run_id = bytes.fromhex(value["run_id"])
            if len(record_hash) != 24 or len(run_id) != 32:
                raise FormatError(f"{source}: record_hash is 24 bytes and run_id 32")
            return cls(chain_id=int(value["chain_id"]), registry=checksum(value["registry"]), run_id=run_id,
                       checkpoint_index=int(value["checkpoint_index"]),
                       weights_digest=Digest.parse(value["weights_digest"]),
                       checkpoint_digest=Digest.parse(value["checkpoint_digest"]), log_size=int(value["log_size"]),
                       log_root=Digest.parse(value["log_root"]), record_hash=record_hash,
                       verification_digest=Digest.parse(value["verification_digest"]),
                       report_cid=str(value["report_cid"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FormatError(f"{source}: malformed ({type(exc).__name__}: {exc})") from None

    def check_same(self, other: Any) -> None:
        """Raise WrongCheckpoint naming the first field where `other` is another statement than this one."""
        mine, theirs = self.to_json(), other.to_json()
        for name in mine:
            if mine[name] != theirs.get(name):
                raise WrongCheckpoint(f"the attestation is for another checkpoint or statement: {name} differs",
                                      expected=mine[name], found=theirs.get(name))
