"""Auditor attestations on the in-process py-evm chain: BN254 BLS matches the contract bit for bit, aggregates of
several auditors anchor, and every rejection (forged, missing, duplicated signature, a key without proof of
possession, another checkpoint) is refused with a typed reason, off chain and on chain.

One chain with two registered auditors is shared by the module: pairings cost ~0.3 s each in py-ecc (and in
py-evm's precompile), so the number of checks is kept small.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from provenance import attest
from provenance._attest import bls
from provenance._attest import errors as E
from provenance._attest.client import AttestationClient
from provenance._attest.keys import PublicKey, SecretKey
from provenance._attest.statement import Statement
from provenance.chain import connect
from provenance.hashing import Digest

# py-ecc pairings cost ~0.3 s each: the module takes ~20 s, so it runs with the slow tests (CI runs them all).
pytestmark = pytest.mark.slow

RUN = bytes(range(32))


def d(label: str) -> Digest:
    return Digest.of(label.encode())


def make_key(name: str, scalar: int) -> SecretKey:
    """Deterministic test keys (never use small scalars for real keys)."""
    pk1, pk2 = bls.public_keys(scalar)
    return SecretKey(PublicKey(name, pk1, pk2), scalar)


class Env:
    def __init__(self) -> None:
        self.registry = connect("tester", use_config=False)
        self.registry.deploy()
        self.registry.register_run(RUN, manifest_digest=d("m"), base_model_digest=d("b"), dataset_root=d("ds"),
                                   noise_seed_commitment=d("n"), manifest_cid="bafy-run")
        for i in range(2):
            self.registry.commit_checkpoint(RUN, index=i, weights_digest=d(f"w{i}"), checkpoint_digest=d(f"c{i}"),
                                            log_size=4 * (i + 1), log_root=d(f"r{i}"), epsilon_micro=5 + i,
                                            manifest_cid=f"bafy-ck{i}")
        self.client = AttestationClient(self.registry)
        self.client.deploy()
        dev = self.registry.dev_keys()
        self.keys = [make_key("alice", 0xA11CE), make_key("bob", 0xB0B), make_key("mallory", 0x3A11)]
        self.auditors = [AttestationClient(self.registry.with_signer(dev[i + 1]), self.client.address)
                         for i in range(3)]
        self.gas = {"register": [a.register_auditor(k).gas_used for a, k in zip(self.auditors[:2], self.keys[:2],
                                                                                   strict=True)]}
        self.addresses = [a.transport.signer.address for a in self.auditors]

    def statement(self, index: int = 0, report_cid: str = "bafy-report") -> Statement:
        record = self.registry.get_checkpoint(RUN, index)
        return Statement.for_checkpoint(record, chain_id=self.registry.chain_id, registry=str(self.registry.address),
                                        verification=d("verified"), report_cid=report_cid)

    def part(self, who: int, statement: Statement | None = None) -> attest.SignedAttestation:
        return attest.sign_statement(statement or self.statement(), self.keys[who], auditor=self.addresses[who])

    def proven(self) -> set[str]:
        return {k.public.key_id for k in self.keys[:2]}


@pytest.fixture(scope="module")
def env() -> Env:
    return Env()


def test_message_and_hash_to_curve_match_the_contract(env: Env) -> None:
    st = env.statement()
    message = st.message()
    assert message == env.client.message_onchain(st.weights_digest, st.verification_digest, st.report_cid)
    for pop in (False, True):
        assert bls.hash_to_g1(message, bls.POP_DST if pop else bls.ATTEST_DST) == \
            env.client.hash_to_g1_onchain(message, pop=pop)
    assert bls.hash_to_g1(message) != bls.hash_to_g1(message, bls.POP_DST)  # domain separation


def test_two_auditors_aggregate_anchor_and_are_listed(env: Env) -> None:
    merged = attest.aggregate([env.part(1), env.part(0)], proven_keys=env.proven(), require=env.addresses[:2])
    assert merged.addresses == sorted(env.addresses[:2], key=lambda a: int(a, 16))
    attest.verify_attestation(merged, expected=env.statement(), proven_keys=env.proven())
    tx = attest.anchor(env.client, merged)
    assert 150_000 < tx.gas_used < 320_000
    found = attest.attestations_for(env.client, d("w0"))
    assert len(found) == 1
    item = found[0]
    assert item["valid"] is True and item["reason"] is None
    assert {s["name"] for s in item["signers"]} == {"alice", "bob"}
    assert item["report_cid"] == "bafy-report" and item["checkpoint_index"] == 0 and item["tx"] == tx.tx_hash
    assert attest.attestations_for(env.client, d("w1")) == []


def test_round_trip_of_the_signed_attestation_file(env: Env, tmp_path: Any) -> None:
    part = env.part(0)
    part.write(tmp_path / "a.json")
    assert attest.SignedAttestation.read(tmp_path / "a.json") == part


# --- rejections -------------------------------------------------------------------------------------------------


def test_forged_signature_is_rejected_off_and_on_chain(env: Env) -> None:
    forged = dataclasses.replace(env.part(0), signature=env.keys[2].sign(env.statement().message()))
    with pytest.raises(E.ForgedSignature):
        attest.verify_attestation(forged, proven_keys=env.proven())
    with pytest.raises(E.InvalidSignature) as info:
        attest.anchor(env.client, forged)
    assert info.value.values["weightsDigest"] == d("w0").value


def test_missing_signer_is_rejected(env: Env) -> None:
    only_alice = env.part(0)
    with pytest.raises(E.MissingSignature, match="did not sign"):
        attest.aggregate([only_alice], require=env.addresses[:2])
    listed_both = dataclasses.replace(
        only_alice, signers=tuple(sorted((only_alice.signers[0], env.part(1).signers[0]),
                                         key=lambda s: int(s.auditor, 16))))
    with pytest.raises(E.MissingSignature, match="aggregate key"):
        attest.verify_attestation(listed_both)
    apk = bls.aggregate_g2([env.keys[0].public.pk2, env.keys[1].public.pk2])
    with pytest.raises(E.InvalidSignature):  # the contract sums the listed keys itself
        attest.anchor(env.client, dataclasses.replace(listed_both, aggregate_key=apk))


def test_duplicated_signer_is_rejected(env: Env) -> None:
    with pytest.raises(E.DuplicateSignature):
        attest.aggregate([env.part(0), env.part(0)])
    twice = dataclasses.replace(env.part(0), signers=env.part(0).signers * 2)
    with pytest.raises(E.DuplicateSigner) as info:
        attest.anchor(env.client, twice)
    assert info.value.values["signer"] == env.addresses[0]


def test_key_without_proof_of_possession_is_rejected(env: Env) -> None:
    mallory, key = env.auditors[2], env.keys[2]
    # a rogue key: pk' = pk_mallory - pk_alice would make an aggregate "by alice and mallory" that only mallory
    # signed; without a proof of possession for pk' the registry refuses it. Here: a proof over the wrong message.
    bad_pop = key.prove_possession(b"\x00" * 32)
    with pytest.raises(E.InvalidProofOfPossession) as info:
        mallory.register_auditor(key, pop=bad_pop)
    assert info.value.values["auditor"] == env.addresses[2] and info.value.values["keyId"] == bls.key_id(key.public.pk2)
    with pytest.raises(E.MissingProofOfPossession):
        attest.aggregate([env.part(0), env.part(2)], proven_keys=env.proven())
    with pytest.raises(E.UnknownAuditor):
        attest.anchor(env.client, env.part(2))


def test_attestation_for_another_checkpoint_is_rejected(env: Env) -> None:
    other = env.part(0, env.statement(index=1))
    with pytest.raises(E.WrongCheckpoint, match="checkpoint_index"):
        attest.verify_attestation(other, expected=env.statement(index=0))
    with pytest.raises(E.WrongCheckpoint):
        attest.aggregate([env.part(0), other])
    # the same signature presented for checkpoint 0's weights: the contract derives another message
    relabelled = dataclasses.replace(other, statement=dataclasses.replace(
        other.statement, weights_digest=d("w0")))
    with pytest.raises(E.InvalidSignature):
        attest.anchor(env.client, relabelled)


def test_unknown_checkpoint_and_no_signers_revert_with_values(env: Env) -> None:
    part = env.part(0)
    with pytest.raises(E.UnknownAttestedCheckpoint) as info:
        attest.anchor(env.client, dataclasses.replace(part, statement=dataclasses.replace(
            part.statement, weights_digest=d("never committed"))))
    assert info.value.values["weightsDigest"] == d("never committed").value
    with pytest.raises(E.NoSigners):
        attest.anchor(env.client, dataclasses.replace(part, signers=()))


def test_key_registered_twice_is_refused(env: Env) -> None:
    with pytest.raises(E.AuditorAlreadyRegistered):
        env.auditors[0].register_auditor(env.keys[0])
    with pytest.raises(E.KeyAlreadyRegistered) as info:
        env.auditors[2].register_auditor(env.keys[0])
    assert info.value.values["auditor"] == env.addresses[0]


def test_attest_refuses_to_sign_an_unverified_checkpoint(env: Env, tmp_path: Any) -> None:
    import struct

    adapter = tmp_path / "adapter_model.safetensors"
    header = b'{"__metadata__":{}}'
    adapter.write_bytes(struct.pack("<Q", len(header)) + header)  # a valid, empty safetensors file never anchored
    with pytest.raises(E.NotVerified, match="refusing to attest"):
        attest.attest_checkpoint(adapter, registry=env.registry, store=None, key=env.keys[0],
                                 auditor=env.addresses[0])
