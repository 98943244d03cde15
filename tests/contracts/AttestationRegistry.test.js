// AttestationRegistry (version 2) on the Hardhat network, beside ProvenanceRegistry version 2. BN254 keys, proofs of
// possession, statement messages and signatures come from AttestationRegistry.vectors.json, generated with py-ecc by
// `python -m tests.provenance.test_attest_vectors` for this exact scenario: fixed keys deploy and commit in a fixed
// nonce order, so every address (and the run key) in the vectors is reproduced here.
"use strict";

const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture } = require("@nomicfoundation/hardhat-network-helpers");
const { anyValue } = require("@nomicfoundation/hardhat-chai-matchers/withArgs");
const { shouldCheckNewKeys, g1, g2 } = require("./AttestationRegistry.behavior");
const V = require("./AttestationRegistry.vectors.json");

const GAS_ATTEST_ONE = 250000n; // one signer: run look-up, hash-to-curve, 2 ecMul, a 2-pair pairing, one new slot
const GAS_FIRST_EXTRA = 60000n; // the first attestation of a checkpoint: list length and signer bitmap slots
const GAS_PER_EXTRA_SIGNER = 15000n; // 4 cold storage reads, one ecAdd, calldata and event data

const [A0, A1, A2] = V.auditors;
const [C0, C1] = V.checkpoints;

async function fixture() {
  const [funder] = await ethers.getSigners();
  const deployer = new ethers.Wallet(V.deployerKey, ethers.provider);
  const auditors = V.auditors.map((a) => new ethers.Wallet(a.key, ethers.provider));
  for (const w of [deployer, ...auditors]) {
    await funder.sendTransaction({ to: w.address, value: ethers.parseEther("10") });
  }
  const registry = await ethers.deployContract("ProvenanceRegistry", [], deployer);
  const attestations = await ethers.deployContract("AttestationRegistry", [await registry.getAddress()], deployer);
  expect(await registry.getAddress()).to.equal(V.registry);
  expect(await attestations.getAddress()).to.equal(V.attestationRegistry);
  const zero = ethers.ZeroHash;
  await registry.connect(deployer).registerRun(V.runId, zero, zero, zero, zero, "bafy-run");
  expect(await registry.runKeyOf(deployer.address, V.runId)).to.equal(V.runKey);
  for (const [i, c] of V.checkpoints.entries()) {
    await registry
      .connect(deployer)
      .commitCheckpoint(V.runKey, i, c.weightsDigest, c.tensorDigest, c.checkpointDigest, c.logSize, c.logRoot,
        c.epsilonMicro, c.manifestCidDigest);
  }
  // auditors 0 and 1 register; auditor 2 stays unregistered (the vectors bind each proof to one account and one
  // AttestationRegistry address, so there is exactly one such fixture)
  for (const i of [0, 1]) {
    const a = V.auditors[i];
    await attestations.connect(auditors[i]).registerAuditor(`auditor-${i}`, g1(a.pk1), g2(a.pk2), g1(a.pop));
  }
  return { registry, attestations, deployer, auditors, funder };
}

function statement(c, overrides = {}) {
  return {
    runKey: V.runKey,
    index: V.checkpoints.indexOf(c),
    weightsDigest: c.weightsDigest,
    checkpointDigest: c.checkpointDigest,
    logSize: c.logSize,
    logRoot: c.logRoot,
    epsilonMicro: c.epsilonMicro,
    level: c.level,
    verificationDigest: V.verificationDigest,
    reportCid: V.reportCid,
    ...overrides,
  };
}

function attestation(c, signers, signature, aggregateKey, overrides = {}) {
  return { statement: statement(c, overrides), signers, signature: g1(signature), aggregateKey: g2(aggregateKey) };
}

const byAddress = (a, b) => (BigInt(a.address) < BigInt(b.address) ? -1 : 1);
// Auditors 0 and 1 in ascending address order, their addresses and key ids in that order.
const pair = () => [A0, A1].sort(byAddress);
const pairAttestation = (c) => attestation(c, pair().map((a) => a.address), c.aggregate01, V.aggregateKey01);
const alone = (c, i, overrides = {}) =>
  attestation(c, [V.auditors[i].address], c.signatures[i], V.auditors[i].pk2, overrides);

