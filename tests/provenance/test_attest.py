"""Auditor attestations on the in-process py-evm chain, beside a ProvenanceRegistry v2: BN254 BLS matches the contract
bit for bit, aggregates of several auditors anchor, every rejection is refused with a typed reason (off chain and on
chain, with the custom error's values), and the reader judges each anchored attestation against the verified
checkpoint: valid, revoked key, wrong checkpoint, forged, malformed. Key rotation and revocation go through the
public provenance.keys functions with real key files.

One chain with two registered auditors is shared by the module: pairings cost ~0.3 s each in py-ecc (and in
py-evm's precompile, twice per transaction with gas estimation), so the number of checks is kept small.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from provenance import attest, attestations, keys
from provenance._attest import bls
from provenance._attest import errors as E
from tests.fixtures.attest import RUN_ID, AttestEnv, commit, d, make_key, register

# py-ecc pairings cost ~0.3 s each: the module takes ~1 min, so it runs with the slow tests (CI runs them all).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env() -> AttestEnv:
    return AttestEnv()


def part(env: AttestEnv, who: int, statement: Any = None) -> attest.SignedAttestation:
    return attest.sign_statement(statement or env.statement(), env.keys[who], auditor=env.addresses[who])


def registered(env: AttestEnv, *who: int) -> dict[str, keys.RegisteredKey]:
    return keys.registered_keys(env.client, [env.addresses[i] for i in who])


def views(env: AttestEnv, index: int = 0, **kwargs: Any) -> list[attestations.AttestationView]:
    return attestations.attestations_for(env.client, record=env.record(index), run_key=env.run_key, **kwargs)


def test_message_and_hash_to_curve_match_the_contract(env: AttestEnv) -> None:
    st = env.statement()
    message = st.message()
    assert message == env.client.message_onchain(st)
    assert message != env.statement(level="full:2").message()
    for pop in (False, True):
        assert bls.hash_to_g1(message, bls.POP_DST if pop else bls.ATTEST_DST) == \
            env.client.hash_to_g1_onchain(message, pop=pop)
    assert bls.hash_to_g1(message) != bls.hash_to_g1(message, bls.POP_DST)  # domain separation


def test_registered_keys_come_from_the_chain(env: AttestEnv) -> None:
    found = registered(env, 0, 1, 2)
    assert set(found) == {env.addresses[0].lower(), env.addresses[1].lower()}  # mallory never registered
    alice = found[env.addresses[0].lower()]
    assert alice.key.pk2 == env.keys[0].public.pk2 and alice.name == "alice" and alice.active
    assert 280_000 < env.register_gas[0] < 320_000  # the first auditor also starts the auditor count


def test_two_auditors_aggregate_anchor_and_are_listed(env: AttestEnv) -> None:
    merged = attest.aggregate([part(env, 1), part(env, 0)], registered=registered(env, 0, 1),
                              require=env.addresses[:2])
    assert merged.addresses == sorted(env.addresses[:2], key=lambda a: int(a, 16))
    attest.verify_attestation(merged, registered=registered(env, 0, 1), expected=env.statement())
    tx = attest.anchor(env.client, merged)
    assert 250_000 < tx.gas_used < 300_000
    [item] = views(env)
    assert item.valid and item.status == "valid" and item.reason is None
    assert {s.name for s in item.signers} == {"alice", "bob"} and item.level == "sampled:1/2"
    assert item.report_cid == "bafy-report" and item.checkpoint_index == 0 and item.tx == tx.tx_hash
    assert item.to_json()["valid"] is True and item.to_json()["status"] == "valid"
    assert views(env, 1) == []
    # The same attestation again, or any part of it, is refused (so replays cannot make readers re-check it).
    with pytest.raises(E.AlreadyAttested) as info:
        attest.anchor(env.client, merged)
    assert info.value.values["message"] == env.statement().message()
    with pytest.raises(E.AlreadyAttested):
        attest.anchor(env.client, part(env, 1))


def test_forged_signature_is_rejected_off_and_on_chain(env: AttestEnv) -> None:
    st = env.statement(1)
    forged = dataclasses.replace(part(env, 0, st), signature=env.keys[2].sign(st.message()))
    with pytest.raises(E.ForgedSignature):
        attest.verify_attestation(forged, registered=registered(env, 0))
    with pytest.raises(E.InvalidSignature) as info:
        attest.anchor(env.client, forged)
    assert info.value.values["weightsDigest"] == st.weights_digest.value
    assert info.value.values["message"] == st.message() and info.value.exit_code == 1


def test_unknown_run_checkpoint_and_no_signers_revert_with_values(env: AttestEnv) -> None:
    st = env.statement(1, report_cid="unknown")
    p = part(env, 0, st)
    other_run = bytes(32)
    with pytest.raises(E.UnknownAttestedRun) as info:
        env.client.submit(dataclasses.replace(st, run_key=other_run), signers=p.addresses, signature=p.signature,
                          aggregate_key=p.aggregate_key)
    assert info.value.values["runKey"] == other_run
    with pytest.raises(E.UnknownAttestedCheckpoint) as ck:
        env.client.submit(dataclasses.replace(st, checkpoint_index=2), signers=p.addresses, signature=p.signature,
                          aggregate_key=p.aggregate_key)
    assert (ck.value.values["index"], ck.value.values["checkpointCount"]) == (2, 2)
    with pytest.raises(E.NoSigners):
        env.client.submit(st, signers=[], signature=p.signature, aggregate_key=p.aggregate_key)
    with pytest.raises(E.UnknownAuditor) as who:
        attest.anchor(env.client, part(env, 2, st))
    assert who.value.values["signer"] == env.addresses[2]


def test_an_attestation_for_another_deployment_is_refused_before_sending(env: AttestEnv) -> None:
    elsewhere = dataclasses.replace(env.statement(1), attestation_registry="0x" + "12" * 20)
    with pytest.raises(E.WrongCheckpoint, match="another chain or deployment"):
        attest.anchor(env.client, part(env, 0, elsewhere))


def test_registering_twice_is_refused(env: AttestEnv) -> None:
    with pytest.raises(E.AuditorAlreadyRegistered) as info:
        env.auditors[0].register_auditor(make_key("alice2", 0xA11CE2))
    assert info.value.values["auditor"] == env.addresses[0]
    with pytest.raises(E.KeyAlreadyRegistered) as taken:
        env.auditors[2].register_auditor(env.keys[0])
    assert taken.value.values["auditor"] == env.addresses[0]
    with pytest.raises(E.InvalidProofOfPossession):
        env.auditors[2].register_auditor(env.keys[2], pop=env.keys[1].prove_possession(b"\x01" * 32))


def test_the_reader_reports_wrong_checkpoints_and_malformed_levels(env: AttestEnv) -> None:
    # Signed statements the contract accepts (the run has a checkpoint 1) but that do not describe checkpoint 1:
    # the digests of checkpoint 0 under index 1, and a level that is not canonical.
    wrong = dataclasses.replace(env.statement(1), weights_digest=env.record(1).weights_digest,
                                checkpoint_digest=env.record(0).checkpoint_digest, report_cid="wrong")
    attest.anchor(env.client, part(env, 0, wrong))
    odd = dataclasses.replace(env.statement(1, report_cid="odd"), level="everything")
    signed = attest.SignedAttestation(odd, (attest.Signer(env.addresses[1], env.keys[1].public),),
                                      env.keys[1].sign(odd.message()), env.keys[1].public.pk2)
    attest.anchor(env.client, signed)
    found = {v.report_cid: v for v in views(env, 1, check_signatures=False)}
    assert found["wrong"].status == "wrong-checkpoint" and "checkpoint_digest" in (found["wrong"].reason or "")
    assert found["odd"].status == "malformed" and not found["odd"].valid


def test_a_lying_node_is_caught_by_the_signature_check(env: AttestEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    real = env.client.attestations

    def lying(weights: Any) -> list[Any]:
        return [dataclasses.replace(item, signature=env.keys[2].sign(item.message)) for item in real(weights)]

    monkeypatch.setattr(env.client, "attestations", lying)
    [item] = views(env)
    assert item.status == "forged" and "does not verify" in (item.reason or "")
    assert views(env, check_signatures=False)[0].status == "valid"  # what the signature check adds


def test_another_runs_claim_of_the_same_weights_is_another_checkpoint(env: AttestEnv) -> None:
    # Mallory's account registers the same run id (another run key) and claims checkpoint 0's weights; an
    # attestation of her claim is listed under these weights but is not about the verified checkpoint.
    chain = env.chain.with_signer(env.chain.dev_keys()[3])
    other_key = register(chain, RUN_ID)
    commit(chain, other_key, 0)
    claim = chain.run(other_key).checkpoints[0]
    assert claim.weights_digest == env.record(0).weights_digest and other_key != env.run_key
    st = attest.Statement.for_checkpoint(claim, run_key=other_key, chain_id=env.chain.chain_id,
                                         provenance_registry=str(env.chain.address),
                                         attestation_registry=str(env.client.address), level="commitments",
                                         verification=d("other"))
    attest.anchor(env.client, part(env, 1, st))
    statuses = {v.run_key: v.status for v in views(env, check_signatures=False)}
    assert statuses[other_key.hex()] == "wrong-checkpoint" and statuses[env.run_key.hex()] == "valid"


def test_rotation_keeps_past_attestations_and_revocation_marks_them(env: AttestEnv, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # Bob's registered key in a key file (`prov keys new` draws a random scalar; this one must be the registered
    # one), then rotated through provenance.keys.
    bob = env.auditors[1]
    keyfile = tmp_path / "bob.json"
    with monkeypatch.context() as patch:
        patch.setattr(bls, "new_secret", lambda: env.keys[1].scalar)
        keys.new_key("bob", "pw", path=keyfile, scrypt_n=2**10)
    before = views(env)[0]
    assert before.valid and env.addresses[1] in [s.auditor for s in before.signers]

    done = keys.rotate_key(bob, keyfile, "pw", scrypt_n=2**10)
    assert done.previous.key_id == env.keys[1].public.key_id and done.tx is not None
    assert done.archived.exists() and keys.show_key(keyfile).key_id == done.key.key_id
    assert not (tmp_path / "bob.next.json").exists()
    old = bob.key(env.keys[1].public.key_id)
    assert old is not None and old.retired_block == done.tx.block_number and not old.revoked
    assert views(env)[0].valid  # recorded before the rotation: still valid

    # A part still carrying the old key is refused off chain (not Bob's registered key) and on chain.
    st = env.statement(1, report_cid="after rotation")
    stale = part(env, 1, st)
    with pytest.raises(E.SignerKeyMismatch):
        attest.aggregate([stale], registered=registered(env, 1))
    with pytest.raises(E.InvalidSignature):
        attest.anchor(env.client, stale)
    new_key = keys.load_key(keyfile, "pw")
    attest.anchor(env.client, attest.sign_statement(st, new_key, auditor=env.addresses[1]))

    # Revoking the old key (by key id: no file needed) marks its past attestation revoked; the new key still works.
    key_id, tx = keys.revoke_key(bob, env.keys[1].public.key_id)
    [item] = [v for v in views(env) if v.run_key == env.run_key.hex()]
    assert item.status == "revoked" and f"in block {tx.block_number}" in (item.reason or "")
    assert item.to_json()["valid"] is False
    assert {v.report_cid: v.status for v in views(env, 1, check_signatures=False)}["after rotation"] == "valid"

    # Revoking the current key: new attestations are refused off chain and on chain, and it shows as revoked.
    keys.revoke_key(bob, str(keyfile))
    with pytest.raises(E.RevokedKey):
        attest.aggregate([attest.sign_statement(env.statement(1, report_cid="x"), new_key,
                                                auditor=env.addresses[1])], registered=registered(env, 1))
    with pytest.raises(E.KeyRevoked) as info:
        attest.anchor(env.client, attest.sign_statement(env.statement(1, report_cid="x"), new_key,
                                                         auditor=env.addresses[1]))
    assert info.value.values["keyId"] == bytes.fromhex(new_key.public.key_id[2:])
    assert {v.report_cid: v.status for v in views(env, 1, check_signatures=False)}["after rotation"] == "revoked"
    with pytest.raises(E.KeyAlreadyRevoked):
        bob.revoke_key(key_id)
    with pytest.raises(E.NoActiveKey):
        bob.rotate_key(make_key("bob3", 0xB0B3))
