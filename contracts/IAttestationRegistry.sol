// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/**
 * @title IAttestationRegistry (version 2)
 * @notice Events, custom errors and types of the prov auditor-attestation registry: auditors register BLS keys on
 * BN254 (alt_bn128) with a proof of possession, rotate and revoke them, and anchor aggregate signatures over a
 * statement about a checkpoint of a ProvenanceRegistry (version 2) run. Every signature is checked on chain with
 * the cancun precompiles 0x05-0x08.
 *
 * Points are affine; a G2 coordinate is `[imaginary, real]` as the 0x08 precompile (EIP-197) reads it.
 * Signatures and hashed messages are in G1; each key has a G1 part (aggregated on chain with 0x06) and a G2 part
 * (aggregated off chain and proven equal in discrete log by the pairing check).
 *
 * **Statement `prov.attestation.v2`** (what auditors sign): the message is
 * `keccak256(abi.encode(keccak256("prov.attestation.v2"), chainId, provenanceRegistry, address(this), runKey, index,
 * weightsDigest, checkpointDigest, logSize, logRoot, epsilonMicro, keccak256(level), verificationDigest,
 * keccak256(reportCid)))`, so a signature is bound to one chain, one pair of deployments and one checkpoint.
 * On chain only the run and the index are checked against the ProvenanceRegistry (the run exists and `index` is
 * below its checkpoint count): version 2 keeps no per-checkpoint record in storage, only a hash-chained head per
 * run, so the other fields are checked off chain against the run's verified history (docs/attestations.md).
 *
 * **Keys.** One current key per auditor. Rotation registers a new key (with its own proof of possession) and
 * retires the old one at that block: attestations recorded with it stay valid, new ones need the new key.
 * Revocation marks a key revoked: its attestations, past and future, are reported as revoked and new ones are
 * refused. Keys are never deleted or reused.
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

    /// @notice The statement fields an attestation carries (the chain id and both registry addresses are added by
    /// the contract). `level` is the verification level reached: `commitments`, `sampled:K/N` or `full:N`.
    struct Statement {
        bytes32 runKey;
        uint64 index;
        bytes32 weightsDigest;
        bytes32 checkpointDigest;
        uint64 logSize;
        bytes32 logRoot;
        uint64 epsilonMicro;
        string level;
        bytes32 verificationDigest;
        string reportCid;
    }

    /// @notice An attestation: the statement, the signers in ascending address order, their aggregate signature
    /// over the statement's message and their aggregate G2 key.
    struct Attestation {
        Statement statement;
        address[] signers;
        G1Point signature;
        G2Point aggregateKey;
    }

    /// @notice What storage holds about a key (its G2 part and name are in {AuditorRegistered}). `auditorNumber`
    /// numbers auditors in the order of their first registration (1, 2, ...; every key of an auditor has the same);
    /// `retiredBlock` is set when the auditor rotated to another key, `revokedBlock` when they revoked this one.
    struct Key {
        address auditor;
        uint32 auditorNumber;
        uint64 revokedBlock;
        uint64 registeredBlock;
        uint64 retiredBlock;
        G1Point pk1;
    }

    /// @notice Where an attestation was anchored and the hash of its record (see {attestationRecordHash}).
    struct AttestationLocation {
        uint64 blockNumber;
        bytes24 recordHash;
    }

    /// @notice `auditor` registered key `keyId` (keccak256 of the ABI-encoded G2 key) under `name`, as a first key,
    /// after a revocation, or in a rotation (then {AuditorKeyRotated} follows).
    event AuditorRegistered(address indexed auditor, bytes32 indexed keyId, string name, G1Point pk1, G2Point pk2);

    /// @notice `auditor` replaced `previousKeyId` by `keyId`; the previous key was retired in this block.
    event AuditorKeyRotated(address indexed auditor, bytes32 indexed previousKeyId, bytes32 indexed keyId);

    /// @notice `auditor` revoked `keyId`: every attestation signed with it is to be reported as revoked.
    event AuditorKeyRevoked(address indexed auditor, bytes32 indexed keyId);

    /// @notice `attestation.signers`, with keys `keyIds`, attested checkpoint `index` of `runKey` (the statement's
    /// fields); the aggregate signature over `message` was checked on chain. `number` is its position among the
    /// attestations of `weightsDigest`; `submitter` sent the transaction.
    event Attested(
        bytes32 indexed weightsDigest,
        bytes32 indexed runKey,
        bytes32 indexed message,
        uint64 number,
        address submitter,
        bytes32[] keyIds,
        Attestation attestation
    );

    /// @notice `registry` is not a ProvenanceRegistry of version 2 or 3 (it answered `version`; 0 for no answer).
    error AttestationRegistryUnsupportedRegistry(address registry, uint256 version);

    /// @notice `auditor` already has the active key `keyId`: rotate it instead of registering another.
    error AttestationRegistryAuditorAlreadyRegistered(address auditor, bytes32 keyId);

    /// @notice Key `keyId` is already registered, by `auditor`; keys are never shared or reused.
    error AttestationRegistryKeyAlreadyRegistered(bytes32 keyId, address auditor);

    /// @notice `auditor` has no active key to rotate (none registered, or the current one is revoked).
    error AttestationRegistryNoActiveKey(address auditor);

    /// @notice `caller` cannot revoke `keyId`: it belongs to `owner` (the zero address for an unknown key).
    error AttestationRegistryNotKeyOwner(bytes32 keyId, address caller, address owner);

    /// @notice `keyId` was already revoked in block `revokedBlock`.
    error AttestationRegistryKeyAlreadyRevoked(bytes32 keyId, uint64 revokedBlock);

    /// @notice `(x, y)` is not a point of G1 (or is the point at infinity where a key is expected).
    error AttestationRegistryInvalidG1Point(uint256 x, uint256 y);

    /// @notice The proof of possession given by `auditor` for key `keyId` does not verify (or the G1 and G2 keys
    /// differ): the key is refused, which is what stops rogue-key attacks on aggregates.
    error AttestationRegistryInvalidProofOfPossession(address auditor, bytes32 keyId);

    /// @notice The ProvenanceRegistry has no run under `runKey`.
    error AttestationRegistryUnknownRun(bytes32 runKey);

    /// @notice Run `runKey` has `checkpointCount` checkpoints, so no checkpoint `index`.
    error AttestationRegistryUnknownCheckpoint(bytes32 runKey, uint64 index, uint64 checkpointCount);

    /// @notice An attestation names no signer.
    error AttestationRegistryNoSigners();

    /// @notice `signer` appears more than once in the signer list.
    error AttestationRegistryDuplicateSigner(address signer);

    /// @notice Signers must be in ascending address order: `signer` at `position` follows `previous`.
    error AttestationRegistrySignersNotSorted(uint256 position, address previous, address signer);

    /// @notice `signer` never registered a key.
    error AttestationRegistryUnknownAuditor(address signer);

    /// @notice `signer`'s current key `keyId` is revoked: it signs nothing new.
    error AttestationRegistryKeyRevoked(address signer, bytes32 keyId);

    /// @notice `signer` already attested the statement with this `message`: each auditor records a statement once,
    /// so replaying an attestation (or a part of one) cannot make readers check it again.
    error AttestationRegistryAlreadyAttested(bytes32 message, address signer);

    /// @notice The aggregate signature over `message` (a statement about `weightsDigest`) does not verify against
    /// the listed signers' current keys (forged, a signer missing from it, or made for another statement).
    error AttestationRegistryInvalidSignature(bytes32 weightsDigest, bytes32 message);

    /// @notice `weightsDigest` has no attestation `number` (it has `count`).
    error AttestationRegistryUnknownAttestation(bytes32 weightsDigest, uint256 number, uint256 count);

    /// @notice Registers the caller's first key (or a new one after revoking the current one), after checking its
    /// proof of possession.
    function registerAuditor(string calldata name, G1Point calldata pk1, G2Point calldata pk2, G1Point calldata pop)
        external;

    /// @notice Replaces the caller's active key by a new one (with its proof of possession).
    function rotateKey(string calldata name, G1Point calldata pk1, G2Point calldata pk2, G1Point calldata pop)
        external;

    /// @notice Revokes one of the caller's keys (current or retired).
    function revokeKey(bytes32 keyId) external;

    /// @notice Anchors an aggregate attestation of a checkpoint.
    function attest(Attestation calldata attestation) external;

    /// @notice The ProvenanceRegistry whose checkpoints are attested.
    function provenanceRegistry() external view returns (address);

    /// @notice The current key id of `auditor` (zero if none; it may be revoked, see {getKey}).
    function currentKey(address auditor) external view returns (bytes32);

    /// @notice What storage holds about key `keyId` (a zero auditor if unknown).
    function getKey(bytes32 keyId) external view returns (Key memory);

    /// @notice How many attestations name `weightsDigest`.
    function attestationCount(bytes32 weightsDigest) external view returns (uint256);

    /// @notice Where attestation `number` of `weightsDigest` was anchored.
    function getAttestation(bytes32 weightsDigest, uint256 number) external view returns (AttestationLocation memory);

    /// @notice Whether `signer` (with any of their keys) has attested the statement with this `message`.
    function hasAttested(bytes32 message, address signer) external view returns (bool);

    /// @notice The message auditors sign for `statement` on this deployment.
    function attestationMessage(Statement calldata statement) external view returns (bytes32);

    /// @notice The message a proof of possession signs: the key bound to the account registering it.
    function possessionMessage(address auditor, G1Point calldata pk1, G2Point calldata pk2)
        external
        view
        returns (bytes32);

    /// @notice Hash-to-G1 (try-and-increment) of `message` under the attestation (`pop` false) or the
    /// proof-of-possession (`pop` true) domain tag.
    function hashToG1(bytes32 message, bool pop) external view returns (G1Point memory);

    /// @notice The record hash stored for an attestation (first 24 bytes of a keccak256 over its ABI encoding).
    function attestationRecordHash(
        bytes32 message,
        uint64 number,
        address submitter,
        bytes32[] calldata keyIds,
        Attestation calldata attestation
    ) external pure returns (bytes24);
}
