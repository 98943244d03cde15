// AttestationRegistry on the Hardhat network. BN254 keys, proofs of possession and signatures come from
// AttestationRegistry.vectors.json, computed with py-ecc by tests/provenance/test_attest_vectors.py for this exact
// scenario: fixed keys deploy and commit in a fixed nonce order, so every address in the vectors is reproduced.
"use strict";

const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture } = require("@nomicfoundation/hardhat-network-helpers");
const V = require("./AttestationRegistry.vectors.json");

const GAS_ATTEST_ONE = 260000n; // one signer: hash-to-curve, 2 ecMul, one 2-pair pairing check, one new slot
const GAS_PER_EXTRA_SIGNER = 10000n;

const g1 = (p) => ({ x: p[0], y: p[1] });
const g2 = (p) => ({ x: p[0], y: p[1] });

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
  await registry
    .connect(deployer)
    .registerRun(V.runId, ethers.ZeroHash, ethers.ZeroHash, ethers.ZeroHash, ethers.ZeroHash, "bafy-run");
  for (const [i, c] of V.checkpoints.entries()) {
    await registry
      .connect(deployer)
      .commitCheckpoint(V.runId, i, c.weightsDigest, c.checkpointDigest, c.logSize, c.logRoot, c.epsilonMicro, c.manifestCid);
  }
  // auditors 0 and 1 register; auditor 2 stays unregistered (the vectors bind each proof to one account, and the
  // fixed deployer must deploy at nonce 0, so there is exactly one fixture)
  for (const i of [0, 1]) {
    const a = V.auditors[i];
    await attestations.connect(auditors[i]).registerAuditor(`auditor-${i}`, g1(a.pk1), g2(a.pk2), g1(a.pop));
  }
  return { registry, attestations, deployer, auditors };
}

function attestation(c, signers, signature, aggregateKey, overrides = {}) {
  return {
    weightsDigest: c.weightsDigest,
    verificationDigest: V.verificationDigest,
    reportCid: V.reportCid,
    signers,
    signature: g1(signature),
    aggregateKey: g2(aggregateKey),
    ...overrides,
  };
}

// Signers of the two-auditor aggregate in ascending address order.
const pair = () => [V.auditors[0].address, V.auditors[1].address].sort((a, b) => (BigInt(a) < BigInt(b) ? -1 : 1));

