// The registry's head chain and run keys, recomputed in JavaScript from the definitions in IProvenanceRegistry.sol
// (written from the NatSpec, not from the contract), so the tests check the contract against the documentation.
"use strict";

const { ethers } = require("hardhat");

const coder = ethers.AbiCoder.defaultAbiCoder();
const KIND = { registered: 0, checkpoint: 1, writerAuthorized: 2, writerRevoked: 3, finalized: 4 };

const head24 = (types, values) => ethers.dataSlice(ethers.keccak256(coder.encode(types, values)), 0, 24);

const runKeyOf = (owner, runId) => ethers.keccak256(coder.encode(["address", "bytes32"], [owner, runId]));

function registrationHead({ runKey, owner, runId, run, blockNumber }) {
  return head24(
    ["uint8", "bytes32", "address", "bytes32", "bytes32", "bytes32", "bytes32", "bytes32", "bytes32", "uint256"],
    [KIND.registered, runKey, owner, runId, run.manifestDigest, run.baseModelDigest, run.datasetRoot,
      run.noiseSeedCommitment, ethers.id(run.manifestCid), blockNumber],
  );
}

function checkpointHead(head, { index, checkpoint: c, committer, blockNumber }) {
  return head24(
    ["bytes24", "uint8", "uint64", "bytes32", "bytes32", "bytes32", "uint64", "bytes32", "uint64", "bytes32", "address",
      "uint256"],
    [head, KIND.checkpoint, index, c.weightsDigest, c.tensorDigest, c.checkpointDigest, c.logSize, c.logRoot,
      c.epsilonMicro, c.manifestCidDigest, committer, blockNumber],
  );
}

function writerHead(head, { authorized, writer, by, blockNumber }) {
  const kind = authorized ? KIND.writerAuthorized : KIND.writerRevoked;
  return head24(["bytes24", "uint8", "address", "address", "uint256"], [head, kind, writer, by, blockNumber]);
}

function finalizedHead(head, { mergedTensorDigest, by, blockNumber }) {
  return head24(["bytes24", "uint8", "bytes32", "address", "uint256"],
    [head, KIND.finalized, mergedTensorDigest, by, blockNumber]);
}

/**
 * Folds a run's decoded events (ethers EventLogs, in chain order) into its head, checking each event's own head.
 * Only the owner can authorise or revoke writers, so those records were sent by the registering account.
 */
function foldEvents(events) {
  let head = null;
  let owner = null;
  for (const e of events) {
    const a = e.args;
    const blockNumber = e.blockNumber;
    if (e.fragment.name === "RunRegistered") {
      owner = a.owner;
      head = registrationHead({ runKey: a.runKey, owner, runId: a.runId, run: a, blockNumber });
    } else if (e.fragment.name === "CheckpointCommitted") {
      head = checkpointHead(head, { index: a.index, checkpoint: a, committer: a.committer, blockNumber });
    } else if (e.fragment.name === "RunFinalized") {
      head = finalizedHead(head, { mergedTensorDigest: a.mergedTensorDigest, by: a.by, blockNumber });
    } else {
      const authorized = e.fragment.name === "WriterAuthorized";
      head = writerHead(head, { authorized, writer: a.writer, by: owner, blockNumber });
    }
    if (head !== a.head) throw new Error(`event ${e.fragment.name} in block ${blockNumber} carries another head`);
  }
  return head;
}

module.exports = { KIND, runKeyOf, registrationHead, checkpointHead, writerHead, finalizedHead, foldEvents };
