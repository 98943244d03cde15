"use strict";

const { expect } = require("chai");
const { artifacts, ethers } = require("hardhat");
const { loadFixture, mine } = require("@nomicfoundation/hardhat-network-helpers");
const { shouldGuardRunWrites, UNKNOWN_RUN } = require("./ProvenanceRegistry.behavior");
const rfc6962 = require("./rfc6962");

const coder = ethers.AbiCoder.defaultAbiCoder();
const CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";
const CID2 = "bafkreidgvpkjawlxz6sffxzwgooowe5yt7i6wsyg236mfoks77nywkptdq";
const NO_PRIVACY = 2n ** 64n - 1n; // the documented ε sentinel for non-private runs
const GAS_TARGET = 90000n;

const digest = (label) => ethers.sha256(ethers.toUtf8Bytes(label));

function checkpointRecordHash(runId, index, c) {
  const encoded = coder.encode(
    ["bytes32", "uint64", "bytes32", "bytes32", "uint64", "bytes32", "uint64", "bytes32", "address"],
    [runId, index, c.weightsDigest, c.checkpointDigest, c.logSize, c.logRoot, c.epsilonMicro, ethers.id(c.manifestCid), c.committer],
  );
  return ethers.dataSlice(ethers.keccak256(encoded), 0, 24);
}

function runRecordHash(runId, owner, r) {
  const encoded = coder.encode(
    ["bytes32", "address", "bytes32", "bytes32", "bytes32", "bytes32", "bytes32"],
    [runId, owner, r.manifestDigest, r.baseModelDigest, r.datasetRoot, r.noiseSeedCommitment, ethers.id(r.manifestCid)],
  );
  return ethers.dataSlice(ethers.keccak256(encoded), 0, 24);
}

function runCommitments(label) {
  return {
    manifestDigest: digest(`${label}/manifest`),
    baseModelDigest: digest(`${label}/base`),
    datasetRoot: digest(`${label}/dataset`),
    noiseSeedCommitment: digest(`${label}/noise`),
    manifestCid: CID,
  };
}

function checkpoint(index, overrides = {}) {
  return {
    weightsDigest: digest(`weights/${index}`),
    checkpointDigest: digest(`checkpoint/${index}`),
    logSize: 100n * BigInt(index + 1),
    logRoot: digest(`log/${index}`),
    epsilonMicro: 250000n * BigInt(index + 1),
    manifestCid: CID2,
    ...overrides,
  };
}

const register = (registry, signer, runId, r) =>
  registry
    .connect(signer)
    .registerRun(runId, r.manifestDigest, r.baseModelDigest, r.datasetRoot, r.noiseSeedCommitment, r.manifestCid);

const commit = (registry, signer, runId, index, c) =>
  registry
    .connect(signer)
    .commitCheckpoint(runId, index, c.weightsDigest, c.checkpointDigest, c.logSize, c.logRoot, c.epsilonMicro, c.manifestCid);

async function deployFixture() {
  const [owner, writer, stranger] = await ethers.getSigners();
  const registry = await ethers.deployContract("ProvenanceRegistry");
  return { registry, owner, writer, stranger };
}

async function registeredRunFixture() {
  const base = await deployFixture();
  const runId = ethers.id("prov test run");
  const run = runCommitments("run");
  await register(base.registry, base.owner, runId, run);
  await base.registry.connect(base.owner).authorizeWriter(runId, base.writer.address);
  return { ...base, runId, run };
}

async function committedRunFixture() {
  const base = await registeredRunFixture();
  const checkpoints = [checkpoint(0), checkpoint(1)];
  const receipts = [];
  for (const [i, c] of checkpoints.entries()) {
    receipts.push(await (await commit(base.registry, base.owner, base.runId, i, c)).wait());
  }
  return { ...base, checkpoints, receipts };
}

