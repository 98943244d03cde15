// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IProvenanceRegistry} from "./IProvenanceRegistry.sol";

/**
 * @title ProvenanceRegistry (version 3)
 * @notice An append-only public record of fine-tuning runs: their commitments, their checkpoints (each anchoring a
 * step-log Merkle root) and their closing. There is no admin, no upgrade path and no way to delete or overwrite
 * anything: every rule below is enforced for every caller.
 *
 * Runs are keyed by `runKey = keccak256(abi.encode(owner, runId))`, so nobody can register, block or write to
 * another account's run. No weights digest is reserved by its first claim: any number of runs may commit the same
 * weights, and a verifier finds every claim through the indexed topics of {CheckpointCommitted}.
 *
 * Storage per run is what the rules need, in two slots every write touches — `(owner, epsilonMicro, nextIndex,
 * flags)` and `(head, logSize, lastBlock)` — plus the run id and registration block, written once. A checkpoint
 * commit thus costs the same whatever the number of training steps (about 42k gas). Version 3 adds the
 * `previousBlock` pointers (see {IProvenanceRegistry}) in the same two slots: `lastBlock` keeps the low 32 bits of
 * the block of the run's latest event, from which the full number is recovered exactly while consecutive events of
 * a run are less than 2^32 blocks apart. To make room, a run has at most 2^24 - 1 checkpoints and 2^32 - 1 steps.
 * Only the owner finalizes, and only a run with a checkpoint. The records themselves live in events,
 * folded into the head chain described in {IProvenanceRegistry}. Version 1's per-checkpoint views
 * (`getCheckpoint`, `findByWeights`, `checkpointRecordHash`, `runRecordHash`, `verifyInclusion`) are gone: the
 * head chain keeps no per-checkpoint record in storage, so a record is checked by folding the run's events.
 */
