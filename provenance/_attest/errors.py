"""Attestation errors: one class per custom error of AttestationRegistry (decoded from its 4-byte selector like the
registry's, see provenance._chain.errors), and the same rejections found off chain before anything is sent.
"""

from __future__ import annotations

from typing import Any

from provenance._chain.errors import RegistryRevert, RevertDecoder
from provenance.errors import FormatError, Rejected, VerificationError

_PREFIX = "AttestationRegistry"


class AttestationRevert(RegistryRevert):
    """The AttestationRegistry refused a call with one of its custom errors."""

    template = "the attestation registry reverted"


class UnsupportedRegistry(AttestationRevert):
    solidity = f"{_PREFIX}UnsupportedRegistry"
    template = ("{registry} is not a ProvenanceRegistry of version 2 (it answered version {version}); deploy the "
                "AttestationRegistry beside a version 2 registry")


class AuditorAlreadyRegistered(AttestationRevert):
    solidity = f"{_PREFIX}AuditorAlreadyRegistered"
    template = "auditor {auditor} already has the active key {keyId}; rotate it (`prov keys rotate`) instead"


class KeyAlreadyRegistered(AttestationRevert):
    solidity = f"{_PREFIX}KeyAlreadyRegistered"
    template = "key {keyId} is already registered by {auditor}; keys are never shared or reused (make a new one)"


class NoActiveKey(AttestationRevert):
    solidity = f"{_PREFIX}NoActiveKey"
    template = "auditor {auditor} has no active key to rotate; register one with `prov keys register`"


class NotKeyOwner(AttestationRevert):
    solidity = f"{_PREFIX}NotKeyOwner"
    template = "{caller} cannot revoke key {keyId}: it belongs to {owner} (the zero address: no such key)"


class KeyAlreadyRevoked(AttestationRevert):
    solidity = f"{_PREFIX}KeyAlreadyRevoked"
    template = "key {keyId} was already revoked in block {revokedBlock}"


class InvalidG1Point(AttestationRevert):
    solidity = f"{_PREFIX}InvalidG1Point"
    template = "({x}, {y}) is not a BN254 G1 point (or is infinity where a key is expected)"


class InvalidProofOfPossession(AttestationRevert):
    solidity = f"{_PREFIX}InvalidProofOfPossession"
    template = ("auditor {auditor}: the proof of possession for key {keyId} does not verify; the key is refused "
                "(a key without proof of possession could cancel other keys in an aggregate)")


class UnknownAttestedRun(AttestationRevert):
    solidity = f"{_PREFIX}UnknownRun"
    template = "the provenance registry has no run under key {runKey}"


class UnknownAttestedCheckpoint(AttestationRevert):
    solidity = f"{_PREFIX}UnknownCheckpoint"
    template = "run {runKey} has {checkpointCount} checkpoint(s), so no checkpoint {index}"


class NoSigners(AttestationRevert):
    solidity = f"{_PREFIX}NoSigners"
    template = "an attestation needs at least one signer"


class DuplicateSigner(AttestationRevert):
    solidity = f"{_PREFIX}DuplicateSigner"
    template = "signer {signer} is listed twice; each auditor signs once"


class SignersNotSorted(AttestationRevert):
    solidity = f"{_PREFIX}SignersNotSorted"
    template = "signers must be in ascending address order: {signer} at position {position} follows {previous}"


class UnknownAuditor(AttestationRevert):
    solidity = f"{_PREFIX}UnknownAuditor"
    template = "signer {signer} has no registered key (register it with its proof of possession first)"


class KeyRevoked(AttestationRevert):
    solidity = f"{_PREFIX}KeyRevoked"
    template = "signer {signer}'s current key {keyId} is revoked; register a new key to attest again"


class AlreadyAttested(AttestationRevert):
    solidity = f"{_PREFIX}AlreadyAttested"
    template = "{signer} already attested this statement (message {message}); each auditor records it once"


class InvalidSignature(AttestationRevert):
    solidity = f"{_PREFIX}InvalidSignature"
    template = ("the aggregate signature over message {message} (weights sha256:{weightsDigest}) does not verify "
                "against the listed signers' current keys (forged, a signer missing, or made for another statement)")


class UnknownAttestation(AttestationRevert):
    solidity = f"{_PREFIX}UnknownAttestation"
    template = "weights sha256:{weightsDigest} have no attestation {number} (they have {count})"


REVERT_CLASSES: tuple[type[AttestationRevert], ...] = (
    UnsupportedRegistry, AuditorAlreadyRegistered, KeyAlreadyRegistered, NoActiveKey, NotKeyOwner,
    KeyAlreadyRevoked, InvalidG1Point, InvalidProofOfPossession, UnknownAttestedRun, UnknownAttestedCheckpoint,
    NoSigners, DuplicateSigner, SignersNotSorted, UnknownAuditor, KeyRevoked, AlreadyAttested, InvalidSignature,
    UnknownAttestation,
)


class AttestationRevertDecoder(RevertDecoder):
    """The registry's selector decoder, mapping AttestationRegistry's custom errors to the classes above."""

    def __init__(self, abi_errors: list[dict[str, Any]]) -> None:
        super().__init__(abi_errors, REVERT_CLASSES, contract="attestation")


# --- off-chain rejections ------------------------------------------------------------------------------------------


class AttestationError(VerificationError):
    """An attestation (or one auditor's part of it) is refused; the message says why."""


class NotVerified(Rejected):
    """`prov attest` refuses to sign: the verifier did not return `verified` (failed, inconclusive or error)."""


class InvalidLevel(FormatError):
    """A verification level is not one of `commitments`, `sampled:K/N` (1 ≤ K < N) or `full:N`."""


class LegacyStatement(AttestationError):
    """A version 1 statement: readable, but it can no longer be signed, aggregated or anchored."""


class WrongCheckpoint(AttestationError):
    """The attestation was made for another checkpoint (or another chain or registry) than the one named."""


class ForgedSignature(AttestationError):
    """A signature does not verify against the key it claims."""


class MissingSignature(AttestationError):
    """A signer is listed but did not contribute to the aggregate (or contributed without being listed)."""


class DuplicateSignature(AttestationError):
    """The same auditor key signs twice in one aggregate."""


class MissingProofOfPossession(AttestationError):
    """A listed signer has no key registered (with a proof of possession), so their part cannot be aggregated."""


class SignerKeyMismatch(AttestationError):
    """A part names a signer but carries another key than the one that signer registered."""


class RevokedKey(AttestationError):
    """A signer's key is revoked (or retired by a rotation): it signs nothing new."""


class LevelNotReached(AttestationError):
    """A co-signer's own verification did not reach the level the statement to co-sign claims."""
