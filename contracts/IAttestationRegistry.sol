// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/**
 * @title IAttestationRegistry
 * @notice Events, custom errors and types of the prov auditor-attestation registry: auditors register BLS keys on
 * BN254 (alt_bn128) with a proof of possession, then anchor aggregate signatures over a checkpoint committed in a
 * ProvenanceRegistry. Every signature is checked on chain with the cancun precompiles 0x05-0x08.
 *
 * Points are affine; a G2 coordinate is `[imaginary, real]` as the 0x08 precompile (EIP-197) reads it.
 * Signatures and hashed messages are in G1; each auditor has a G1 public key (aggregated on chain with 0x06) and
 * the matching G2 key (aggregated off chain and proven equal in discrete log by the pairing check).
 */
interface IAttestationRegistry {
    struct G1Point {
        uint256 x;
        uint256 y;
    }

    struct G2Point {
        uint256[2] x;
        uint256[2] y;
    }

    /// @notice What storage holds about an auditor (the G2 key and name are in {AuditorRegistered}).
    struct Auditor {
        G1Point pk1;
        bytes32 keyId;
        uint64 registeredBlock;
    }

    /// @notice What an attestation carries: the checkpoint (by its weights digest), what the auditors found (the
    /// digest of their verification result and the content address of their report, possibly empty), the signers
    /// in ascending address order, their aggregate signature and their aggregate G2 key.
    struct Attestation {
        bytes32 weightsDigest;
        bytes32 verificationDigest;
        string reportCid;
        address[] signers;
        G1Point signature;
        G2Point aggregateKey;
    }

    /// @notice Where an attestation was anchored and the hash of its record (see {attestationRecordHash}).
    struct AttestationLocation {
        uint64 blockNumber;
        bytes24 recordHash;
    }

    /// @notice `auditor` registered BLS key `keyId` (keccak256 of the ABI-encoded G2 key) under `name`.
    event AuditorRegistered(address indexed auditor, bytes32 indexed keyId, string name, G1Point pk1, G2Point pk2);

    /// @notice `attestation.signers` attested checkpoint `index` of `runId` (the one committing `weightsDigest`);
    /// the aggregate signature over `message` was checked on chain. `number` is its position among the
    /// attestations of these weights; `submitter` sent the transaction.
    event Attested(
        bytes32 indexed weightsDigest,
        bytes32 indexed runId,
        uint64 index,
        uint64 number,
        bytes32 message,
        address submitter,
        Attestation attestation
    );

    /// @notice `auditor` already registered key `keyId`; keys are never replaced.
    error AttestationRegistryAuditorAlreadyRegistered(address auditor, bytes32 keyId);

    /// @notice Key `keyId` is already registered, by `auditor`.
    error AttestationRegistryKeyAlreadyRegistered(bytes32 keyId, address auditor);

    /// @notice `(x, y)` is not a point of G1 (or is the point at infinity where a key is expected).
    error AttestationRegistryInvalidG1Point(uint256 x, uint256 y);

    /// @notice The proof of possession given by `auditor` for key `keyId` does not verify (or the G1 and G2 keys
    /// differ): the key is refused, which is what stops rogue-key attacks on aggregates.
    error AttestationRegistryInvalidProofOfPossession(address auditor, bytes32 keyId);

    /// @notice No checkpoint of the ProvenanceRegistry commits `weightsDigest`.
    error AttestationRegistryUnknownCheckpoint(bytes32 weightsDigest);

    /// @notice An attestation names no signer.
    error AttestationRegistryNoSigners();

    /// @notice `signer` appears more than once in the signer list.
    error AttestationRegistryDuplicateSigner(address signer);

    /// @notice Signers must be in ascending address order: `signer` at `position` follows `previous`.
    error AttestationRegistrySignersNotSorted(uint256 position, address previous, address signer);

    /// @notice `signer` has no registered key.
    error AttestationRegistryUnknownAuditor(address signer);

    /// @notice The aggregate signature over `message` for the checkpoint committing `weightsDigest` does not verify
    /// against the listed signers' keys (forged, a signer missing from it, or made for another checkpoint).
    error AttestationRegistryInvalidSignature(bytes32 weightsDigest, bytes32 message);

    /// @notice `weightsDigest` has no attestation `number` (it has `count`).
    error AttestationRegistryUnknownAttestation(bytes32 weightsDigest, uint256 number, uint256 count);

    /// @notice Registers the caller's BLS key after checking its proof of possession.
    function registerAuditor(string calldata name, G1Point calldata pk1, G2Point calldata pk2, G1Point calldata pop)
        external;

    /// @notice Anchors an aggregate attestation of the checkpoint committing `attestation.weightsDigest`.
    function attest(Attestation calldata attestation) external;

    /// @notice The ProvenanceRegistry whose checkpoints are attested.
    function provenanceRegistry() external view returns (address);

    /// @notice The registered key of `auditor` (a zero `keyId` if none).
    function getAuditor(address auditor) external view returns (Auditor memory);

    /// @notice How many attestations `weightsDigest` has.
    function attestationCount(bytes32 weightsDigest) external view returns (uint256);

    /// @notice Where attestation `number` of `weightsDigest` was anchored.
    function getAttestation(bytes32 weightsDigest, uint256 number) external view returns (AttestationLocation memory);

    /// @notice The message auditors sign for the checkpoint committing `weightsDigest` (reverts if there is none).
    function attestationMessage(bytes32 weightsDigest, bytes32 verificationDigest, string calldata reportCid)
        external
        view
        returns (bytes32);

    /// @notice The message a proof of possession signs: the key bound to the account registering it.
    function possessionMessage(address auditor, G1Point calldata pk1, G2Point calldata pk2)
        external
        view
        returns (bytes32);

    /// @notice Hash-to-G1 (try-and-increment) of `message` under the attestation (`pop` false) or the
    /// proof-of-possession (`pop` true) domain tag.
    function hashToG1(bytes32 message, bool pop) external view returns (G1Point memory);

    /// @notice The record hash stored for an attestation (first 24 bytes of a keccak256 over its ABI encoding).
    function attestationRecordHash(bytes32 message, address submitter, Attestation calldata attestation)
        external
        pure
        returns (bytes24);
}