describe("AttestationRegistry", function () {
  describe("hashing", function () {
    it("computes the same attestation message and hash-to-G1 as Python", async function () {
      const { attestations } = await loadFixture(fixture);
      const c = V.checkpoints[0];
      expect(await attestations.attestationMessage(c.weightsDigest, V.verificationDigest, V.reportCid)).to.equal(c.message);
      const [x, y] = await attestations.hashToG1(c.message, false);
      expect([x.toString(), y.toString()]).to.deep.equal(c.hashToG1);
    });

    it("reverts for weights no checkpoint commits", async function () {
      const { attestations } = await loadFixture(fixture);
      const unknown = ethers.sha256(ethers.toUtf8Bytes("never committed"));
      await expect(attestations.attestationMessage(unknown, V.verificationDigest, V.reportCid))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryUnknownCheckpoint")
        .withArgs(unknown);
    });
  });

  describe("registerAuditor", function () {
    it("registers a key with a valid proof of possession", async function () {
      const { attestations, auditors } = await loadFixture(fixture);
      const a = V.auditors[2];
      await expect(attestations.connect(auditors[2]).registerAuditor("carol", g1(a.pk1), g2(a.pk2), g1(a.pop)))
        .to.emit(attestations, "AuditorRegistered")
        .withArgs(a.address, a.keyId, "carol", (p) => p.x.toString() === a.pk1[0], () => true);
      const stored = await attestations.getAuditor(a.address);
      expect(stored.keyId).to.equal(a.keyId);
      expect(stored.pk1.x.toString()).to.equal(a.pk1[0]);
    });

    it("rejects a key without a valid proof of possession (rogue-key defence)", async function () {
      const { attestations, auditors } = await loadFixture(fixture);
      const a = V.auditors[2];
      const other = V.auditors[0];
      // carol's key with another proof: it does not sign carol's key bound to carol's account
      await expect(attestations.connect(auditors[2]).registerAuditor("carol", g1(a.pk1), g2(a.pk2), g1(other.pop)))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryInvalidProofOfPossession")
        .withArgs(a.address, a.keyId);
      // mismatched G1 and G2 keys
      await expect(attestations.connect(auditors[2]).registerAuditor("carol", g1(other.pk1), g2(a.pk2), g1(a.pop)))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryInvalidProofOfPossession")
        .withArgs(a.address, a.keyId);
    });

    it("binds a proof of possession to the account that made it", async function () {
      const { attestations, deployer } = await loadFixture(fixture);
      const a = V.auditors[2];
      await expect(attestations.connect(deployer).registerAuditor("thief", g1(a.pk1), g2(a.pk2), g1(a.pop)))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryInvalidProofOfPossession")
        .withArgs(deployer.address, a.keyId);
    });

    it("rejects a G1 key that is not on the curve", async function () {
      const { attestations, auditors } = await loadFixture(fixture);
      const a = V.auditors[2];
      await expect(attestations.connect(auditors[2]).registerAuditor("x", { x: 1, y: 3 }, g2(a.pk2), g1(a.pop)))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryInvalidG1Point")
        .withArgs(1, 3);
    });

    it("never replaces or shares a key", async function () {
      const { attestations, auditors } = await loadFixture(fixture);
      const a = V.auditors[0];
      await expect(attestations.connect(auditors[0]).registerAuditor("again", g1(a.pk1), g2(a.pk2), g1(a.pop)))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryAuditorAlreadyRegistered")
        .withArgs(a.address, a.keyId);
      await expect(attestations.connect(auditors[2]).registerAuditor("copy", g1(a.pk1), g2(a.pk2), g1(a.pop)))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryKeyAlreadyRegistered")
        .withArgs(a.keyId, a.address);
    });
  });

  describe("attest", function () {
    it("anchors a two-auditor aggregate and records it", async function () {
      const { attestations, deployer } = await loadFixture(fixture);
      const c = V.checkpoints[0];
      const att = attestation(c, pair(), c.aggregate01, V.aggregateKey01);
      await expect(attestations.connect(deployer).attest(att))
        .to.emit(attestations, "Attested")
        .withArgs(c.weightsDigest, V.runId, 0, 0, c.message, deployer.address, () => true);
      expect(await attestations.attestationCount(c.weightsDigest)).to.equal(1n);
      const location = await attestations.getAttestation(c.weightsDigest, 0);
      expect(location.recordHash).to.equal(await attestations.attestationRecordHash(c.message, deployer.address, att));
      await expect(attestations.getAttestation(c.weightsDigest, 1))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryUnknownAttestation")
        .withArgs(c.weightsDigest, 1, 1);
    });

    it("costs the same whatever is attested, plus a small amount per co-signer", async function () {
      const { attestations, deployer } = await loadFixture(fixture);
      const gas = async (att) => (await (await attestations.connect(deployer).attest(att)).wait()).gasUsed;
      const [c0, c1] = V.checkpoints;
      const a = V.auditors[0];
      // warm the per-weights lists so each measured call pays the same storage cost
      await attestations.connect(deployer).attest(attestation(c0, [a.address], c0.signatures[0], a.pk2));
      await attestations.connect(deployer).attest(attestation(c1, [a.address], c1.signatures[0], a.pk2));
      const one0 = await gas(attestation(c0, [a.address], c0.signatures[0], a.pk2));
      const one1 = await gas(attestation(c1, [a.address], c1.signatures[0], a.pk2));
      const two = await gas(attestation(c0, pair(), c0.aggregate01, V.aggregateKey01));
      console.log(`      gas: attest 1 signer ${one0} / ${one1}, 2 signers ${two}`);
      expect(one0).to.be.lessThan(GAS_ATTEST_ONE);
      // only hash-to-curve retries differ between messages (~1.5k gas each)
      expect(one0 > one1 ? one0 - one1 : one1 - one0).to.be.lessThan(5000n);
      expect(two - one0).to.be.lessThan(GAS_PER_EXTRA_SIGNER);
    });

    it("rejects a forged signature", async function () {
      const { attestations } = await loadFixture(fixture);
      const c = V.checkpoints[0];
      const forged = attestation(c, [V.auditors[0].address], c.signatures[2], V.auditors[0].pk2);
      await expect(attestations.attest(forged))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryInvalidSignature")
        .withArgs(c.weightsDigest, c.message);
    });

    it("rejects an aggregate missing a listed signer's signature", async function () {
      const { attestations } = await loadFixture(fixture);
      const c = V.checkpoints[0];
      await expect(attestations.attest(attestation(c, pair(), c.signatures[0], V.aggregateKey01)))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryInvalidSignature")
        .withArgs(c.weightsDigest, c.message);
      // or a signer that contributed but is not listed
      await expect(attestations.attest(attestation(c, [V.auditors[0].address], c.aggregate01, V.aggregateKey01)))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryInvalidSignature");
    });

    it("rejects duplicated and unsorted signers", async function () {
      const { attestations } = await loadFixture(fixture);
      const c = V.checkpoints[0];
      const [lo, hi] = pair();
      await expect(attestations.attest(attestation(c, [lo, lo], c.aggregate01, V.aggregateKey01)))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryDuplicateSigner")
        .withArgs(lo);
      await expect(attestations.attest(attestation(c, [hi, lo], c.aggregate01, V.aggregateKey01)))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistrySignersNotSorted")
        .withArgs(1, hi, lo);
    });

    it("rejects a signer without a registered key, and no signers", async function () {
      const { attestations } = await loadFixture(fixture);
      const c = V.checkpoints[0];
      const a = V.auditors[2];
      await expect(attestations.attest(attestation(c, [a.address], c.signatures[2], a.pk2)))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryUnknownAuditor")
        .withArgs(a.address);
      await expect(attestations.attest(attestation(c, [], c.signatures[0], a.pk2)))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryNoSigners");
    });

    it("rejects an attestation made for another checkpoint", async function () {
      const { attestations } = await loadFixture(fixture);
      const [c0, c1] = V.checkpoints;
      const a = V.auditors[0];
      const expected = await attestations.attestationMessage(c0.weightsDigest, V.verificationDigest, V.reportCid);
      await expect(attestations.attest(attestation(c0, [a.address], c1.signatures[0], a.pk2)))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryInvalidSignature")
        .withArgs(c0.weightsDigest, expected);
      // and for other findings (another verification digest) over the right checkpoint
      await expect(
        attestations.attest(attestation(c0, [a.address], c0.signatures[0], a.pk2, { verificationDigest: ethers.ZeroHash })),
      ).to.be.revertedWithCustomError(attestations, "AttestationRegistryInvalidSignature");
    });

    it("rejects weights no checkpoint commits", async function () {
      const { attestations } = await loadFixture(fixture);
      const c = V.checkpoints[0];
      const unknown = ethers.sha256(ethers.toUtf8Bytes("never committed"));
      await expect(
        attestations.attest(attestation(c, [V.auditors[0].address], c.signatures[0], V.auditors[0].pk2, { weightsDigest: unknown })),
      )
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryUnknownCheckpoint")
        .withArgs(unknown);
    });
  });
});
