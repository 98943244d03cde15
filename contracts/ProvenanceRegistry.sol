// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IProvenanceRegistry} from "./IProvenanceRegistry.sol";

/**
 * @title ProvenanceRegistry
 * @notice An append-only public record of fine-tuning runs: their commitments, their checkpoints (each anchoring a
 * step-log Merkle root) and their closing. There is no admin, no upgrade path and no way to delete or overwrite
 * anything: every rule below is enforced for every caller.
 *
 * Storage layout, chosen so a checkpoint commit costs the same whatever the number of training steps (< 90k gas):
 * - per run, three slots: `(owner, runNumber)`, the head `(nextIndex, logSize, epsilonMicro, flags)` and
 *   `(registeredBlock, recordHash)`;
 * - per checkpoint, one slot `(blockNumber, recordHash)` keyed by (run id, index), and one slot
 *   `(runNumber, index, blockNumber)` keyed by weights digest (which also keeps a digest from being claimed twice).
 * The full records live in the {RunRegistered} and {CheckpointCommitted} events. A client reads the event at the
 * stored block and checks it against the stored record hash: the first 24 bytes of
 * `keccak256(abi.encode(runId, index, weightsDigest, checkpointDigest, logSize, logRoot, epsilonMicro,
 * keccak256(bytes(manifestCid)), committer))` for a checkpoint, and of
 * `keccak256(abi.encode(runId, owner, manifestDigest, baseModelDigest, datasetRoot, noiseSeedCommitment,
 * keccak256(bytes(manifestCid))))` for a run.
 */
