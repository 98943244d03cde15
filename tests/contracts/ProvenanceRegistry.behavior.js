// Behaviour shared by several ProvenanceRegistry functions (OpenZeppelin's `.behavior.js` shape): every write names
// the run it touches by its run key, and each must refuse unknown runs, callers without the right and finalized runs.
// (Finalizing needs a checkpoint, so the finalized case commits checkpoint 0 first when the run has none.)
"use strict";

const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture } = require("@nomicfoundation/hardhat-network-helpers");

const UNKNOWN_RUN = ethers.id("prov test: a run key nobody registered");

/**
 * `fixture` resolves to { registry, runKey, owner, writer, stranger } with `writer` authorised on `runKey`.
 * `send(registry, signer, runKey)` performs the write under test.
 * `ownerOnly`: whether an authorised writer is refused too (authorise/revoke are the owner's alone).
 */
function shouldGuardRunWrites(fixture, send, { ownerOnly }) {
  describe("write guard", function () {
    it("reverts for a run that was never registered", async function () {
      const { registry, owner } = await loadFixture(fixture);
      await expect(send(registry, owner, UNKNOWN_RUN))
        .to.be.revertedWithCustomError(registry, "ProvenanceRegistryUnknownRun")
        .withArgs(UNKNOWN_RUN);
    });

    it("reverts for a caller that is neither the owner nor an authorised writer", async function () {
      const { registry, runKey, stranger } = await loadFixture(fixture);
      await expect(send(registry, stranger, runKey))
        .to.be.revertedWithCustomError(registry, "ProvenanceRegistryUnauthorized")
        .withArgs(stranger.address, runKey);
    });

    if (ownerOnly) {
      it("reverts for an authorised writer (owner only)", async function () {
        const { registry, runKey, writer } = await loadFixture(fixture);
        await expect(send(registry, writer, runKey))
          .to.be.revertedWithCustomError(registry, "ProvenanceRegistryUnauthorized")
          .withArgs(writer.address, runKey);
      });
    } else {
      it("accepts an authorised writer", async function () {
        const { registry, runKey, writer } = await loadFixture(fixture);
        await expect(send(registry, writer, runKey)).not.to.be.reverted;
      });
    }

    it("reverts once the run is finalized", async function () {
      const { registry, runKey, owner } = await loadFixture(fixture);
      if ((await registry.getRun(runKey)).checkpointCount === 0n) {
        const d = (label) => ethers.id(`guard/${label}`);
        await registry.connect(owner).commitCheckpoint(runKey, 0, d("weights"), d("tensors"), d("checkpoint"), 0,
          d("log"), 0, d("cid"));
      }
      await registry.connect(owner).finalizeRun(runKey, ethers.ZeroHash);
      await expect(send(registry, owner, runKey))
        .to.be.revertedWithCustomError(registry, "ProvenanceRegistryRunFinalized")
        .withArgs(runKey);
    });
  });
}

module.exports = { shouldGuardRunWrites, UNKNOWN_RUN };
