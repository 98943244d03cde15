// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/**
 * @title IProvenanceRegistry
 * @notice Events, custom errors and types of the prov training-provenance registry.
 *
 * A run is registered once with its commitments (run-manifest digest, base-model digest, dataset root,
 * noise-seed commitment, manifest content address) before training starts. Checkpoints are then committed with
 * a strictly sequential index, and the run can be finalized. Digests are SHA-256 (32 bytes); ε is fixed point in
 * micro-epsilon (ε × 10^6, rounded up); content addresses are CIDv1 strings.
 *
 * Storage holds what look-ups and the rules need: per checkpoint one slot `(block number, record hash)` and one
 * slot for the weights digest. The full record is emitted in an event; a client reads the event at the stored
 * block and checks it against the stored record hash (see {checkpointRecordHash}).
 */
interface IProvenanceRegistry {
    /// @notice The values a checkpoint commits to, as emitted in {CheckpointCommitted}.
    struct CheckpointData {
        bytes32 weightsDigest;
        bytes32 checkpointDigest;
        uint64 logSize;
        bytes32 logRoot;
        uint64 epsilonMicro;
        string manifestCid;
        address committer;
    }

    /// @notice What storage holds about a run.
    struct RunState {
        address owner;
        uint64 runNumber;
        uint64 registeredBlock;
        bytes24 recordHash;
        uint64 checkpointCount;
        uint64 logSize;
        uint64 epsilonMicro;
        bool finalized;
    }

    /// @notice Where a checkpoint was committed and the hash of its record.
    struct CheckpointLocation {
        bytes32 runId;
        uint64 index;
        uint64 blockNumber;
        bytes24 recordHash;
    }

    /// @notice A run was registered by `owner` with its commitments.
    event RunRegistered(
        bytes32 indexed runId,
        address indexed owner,
        bytes32 manifestDigest,
        bytes32 baseModelDigest,
        bytes32 datasetRoot,
        bytes32 noiseSeedCommitment,
        string manifestCid
    );

    /// @notice The owner of `runId` authorised `writer` to commit checkpoints and finalize.
    event WriterAuthorized(bytes32 indexed runId, address indexed writer);

    /// @notice The owner of `runId` withdrew `writer`'s authorisation.
    event WriterRevoked(bytes32 indexed runId, address indexed writer);

    /// @notice Checkpoint `index` of `runId` was committed by `committer`.
    event CheckpointCommitted(
        bytes32 indexed runId,
        uint64 indexed index,
        bytes32 indexed weightsDigest,
        bytes32 checkpointDigest,
        uint64 logSize,
        bytes32 logRoot,
        uint64 epsilonMicro,
        string manifestCid,
        address committer
    );

    /// @notice `runId` was closed by `by` after `checkpointCount` checkpoints; nothing can be written to it again.
    event RunFinalized(
        bytes32 indexed runId,
        address indexed by,
        uint64 checkpointCount,
        uint64 logSize,
        uint64 epsilonMicro
    );

    /// @notice `caller` is neither the owner of `runId` nor a writer it authorised (or, for owner-only calls,
    /// not the owner).
    error ProvenanceRegistryUnauthorized(address caller, bytes32 runId);

    /// @notice `runId` was already registered, by `owner`.
    error ProvenanceRegistryRunAlreadyRegistered(bytes32 runId, address owner);

    /// @notice `runId` was never registered.
    error ProvenanceRegistryUnknownRun(bytes32 runId);

    /// @notice `runId` is zero, which is reserved for "none".
    error ProvenanceRegistryInvalidRunId(bytes32 runId);

    /// @notice A content address (CID) for `runId` is empty.
    error ProvenanceRegistryEmptyContentAddress(bytes32 runId);

    /// @notice `writer` cannot be authorised for `runId` (the zero address).
    error ProvenanceRegistryInvalidWriter(bytes32 runId, address writer);

    /// @notice `runId` is finalized: nothing more can be written to it.
    error ProvenanceRegistryRunFinalized(bytes32 runId);

    /// @notice The next checkpoint of `runId` must have index `expected`, not `given`.
    error ProvenanceRegistryNonSequentialIndex(bytes32 runId, uint64 expected, uint64 given);