contract ProvenanceRegistry is IProvenanceRegistry {
    uint8 private constant _FLAG_REGISTERED = 1;
    uint8 private constant _FLAG_FINALIZED = 2;

    struct Run {
        // slot 0: read on every write to the run
        address owner;
        uint64 runNumber;
        // slot 1: the head, rewritten by every commit (never zero once registered, so a commit pays 2,900 not 20,000)
        uint64 nextIndex;
        uint64 logSize;
        uint64 epsilonMicro;
        uint8 flags;
        // slot 2: where and what was registered
        uint64 registeredBlock;
        bytes24 recordHash;
    }

    struct Location {
        uint64 blockNumber;
        bytes24 recordHash;
    }

    struct WeightsEntry {
        uint64 runNumber;
        uint64 index;
        uint64 blockNumber;
    }

    uint64 private _runCount;
    mapping(bytes32 runId => Run) private _runs;
    mapping(uint64 runNumber => bytes32 runId) private _runIds;
    mapping(bytes32 runId => mapping(address writer => bool)) private _writers;
    mapping(bytes32 runId => mapping(uint64 index => Location)) private _checkpoints;
    mapping(bytes32 weightsDigest => WeightsEntry) private _byWeights;

    /**
     * @inheritdoc IProvenanceRegistry
     * @dev Requirements:
     * - `runId` is not zero and was never registered;
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
    ) external {
        if (runId == bytes32(0)) revert ProvenanceRegistryInvalidRunId(runId);
        Run storage run = _runs[runId];
        if (run.owner != address(0)) revert ProvenanceRegistryRunAlreadyRegistered(runId, run.owner);
        if (bytes(manifestCid).length == 0) revert ProvenanceRegistryEmptyContentAddress(runId);

        uint64 runNumber = ++_runCount;
        run.owner = msg.sender;
        run.runNumber = runNumber;
        run.flags = _FLAG_REGISTERED;
        run.registeredBlock = uint64(block.number);
        run.recordHash = _runRecordHash(
            runId, msg.sender, manifestDigest, baseModelDigest, datasetRoot, noiseSeedCommitment, manifestCid
        );
        _runIds[runNumber] = runId;
        emit RunRegistered(
            runId, msg.sender, manifestDigest, baseModelDigest, datasetRoot, noiseSeedCommitment, manifestCid
        );
    }

    /**
     * @inheritdoc IProvenanceRegistry
     * @dev Requirements:
     * - the caller owns `runId`, which is not finalized;
     * - `writer` is not the zero address.
     *
     * Emits a {WriterAuthorized} event.
     */
    function authorizeWriter(bytes32 runId, address writer) external {
        _requireOwnerOfOpenRun(runId);
        if (writer == address(0)) revert ProvenanceRegistryInvalidWriter(runId, writer);
        _writers[runId][writer] = true;
        emit WriterAuthorized(runId, writer);
    }

    /**
     * @inheritdoc IProvenanceRegistry
     * @dev Requirements:
     * - the caller owns `runId`, which is not finalized.
     *
     * Emits a {WriterRevoked} event.
     */
    function revokeWriter(bytes32 runId, address writer) external {
        _requireOwnerOfOpenRun(runId);
        _writers[runId][writer] = false;
        emit WriterRevoked(runId, writer);
    }

    /**
     * @inheritdoc IProvenanceRegistry
     * @dev Requirements:
     * - `runId` is registered and not finalized, and the caller is its owner or an authorised writer;
     * - `index` is the run's checkpoint count (indices are 0, 1, 2, ... with no gap and no repeat);
     * - `logSize` is at least the previous checkpoint's, and `epsilonMicro` at least the previous checkpoint's;
     * - `weightsDigest` was never committed by any checkpoint of any run;
     * - `manifestCid` is not empty.
     *
     * Emits a {CheckpointCommitted} event.
     */
    function commitCheckpoint(
        bytes32 runId,
        uint64 index,
        bytes32 weightsDigest,
        bytes32 checkpointDigest,
        uint64 logSize,
        bytes32 logRoot,
        uint64 epsilonMicro,
        string calldata manifestCid
    ) external {
        Run storage run = _runs[runId];
        uint64 runNumber = _requireWriterOfOpenRun(run, runId);
        if (index != run.nextIndex) revert ProvenanceRegistryNonSequentialIndex(runId, run.nextIndex, index);
        if (logSize < run.logSize) revert ProvenanceRegistryLogShrank(runId, run.logSize, logSize);
        if (epsilonMicro < run.epsilonMicro) {
            revert ProvenanceRegistryEpsilonDecreased(runId, run.epsilonMicro, epsilonMicro);
        }
        WeightsEntry storage claimed = _byWeights[weightsDigest];
        if (claimed.blockNumber != 0) {
            revert ProvenanceRegistryWeightsAlreadyCommitted(weightsDigest, _runIds[claimed.runNumber], claimed.index);
        }
        if (bytes(manifestCid).length == 0) revert ProvenanceRegistryEmptyContentAddress(runId);

        run.nextIndex = index + 1;
        run.logSize = logSize;
        run.epsilonMicro = epsilonMicro;
        uint64 blockNumber = uint64(block.number);
        _byWeights[weightsDigest] = WeightsEntry(runNumber, index, blockNumber);
        _checkpoints[runId][index] = Location(
            blockNumber,
            _checkpointRecordHash(
                runId,
                index,
                weightsDigest,
                checkpointDigest,
                logSize,
                logRoot,
                epsilonMicro,
                keccak256(bytes(manifestCid)),
                msg.sender
            )
        );
        emit CheckpointCommitted(
            runId, index, weightsDigest, checkpointDigest, logSize, logRoot, epsilonMicro, manifestCid, msg.sender
        );
    }

    /**
     * @inheritdoc IProvenanceRegistry
     * @dev Requirements:
     * - `runId` is registered and not finalized, and the caller is its owner or an authorised writer.
     *
     * Emits a {RunFinalized} event.
     */
    function finalizeRun(bytes32 runId) external {
        Run storage run = _runs[runId];
        _requireWriterOfOpenRun(run, runId);
        run.flags |= _FLAG_FINALIZED;
        emit RunFinalized(runId, msg.sender, run.nextIndex, run.logSize, run.epsilonMicro);
    }

    /// @inheritdoc IProvenanceRegistry
    function getRun(bytes32 runId) external view returns (RunState memory) {
        Run storage run = _requireRun(runId);
        return RunState({
            owner: run.owner,
            runNumber: run.runNumber,
            registeredBlock: run.registeredBlock,
            recordHash: run.recordHash,
            checkpointCount: run.nextIndex,
            logSize: run.logSize,
            epsilonMicro: run.epsilonMicro,
            finalized: run.flags & _FLAG_FINALIZED != 0
        });
    }

    /// @inheritdoc IProvenanceRegistry
    function canWrite(bytes32 runId, address account) external view returns (bool) {
        address owner = _runs[runId].owner;
        return owner != address(0) && (account == owner || _writers[runId][account]);
    }

    /// @inheritdoc IProvenanceRegistry
    function getCheckpoint(bytes32 runId, uint64 index) external view returns (CheckpointLocation memory) {
        Run storage run = _requireRun(runId);
        if (index >= run.nextIndex) revert ProvenanceRegistryUnknownCheckpoint(runId, index, run.nextIndex);
        Location storage location = _checkpoints[runId][index];
        return CheckpointLocation(runId, index, location.blockNumber, location.recordHash);
    }

    /// @inheritdoc IProvenanceRegistry
    function findByWeights(bytes32 weightsDigest) external view returns (CheckpointLocation memory found) {
        WeightsEntry storage entry = _byWeights[weightsDigest];
        if (entry.blockNumber == 0) return found;
        bytes32 runId = _runIds[entry.runNumber];
        return CheckpointLocation(runId, entry.index, entry.blockNumber, _checkpoints[runId][entry.index].recordHash);
    }

    /// @inheritdoc IProvenanceRegistry
    function checkpointRecordHash(bytes32 runId, uint64 index, CheckpointData calldata data)
        public
        pure
        returns (bytes24)
    {
        return _checkpointRecordHash(
            runId,
            index,
            data.weightsDigest,
            data.checkpointDigest,
            data.logSize,
            data.logRoot,
            data.epsilonMicro,
            keccak256(bytes(data.manifestCid)),
            data.committer
        );
    }

    /// @inheritdoc IProvenanceRegistry
    function runRecordHash(
        bytes32 runId,
        address owner,
        bytes32 manifestDigest,
        bytes32 baseModelDigest,
        bytes32 datasetRoot,
        bytes32 noiseSeedCommitment,
        string calldata manifestCid
    ) external pure returns (bytes24) {
        return _runRecordHash(runId, owner, manifestDigest, baseModelDigest, datasetRoot, noiseSeedCommitment, manifestCid);
    }

    /**
     * @inheritdoc IProvenanceRegistry
     * @dev RFC 9162 §2.1.3.2 with leaves and nodes already hashed as in RFC 6962 (`0x01 || left || right` through
     * the SHA-256 precompile, in tree order: not OpenZeppelin's sorted-pair keccak). Reverts with
     * {ProvenanceRegistryInvalidProof} when `leafIndex >= treeSize` or the proof has the wrong number of nodes.
     */
    function rootFromInclusionProof(bytes32 leafHash, uint256 leafIndex, uint256 treeSize, bytes32[] calldata proof)
        public
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

    /**
     * @inheritdoc IProvenanceRegistry
     * @dev Requirements:
     * - checkpoint `index` of `runId` exists and `data` is exactly its record (checked against the stored hash).
     * Returns false when the proof is well formed but leads to another root.
     */
    function verifyInclusion(
        bytes32 runId,
        uint64 index,
        CheckpointData calldata data,
        bytes32 leafHash,
        uint256 leafIndex,
        bytes32[] calldata proof
    ) external view returns (bool) {
        Run storage run = _requireRun(runId);
        if (index >= run.nextIndex) revert ProvenanceRegistryUnknownCheckpoint(runId, index, run.nextIndex);
        bytes24 stored = _checkpoints[runId][index].recordHash;
        bytes24 given = checkpointRecordHash(runId, index, data);
        if (stored != given) revert ProvenanceRegistryRecordMismatch(runId, index, stored, given);
        return rootFromInclusionProof(leafHash, leafIndex, data.logSize, proof) == data.logRoot;
    }

    function _requireRun(bytes32 runId) private view returns (Run storage run) {
        run = _runs[runId];
        if (run.owner == address(0)) revert ProvenanceRegistryUnknownRun(runId);
    }

    function _requireOwnerOfOpenRun(bytes32 runId) private view {
        Run storage run = _requireRun(runId);
        if (run.owner != msg.sender) revert ProvenanceRegistryUnauthorized(msg.sender, runId);
        if (run.flags & _FLAG_FINALIZED != 0) revert ProvenanceRegistryRunFinalized(runId);
    }

    /// @dev Checks `run` exists, is open and the caller may write to it; returns its run number.
    function _requireWriterOfOpenRun(Run storage run, bytes32 runId) private view returns (uint64) {
        address owner = run.owner;
        if (owner == address(0)) revert ProvenanceRegistryUnknownRun(runId);
        if (msg.sender != owner && !_writers[runId][msg.sender]) {
            revert ProvenanceRegistryUnauthorized(msg.sender, runId);
        }
        if (run.flags & _FLAG_FINALIZED != 0) revert ProvenanceRegistryRunFinalized(runId);
        return run.runNumber;
    }

    function _checkpointRecordHash(
        bytes32 runId,
        uint64 index,
        bytes32 weightsDigest,
        bytes32 checkpointDigest,
        uint64 logSize,
        bytes32 logRoot,
        uint64 epsilonMicro,
        bytes32 cidHash,
        address committer
    ) private pure returns (bytes24) {
        return bytes24(
            keccak256(
                abi.encode(
                    runId, index, weightsDigest, checkpointDigest, logSize, logRoot, epsilonMicro, cidHash, committer
                )
            )
        );
    }

    function _runRecordHash(
        bytes32 runId,
        address owner,
        bytes32 manifestDigest,
        bytes32 baseModelDigest,
        bytes32 datasetRoot,
        bytes32 noiseSeedCommitment,
        string calldata manifestCid
    ) private pure returns (bytes24) {
        return bytes24(
            keccak256(
                abi.encode(
                    runId,
                    owner,
                    manifestDigest,
                    baseModelDigest,
                    datasetRoot,
                    noiseSeedCommitment,
                    keccak256(bytes(manifestCid))
                )
            )
        );
    }
}
