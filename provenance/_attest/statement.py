"""What auditors sign: the attestation statement (canonical JSON, `prov.attestation.v2`), the 32-byte message
AttestationRegistry recomputes from it, and the verification level and result digest it carries.

Statement fields: chain id, the ProvenanceRegistry and the AttestationRegistry addresses (no replay across chains or
deployments); run key and checkpoint index; weights digest, checkpoint digest, step-log size and root, ε (micro);
the verification level reached (`commitments`, `data`, `sampled:K/N`, `full:N`); the verification-result digest; the
report's CID ("" when not stored).

Message: `keccak256(abi.encode(keccak256("prov.attestation.v2"), chainId, provenanceRegistry, attestationRegistry,
runKey, index, weightsDigest, checkpointDigest, logSize, logRoot, epsilonMicro, keccak256(level),
verificationDigest, keccak256(reportCid)))` — exactly `AttestationRegistry.attestationMessage`.
Version 1 statements (provenance._attest.legacy) are still read, never signed or anchored.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Protocol

from provenance import canonical
from provenance._attest.errors import InvalidLevel, WrongCheckpoint
from provenance._chain.heads import run_key_of
from provenance.errors import FormatError
from provenance.hashing import Digest

__all__ = ["CHECKPOINT_FIELDS", "LEVELS", "STATEMENT_FORMAT", "CheckpointLike", "Statement", "checksum",
           "format_level", "level_covers", "level_from_report", "parse_level", "run_key_of", "stable_json",
           "verification_digest"]

STATEMENT_FORMAT = "prov.attestation.v2"
# What a verification proved, weakest first: the commitments; also the data (dataset root and every step
# recomputed); also K of N segments replayed; every segment replayed.
LEVELS = ("commitments", "data", "sampled", "full")
_LEVEL = re.compile(r"commitments|data|sampled:([1-9][0-9]{0,8})/([1-9][0-9]{0,8})|full:(0|[1-9][0-9]{0,8})")
# Report fields that differ between two honest runs of the verifier on the same checkpoint (when, where, how, and
# the attestations already anchored, which change as auditors attest).
_VOLATILE_TOP = ("generated_at", "prov_version", "store", "exit_code", "verdict_text", "next_steps", "attestations")
_VOLATILE_NESTED = {"subject": ("path", "kind"), "chain": ("rpc_url", "rpc")}
# The statement fields that name the checkpoint, in the order a mismatch is reported.
CHECKPOINT_FIELDS = ("run_key", "checkpoint_index", "weights_digest", "checkpoint_digest", "log_size", "log_root",
                     "epsilon_micro")


class _HasJson(Protocol):
    def to_json(self) -> dict[str, Any]: ...


class CheckpointLike(Protocol):
    """A verified checkpoint record, as the registry client returns it (v1 or v2)."""

    @property
    def index(self) -> int: ...
    @property
    def weights_digest(self) -> Digest: ...
    @property
    def checkpoint_digest(self) -> Digest: ...
    @property
    def log_size(self) -> int: ...
    @property
    def log_root(self) -> Digest: ...
    @property
    def epsilon_micro(self) -> int: ...


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
    if isinstance(kept.get("not_checked"), list):  # "attestations: could not be read (...)" notes
        kept["not_checked"] = [n for n in kept["not_checked"] if not str(n).startswith("attestations:")]
    return Digest.of(canonical.encode(stable_json(kept)))


# --- verification levels ---------------------------------------------------------------------------------------


def format_level(name: str, replayed: int = 0, segments: int = 0) -> str:
    """The canonical level string: `commitments`, `data`, `sampled:K/N` (1 ≤ K < N) or `full:N`. A sample of every
    segment is `full:N` and a sample of none is `data`: the string states what was proven, however it was asked."""
    if name not in LEVELS or not all(isinstance(v, int) and not isinstance(v, bool) for v in (replayed, segments)):
        raise InvalidLevel(f"unknown verification level {name!r} ({replayed!r}/{segments!r})")
    if name in ("commitments", "data"):
        return name
    if name == "sampled" and replayed == 0:
        return "data"
    if not 0 <= replayed <= segments:
        raise InvalidLevel(f"verification level {name}: replayed {replayed} of {segments} segments is impossible")
    if name == "full" and replayed != segments:
        raise InvalidLevel(f"verification level full replayed {replayed} of {segments} segments, not all")
    return f"full:{segments}" if replayed == segments else f"sampled:{replayed}/{segments}"


def parse_level(text: str) -> tuple[str, int, int]:
    """`(name, replayed, segments)` of a canonical level string; raises InvalidLevel for anything else."""
    match = _LEVEL.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidLevel(f"{text!r} is not a verification level (commitments, data, sampled:K/N or full:N)")
    if text in ("commitments", "data"):
        return text, 0, 0
    if text.startswith("full:"):
        return "full", int(match.group(3)), int(match.group(3))
    replayed, segments = int(match.group(1)), int(match.group(2))
    if replayed >= segments:
        raise InvalidLevel(f"{text!r}: a sample replays fewer segments than there are (else it is full:N)")
    return "sampled", replayed, segments


def level_from_report(report: dict[str, Any]) -> str:
    """The level a verify report reached (`report["level"]`: name, replayed, segments). A report without one (an
    older verifier) proved the commitments only, which is what it is taken to say: never more."""
    level = report.get("level")
    if level is None or report.get("format") == "prov.verify-report.v1":
        return "commitments"
    if not isinstance(level, dict):
        raise InvalidLevel(f"the verify report's level is {level!r}, not an object")
    return format_level(level.get("name", ""), level.get("replayed", 0), level.get("segments", 0))


# --- the statement ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    """An attestation statement (v2); `message()` is what every co-signer signs. `level` is checked to be canonical
    where a statement is read from a file or signed; one read from the chain keeps what was anchored (the contract
    does not parse it), and the reader reports a malformed one."""

    chain_id: int
    provenance_registry: str
    attestation_registry: str
    run_key: bytes
    checkpoint_index: int
    weights_digest: Digest
    checkpoint_digest: Digest
    log_size: int
    log_root: Digest
    epsilon_micro: int
    level: str
    verification_digest: Digest
    report_cid: str = ""

    format = STATEMENT_FORMAT

    def __post_init__(self) -> None:
        if len(self.run_key) != 32:
            raise FormatError(f"a run key is 32 bytes, got {len(self.run_key)}")
        for name in ("checkpoint_index", "log_size", "epsilon_micro"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value < 2**64:
                raise FormatError(f"statement field {name} must be a uint64, got {value!r}")
        if not isinstance(self.level, str):
            raise FormatError(f"statement field level must be a string, got {self.level!r}")

    @classmethod
    def for_checkpoint(cls, record: CheckpointLike, *, run_key: bytes, chain_id: int, provenance_registry: str,
                       attestation_registry: str, level: str, verification: Digest,
                       report_cid: str = "") -> Statement:
        """The statement for a verified checkpoint record of run `run_key`."""
        return cls(chain_id=chain_id, provenance_registry=checksum(provenance_registry),
                   attestation_registry=checksum(attestation_registry), run_key=bytes(run_key),
                   checkpoint_index=record.index, weights_digest=record.weights_digest,
                   checkpoint_digest=record.checkpoint_digest, log_size=record.log_size, log_root=record.log_root,
                   epsilon_micro=record.epsilon_micro, level=level, verification_digest=verification,
                   report_cid=report_cid).checked()

    def message(self) -> bytes:
        from eth_abi import encode
        from eth_utils import keccak

        return keccak(encode(
            ["bytes32", "uint256", "address", "address", "bytes32", "uint64", "bytes32", "bytes32", "uint64",
             "bytes32", "uint64", "bytes32", "bytes32", "bytes32"],
            [keccak(STATEMENT_FORMAT.encode()), self.chain_id, self.provenance_registry, self.attestation_registry,
             self.run_key, self.checkpoint_index, self.weights_digest.value, self.checkpoint_digest.value,
             self.log_size, self.log_root.value, self.epsilon_micro, keccak(self.level.encode("utf-8")),
             self.verification_digest.value, keccak(self.report_cid.encode("utf-8"))]))

    def abi_tuple(self) -> tuple[Any, ...]:
        """The contract's `Statement` struct."""
        return (self.run_key, self.checkpoint_index, self.weights_digest.value, self.checkpoint_digest.value,
                self.log_size, self.log_root.value, self.epsilon_micro, self.level, self.verification_digest.value,
                self.report_cid)

    def to_json(self) -> dict[str, Any]:
        return {"format": STATEMENT_FORMAT, "chain_id": self.chain_id,
                "provenance_registry": self.provenance_registry,
                "attestation_registry": self.attestation_registry, "run_key": self.run_key.hex(),
                "checkpoint_index": self.checkpoint_index, "weights_digest": str(self.weights_digest),
                "checkpoint_digest": str(self.checkpoint_digest), "log_size": self.log_size,
                "log_root": str(self.log_root), "epsilon_micro": self.epsilon_micro, "level": self.level,
                "verification_digest": str(self.verification_digest), "report_cid": self.report_cid}

    def encode(self) -> bytes:
        return canonical.encode(self.to_json())

    @classmethod
    def from_json(cls, value: Any, *, source: str = "attestation statement") -> Statement:
        try:
            if value["format"] != STATEMENT_FORMAT:
                raise FormatError(f"{source}: format {value['format']!r}, expected {STATEMENT_FORMAT}")
            return cls(chain_id=_int(value["chain_id"]), provenance_registry=checksum(value["provenance_registry"]),
                       attestation_registry=checksum(value["attestation_registry"]),
                       run_key=bytes.fromhex(value["run_key"]), checkpoint_index=_int(value["checkpoint_index"]),
                       weights_digest=Digest.parse(value["weights_digest"]),
                       checkpoint_digest=Digest.parse(value["checkpoint_digest"]), log_size=_int(value["log_size"]),
                       log_root=Digest.parse(value["log_root"]), epsilon_micro=_int(value["epsilon_micro"]),
                       level=str(value["level"]), verification_digest=Digest.parse(value["verification_digest"]),
                       report_cid=str(value["report_cid"])).checked()
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FormatError(f"{source}: malformed ({type(exc).__name__}: {exc})") from None
        except InvalidLevel as exc:
            raise FormatError(f"{source}: {exc}") from None

    def checked(self) -> Statement:
        """This statement, after checking its level is canonical (InvalidLevel otherwise)."""
        parse_level(self.level)
        return self

    def check_same(self, other: _HasJson) -> None:
        """Raise WrongCheckpoint naming the first field where `other` is another statement than this one."""
        mine, theirs = self.to_json(), other.to_json()
        for name in mine:
            if mine[name] != theirs[name]:
                raise WrongCheckpoint(f"the attestation is for another checkpoint or statement: {name} differs",
                                      expected=mine[name], found=theirs[name])

    def checkpoint_mismatch(self, record: CheckpointLike, run_key: bytes) -> tuple[str, Any, Any] | None:
        """The first checkpoint field where this statement differs from the verified `record` of run `run_key`, as
        `(field, expected, found)`; None when it names exactly that checkpoint."""
        expected = {"run_key": bytes(run_key).hex(), "checkpoint_index": record.index,
                    "weights_digest": str(record.weights_digest), "checkpoint_digest": str(record.checkpoint_digest),
                    "log_size": record.log_size, "log_root": str(record.log_root),
                    "epsilon_micro": record.epsilon_micro}
        mine = self.to_json()
        for name in CHECKPOINT_FIELDS:
            if mine[name] != expected[name]:
                return name, expected[name], mine[name]
        return None


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def checksum(address: str) -> str:
    """`address` in EIP-55 checksum form; FormatError if it is not an address."""
    from eth_utils import is_address, to_checksum_address

    if not isinstance(address, str) or not is_address(address):
        raise FormatError(f"{address!r} is not a chain address")
    return str(to_checksum_address(address))


def level_covers(mine: str, theirs: str) -> bool:
    """Whether verification level `mine` proves at least what `theirs` claims (same segment count, at least as many
    replayed): a co-signer signs another auditor's level only if their own verification reached it."""
    name, replayed, segments = parse_level(mine)
    other, other_replayed, other_segments = parse_level(theirs)
    rank = {"commitments": 0, "data": 1, "sampled": 2, "full": 2}
    if rank[name] < rank[other]:
        return False
    return other in ("commitments", "data") or (segments == other_segments and replayed >= other_replayed)