describe("AttestationRegistry", function () {
  describe("deployment", function () {
    it("binds a version 3 ProvenanceRegistry", async function () {
      const { attestations } = await loadFixture(fixture);
      expect(await attestations.provenanceRegistry()).to.equal(V.registry);
    });

    it("binds a version 2 ProvenanceRegistry (the frozen artifact: deployments before version 3)", async function () {
      const { funder } = await loadFixture(fixture);
      const v2 = require("../../provenance/contracts/ProvenanceRegistryV2.json");
      const old = await new ethers.ContractFactory(v2.abi, v2.bytecode, funder).deploy();
      expect(await old.VERSION()).to.equal(2n);
      const factory = await ethers.getContractFactory("AttestationRegistry", funder);
      const bound = await factory.deploy(await old.getAddress());
      expect(await bound.provenanceRegistry()).to.equal(await old.getAddress());
    });

    it("refuses anything that is not a version 2 or 3 ProvenanceRegistry", async function () {
      const { attestations, funder } = await loadFixture(fixture);
      const factory = await ethers.getContractFactory("AttestationRegistry", funder);
      await expect(factory.deploy(funder.address))
        .to.be.revertedWithCustomError(factory, "AttestationRegistryUnsupportedRegistry")
        .withArgs(funder.address, 0);
      const noVersion = await attestations.getAddress(); // a contract without VERSION()
      await expect(factory.deploy(noVersion))
        .to.be.revertedWithCustomError(factory, "AttestationRegistryUnsupportedRegistry")
        .withArgs(noVersion, 0);
    });
  });

  describe("hashing", function () {
    it("computes the same statement message and hash-to-G1 as Python", async function () {
      const { attestations } = await loadFixture(fixture);
      for (const c of V.checkpoints) {
        expect(await attestations.attestationMessage(statement(c))).to.equal(c.message);
        const [x, y] = await attestations.hashToG1(c.message, false);
        expect([x.toString(), y.toString()]).to.deep.equal(c.hashToG1);
      }
    });

    it("binds the message to this deployment (no replay on another AttestationRegistry)", async function () {
      const { funder } = await loadFixture(fixture);
      const other = await ethers.deployContract("AttestationRegistry", [V.registry], funder);
      const message = await other.attestationMessage(statement(C0));
      expect(message).to.not.equal(C0.message);
    });
  });

  describe("registerAuditor", function () {
    shouldCheckNewKeys(
      fixture,
      (f) => ({ ...f, signer: f.auditors[2], key: A2, other: A0, thief: f.deployer, taken: A1 }),
      (att, signer, name, pk1, pk2, pop) => att.connect(signer).registerAuditor(name, pk1, pk2, pop),
    );

    it("registers a first key with a valid proof of possession", async function () {
      const { attestations, auditors } = await loadFixture(fixture);
      const tx = attestations.connect(auditors[2]).registerAuditor("carol", g1(A2.pk1), g2(A2.pk2), g1(A2.pop));
      await expect(tx)
        .to.emit(attestations, "AuditorRegistered")
        .withArgs(A2.address, A2.keyId, "carol", (p) => p.x.toString() === A2.pk1[0], anyValue);
      const block = (await (await tx).wait()).blockNumber;
      expect(await attestations.currentKey(A2.address)).to.equal(A2.keyId);
      const stored = await attestations.getKey(A2.keyId);
      expect([stored.auditor, stored.auditorNumber, stored.registeredBlock, stored.retiredBlock, stored.revokedBlock])
        .to.deep.equal([A2.address, 3n, BigInt(block), 0n, 0n]);
      expect(stored.pk1.x.toString()).to.equal(A2.pk1[0]);
    });

    it("refuses a second key while one is active (that is a rotation)", async function () {
      const { attestations, auditors } = await loadFixture(fixture);
      const r = V.rotated;
      await expect(attestations.connect(auditors[0]).registerAuditor("again", g1(r.pk1), g2(r.pk2), g1(r.pop)))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryAuditorAlreadyRegistered")
        .withArgs(A0.address, A0.keyId);
    });

    it("registers a new key after the current one was revoked", async function () {
      const { attestations, auditors } = await loadFixture(fixture);
      const r = V.rotated;
      await attestations.connect(auditors[0]).revokeKey(A0.keyId);
      await expect(attestations.connect(auditors[0]).registerAuditor("fresh", g1(r.pk1), g2(r.pk2), g1(r.pop)))
        .to.emit(attestations, "AuditorRegistered")
        .withArgs(A0.address, r.keyId, "fresh", anyValue, anyValue);
      expect(await attestations.currentKey(A0.address)).to.equal(r.keyId);
    });
  });

  describe("rotateKey", function () {
    shouldCheckNewKeys(
      fixture,
      (f) => ({ ...f, signer: f.auditors[0], key: V.rotated, other: A2, thief: f.auditors[1], taken: A1 }),
      (att, signer, name, pk1, pk2, pop) => att.connect(signer).rotateKey(name, pk1, pk2, pop),
    );

    it("replaces the active key and retires the old one in that block", async function () {
      const { attestations, auditors } = await loadFixture(fixture);
      const r = V.rotated;
      const tx = attestations.connect(auditors[0]).rotateKey("auditor-0", g1(r.pk1), g2(r.pk2), g1(r.pop));
      await expect(tx).to.emit(attestations, "AuditorRegistered").withArgs(A0.address, r.keyId, "auditor-0", anyValue,
        anyValue);
      await expect(tx).to.emit(attestations, "AuditorKeyRotated").withArgs(A0.address, A0.keyId, r.keyId);
      const block = BigInt((await (await tx).wait()).blockNumber);
      expect(await attestations.currentKey(A0.address)).to.equal(r.keyId);
      expect((await attestations.getKey(A0.keyId)).retiredBlock).to.equal(block);
      expect((await attestations.getKey(A0.keyId)).revokedBlock).to.equal(0n);
      expect((await attestations.getKey(r.keyId)).auditorNumber).to.equal(1n); // the auditor's number stays
    });

    it("keeps attestations recorded before the rotation; later ones need the new key", async function () {
      const { attestations, auditors } = await loadFixture(fixture);
      const r = V.rotated;
      await attestations.attest(alone(C0, 0));
      await attestations.connect(auditors[0]).rotateKey("auditor-0", g1(r.pk1), g2(r.pk2), g1(r.pop));
      expect(await attestations.attestationCount(C0.weightsDigest)).to.equal(1n);
      await expect(attestations.attest(alone(C1, 0)))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryInvalidSignature")
        .withArgs(C1.weightsDigest, C1.message);
      await expect(attestations.attest(attestation(C1, [A0.address], C1.rotatedSignature, r.pk2)))
        .to.emit(attestations, "Attested")
        .withArgs(C1.weightsDigest, V.runKey, C1.message, 0, anyValue, [r.keyId], anyValue);
      // a new key does not let the auditor record a statement they already attested with the old one
      await expect(attestations.attest(attestation(C0, [A0.address], C0.rotatedSignature, r.pk2)))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryAlreadyAttested")
        .withArgs(C0.message, A0.address);
    });

    it("needs an active key", async function () {
      const { attestations, auditors } = await loadFixture(fixture);
      const r = V.rotated;
      await expect(attestations.connect(auditors[2]).rotateKey("x", g1(A2.pk1), g2(A2.pk2), g1(A2.pop)))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryNoActiveKey")
        .withArgs(A2.address);
      await attestations.connect(auditors[0]).revokeKey(A0.keyId);
      await expect(attestations.connect(auditors[0]).rotateKey("x", g1(r.pk1), g2(r.pk2), g1(r.pop)))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryNoActiveKey")
        .withArgs(A0.address);
    });
  });

  describe("revokeKey", function () {
    it("revokes a key: its owner's new attestations are refused", async function () {
      const { attestations, auditors } = await loadFixture(fixture);
      const tx = attestations.connect(auditors[0]).revokeKey(A0.keyId);
      await expect(tx).to.emit(attestations, "AuditorKeyRevoked").withArgs(A0.address, A0.keyId);
      const block = BigInt((await (await tx).wait()).blockNumber);
      expect((await attestations.getKey(A0.keyId)).revokedBlock).to.equal(block);
      await expect(attestations.attest(alone(C0, 0)))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryKeyRevoked")
        .withArgs(A0.address, A0.keyId);
    });

    it("keeps past attestations on record (readers report them as revoked)", async function () {
      const { attestations, auditors } = await loadFixture(fixture);
      await attestations.attest(alone(C0, 0));
      await attestations.connect(auditors[0]).revokeKey(A0.keyId);
      expect(await attestations.attestationCount(C0.weightsDigest)).to.equal(1n);
      expect((await attestations.getKey(A0.keyId)).revokedBlock).to.not.equal(0n);
    });

    it("revokes a retired key too, leaving the current one usable", async function () {
      const { attestations, auditors } = await loadFixture(fixture);
      const r = V.rotated;
      await attestations.connect(auditors[0]).rotateKey("auditor-0", g1(r.pk1), g2(r.pk2), g1(r.pop));
      await expect(attestations.connect(auditors[0]).revokeKey(A0.keyId)).to.emit(attestations, "AuditorKeyRevoked");
      await expect(attestations.attest(attestation(C0, [A0.address], C0.rotatedSignature, r.pk2))).to.emit(
        attestations,
        "Attested",
      );
    });

    it("only lets the key's owner revoke it, once", async function () {
      const { attestations, auditors } = await loadFixture(fixture);
      await expect(attestations.connect(auditors[1]).revokeKey(A0.keyId))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryNotKeyOwner")
        .withArgs(A0.keyId, A1.address, A0.address);
      await expect(attestations.connect(auditors[1]).revokeKey(A2.keyId))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryNotKeyOwner")
        .withArgs(A2.keyId, A1.address, ethers.ZeroAddress);
      const block = (await (await attestations.connect(auditors[0]).revokeKey(A0.keyId)).wait()).blockNumber;
      await expect(attestations.connect(auditors[0]).revokeKey(A0.keyId))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryKeyAlreadyRevoked")
        .withArgs(A0.keyId, block);
    });
  });

  describe("attest", function () {
    it("anchors a two-auditor aggregate and records it", async function () {
      const { attestations, deployer } = await loadFixture(fixture);
      const att = pairAttestation(C0);
      const keyIds = pair().map((a) => a.keyId);
      const tx = attestations.connect(deployer).attest(att);
      await expect(tx)
        .to.emit(attestations, "Attested")
        .withArgs(C0.weightsDigest, V.runKey, C0.message, 0, deployer.address, keyIds, anyValue);
      const block = BigInt((await (await tx).wait()).blockNumber);
      expect(await attestations.attestationCount(C0.weightsDigest)).to.equal(1n);
      const location = await attestations.getAttestation(C0.weightsDigest, 0);
      expect(location.blockNumber).to.equal(block);
      expect(location.recordHash).to.equal(
        await attestations.attestationRecordHash(C0.message, 0, deployer.address, keyIds, att),
      );
      expect(await attestations.hasAttested(C0.message, A0.address)).to.equal(true);
      expect(await attestations.hasAttested(C0.message, A2.address)).to.equal(false);
      expect(await attestations.hasAttested(C1.message, A0.address)).to.equal(false);
      await expect(attestations.getAttestation(C0.weightsDigest, 1))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryUnknownAttestation")
        .withArgs(C0.weightsDigest, 1, 1);
    });

    it("refuses an attestation already recorded, and any part of it", async function () {
      const { attestations } = await loadFixture(fixture);
      await attestations.attest(pairAttestation(C0));
      const [lo] = pair();
      await expect(attestations.attest(pairAttestation(C0)))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryAlreadyAttested")
        .withArgs(C0.message, lo.address);
      await expect(attestations.attest(alone(C0, 1)))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryAlreadyAttested")
        .withArgs(C0.message, A1.address);
    });

    it("lets another auditor attest the same statement on their own later", async function () {
      const { attestations, auditors } = await loadFixture(fixture);
      await attestations.attest(alone(C0, 0));
      await attestations.connect(auditors[2]).registerAuditor("carol", g1(A2.pk1), g2(A2.pk2), g1(A2.pop));
      await expect(attestations.attest(alone(C0, 2)))
        .to.emit(attestations, "Attested")
        .withArgs(C0.weightsDigest, V.runKey, C0.message, 1, anyValue, [A2.keyId], anyValue);
    });

    it("costs the same whatever is attested, plus a bounded amount per co-signer", async function () {
      const gas = async (attestations, att) => (await (await attestations.attest(att)).wait()).gasUsed;
      async function warmed() {
        const { attestations, auditors } = await loadFixture(fixture);
        await attestations.connect(auditors[2]).registerAuditor("carol", g1(A2.pk1), g2(A2.pk2), g1(A2.pop));
        // carol attests both checkpoints first, so each measured call pays the same (warm) list storage
        await attestations.attest(alone(C0, 2));
        await attestations.attest(alone(C1, 2));
        return attestations;
      }
      const first = await gas((await loadFixture(fixture)).attestations, alone(C0, 0));
      let attestations = await warmed();
      const one0 = await gas(attestations, alone(C0, 0));
      const one1 = await gas(attestations, alone(C1, 1));
      attestations = await warmed();
      const two = await gas(attestations, pairAttestation(C0));
      console.log(`      gas: attest (first of a checkpoint) ${first}; later 1 signer ${one0} / ${one1}, 2 signers ${two}`);
      expect(one0).to.be.lessThan(GAS_ATTEST_ONE);
      // the first attestation of a checkpoint also creates its list (2 slots) and the statement's signer bitmap
      expect(first - one0).to.be.lessThan(GAS_FIRST_EXTRA);
      // only hash-to-curve retries and the level string differ between statements (a few thousand gas)
      expect(one0 > one1 ? one0 - one1 : one1 - one0).to.be.lessThan(5000n);
      expect(two - one0).to.be.lessThan(GAS_PER_EXTRA_SIGNER);
    });

    it("rejects a forged signature", async function () {
      const { attestations } = await loadFixture(fixture);
      const forged = attestation(C0, [A0.address], C0.signatures[2], A0.pk2);
      await expect(attestations.attest(forged))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryInvalidSignature")
        .withArgs(C0.weightsDigest, C0.message);
    });

    it("rejects an aggregate missing a listed signer's signature, or with an unlisted one", async function () {
      const { attestations } = await loadFixture(fixture);
      const addresses = pair().map((a) => a.address);
      await expect(attestations.attest(attestation(C0, addresses, C0.signatures[0], V.aggregateKey01)))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryInvalidSignature")
        .withArgs(C0.weightsDigest, C0.message);
      await expect(attestations.attest(attestation(C0, [A0.address], C0.aggregate01, V.aggregateKey01)))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryInvalidSignature")
        .withArgs(C0.weightsDigest, C0.message);
    });

    it("rejects duplicated and unsorted signers", async function () {
      const { attestations } = await loadFixture(fixture);
      const [lo, hi] = pair().map((a) => a.address);
      await expect(attestations.attest(attestation(C0, [lo, lo], C0.aggregate01, V.aggregateKey01)))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryDuplicateSigner")
        .withArgs(lo);
      await expect(attestations.attest(attestation(C0, [hi, lo], C0.aggregate01, V.aggregateKey01)))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistrySignersNotSorted")
        .withArgs(1, hi, lo);
    });

    it("rejects a signer without a registered key, and no signers", async function () {
      const { attestations } = await loadFixture(fixture);
      await expect(attestations.attest(alone(C0, 2)))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryUnknownAuditor")
        .withArgs(A2.address);
      await expect(attestations.attest(attestation(C0, [], C0.signatures[0], A0.pk2)))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryNoSigners");
    });

    it("rejects a run the ProvenanceRegistry does not have, and a checkpoint past its count", async function () {
      const { attestations, registry, funder } = await loadFixture(fixture);
      // the same run id under another owner is another run (ProvenanceRegistry v2 keys runs by owner)
      const copied = await registry.runKeyOf(funder.address, V.runId);
      await expect(attestations.attest(attestation(C0, [A0.address], C0.signatures[0], A0.pk2, { runKey: copied })))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryUnknownRun")
        .withArgs(copied);
      await expect(attestations.attest(attestation(C0, [A0.address], C0.signatures[0], A0.pk2, { index: 2 })))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryUnknownCheckpoint")
        .withArgs(V.runKey, 2, 2);
    });

    it("rejects a signature made for another statement", async function () {
      const { attestations } = await loadFixture(fixture);
      // checkpoint 1's signature over checkpoint 0's statement
      await expect(attestations.attest(attestation(C0, [A0.address], C1.signatures[0], A0.pk2)))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryInvalidSignature")
        .withArgs(C0.weightsDigest, C0.message);
      // the right signature over a statement claiming more (another level): the message differs
      const claimed = statement(C0, { level: "full:9" });
      const message = await attestations.attestationMessage(claimed);
      await expect(attestations.attest(alone(C0, 0, { level: "full:9" })))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryInvalidSignature")
        .withArgs(C0.weightsDigest, message);
    });
  });
});