    /// @notice The step log of `runId` would shrink from `previousSize` to `givenSize`.
    error ProvenanceRegistryLogShrank(bytes32 runId, uint64 previousSize, uint64 givenSize);

    /// @notice ε spent by `runId` would decrease from `previousMicro` to `givenMicro`.
    error ProvenanceRegistryEpsilonDecreased(bytes32 runId, uint64 previousMicro, uint64 givenMicro);

    /// @notice `weightsDigest` is already claimed by checkpoint `index` of `runId`.
    error ProvenanceRegistryWeightsAlreadyCommitted(bytes32 weightsDigest, bytes32 runId, uint64 index);

    /// @notice `runId` has no checkpoint `index` (it has `count`).
    error ProvenanceRegistryUnknownCheckpoint(bytes32 runId, uint64 index, uint64 count);

    /// @notice The checkpoint data given for (`runId`, `index`) hashes to `given`, not the stored `stored`.
    error ProvenanceRegistryRecordMismatch(bytes32 runId, uint64 index, bytes24 stored, bytes24 given);

    /// @notice An inclusion proof of `proofLength` nodes for leaf `leafIndex` in a tree of `treeSize` leaves is
    /// malformed (index out of range, or too few or too many nodes).
    error ProvenanceRegistryInvalidProof(uint256 leafIndex, uint256 treeSize, uint256 proofLength);

    /// @notice Registers `runId` with its commitments; the sender becomes its owner.
    function registerRun(
        bytes32 runId,
        bytes32 manifestDigest,
        bytes32 baseModelDigest,
        bytes32 datasetRoot,
        bytes32 noiseSeedCommitment,
        string calldata manifestCid
    ) external;

    /// @notice Authorises `writer` to commit checkpoints to and finalize `runId`.
    function authorizeWriter(bytes32 runId, address writer) external;

    /// @notice Withdraws `writer`'s authorisation for `runId`.
    function revokeWriter(bytes32 runId, address writer) external;

    /// @notice Commits checkpoint `index` of `runId`.
    function commitCheckpoint(
        bytes32 runId,
        uint64 index,
        bytes32 weightsDigest,
        bytes32 checkpointDigest,
        uint64 logSize,
        bytes32 logRoot,
        uint64 epsilonMicro,
        string calldata manifestCid
    ) external;

    /// @notice Closes `runId` for good.
    function finalizeRun(bytes32 runId) external;

    /// @notice What storage holds about `runId`.
    function getRun(bytes32 runId) external view returns (RunState memory);

    /// @notice Whether `account` may commit to `runId` (its owner or an authorised writer).
    function canWrite(bytes32 runId, address account) external view returns (bool);

    /// @notice Where checkpoint `index` of `runId` was committed and its record hash.
    function getCheckpoint(bytes32 runId, uint64 index) external view returns (CheckpointLocation memory);

    /// @notice The checkpoint that claimed `weightsDigest`; a zero `runId` if none did.
    function findByWeights(bytes32 weightsDigest) external view returns (CheckpointLocation memory);

    /// @notice The record hash of a checkpoint (first 24 bytes of a keccak256 over its ABI encoding).
    function checkpointRecordHash(bytes32 runId, uint64 index, CheckpointData calldata data)
        external
        pure
        returns (bytes24);

    /// @notice The record hash of a run registration.
    function runRecordHash(
        bytes32 runId,
        address owner,
        bytes32 manifestDigest,
        bytes32 baseModelDigest,
        bytes32 datasetRoot,
        bytes32 noiseSeedCommitment,
        string calldata manifestCid
    ) external pure returns (bytes24);

    /// @notice The RFC 6962 root implied by an inclusion proof (SHA-256, ordered children).
    function rootFromInclusionProof(bytes32 leafHash, uint256 leafIndex, uint256 treeSize, bytes32[] calldata proof)
        external
        pure
        returns (bytes32);

    /// @notice Whether `proof` shows `leafHash` at `leafIndex` in the step log committed by checkpoint `index`.
    function verifyInclusion(
        bytes32 runId,
        uint64 index,
        CheckpointData calldata data,
        bytes32 leafHash,
        uint256 leafIndex,
        bytes32[] calldata proof
    ) external view returns (bool);
}
