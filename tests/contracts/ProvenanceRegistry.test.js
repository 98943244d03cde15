"use strict";

const { expect } = require("chai");
const { artifacts, ethers } = require("hardhat");
const { loadFixture, mine } = require("@nomicfoundation/hardhat-network-helpers");
const { shouldGuardRunWrites, UNKNOWN_RUN } = require("./ProvenanceRegistry.behavior");
const heads = require("./ProvenanceRegistry.heads");
const rfc6962 = require("./rfc6962");

const CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";
const NO_PRIVACY = 2n ** 64n - 1n; // the documented ε sentinel for non-private runs
const MAX_LOG_SIZE = 2n ** 32n - 1n;
const GAS_TARGET = 45000n;

const digest = (label) => ethers.sha256(ethers.toUtf8Bytes(label));

function runCommitments(label) {
  return {
    manifestDigest: digest(`${label}/manifest`),
    baseModelDigest: digest(`${label}/base`),
    datasetRoot: digest(`${label}/dataset`),
    noiseSeedCommitment: digest(`${label}/noise`),
    manifestCid: CID,
  };
}

// Checkpoint `index` of a run adding 100 steps per checkpoint (checkpoint 0: the adapter before any step).
function checkpoint(index, overrides = {}) {
  return {
    weightsDigest: digest(`weights/${index}`),
    tensorDigest: digest(`tensors/${index}`),
    checkpointDigest: digest(`checkpoint/${index}`),
    logSize: 100n * BigInt(index),
    logRoot: digest(`log/${index}`),
    epsilonMicro: 250000n * BigInt(index),
    manifestCidDigest: digest(`directory cid/${index}`),
    ...overrides,
  };
}

const register = (registry, signer, runId, r) =>
  registry
    .connect(signer)
    .registerRun(runId, r.manifestDigest, r.baseModelDigest, r.datasetRoot, r.noiseSeedCommitment, r.manifestCid);

const commit = (registry, signer, runKey, index, c) =>
  registry
    .connect(signer)
    .commitCheckpoint(runKey, index, c.weightsDigest, c.tensorDigest, c.checkpointDigest, c.logSize, c.logRoot,
      c.epsilonMicro, c.manifestCidDigest);

async function deployFixture() {
  const [owner, writer, stranger] = await ethers.getSigners();
  const registry = await ethers.deployContract("ProvenanceRegistry");
  return { registry, owner, writer, stranger };
}

async function registeredRunFixture() {
  const base = await deployFixture();
  const runId = ethers.id("prov test run");
  const runKey = heads.runKeyOf(base.owner.address, runId);
  const run = runCommitments("run");
  await register(base.registry, base.owner, runId, run);
  await base.registry.connect(base.owner).authorizeWriter(runKey, base.writer.address);
  return { ...base, runId, runKey, run };
}

async function committedRunFixture() {
  const base = await registeredRunFixture();
  const checkpoints = [checkpoint(0), checkpoint(1)];
  const receipts = [];
  for (const [i, c] of checkpoints.entries()) {
    receipts.push(await (await commit(base.registry, base.owner, base.runKey, i, c)).wait());
  }
  return { ...base, checkpoints, receipts };
}

/** Every event of `runKey`, in chain order (one query over all event types, filtered on the first topic). */
async function runEvents(registry, runKey) {
  const found = [];
  for (const name of ["RunRegistered", "WriterAuthorized", "WriterRevoked", "CheckpointCommitted", "RunFinalized"]) {
    found.push(...(await registry.queryFilter(registry.filters[name](runKey))));
  }
  return found.sort((a, b) => a.blockNumber - b.blockNumber || a.index - b.index);
}

