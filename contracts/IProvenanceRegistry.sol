// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/**
 * @title IProvenanceRegistry (version 3)
 * @notice Events, custom errors and types of the prov training-provenance registry.
 *
 * A run is registered once with its commitments (run-manifest digest, base-model digest, dataset root,
 * noise-seed commitment, manifest content address) before training starts. It lives under its **run key**
 * `keccak256(abi.encode(owner, runId))`: the same run id sent by another account is another run, so a copied
 * pending transaction can neither take nor block the honest one. Checkpoints are then committed with a strictly
 * sequential index and a strictly growing step log, and the run can be finalized. Any number of runs may claim the
 * same weights: claims are found through the indexed topics of {CheckpointCommitted}.
 *
 * Digests are SHA-256 (32 bytes); ε is fixed point in micro-epsilon (ε × 10^6, rounded up; `type(uint64).max` for a
 * run without a DP guarantee); a checkpoint's content address is the sha2-256 digest of its CIDv1 (dag-pb).
 *
 * **Head chain.** Storage keeps one 24-byte `head` per run instead of the records: registration sets
 * `head = bytes24(keccak256(abi.encode(KIND_REGISTERED, runKey, owner, runId, manifestDigest, baseModelDigest,
 * datasetRoot, noiseSeedCommitment, keccak256(bytes(manifestCid)), block.number)))` and every later write folds its
 * record in: `head' = bytes24(keccak256(abi.encode(head, kind, <record fields>, msg.sender, block.number)))` with
 * - `KIND_CHECKPOINT` (1): index, weightsDigest, tensorDigest, checkpointDigest, logSize, logRoot, epsilonMicro,
 *   manifestCidDigest;
 * - `KIND_WRITER_AUTHORIZED` (2) / `KIND_WRITER_REVOKED` (3): writer;
 * - `KIND_FINALIZED` (4): mergedTensorDigest;
 * (`KIND_REGISTERED` is 0.) Every event carries the head after its write. A client rebuilds the run's whole history
 * from its events, folds it and compares the result with the stored head: a node that hides, forges or reorders an
 * event cannot make the fold match.
 *
 * **Pointers (version 3).** Every event after a run's registration carries `previousBlock`, the block of the run's
 * previous event (the registration's for the first), and {lastEventBlock} gives the block of its latest one. A
 * client reads a run's history by following them: one single-block `eth_getLogs` per block holding the run's events,
 * from the latest back to the registration, so a provider that caps log queries to a few blocks suffices. The
 * pointers are not folded into the head (the chain computes them); a node that lies about them only breaks the walk,
 * which the fold then detects. Version 2 differs only by these pointers and by the rules of {finalizeRun}.
 */
interface IProvenanceRegistry {
    /// @notice What storage holds about a run.
    struct RunState {
        address owner;
        bytes32 runId;
        uint64 registeredBlock;
        uint64 checkpointCount;
        uint64 logSize;
        uint64 epsilonMicro;
        bool finalized;
        bytes24 head;
    }

    /// @notice `owner` registered `runId` under `runKey` with its commitments; `head` starts the run's head chain.
    event RunRegistered(
        bytes32 indexed runKey,
        bytes32 indexed runId,
        address indexed owner,
        bytes32 manifestDigest,
        bytes32 baseModelDigest,
        bytes32 datasetRoot,
        bytes32 noiseSeedCommitment,
        string manifestCid,
        bytes24 head
    );

    /// @notice The owner of `runKey` authorised `writer` to commit checkpoints. `previousBlock`: the block of the
    /// run's previous event.
    event WriterAuthorized(bytes32 indexed runKey, address indexed writer, uint64 previousBlock, bytes24 head);

    /// @notice The owner of `runKey` withdrew `writer`'s authorisation.
    event WriterRevoked(bytes32 indexed runKey, address indexed writer, uint64 previousBlock, bytes24 head);

    /// @notice Checkpoint `index` of `runKey` was committed by `committer`.
    event CheckpointCommitted(
        bytes32 indexed runKey,
        bytes32 indexed weightsDigest,
        bytes32 indexed tensorDigest,
        uint64 index,
        bytes32 checkpointDigest,
        uint64 logSize,
        bytes32 logRoot,
        uint64 epsilonMicro,
        bytes32 manifestCidDigest,
        address committer,
        uint64 previousBlock,
        bytes24 head
    );

    /// @notice `runKey` was closed by `by` after `checkpointCount` checkpoints; nothing can be written to it again.
    /// `mergedTensorDigest` is the tensor digest of the adapter merged into the base model (zero if none).
    event RunFinalized(
        bytes32 indexed runKey,
        bytes32 indexed mergedTensorDigest,
        address by,
        uint64 checkpointCount,
        uint64 logSize,
        uint64 epsilonMicro,
        uint64 previousBlock,
        bytes24 head
    );

    /// @notice `caller` is neither the owner of `runKey` nor a writer it authorised (or, for owner-only calls,
    /// not the owner).
    error ProvenanceRegistryUnauthorized(address caller, bytes32 runKey);

    /// @notice `owner` already registered this run id: it lives under `runKey`.
    error ProvenanceRegistryRunAlreadyRegistered(bytes32 runKey, address owner);

    /// @notice No run was registered under `runKey`.
    error ProvenanceRegistryUnknownRun(bytes32 runKey);

    /// @notice `runId` is zero, which is reserved for "none".
    error ProvenanceRegistryInvalidRunId(bytes32 runId);

    /// @notice A content address for `runKey` is empty (an empty manifest CID or a zero CID digest).
    error ProvenanceRegistryEmptyContentAddress(bytes32 runKey);

    /// @notice `writer` cannot be authorised for `runKey` (the zero address).
    error ProvenanceRegistryInvalidWriter(bytes32 runKey, address writer);

    /// @notice `runKey` is finalized: nothing more can be written to it.
    error ProvenanceRegistryRunFinalized(bytes32 runKey);

    /// @notice The next checkpoint of `runKey` must have index `expected`, not `given`.
    error ProvenanceRegistryNonSequentialIndex(bytes32 runKey, uint64 expected, uint64 given);

    /// @notice Checkpoint `index` of `runKey` must have log size 0 (index 0) or more than `previousSize`
    /// (every later index: a checkpoint adds at least one step), not `givenSize`.
    error ProvenanceRegistryInvalidLogSize(bytes32 runKey, uint64 index, uint64 previousSize, uint64 givenSize);

    /// @notice A step log of `givenSize` entries exceeds the largest size the registry stores, `maxSize`.
    error ProvenanceRegistryLogSizeTooLarge(bytes32 runKey, uint64 givenSize, uint64 maxSize);

    /// @notice ε spent by `runKey` would decrease from `previousMicro` to `givenMicro`.
    error ProvenanceRegistryEpsilonDecreased(bytes32 runKey, uint64 previousMicro, uint64 givenMicro);

    /// @notice `runKey` has no checkpoint: a run is finalized after its first checkpoint at the earliest.
    error ProvenanceRegistryNoCheckpoint(bytes32 runKey);

    /// @notice An inclusion proof of `proofLength` nodes for leaf `leafIndex` in a tree of `treeSize` leaves is
    /// malformed (index out of range, or too few or too many nodes).
    error ProvenanceRegistryInvalidProof(uint256 leafIndex, uint256 treeSize, uint256 proofLength);

    /// @notice The registry's interface version: 3. (Version 1 has no such function.)
    function VERSION() external pure returns (uint256);

    /// @notice The key a run registered by `owner` as `runId` lives under: `keccak256(abi.encode(owner, runId))`.
    function runKeyOf(address owner, bytes32 runId) external pure returns (bytes32);

    /// @notice Registers `runId` with its commitments under the sender's run key, which it returns.
    function registerRun(
        bytes32 runId,
        bytes32 manifestDigest,
        bytes32 baseModelDigest,
        bytes32 datasetRoot,
        bytes32 noiseSeedCommitment,
        string calldata manifestCid
    ) external returns (bytes32 runKey);

    /// @notice Authorises `writer` to commit checkpoints to `runKey` (finalizing stays the owner's).
    function authorizeWriter(bytes32 runKey, address writer) external;

    /// @notice Withdraws `writer`'s authorisation for `runKey`.
    function revokeWriter(bytes32 runKey, address writer) external;

    /// @notice Commits checkpoint `index` of `runKey`.
    function commitCheckpoint(
        bytes32 runKey,
        uint64 index,
        bytes32 weightsDigest,
        bytes32 tensorDigest,
        bytes32 checkpointDigest,
        uint64 logSize,
        bytes32 logRoot,
        uint64 epsilonMicro,
        bytes32 manifestCidDigest
    ) external;

    /// @notice Closes `runKey` for good (its owner only, once it has a checkpoint), committing the tensor digest of
    /// the merged model (zero if none).
    function finalizeRun(bytes32 runKey, bytes32 mergedTensorDigest) external;

    /// @notice What storage holds about `runKey`.
    function getRun(bytes32 runKey) external view returns (RunState memory);

    /// @notice The block of the latest event of `runKey` (its registration's when nothing followed): where a
    /// client starts following the `previousBlock` pointers.
    function lastEventBlock(bytes32 runKey) external view returns (uint64);

    /// @notice Whether `account` may commit to `runKey` (its owner or an authorised writer).
    function canWrite(bytes32 runKey, address account) external view returns (bool);

    /// @notice The RFC 6962 root implied by an inclusion proof (SHA-256, ordered children).
    function rootFromInclusionProof(bytes32 leafHash, uint256 leafIndex, uint256 treeSize, bytes32[] calldata proof)
        external
        pure
        returns (bytes32);
}