contract ProvenanceRegistry is IProvenanceRegistry {
    uint256 private constant _VERSION = 3;
    uint8 private constant _FLAG_FINALIZED = 1;
    uint8 private constant _KIND_REGISTERED = 0;
    uint8 private constant _KIND_CHECKPOINT = 1;
    uint8 private constant _KIND_WRITER_AUTHORIZED = 2;
    uint8 private constant _KIND_WRITER_REVOKED = 3;
    uint8 private constant _KIND_FINALIZED = 4;
    /// @dev The log size shares a slot with the head and the last block: 32 bits (4.3e9 steps).
    uint64 private constant _MAX_LOG_SIZE = type(uint32).max;

    struct Run {
        // slot 0: read by every write to the run
        address owner;
        uint64 epsilonMicro;
        uint24 nextIndex;
        uint8 flags;
        // slot 1: rewritten by every write (never zero once registered, so a commit pays 2,900 not 20,000)
        bytes24 head;
        uint32 logSize;
        uint32 lastBlock; // low 32 bits of the block of the run's latest event
        // slots 2 and 3: written at registration, read by views only
        bytes32 runId;
        uint64 registeredBlock;
    }

    mapping(bytes32 runKey => Run) private _runs;
    mapping(bytes32 runKey => mapping(address writer => bool)) private _writers;

    /// @inheritdoc IProvenanceRegistry
    function VERSION() external pure returns (uint256) {
        return _VERSION;
    }

    /// @inheritdoc IProvenanceRegistry
    function runKeyOf(address owner, bytes32 runId) public pure returns (bytes32) {
        return keccak256(abi.encode(owner, runId));
    }

    /**
     * @inheritdoc IProvenanceRegistry
     * @dev Requirements:
     * - `runId` is not zero and the sender never registered it;
     * - `manifestCid` is not empty.
     *
     * Emits a {RunRegistered} event.
     */
    function registerRun(
        bytes32 runId,
        bytes32 manifestDigest,
        bytes32 baseModelDigest,
        bytes32 datasetRoot,
        bytes32 noiseSeedCommitment,
        string calldata manifestCid
    ) external returns (bytes32 runKey) {
        if (runId == bytes32(0)) revert ProvenanceRegistryInvalidRunId(runId);
        runKey = runKeyOf(msg.sender, runId);
        Run storage run = _runs[runKey];
        if (run.owner != address(0)) revert ProvenanceRegistryRunAlreadyRegistered(runKey, run.owner);
        if (bytes(manifestCid).length == 0) revert ProvenanceRegistryEmptyContentAddress(runKey);

        bytes24 head = bytes24(
            keccak256(
                abi.encode(
                    _KIND_REGISTERED,
                    runKey,
                    msg.sender,
                    runId,
                    manifestDigest,
                    baseModelDigest,
                    datasetRoot,
                    noiseSeedCommitment,
                    keccak256(bytes(manifestCid)),
                    block.number
                )
            )
        );
        run.owner = msg.sender;
        run.head = head;
        run.lastBlock = uint32(block.number);
        run.runId = runId;
        run.registeredBlock = uint64(block.number);
        emit RunRegistered(
            runKey, runId, msg.sender, manifestDigest, baseModelDigest, datasetRoot, noiseSeedCommitment, manifestCid, head
        );
    }

    /**
     * @inheritdoc IProvenanceRegistry
     * @dev Requirements:
     * - the caller owns `runKey`, which is not finalized;
     * - `writer` is not the zero address.
     *
     * Emits a {WriterAuthorized} event.
     */
    function authorizeWriter(bytes32 runKey, address writer) external {
        Run storage run = _requireOwnerOfOpenRun(runKey);
        if (writer == address(0)) revert ProvenanceRegistryInvalidWriter(runKey, writer);
        _writers[runKey][writer] = true;
        uint64 previousBlock = _advance(run);
        bytes24 head = _fold(run, abi.encode(run.head, _KIND_WRITER_AUTHORIZED, writer, msg.sender, block.number));
        emit WriterAuthorized(runKey, writer, previousBlock, head);
    }

    /**
     * @inheritdoc IProvenanceRegistry
     * @dev Requirements:
     * - the caller owns `runKey`, which is not finalized.
     *
     * Emits a {WriterRevoked} event.
     */
    function revokeWriter(bytes32 runKey, address writer) external {
        Run storage run = _requireOwnerOfOpenRun(runKey);
        _writers[runKey][writer] = false;
        uint64 previousBlock = _advance(run);
        bytes24 head = _fold(run, abi.encode(run.head, _KIND_WRITER_REVOKED, writer, msg.sender, block.number));
        emit WriterRevoked(runKey, writer, previousBlock, head);
    }

    /**
     * @inheritdoc IProvenanceRegistry
     * @dev Requirements:
     * - `runKey` is registered and not finalized, and the caller is its owner or an authorised writer;
     * - `index` is the run's checkpoint count (indices are 0, 1, 2, ... with no gap and no repeat: a retried
     *   commit reverts instead of committing twice);
     * - `index` is less than 2^24 - 1;
     * - `logSize` is 0 for index 0, and strictly more than the previous checkpoint's for every later index (a
     *   checkpoint that adds no step is refused), and at most 2^32 - 1;
     * - `epsilonMicro` is at least the previous checkpoint's;
     * - `manifestCidDigest` is not zero.
     *
     * Emits a {CheckpointCommitted} event.
     */
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
    ) external {
        Run storage run = _requireWriterOfOpenRun(runKey);
        _checkCheckpoint(run, runKey, index, logSize, epsilonMicro, manifestCidDigest);
        bytes24 head = bytes24(
            keccak256(
                abi.encode(
                    run.head,
                    _KIND_CHECKPOINT,
                    index,
                    weightsDigest,
                    tensorDigest,
                    checkpointDigest,
                    logSize,
                    logRoot,
                    epsilonMicro,
                    manifestCidDigest,
                    msg.sender,
                    block.number
                )
            )
        );
        uint64 previousBlock = _lastBlock(run);
        run.epsilonMicro = epsilonMicro;
        run.nextIndex = uint24(index) + 1; // index == nextIndex fits; the addition reverts past 2^24 - 1 checkpoints
        run.head = head;
        run.logSize = uint32(logSize);
        run.lastBlock = uint32(block.number);
        emit CheckpointCommitted(
            runKey,
            weightsDigest,
            tensorDigest,
            index,
            checkpointDigest,
            logSize,
            logRoot,
            epsilonMicro,
            manifestCidDigest,
            msg.sender,
            previousBlock,
            head
        );
    }

    /**
     * @inheritdoc IProvenanceRegistry
     * @dev Requirements:
     * - `runKey` is registered and not finalized, and the caller is its owner (an authorised writer commits
     *   checkpoints but cannot close the owner's run);
     * - the run has at least one checkpoint.
     *
     * Emits a {RunFinalized} event.
     */
    function finalizeRun(bytes32 runKey, bytes32 mergedTensorDigest) external {
        Run storage run = _requireOwnerOfOpenRun(runKey);
        if (run.nextIndex == 0) revert ProvenanceRegistryNoCheckpoint(runKey);
        run.flags |= _FLAG_FINALIZED;
        uint64 previousBlock = _advance(run);
        bytes24 head = _fold(run, abi.encode(run.head, _KIND_FINALIZED, mergedTensorDigest, msg.sender, block.number));
        emit RunFinalized(
            runKey, mergedTensorDigest, msg.sender, run.nextIndex, run.logSize, run.epsilonMicro, previousBlock, head
        );
    }

    /// @inheritdoc IProvenanceRegistry
    function getRun(bytes32 runKey) external view returns (RunState memory) {
        Run storage run = _runs[runKey];
        if (run.owner == address(0)) revert ProvenanceRegistryUnknownRun(runKey);
        return RunState({
            owner: run.owner,
            runId: run.runId,
            registeredBlock: run.registeredBlock,
            checkpointCount: run.nextIndex,
            logSize: run.logSize,
            epsilonMicro: run.epsilonMicro,
            finalized: run.flags & _FLAG_FINALIZED != 0,
            head: run.head
        });
    }

    /// @inheritdoc IProvenanceRegistry
    function lastEventBlock(bytes32 runKey) external view returns (uint64) {
        Run storage run = _runs[runKey];
        if (run.owner == address(0)) revert ProvenanceRegistryUnknownRun(runKey);
        return _lastBlock(run);
    }

    /// @inheritdoc IProvenanceRegistry
    function canWrite(bytes32 runKey, address account) external view returns (bool) {
        address owner = _runs[runKey].owner;
        return owner != address(0) && (account == owner || _writers[runKey][account]);
    }

    /**
     * @inheritdoc IProvenanceRegistry
     * @dev RFC 9162 §2.1.3.2 with leaves and nodes already hashed as in RFC 6962 (`0x01 || left || right` through
     * the SHA-256 precompile, in tree order: not OpenZeppelin's sorted-pair keccak). Reverts with
     * {ProvenanceRegistryInvalidProof} when `leafIndex >= treeSize` or the proof has the wrong number of nodes.
     */
    function rootFromInclusionProof(bytes32 leafHash, uint256 leafIndex, uint256 treeSize, bytes32[] calldata proof)
        external
        pure
        returns (bytes32 root)
    {
        if (leafIndex >= treeSize) revert ProvenanceRegistryInvalidProof(leafIndex, treeSize, proof.length);
        uint256 fn = leafIndex;
        uint256 sn = treeSize - 1;
        root = leafHash;
        for (uint256 i = 0; i < proof.length; ++i) {
            if (sn == 0) revert ProvenanceRegistryInvalidProof(leafIndex, treeSize, proof.length);
            if (fn & 1 == 1 || fn == sn) {
                root = sha256(abi.encodePacked(bytes1(0x01), proof[i], root));
                while (fn != 0 && fn & 1 == 0) {
                    fn >>= 1;
                    sn >>= 1;
                }
            } else {
                root = sha256(abi.encodePacked(bytes1(0x01), root, proof[i]));
            }
            fn >>= 1;
            sn >>= 1;
        }
        if (sn != 0) revert ProvenanceRegistryInvalidProof(leafIndex, treeSize, proof.length);
    }

    /// @dev The rules of {commitCheckpoint} on the values it stores.
    function _checkCheckpoint(
        Run storage run,
        bytes32 runKey,
        uint64 index,
        uint64 logSize,
        uint64 epsilonMicro,
        bytes32 manifestCidDigest
    ) private view {
        uint64 expected = run.nextIndex;
        if (index != expected) revert ProvenanceRegistryNonSequentialIndex(runKey, expected, index);
        uint64 previousSize = run.logSize;
        if (index == 0 ? logSize != 0 : logSize <= previousSize) {
            revert ProvenanceRegistryInvalidLogSize(runKey, index, previousSize, logSize);
        }
        if (logSize > _MAX_LOG_SIZE) revert ProvenanceRegistryLogSizeTooLarge(runKey, logSize, _MAX_LOG_SIZE);
        uint64 previousMicro = run.epsilonMicro;
        if (epsilonMicro < previousMicro) {
            revert ProvenanceRegistryEpsilonDecreased(runKey, previousMicro, epsilonMicro);
        }
        if (manifestCidDigest == bytes32(0)) revert ProvenanceRegistryEmptyContentAddress(runKey);
    }

    /// @dev The full number of the block of the run's latest event, from the low 32 bits stored: the latest block
    /// at or before this one with those low bits (exact while a run's events are less than 2^32 blocks apart).
    function _lastBlock(Run storage run) private view returns (uint64) {
        unchecked {
            return uint64(block.number - uint32(uint32(block.number) - run.lastBlock));
        }
    }

    /// @dev Records this block as the run's latest event's and returns the previous one's (the pointer to emit).
    function _advance(Run storage run) private returns (uint64 previousBlock) {
        previousBlock = _lastBlock(run);
        run.lastBlock = uint32(block.number);
    }

    /// @dev Folds `record` (which starts with the current head) into the run's head and returns the new head.
    function _fold(Run storage run, bytes memory record) private returns (bytes24 head) {
        head = bytes24(keccak256(record));
        run.head = head;
    }

    function _requireOwnerOfOpenRun(bytes32 runKey) private view returns (Run storage run) {
        run = _runs[runKey];
        address owner = run.owner;
        if (owner == address(0)) revert ProvenanceRegistryUnknownRun(runKey);
        if (owner != msg.sender) revert ProvenanceRegistryUnauthorized(msg.sender, runKey);
        if (run.flags & _FLAG_FINALIZED != 0) revert ProvenanceRegistryRunFinalized(runKey);
    }

    function _requireWriterOfOpenRun(bytes32 runKey) private view returns (Run storage run) {
        run = _runs[runKey];
        address owner = run.owner;
        if (owner == address(0)) revert ProvenanceRegistryUnknownRun(runKey);
        if (msg.sender != owner && !_writers[runKey][msg.sender]) {
            revert ProvenanceRegistryUnauthorized(msg.sender, runKey);
        }
        if (run.flags & _FLAG_FINALIZED != 0) revert ProvenanceRegistryRunFinalized(runKey);
    }
}