describe("ProvenanceRegistry", function () {
  describe("interface", function () {
    it("has no admin, upgrade or delete function: exactly these externals", async function () {
      const { registry } = await loadFixture(deployFixture);
      const names = registry.interface.fragments.filter((f) => f.type === "function").map((f) => f.name).sort();
      expect(names).to.deep.equal([
        "authorizeWriter", "canWrite", "checkpointRecordHash", "commitCheckpoint", "finalizeRun", "findByWeights",
        "getCheckpoint", "getRun", "registerRun", "revokeWriter", "rootFromInclusionProof", "runRecordHash",
        "verifyInclusion",
      ]);
    });

    it("the artifact shipped in the Python package equals Hardhat's compile", async function () {
      const shipped = require("../../provenance/contracts/ProvenanceRegistry.json");
      const built = await artifacts.readArtifact("ProvenanceRegistry");
      expect(shipped.bytecode).to.equal(built.bytecode);
      expect(shipped.deployedBytecode).to.equal(built.deployedBytecode);
      expect(shipped.abi).to.deep.equal(built.abi);
    });
  });

  describe("registerRun", function () {
    it("registers the run to the sender and emits RunRegistered", async function () {
      const { registry, owner } = await loadFixture(deployFixture);
      const runId = ethers.id("fresh run");
      const r = runCommitments("fresh");
      const tx = register(registry, owner, runId, r);
      await expect(tx)
        .to.emit(registry, "RunRegistered")
        .withArgs(runId, owner.address, r.manifestDigest, r.baseModelDigest, r.datasetRoot, r.noiseSeedCommitment, CID);
      const receipt = await (await tx).wait();
      const state = await registry.getRun(runId);
      expect(state.owner).to.equal(owner.address);
      expect(state.runNumber).to.equal(1n);
      expect(state.registeredBlock).to.equal(BigInt(receipt.blockNumber));
      expect(state.recordHash).to.equal(runRecordHash(runId, owner.address, r));
      expect(state.recordHash).to.equal(
        await registry.runRecordHash(runId, owner.address, r.manifestDigest, r.baseModelDigest, r.datasetRoot,
          r.noiseSeedCommitment, r.manifestCid),
      );
      expect(state.checkpointCount).to.equal(0n);
      expect(state.finalized).to.equal(false);
      expect(await registry.canWrite(runId, owner.address)).to.equal(true);
    });

    it("reverts when the run id is already registered, whoever asks", async function () {
      const { registry, runId, owner, stranger } = await loadFixture(registeredRunFixture);
      for (const signer of [owner, stranger]) {
        await expect(register(registry, signer, runId, runCommitments("again")))
          .to.be.revertedWithCustomError(registry, "ProvenanceRegistryRunAlreadyRegistered")
          .withArgs(runId, owner.address);
      }
    });

    it("reverts for the zero run id", async function () {
      const { registry, owner } = await loadFixture(deployFixture);
      await expect(register(registry, owner, ethers.ZeroHash, runCommitments("zero")))
        .to.be.revertedWithCustomError(registry, "ProvenanceRegistryInvalidRunId")
        .withArgs(ethers.ZeroHash);
    });

    it("reverts for an empty manifest content address", async function () {
      const { registry, owner } = await loadFixture(deployFixture);
      const runId = ethers.id("no cid");
      await expect(register(registry, owner, runId, { ...runCommitments("x"), manifestCid: "" }))
        .to.be.revertedWithCustomError(registry, "ProvenanceRegistryEmptyContentAddress")
        .withArgs(runId);
    });
  });

  describe("authorizeWriter", function () {
    const send = (registry, signer, runId) => registry.connect(signer).authorizeWriter(runId, signer.address);

    it("authorises the writer and emits WriterAuthorized", async function () {
      const { registry, runId, owner, stranger } = await loadFixture(registeredRunFixture);
      expect(await registry.canWrite(runId, stranger.address)).to.equal(false);
      await expect(registry.connect(owner).authorizeWriter(runId, stranger.address))
        .to.emit(registry, "WriterAuthorized")
        .withArgs(runId, stranger.address);
      expect(await registry.canWrite(runId, stranger.address)).to.equal(true);
    });

    it("reverts for the zero address", async function () {
      const { registry, runId, owner } = await loadFixture(registeredRunFixture);
      await expect(registry.connect(owner).authorizeWriter(runId, ethers.ZeroAddress))
        .to.be.revertedWithCustomError(registry, "ProvenanceRegistryInvalidWriter")
        .withArgs(runId, ethers.ZeroAddress);
    });

    shouldGuardRunWrites(registeredRunFixture, send, { ownerOnly: true });
  });

  describe("revokeWriter", function () {
    const send = (registry, signer, runId) => registry.connect(signer).revokeWriter(runId, signer.address);

    it("revokes the writer and emits WriterRevoked; the writer can no longer commit", async function () {
      const { registry, runId, owner, writer } = await loadFixture(registeredRunFixture);
      await expect(registry.connect(owner).revokeWriter(runId, writer.address))
        .to.emit(registry, "WriterRevoked")
        .withArgs(runId, writer.address);
      expect(await registry.canWrite(runId, writer.address)).to.equal(false);
      await expect(commit(registry, writer, runId, 0, checkpoint(0)))
        .to.be.revertedWithCustomError(registry, "ProvenanceRegistryUnauthorized")
        .withArgs(writer.address, runId);
    });

    shouldGuardRunWrites(registeredRunFixture, send, { ownerOnly: true });
  });

  describe("commitCheckpoint", function () {
    const send = (registry, signer, runId) => commit(registry, signer, runId, 0, checkpoint(0));

    it("stores the location and record hash, indexes the weights digest, emits CheckpointCommitted", async function () {
      const { registry, runId, writer } = await loadFixture(registeredRunFixture);
      const c = checkpoint(0);
      const tx = commit(registry, writer, runId, 0, c);
      await expect(tx)
        .to.emit(registry, "CheckpointCommitted")
        .withArgs(runId, 0, c.weightsDigest, c.checkpointDigest, c.logSize, c.logRoot, c.epsilonMicro, c.manifestCid,
          writer.address);
      const receipt = await (await tx).wait();
      const expectedHash = checkpointRecordHash(runId, 0, { ...c, committer: writer.address });
      const location = await registry.getCheckpoint(runId, 0);
      expect(location.runId).to.equal(runId);
      expect(location.index).to.equal(0n);
      expect(location.blockNumber).to.equal(BigInt(receipt.blockNumber));
      expect(location.recordHash).to.equal(expectedHash);
      expect(await registry.checkpointRecordHash(runId, 0, { ...c, committer: writer.address })).to.equal(expectedHash);
      const found = await registry.findByWeights(c.weightsDigest);
      expect([found.runId, found.index, found.blockNumber, found.recordHash]).to.deep.equal([
        runId, 0n, BigInt(receipt.blockNumber), expectedHash,
      ]);
      const state = await registry.getRun(runId);
      expect([state.checkpointCount, state.logSize, state.epsilonMicro]).to.deep.equal([1n, c.logSize, c.epsilonMicro]);
    });

    it("requires strictly sequential indices: no gap, no repeat", async function () {
      const { registry, runId, owner } = await loadFixture(committedRunFixture);
      for (const index of [1, 3]) {
        await expect(commit(registry, owner, runId, index, checkpoint(5, { logSize: 1000n, epsilonMicro: 10n ** 7n })))
          .to.be.revertedWithCustomError(registry, "ProvenanceRegistryNonSequentialIndex")
          .withArgs(runId, 2, index);
      }
    });

    it("refuses a log that shrinks, accepts one of the same size", async function () {
      const { registry, runId, owner, checkpoints } = await loadFixture(committedRunFixture);
      const previous = checkpoints[1].logSize;
      await expect(commit(registry, owner, runId, 2, checkpoint(2, { logSize: previous - 1n })))
        .to.be.revertedWithCustomError(registry, "ProvenanceRegistryLogShrank")
        .withArgs(runId, previous, previous - 1n);
      await expect(commit(registry, owner, runId, 2, checkpoint(2, { logSize: previous }))).not.to.be.reverted;
    });

    it("refuses ε that decreases, accepts the same ε and the non-private sentinel", async function () {
      const { registry, runId, owner, checkpoints } = await loadFixture(committedRunFixture);
      const previous = checkpoints[1].epsilonMicro;
      await expect(commit(registry, owner, runId, 2, checkpoint(2, { epsilonMicro: previous - 1n })))
        .to.be.revertedWithCustomError(registry, "ProvenanceRegistryEpsilonDecreased")
        .withArgs(runId, previous, previous - 1n);
      await expect(commit(registry, owner, runId, 2, checkpoint(2, { epsilonMicro: previous }))).not.to.be.reverted;
      await expect(commit(registry, owner, runId, 3, checkpoint(3, { epsilonMicro: NO_PRIVACY }))).not.to.be.reverted;
      expect((await registry.getRun(runId)).epsilonMicro).to.equal(NO_PRIVACY);
    });

    it("refuses a weights digest already claimed, in the same run or another", async function () {
      const { registry, runId, owner, stranger, checkpoints } = await loadFixture(committedRunFixture);
      const claimed = checkpoints[1].weightsDigest;
      await expect(commit(registry, owner, runId, 2, checkpoint(2, { weightsDigest: claimed })))
        .to.be.revertedWithCustomError(registry, "ProvenanceRegistryWeightsAlreadyCommitted")
        .withArgs(claimed, runId, 1);
      const otherRun = ethers.id("another run");
      await register(registry, stranger, otherRun, runCommitments("other"));
      await expect(commit(registry, stranger, otherRun, 0, checkpoint(0, { weightsDigest: claimed })))
        .to.be.revertedWithCustomError(registry, "ProvenanceRegistryWeightsAlreadyCommitted")
        .withArgs(claimed, runId, 1);
    });

    it("reverts for an empty manifest content address", async function () {
      const { registry, runId, owner } = await loadFixture(registeredRunFixture);
      await expect(commit(registry, owner, runId, 0, checkpoint(0, { manifestCid: "" })))
        .to.be.revertedWithCustomError(registry, "ProvenanceRegistryEmptyContentAddress")
        .withArgs(runId);
    });

    it(`costs at most ${GAS_TARGET} gas, the same for 1 step or 2^40 steps (calldata bytes aside)`, async function () {
      const { registry, runId, owner } = await loadFixture(registeredRunFixture);
      const small = await (await commit(registry, owner, runId, 0, checkpoint(0, { logSize: 1n }))).wait();
      const large = await (await commit(registry, owner, runId, 1, checkpoint(1, { logSize: 2n ** 40n }))).wait();
      for (const receipt of [small, large]) expect(receipt.gasUsed).to.be.at.most(GAS_TARGET);
      // 2^40 has 5 more non-zero calldata bytes than 1 (in the argument and in the event): 12 gas each at most.
      const diff = large.gasUsed > small.gasUsed ? large.gasUsed - small.gasUsed : small.gasUsed - large.gasUsed;
      expect(diff).to.be.at.most(100n);
    });

    shouldGuardRunWrites(registeredRunFixture, send, { ownerOnly: false });
  });

  describe("finalizeRun", function () {
    const send = (registry, signer, runId) => registry.connect(signer).finalizeRun(runId);

    it("closes the run and emits RunFinalized with its final head", async function () {
      const { registry, runId, writer, checkpoints } = await loadFixture(committedRunFixture);
      await expect(registry.connect(writer).finalizeRun(runId))
        .to.emit(registry, "RunFinalized")
        .withArgs(runId, writer.address, 2, checkpoints[1].logSize, checkpoints[1].epsilonMicro);
      expect((await registry.getRun(runId)).finalized).to.equal(true);
    });

    it("leaves nothing writable: commit, authorise and revoke all revert", async function () {
      const { registry, runId, owner, writer } = await loadFixture(committedRunFixture);
      await registry.connect(owner).finalizeRun(runId);
      // Thunks: each transaction is sent only when awaited, so no rejection is left unhandled meanwhile.
      for (const sendTx of [
        () => commit(registry, owner, runId, 2, checkpoint(2)),
        () => registry.connect(owner).authorizeWriter(runId, writer.address),
        () => registry.connect(owner).revokeWriter(runId, writer.address),
      ]) {
        await expect(sendTx()).to.be.revertedWithCustomError(registry, "ProvenanceRegistryRunFinalized")
          .withArgs(runId);
      }
    });

    shouldGuardRunWrites(registeredRunFixture, send, { ownerOnly: false });
  });

  describe("look-ups", function () {
    it("getRun reverts for an unknown run", async function () {
      const { registry } = await loadFixture(deployFixture);
      await expect(registry.getRun(UNKNOWN_RUN))
        .to.be.revertedWithCustomError(registry, "ProvenanceRegistryUnknownRun")
        .withArgs(UNKNOWN_RUN);
    });

    it("getCheckpoint reverts past the last index, and for an unknown run", async function () {
      const { registry, runId } = await loadFixture(committedRunFixture);
      await expect(registry.getCheckpoint(runId, 2))
        .to.be.revertedWithCustomError(registry, "ProvenanceRegistryUnknownCheckpoint")
        .withArgs(runId, 2, 2);
      await expect(registry.getCheckpoint(UNKNOWN_RUN, 0))
        .to.be.revertedWithCustomError(registry, "ProvenanceRegistryUnknownRun")
        .withArgs(UNKNOWN_RUN);
    });

    it("finds checkpoints by weights digest; an unknown digest gives the zero run id", async function () {
      const { registry, runId, checkpoints, receipts } = await loadFixture(committedRunFixture);
      const found = await registry.findByWeights(checkpoints[1].weightsDigest);
      expect([found.runId, found.index, found.blockNumber]).to.deep.equal([runId, 1n, BigInt(receipts[1].blockNumber)]);
      const none = await registry.findByWeights(digest("never committed"));
      expect(none.runId).to.equal(ethers.ZeroHash);
      expect(none.blockNumber).to.equal(0n);
    });

    it("keeps each record at its own block, across mined blocks", async function () {
      const { registry, runId, owner, receipts } = await loadFixture(committedRunFixture);
      await mine(5);
      const receipt = await (await commit(registry, owner, runId, 2, checkpoint(2))).wait();
      const blocks = [];
      for (let i = 0; i < 3; i++) blocks.push((await registry.getCheckpoint(runId, i)).blockNumber);
      expect(blocks).to.deep.equal([...receipts, receipt].map((r) => BigInt(r.blockNumber)));
    });
  });

  describe("RFC 6962 inclusion proofs (SHA-256 precompile, ordered children)", function () {
    const leafHashes = rfc6962.CT_LEAVES.map(rfc6962.hashLeaf);

    it("reproduces the certificate-transparency roots for every leaf of every prefix", async function () {
      const { registry } = await loadFixture(deployFixture);
      for (let size = 1; size <= leafHashes.length; size++) {
        const tree = leafHashes.slice(0, size);
        expect(rfc6962.root(tree)).to.equal(rfc6962.CT_ROOTS[size - 1]);
        for (let index = 0; index < size; index++) {
          const proof = rfc6962.inclusionProof(index, tree);
          expect(await registry.rootFromInclusionProof(tree[index], index, size, proof)).to.equal(
            rfc6962.CT_ROOTS[size - 1],
          );
        }
      }
      expect(rfc6962.inclusionProof(0, leafHashes)).to.deep.equal(rfc6962.CT_PATH_0_8);
    });

    it("agrees with the reference on larger trees", async function () {
      const { registry } = await loadFixture(deployFixture);
      const leaves = Array.from({ length: 37 }, (_, i) => rfc6962.hashLeaf(ethers.toBeHex(i, 4)));
      for (const size of [9, 16, 17, 31, 37]) {
        const tree = leaves.slice(0, size);
        for (const index of [0, 1, size - 2, size - 1, Math.floor(size / 2)]) {
          const proof = rfc6962.inclusionProof(index, tree);
          expect(await registry.rootFromInclusionProof(tree[index], index, size, proof)).to.equal(rfc6962.root(tree));
        }
      }
    });

    it("rejects malformed proofs: index out of range, a node missing, a node extra", async function () {
      const { registry } = await loadFixture(deployFixture);
      const proof = rfc6962.inclusionProof(5, leafHashes.slice(0, 7));
      const cases = [
        [5, 5, proof],
        [5, 7, proof.slice(0, -1)],
        [5, 7, [...proof, ethers.ZeroHash]],
        [0, 0, []],
      ];
      for (const [index, size, nodes] of cases) {
        await expect(registry.rootFromInclusionProof(leafHashes[5], index, size, nodes))
          .to.be.revertedWithCustomError(registry, "ProvenanceRegistryInvalidProof")
          .withArgs(index, size, nodes.length);
      }
    });

    it("gives another root for a flipped bit or a wrong index", async function () {
      const { registry } = await loadFixture(deployFixture);
      const proof = rfc6962.inclusionProof(5, leafHashes.slice(0, 7));
      const flipped = [...proof];
      flipped[1] = ethers.toBeHex(BigInt(flipped[1]) ^ 1n, 32);
      expect(await registry.rootFromInclusionProof(leafHashes[5], 5, 7, flipped)).not.to.equal(rfc6962.CT_ROOTS[6]);
      expect(await registry.rootFromInclusionProof(leafHashes[5], 4, 7, proof)).not.to.equal(rfc6962.CT_ROOTS[6]);
    });

    it("verifyInclusion checks a step against a committed log root and refuses a doctored record", async function () {
      const { registry, runId, owner } = await loadFixture(registeredRunFixture);
      const steps = Array.from({ length: 13 }, (_, i) => rfc6962.hashLeaf(ethers.toUtf8Bytes(`step ${i}`)));
      const c = checkpoint(0, { logSize: 13n, logRoot: rfc6962.root(steps) });
      await commit(registry, owner, runId, 0, c);
      const data = { ...c, committer: owner.address };
      const proof = rfc6962.inclusionProof(6, steps);
      expect(await registry.verifyInclusion(runId, 0, data, steps[6], 6, proof)).to.equal(true);
      expect(await registry.verifyInclusion(runId, 0, data, steps[7], 6, proof)).to.equal(false);
      const doctored = { ...data, logRoot: digest("another root") };
      await expect(registry.verifyInclusion(runId, 0, doctored, steps[6], 6, proof))
        .to.be.revertedWithCustomError(registry, "ProvenanceRegistryRecordMismatch")
        .withArgs(runId, 0, checkpointRecordHash(runId, 0, data), checkpointRecordHash(runId, 0, doctored));
      await expect(registry.verifyInclusion(runId, 1, data, steps[6], 6, proof))
        .to.be.revertedWithCustomError(registry, "ProvenanceRegistryUnknownCheckpoint")
        .withArgs(runId, 1, 1);
    });
  });
});
