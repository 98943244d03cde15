// Behaviour shared by the two AttestationRegistry functions that add a key (OpenZeppelin's `.behavior.js` shape):
// registerAuditor and rotateKey check a new key the same way — a proof of possession bound to the sending account
// and to matching G1/G2 keys, a G1 key on the curve, and a key nobody registered before.
"use strict";

const { expect } = require("chai");
const { loadFixture } = require("@nomicfoundation/hardhat-network-helpers");

const g1 = (p) => ({ x: p[0], y: p[1] });
const g2 = (p) => ({ x: p[0], y: p[1] });

/**
 * `fixture` is the test file's one fixture (deterministic addresses need one snapshot); `pick(loaded)` returns
 * { attestations, signer, key, other, thief, taken } where `signer` may add `key` (its proof of possession is bound
 * to `signer`), `other` is another key's material, `thief` another funded account and `taken` a key already
 * registered by someone else. `send(attestations, signer, name, pk1, pk2, pop)` adds a key through the function
 * under test.
 */
function shouldCheckNewKeys(fixture, pick, send) {
  const load = async () => pick(await loadFixture(fixture));
  describe("new key checks", function () {
    it("rejects a proof of possession made for another key (rogue-key defence)", async function () {
      const { attestations, signer, key, other } = await load();
      await expect(send(attestations, signer, "k", g1(key.pk1), g2(key.pk2), g1(other.pop)))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryInvalidProofOfPossession")
        .withArgs(signer.address, key.keyId);
    });

    it("rejects G1 and G2 keys that do not share one secret", async function () {
      const { attestations, signer, key, other } = await load();
      await expect(send(attestations, signer, "k", g1(other.pk1), g2(key.pk2), g1(key.pop)))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryInvalidProofOfPossession")
        .withArgs(signer.address, key.keyId);
    });

    it("binds a proof of possession to the account that made it", async function () {
      const { attestations, thief, key } = await load();
      await expect(send(attestations, thief, "thief", g1(key.pk1), g2(key.pk2), g1(key.pop)))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryInvalidProofOfPossession")
        .withArgs(thief.address, key.keyId);
    });

    it("rejects a G1 key that is not on the curve", async function () {
      const { attestations, signer, key } = await load();
      await expect(send(attestations, signer, "k", { x: 1, y: 3 }, g2(key.pk2), g1(key.pop)))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryInvalidG1Point")
        .withArgs(1, 3);
    });

    it("never shares or reuses a registered key", async function () {
      const { attestations, signer, taken } = await load();
      await expect(send(attestations, signer, "copy", g1(taken.pk1), g2(taken.pk2), g1(taken.pop)))
        .to.be.revertedWithCustomError(attestations, "AttestationRegistryKeyAlreadyRegistered")
        .withArgs(taken.keyId, taken.address);
    });
  });
}

module.exports = { shouldCheckNewKeys, g1, g2 };
