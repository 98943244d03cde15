"""Attestation errors: one class per custom error of AttestationRegistry (decoded from its 4-byte selector like the
registry's, see provenance._chain.errors), and the same rejections found off chain before anything is sent.
"""

from __future__ import annotations

from typing import Any

from provenance._chain.errors import RegistryRevert, RevertDecoder
from provenance.errors import ProvenanceError, VerificationError

_PREFIX = "AttestationRegistry"


class AttestationRevert(RegistryRevert):
    """The AttestationRegistry refused a call with one of its custom errors."""

    template = "the attestation registry reverted"


class AuditorAlreadyRegistered(AttestationRevert):
    solidity = f"{_PREFIX}AuditorAlreadyRegistered"
    template = "auditor {auditor} already registered key {keyId}; keys are never replaced"


class KeyAlreadyRegistered(AttestationRevert):
    solidity = f"{_PREFIX}KeyAlreadyRegistered"
    template = "key {keyId} is already registered by {auditor}"


class InvalidG1Point(AttestationRevert):
    solidity = f"{_PREFIX}InvalidG1Point"
    template = "({x}, {y}) is not a BN254 G1 point (or is infinity where a key is expected)"


class InvalidProofOfPossession(AttestationRevert):
    solidity = f"{_PREFIX}InvalidProofOfPossession"
    template = ("auditor {auditor}: the proof of possession for key {keyId} does not verify; the key is refused "
                "(a key without proof of possession could cancel other keys in an aggregate)")


class UnknownAttestedCheckpoint(AttestationRevert):
    solidity = f"{_PREFIX}UnknownCheckpoint"
    template = "no checkpoint in the provenance registry commits weights sha256:{weightsDigest}"


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


class InvalidSignature(AttestationRevert):
    solidity = f"{_PREFIX}InvalidSignature"
    template = ("the aggregate signature over message {message} for weights sha256:{weightsDigest} does not verify "
                "against the listed signers' keys (forged, a signer missing, or made for another checkpoint)")


class UnknownAttestation(AttestationRevert):
    solidity = f"{_PREFIX}UnknownAttestation"
    template = "weights sha256:{weightsDigest} have no attestation {number} (they have {count})"


REVERT_CLASSES: tuple[type[AttestationRevert], ...] = (
    AuditorAlreadyRegistered, KeyAlreadyRegistered, InvalidG1Point, InvalidProofOfPossession,
    UnknownAttestedCheckpoint, NoSigners, DuplicateSigner, SignersNotSorted, UnknownAuditor, InvalidSignature,
    UnknownAttestation,
)


class AttestationRevertDecoder(RevertDecoder):
    """The registry's selector decoder, mapping AttestationRegistry's custom errors to the classes above."""

    def __init__(self, abi_errors: list[dict[str, Any]]) -> None:
        super().__init__(abi_errors, REVERT_CLASSES, contract="attestation")


# --- off-chain rejections ------------------------------------------------------------------------------------------


class AttestationError(VerificationError):
    """An attestation (or one auditor's part of it) is refused; the message says why."""


class NotVerified(ProvenanceError):
    """`prov attest` refuses to sign: the verifier did not return `verified`."""

    exit_code = 1


class WrongCheckpoint(AttestationError):
    """The attestation was made for another checkpoint (or another chain or registry) than the one named."""


class ForgedSignature(AttestationError):
    """A signature does not verify against the key it claims."""


class MissingSignature(AttestationError):
    """A signer is listed but did not contribute to the aggregate (or contributed without being listed)."""


class DuplicateSignature(AttestationError):
    """The same auditor key signs twice in one aggregate."""


class MissingProofOfPossession(AttestationError):
    """A key comes without a valid proof of possession, so it cannot be aggregated safely."""