describe("ProvenanceRegistry", function () {
  describe("interface", function () {
    it("has no admin, upgrade or delete function: exactly these externals", async function () {
      const { registry } = await loadFixture(deployFixture);
      const names = registry.interface.fragments.filter((f) => f.type === "function").map((f) => f.name).sort();
      expect(names).to.deep.equal([
        "VERSION", "authorizeWriter", "canWrite", "commitCheckpoint", "finalizeRun", "getRun", "lastEventBlock",
        "registerRun", "revokeWriter", "rootFromInclusionProof", "runKeyOf",
      ]);
    });

    it("reports version 3", async function () {
      const { registry } = await loadFixture(deployFixture);
      expect(await registry.VERSION()).to.equal(3n);
    });

    it("the artifact shipped in the Python package equals Hardhat's compile", async function () {
      const shipped = require("../../provenance/contracts/ProvenanceRegistry.json");
      const built = await artifacts.readArtifact("ProvenanceRegistry");
      expect(shipped.bytecode).to.equal(built.bytecode);
      expect(shipped.deployedBytecode).to.equal(built.deployedBytecode);
      expect(shipped.abi).to.deep.equal(built.abi);
    });

    it("derives run keys as keccak256(abi.encode(owner, runId))", async function () {
      const { registry, owner, stranger } = await loadFixture(deployFixture);
      const runId = ethers.id("any run");
      expect(await registry.runKeyOf(owner.address, runId)).to.equal(heads.runKeyOf(owner.address, runId));
      expect(await registry.runKeyOf(stranger.address, runId)).not.to.equal(await registry.runKeyOf(owner.address, runId));
    });
  });

  describe("registerRun", function () {
    it("registers the run under the sender's run key, returns it and emits RunRegistered with the first head",
      async function () {
        const { registry, owner } = await loadFixture(deployFixture);
        const runId = ethers.id("fresh run");
        const runKey = heads.runKeyOf(owner.address, runId);
        const r = runCommitments("fresh");
        expect(await registry.connect(owner).registerRun.staticCall(runId, r.manifestDigest, r.baseModelDigest,
          r.datasetRoot, r.noiseSeedCommitment, r.manifestCid)).to.equal(runKey);
        await register(registry, owner, runId, r);
        const [event] = await registry.queryFilter(registry.filters.RunRegistered(runKey));
        const head = heads.registrationHead({ runKey, owner: owner.address, runId, run: r, blockNumber: event.blockNumber });
        expect(event.args.toArray()).to.deep.equal([runKey, runId, owner.address, r.manifestDigest, r.baseModelDigest,
          r.datasetRoot, r.noiseSeedCommitment, CID, head]);
        const state = await registry.getRun(runKey);
        expect(state.owner).to.equal(owner.address);
        expect(state.runId).to.equal(runId);
        expect(state.registeredBlock).to.equal(BigInt(event.blockNumber));
        expect([state.checkpointCount, state.logSize, state.epsilonMicro, state.finalized]).to.deep.equal(
          [0n, 0n, 0n, false]);
        expect(state.head).to.equal(head);
        expect(await registry.canWrite(runKey, owner.address)).to.equal(true);
      });

    it("emits RunRegistered with every commitment", async function () {
      const { registry, owner } = await loadFixture(deployFixture);
      const runId = ethers.id("emitted");
      const runKey = heads.runKeyOf(owner.address, runId);
      const r = runCommitments("emitted");
      await expect(register(registry, owner, runId, r))
        .to.emit(registry, "RunRegistered")
        .withArgs(runKey, runId, owner.address, r.manifestDigest, r.baseModelDigest, r.datasetRoot,
          r.noiseSeedCommitment, CID, (head) => ethers.dataLength(head) === 24);
    });

    it("reverts when the same owner registers the run id again", async function () {
      const { registry, runId, runKey, owner } = await loadFixture(registeredRunFixture);
      await expect(register(registry, owner, runId, runCommitments("again")))
        .to.be.revertedWithCustomError(registry, "ProvenanceRegistryRunAlreadyRegistered")
        .withArgs(runKey, owner.address);
    });

    it("a copied registration sent first by another account makes that account's run, not the honest one's",
      async function () {
        const { registry, owner, stranger } = await loadFixture(deployFixture);
        const runId = ethers.id("front-run me");
        const r = runCommitments("honest");
        await register(registry, stranger, runId, r); // the attacker copies the pending transaction and wins the race
        await expect(register(registry, owner, runId, r)).not.to.be.reverted;
        const honest = await registry.getRun(heads.runKeyOf(owner.address, runId));
        const copy = await registry.getRun(heads.runKeyOf(stranger.address, runId));
        expect([honest.owner, copy.owner]).to.deep.equal([owner.address, stranger.address]);
        expect(honest.runId).to.equal(copy.runId);
        expect(honest.head).not.to.equal(copy.head);
        expect(await registry.canWrite(heads.runKeyOf(owner.address, runId), stranger.address)).to.equal(false);
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
        .withArgs(heads.runKeyOf(owner.address, runId));
    });
  });

  describe("authorizeWriter", function () {
    const send = (registry, signer, runKey) => registry.connect(signer).authorizeWriter(runKey, signer.address);

    it("authorises the writer, folds the record into the head and emits WriterAuthorized", async function () {
      const { registry, runKey, owner, stranger } = await loadFixture(registeredRunFixture);
      expect(await registry.canWrite(runKey, stranger.address)).to.equal(false);
      const before = (await registry.getRun(runKey)).head;
      const previous = await registry.lastEventBlock(runKey);
      const tx = registry.connect(owner).authorizeWriter(runKey, stranger.address);
      const receipt = await (await tx).wait();
      const head = heads.writerHead(before, { authorized: true, writer: stranger.address, by: owner.address,
        blockNumber: receipt.blockNumber });
      await expect(tx).to.emit(registry, "WriterAuthorized").withArgs(runKey, stranger.address, previous, head);
      expect(await registry.lastEventBlock(runKey)).to.equal(BigInt(receipt.blockNumber));
      expect((await registry.getRun(runKey)).head).to.equal(head);
      expect(await registry.canWrite(runKey, stranger.address)).to.equal(true);
    });

    it("reverts for the zero address", async function () {
      const { registry, runKey, owner } = await loadFixture(registeredRunFixture);
      await expect(registry.connect(owner).authorizeWriter(runKey, ethers.ZeroAddress))
        .to.be.revertedWithCustomError(registry, "ProvenanceRegistryInvalidWriter")
        .withArgs(runKey, ethers.ZeroAddress);
    });

    shouldGuardRunWrites(registeredRunFixture, send, { ownerOnly: true });
  });

  describe("revokeWriter", function () {
    const send = (registry, signer, runKey) => registry.connect(signer).revokeWriter(runKey, signer.address);

    it("revokes the writer and emits WriterRevoked; the writer can no longer commit", async function () {
      const { registry, runKey, owner, writer } = await loadFixture(registeredRunFixture);
      const before = (await registry.getRun(runKey)).head;
      const previous = await registry.lastEventBlock(runKey);
      const tx = registry.connect(owner).revokeWriter(runKey, writer.address);
      const receipt = await (await tx).wait();
      const head = heads.writerHead(before, { authorized: false, writer: writer.address, by: owner.address,
        blockNumber: receipt.blockNumber });
      await expect(tx).to.emit(registry, "WriterRevoked").withArgs(runKey, writer.address, previous, head);
      expect(await registry.canWrite(runKey, writer.address)).to.equal(false);
      await expect(commit(registry, writer, runKey, 0, checkpoint(0)))
        .to.be.revertedWithCustomError(registry, "ProvenanceRegistryUnauthorized")
        .withArgs(writer.address, runKey);
    });

    shouldGuardRunWrites(registeredRunFixture, send, { ownerOnly: true });
  });

  describe("commitCheckpoint", function () {
    const send = (registry, signer, runKey) => commit(registry, signer, runKey, 0, checkpoint(0));

    it("folds the record into the head, updates the run and emits CheckpointCommitted", async function () {
      const { registry, runKey, writer } = await loadFixture(registeredRunFixture);
      const c = checkpoint(0, { epsilonMicro: 7n });
      const before = (await registry.getRun(runKey)).head;
      const previous = await registry.lastEventBlock(runKey);
      const tx = commit(registry, writer, runKey, 0, c);
      const receipt = await (await tx).wait();
      const head = heads.checkpointHead(before, { index: 0, checkpoint: c, committer: writer.address,
        blockNumber: receipt.blockNumber });
      await expect(tx)
        .to.emit(registry, "CheckpointCommitted")
        .withArgs(runKey, c.weightsDigest, c.tensorDigest, 0, c.checkpointDigest, c.logSize, c.logRoot, c.epsilonMicro,
          c.manifestCidDigest, writer.address, previous, head);
      const state = await registry.getRun(runKey);
      expect([state.checkpointCount, state.logSize, state.epsilonMicro, state.head]).to.deep.equal(
        [1n, 0n, 7n, head]);
    });

    it("requires strictly sequential indices: no gap, no repeat (a retry reverts, it never commits twice)",
      async function () {
        const { registry, runKey, owner } = await loadFixture(committedRunFixture);
        for (const index of [1, 3]) {
          await expect(commit(registry, owner, runKey, index, checkpoint(5)))
            .to.be.revertedWithCustomError(registry, "ProvenanceRegistryNonSequentialIndex")
            .withArgs(runKey, 2, index);
        }
      });

    it("refuses a first checkpoint that already has steps", async function () {
      const { registry, runKey, owner } = await loadFixture(registeredRunFixture);
      await expect(commit(registry, owner, runKey, 0, checkpoint(0, { logSize: 1n })))
        .to.be.revertedWithCustomError(registry, "ProvenanceRegistryInvalidLogSize")
        .withArgs(runKey, 0, 0, 1);
    });

    it("refuses a zero-step checkpoint and a shrinking log; accepts one more step", async function () {
      const { registry, runKey, owner, checkpoints } = await loadFixture(committedRunFixture);
      const previous = checkpoints[1].logSize;
      for (const logSize of [previous, previous - 1n, 0n]) {
        await expect(commit(registry, owner, runKey, 2, checkpoint(2, { logSize })))
          .to.be.revertedWithCustomError(registry, "ProvenanceRegistryInvalidLogSize")
          .withArgs(runKey, 2, previous, logSize);
      }
      await expect(commit(registry, owner, runKey, 2, checkpoint(2, { logSize: previous + 1n }))).not.to.be.reverted;
    });

    it("refuses a log size that does not fit its 32-bit storage, accepts the largest that does", async function () {
      const { registry, runKey, owner } = await loadFixture(committedRunFixture);
      await expect(commit(registry, owner, runKey, 2, checkpoint(2, { logSize: MAX_LOG_SIZE + 1n })))
        .to.be.revertedWithCustomError(registry, "ProvenanceRegistryLogSizeTooLarge")
        .withArgs(runKey, MAX_LOG_SIZE + 1n, MAX_LOG_SIZE);
      await commit(registry, owner, runKey, 2, checkpoint(2, { logSize: MAX_LOG_SIZE }));
      expect((await registry.getRun(runKey)).logSize).to.equal(MAX_LOG_SIZE);
    });

    it("refuses ε that decreases, accepts the same ε and the non-private sentinel", async function () {
      const { registry, runKey, owner, checkpoints } = await loadFixture(committedRunFixture);
      const previous = checkpoints[1].epsilonMicro;
      await expect(commit(registry, owner, runKey, 2, checkpoint(2, { epsilonMicro: previous - 1n })))
        .to.be.revertedWithCustomError(registry, "ProvenanceRegistryEpsilonDecreased")
        .withArgs(runKey, previous, previous - 1n);
      await expect(commit(registry, owner, runKey, 2, checkpoint(2, { epsilonMicro: previous }))).not.to.be.reverted;
      await expect(commit(registry, owner, runKey, 3, checkpoint(3, { epsilonMicro: NO_PRIVACY }))).not.to.be.reverted;
      expect((await registry.getRun(runKey)).epsilonMicro).to.equal(NO_PRIVACY);
    });

    it("reverts for a zero content-address digest", async function () {
      const { registry, runKey, owner } = await loadFixture(registeredRunFixture);
      await expect(commit(registry, owner, runKey, 0, checkpoint(0, { manifestCidDigest: ethers.ZeroHash })))
        .to.be.revertedWithCustomError(registry, "ProvenanceRegistryEmptyContentAddress")
        .withArgs(runKey);
    });

    it("lets any number of runs claim the same weights and tensors; the claims are found by topic", async function () {
      const { registry, runKey, owner, stranger, checkpoints } = await loadFixture(committedRunFixture);
      const claimed = checkpoints[1];
      await expect(commit(registry, owner, runKey, 2, checkpoint(2, { weightsDigest: claimed.weightsDigest })))
        .not.to.be.reverted;
      const otherId = ethers.id("another run");
      const otherKey = heads.runKeyOf(stranger.address, otherId);
      await register(registry, stranger, otherId, runCommitments("other"));
      await commit(registry, stranger, otherKey, 0, checkpoint(0, { tensorDigest: claimed.tensorDigest }));
      await commit(registry, stranger, otherKey, 1,
        checkpoint(1, { weightsDigest: claimed.weightsDigest, tensorDigest: claimed.tensorDigest }));
      const byWeights = await registry.queryFilter(registry.filters.CheckpointCommitted(null, claimed.weightsDigest));
      expect(byWeights.map((e) => [e.args.runKey, e.args.index])).to.deep.equal(
        [[runKey, 1n], [runKey, 2n], [otherKey, 1n]]);
      const byTensors = await registry.queryFilter(
        registry.filters.CheckpointCommitted(null, null, claimed.tensorDigest));
      expect(byTensors.map((e) => [e.args.runKey, e.args.index])).to.deep.equal(
        [[runKey, 1n], [otherKey, 0n], [otherKey, 1n]]);
    });

    it("a copied commit sent by another account is refused on the honest run and cannot block it",
      async function () {
        const { registry, runId, runKey, owner, stranger, checkpoints } = await loadFixture(committedRunFixture);
        const next = checkpoint(2);
        // The attacker replays the pending transaction's arguments: not a writer of the honest run.
        await expect(commit(registry, stranger, runKey, 2, next))
          .to.be.revertedWithCustomError(registry, "ProvenanceRegistryUnauthorized")
          .withArgs(stranger.address, runKey);
        // It registers the same run id (its own run) and commits copies of every checkpoint there, first.
        const copyKey = heads.runKeyOf(stranger.address, runId);
        await register(registry, stranger, runId, runCommitments("run"));
        for (const [i, c] of [...checkpoints, next].entries()) await commit(registry, stranger, copyKey, i, c);
        await expect(commit(registry, owner, runKey, 2, next)).not.to.be.reverted;
        expect((await registry.getRun(runKey)).checkpointCount).to.equal(3n);
        expect((await registry.getRun(copyKey)).owner).to.equal(stranger.address);
      });

    it(`costs at most ${GAS_TARGET} gas, the same for 1 step or 2^31 steps (calldata bytes aside)`, async function () {
      const { registry, runKey, owner, writer } = await loadFixture(registeredRunFixture);
      const first = await (await commit(registry, owner, runKey, 0, checkpoint(0))).wait();
      const small = await (await commit(registry, owner, runKey, 1, checkpoint(1, { logSize: 1n }))).wait();
      const large = await (await commit(registry, owner, runKey, 2, checkpoint(2, { logSize: 2n ** 31n }))).wait();
      const byWriter = await (await commit(registry, writer, runKey, 3, checkpoint(3, { logSize: MAX_LOG_SIZE }))).wait();
      for (const receipt of [first, small, large, byWriter]) expect(receipt.gasUsed).to.be.at.most(GAS_TARGET);
      // 2^31 has 3 more non-zero calldata bytes than 1 (in the argument and in the event): 12 gas each at most.
      const diff = large.gasUsed > small.gasUsed ? large.gasUsed - small.gasUsed : small.gasUsed - large.gasUsed;
      expect(diff).to.be.at.most(100n);
    });

    shouldGuardRunWrites(registeredRunFixture, send, { ownerOnly: false });
  });

  describe("finalizeRun", function () {
    const send = (registry, signer, runKey) => registry.connect(signer).finalizeRun(runKey, ethers.ZeroHash);

    it("closes the run, folds the merged-model digest into the head and emits RunFinalized", async function () {
      const { registry, runKey, owner, checkpoints, receipts } = await loadFixture(committedRunFixture);
      const merged = digest("merged model tensors");
      const before = (await registry.getRun(runKey)).head;
      const tx = registry.connect(owner).finalizeRun(runKey, merged);
      const receipt = await (await tx).wait();
      const head = heads.finalizedHead(before, { mergedTensorDigest: merged, by: owner.address,
        blockNumber: receipt.blockNumber });
      await expect(tx)
        .to.emit(registry, "RunFinalized")
        .withArgs(runKey, merged, owner.address, 2, checkpoints[1].logSize, checkpoints[1].epsilonMicro,
          receipts[1].blockNumber, head);
      const state = await registry.getRun(runKey);
      expect([state.finalized, state.head]).to.deep.equal([true, head]);
      const found = await registry.queryFilter(registry.filters.RunFinalized(null, merged));
      expect(found.map((e) => e.args.runKey)).to.deep.equal([runKey]);
    });

    it("leaves nothing writable: commit, authorise, revoke and finalize all revert", async function () {
      const { registry, runKey, owner, writer } = await loadFixture(committedRunFixture);
      await registry.connect(owner).finalizeRun(runKey, ethers.ZeroHash);
      // Thunks: each transaction is sent only when awaited, so no rejection is left unhandled meanwhile.
      for (const sendTx of [
        () => commit(registry, owner, runKey, 2, checkpoint(2)),
        () => registry.connect(owner).authorizeWriter(runKey, writer.address),
        () => registry.connect(owner).revokeWriter(runKey, writer.address),
        () => registry.connect(owner).finalizeRun(runKey, ethers.ZeroHash),
      ]) {
        await expect(sendTx()).to.be.revertedWithCustomError(registry, "ProvenanceRegistryRunFinalized")
          .withArgs(runKey);
      }
    });

    it("refuses a run with no checkpoint", async function () {
      const { registry, runKey, owner } = await loadFixture(registeredRunFixture);
      await expect(registry.connect(owner).finalizeRun(runKey, ethers.ZeroHash))
        .to.be.revertedWithCustomError(registry, "ProvenanceRegistryNoCheckpoint")
        .withArgs(runKey);
      expect((await registry.getRun(runKey)).finalized).to.equal(false);
    });

    it("refuses an authorised writer: only the owner closes its run", async function () {
      const { registry, runKey, writer } = await loadFixture(committedRunFixture);
      expect(await registry.canWrite(runKey, writer.address)).to.equal(true);
      await expect(registry.connect(writer).finalizeRun(runKey, ethers.ZeroHash))
        .to.be.revertedWithCustomError(registry, "ProvenanceRegistryUnauthorized")
        .withArgs(writer.address, runKey);
    });

    shouldGuardRunWrites(committedRunFixture, send, { ownerOnly: true });
  });

  describe("block pointers", function () {
    it("each event points to the block of the run's previous one; following them from lastEventBlock with " +
      "single-block queries gives every event of the run", async function () {
      const { registry, runKey, owner, writer, stranger } = await loadFixture(committedRunFixture);
      await mine(1500); // more than a capped provider's 1,000-block query between two of the run's events
      await registry.connect(owner).revokeWriter(runKey, writer.address);
      await register(registry, stranger, ethers.id("noise"), runCommitments("noise")); // another run in between
      await mine(7);
      await commit(registry, owner, runKey, 2, checkpoint(2));
      await registry.connect(owner).finalizeRun(runKey, digest("merged"));
      const events = await runEvents(registry, runKey);
      const state = await registry.getRun(runKey);
      expect(await registry.lastEventBlock(runKey)).to.equal(BigInt(events.at(-1).blockNumber));
      for (let i = 1; i < events.length; i++) {
        expect(events[i].args.previousBlock).to.equal(BigInt(events[i - 1].blockNumber));
      }
      const walked = [];
      let block = Number(await registry.lastEventBlock(runKey));
      for (;;) {
        const found = [];
        for (const name of ["RunRegistered", "WriterAuthorized", "WriterRevoked", "CheckpointCommitted",
          "RunFinalized"]) {
          found.push(...(await registry.queryFilter(registry.filters[name](runKey), block, block)));
        }
        found.sort((a, b) => a.index - b.index);
        walked.unshift(...found);
        if (BigInt(block) === state.registeredBlock) break;
        block = Number(found[0].args.previousBlock);
      }
      expect(walked.map((e) => e.transactionHash)).to.deep.equal(events.map((e) => e.transactionHash));
      expect(heads.foldEvents(walked)).to.equal(state.head);
    });

    it("lastEventBlock reverts for an unknown run and is the registration block of a fresh run", async function () {
      const { registry, owner } = await loadFixture(deployFixture);
      await expect(registry.lastEventBlock(UNKNOWN_RUN))
        .to.be.revertedWithCustomError(registry, "ProvenanceRegistryUnknownRun")
        .withArgs(UNKNOWN_RUN);
      const runId = ethers.id("fresh");
      await register(registry, owner, runId, runCommitments("fresh"));
      const runKey = heads.runKeyOf(owner.address, runId);
      expect(await registry.lastEventBlock(runKey)).to.equal((await registry.getRun(runKey)).registeredBlock);
    });
  });

  describe("head chain", function () {
    it("the run's events, folded in chain order, give the stored head; any change to one of them does not",
      async function () {
        const { registry, runKey, owner, writer } = await loadFixture(committedRunFixture);
        await registry.connect(owner).revokeWriter(runKey, writer.address);
        await mine(3);
        await commit(registry, owner, runKey, 2, checkpoint(2));
        await registry.connect(owner).finalizeRun(runKey, digest("merged"));
        const events = await runEvents(registry, runKey);
        expect(events.map((e) => e.fragment.name)).to.deep.equal(["RunRegistered", "WriterAuthorized",
          "CheckpointCommitted", "CheckpointCommitted", "WriterRevoked", "CheckpointCommitted", "RunFinalized"]);
        const stored = (await registry.getRun(runKey)).head;
        expect(heads.foldEvents(events)).to.equal(stored);
        expect(() => heads.foldEvents(events.filter((_, i) => i !== 3))).to.throw(/carries another head/);
      });
  });

  describe("look-ups", function () {
    it("getRun reverts for an unknown run", async function () {
      const { registry } = await loadFixture(deployFixture);
      await expect(registry.getRun(UNKNOWN_RUN))
        .to.be.revertedWithCustomError(registry, "ProvenanceRegistryUnknownRun")
        .withArgs(UNKNOWN_RUN);
    });

    it("canWrite is false for an unknown run", async function () {
      const { registry, owner } = await loadFixture(deployFixture);
      expect(await registry.canWrite(UNKNOWN_RUN, owner.address)).to.equal(false);
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
  });
});
