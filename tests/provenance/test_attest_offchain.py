"""Off-chain attestation checks without a chain: the two rogue-key holes of #14.6 (a part that lists another auditor
but carries the attacker's key; a rogue-key aggregate when no registered keys were given) now fail with typed errors
before any pairing; verification levels; the statement's file format; version 1 files still open and verify.

Registered keys are built here as the chain would return them (provenance.keys.RegisteredKey); the chain paths are
in test_attest.py. Pairings run only where a test needs a signature to verify (~0.4 s each).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from typing import Any

import pytest

from provenance import attest
from provenance._attest import bls
from provenance._attest import errors as E
from provenance._attest.statement import (
    Statement,
    format_level,
    level_covers,
    level_from_report,
    parse_level,
)
from provenance.errors import FormatError
from provenance.keys import PublicKey, RegisteredKey, SecretKey
from tests.fixtures.attest import LEGACY_V1_AUDITOR, LEGACY_V1_BUNDLE, d, make_key

ALICE, BOB, MALLORY = "0x" + "a1" * 20, "0x" + "b0" * 20, "0x" + "ee" * 20
KEYS = {ALICE: make_key("alice", 0xA11CE), BOB: make_key("bob", 0xB0B), MALLORY: make_key("mallory", 0x3A11)}


def registered(*who: str, revoked: int = 0) -> dict[str, RegisteredKey]:
    return {a.lower(): RegisteredKey(auditor=a, key=KEYS[a].public, registered_block=1, retired_block=0,
                                     revoked_block=revoked, tx_hash="0x") for a in who}


def statement(**changes: Any) -> Statement:
    base = Statement(chain_id=31337, provenance_registry="0x" + "11" * 20, attestation_registry="0x" + "22" * 20,
                     run_key=bytes(range(32)), checkpoint_index=2, weights_digest=d("w"), checkpoint_digest=d("c"),
                     log_size=20, log_root=d("r"), epsilon_micro=500_000, level="sampled:1/2",
                     verification_digest=d("v"), report_cid="")
    return dataclasses.replace(base, **changes)


def part(auditor: str, key: SecretKey | None = None, st: Statement | None = None) -> attest.SignedAttestation:
    return attest.sign_statement(st or statement(), key or KEYS[auditor], auditor=auditor)


# --- #14.6: the two attacks -------------------------------------------------------------------------------------


def test_a_part_listing_another_auditor_with_the_attackers_key_is_refused() -> None:
    # Mallory (registered, with a proven key) signs and lists Alice as the signer of her part.
    forged = dataclasses.replace(part(MALLORY), signers=(attest.Signer(ALICE, KEYS[MALLORY].public),))
    keys = registered(ALICE, BOB, MALLORY)
    with pytest.raises(E.SignerKeyMismatch) as info:
        attest.aggregate([part(BOB), forged], registered=keys)
    assert info.value.expected == KEYS[ALICE].public.key_id and info.value.found == KEYS[MALLORY].public.key_id
    with pytest.raises(E.SignerKeyMismatch):
        attest.verify_attestation(forged, registered=keys)
    # Listing Alice with Alice's own public key but Mallory's aggregate key and signature does not help either.
    relabelled = dataclasses.replace(forged, signers=(attest.Signer(ALICE, KEYS[ALICE].public),))
    with pytest.raises(E.SignerKeyMismatch):
        attest.aggregate([relabelled], registered=keys)
    with pytest.raises(E.MissingSignature):
        attest.verify_attestation(relabelled, registered=keys)


def rogue_part() -> attest.SignedAttestation:
    """Mallory's rogue-key aggregate "by Alice and Mallory": pk_rogue = pk_mallory − pk_alice, so Alice's key plus the
    rogue key sum to Mallory's, and Mallory's own signature verifies against the sum."""
    import py_ecc.optimized_bn128 as c

    rogue_pk2 = bls.g2_to_affine(c.add(bls.g2_from_affine(KEYS[MALLORY].public.pk2),
                                       c.neg(bls.g2_from_affine(KEYS[ALICE].public.pk2))))
    rogue = PublicKey("mallory", KEYS[MALLORY].public.pk1, rogue_pk2)
    signers = tuple(sorted((attest.Signer(ALICE, KEYS[ALICE].public), attest.Signer(MALLORY, rogue)),
                           key=lambda s: int(s.auditor, 16)))
    st = statement()
    return attest.SignedAttestation(st, signers, KEYS[MALLORY].sign(st.message()), KEYS[MALLORY].public.pk2)


@pytest.mark.slow
def test_the_rogue_key_aggregate_really_verifies_against_the_listed_keys() -> None:
    # The attack is real: without the registered-key rule the pairing check passes (0.4 s).
    att = rogue_part()
    assert bls.aggregate_g2([s.key.pk2 for s in att.signers]) == att.aggregate_key
    assert bls.verify(att.aggregate_key, att.statement.message(), att.signature)


def test_a_rogue_key_aggregate_is_refused() -> None:
    att = rogue_part()
    with pytest.raises(E.SignerKeyMismatch):  # Mallory registered her real key, not the rogue one
        attest.aggregate([att], registered=registered(ALICE, MALLORY))
    with pytest.raises(E.SignerKeyMismatch):
        attest.verify_attestation(att, registered=registered(ALICE, MALLORY))
    with pytest.raises(E.MissingProofOfPossession):  # the rogue key's owner never registered
        attest.verify_attestation(att, registered=registered(ALICE))


@pytest.mark.parametrize("fn", [attest.aggregate, attest.verify_attestation])
def test_registered_keys_are_mandatory(fn: Any) -> None:
    parameter = inspect.signature(fn).parameters["registered"]
    assert parameter.kind is inspect.Parameter.KEYWORD_ONLY and parameter.default is inspect.Parameter.empty
    with pytest.raises(TypeError):
        fn([rogue_part()] if fn is attest.aggregate else rogue_part())


def test_revoked_keys_and_duplicates_are_refused() -> None:
    with pytest.raises(E.RevokedKey, match="revoked in block 9"):
        attest.aggregate([part(ALICE)], registered=registered(ALICE, revoked=9))
    with pytest.raises(E.DuplicateSignature):
        attest.aggregate([part(ALICE), part(ALICE)], registered=registered(ALICE))
    with pytest.raises(E.WrongCheckpoint, match="log_root differs"):
        attest.aggregate([part(ALICE), part(BOB, st=statement(log_root=d("other")))],
                         registered=registered(ALICE, BOB))
    with pytest.raises(E.MissingSignature, match="did not sign"):
        attest.aggregate([part(ALICE)], registered=registered(ALICE, BOB), require=[BOB])


@pytest.mark.slow
def test_honest_parts_aggregate_and_verify() -> None:
    keys = registered(ALICE, BOB)
    merged = attest.aggregate([part(BOB), part(ALICE)], registered=keys, require=[ALICE, BOB])
    assert [a.lower() for a in merged.addresses] == sorted([ALICE, BOB], key=lambda a: int(a, 16))
    attest.verify_attestation(merged, registered=keys, expected=statement())
    with pytest.raises(E.ForgedSignature):  # Bob's part signed by Mallory's secret
        bad = dataclasses.replace(part(BOB), signature=KEYS[MALLORY].sign(statement().message()))
        attest.aggregate([part(ALICE), bad], registered=keys)


# --- levels -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("level", "text"), [
    ({"name": "commitments", "replayed": 0, "segments": 30}, "commitments"),
    ({"name": "sampled", "replayed": 2, "segments": 30}, "sampled:2/30"),
    ({"name": "sampled", "replayed": 30, "segments": 30}, "full:30"),  # a sample of every segment is full
    ({"name": "sampled", "replayed": 0, "segments": 30}, "data"),  # data checked, no segment replayed
    ({"name": "data", "replayed": 0, "segments": 30}, "data"),
    ({"name": "full", "replayed": 3, "segments": 3}, "full:3"),
    (None, "commitments"),  # a report without a level: commitments, never more
])
def test_level_from_report(level: Any, text: str) -> None:
    report = {"verdict": "verified"} if level is None else {"verdict": "verified", "level": {**level, "text": "x"}}
    assert level_from_report(report) == text
    assert parse_level(text)[0] in ("commitments", "data", "sampled", "full")


@pytest.mark.parametrize("level", [{"name": "full", "replayed": 2, "segments": 3},
                                   {"name": "sampled", "replayed": 4, "segments": 3},
                                   {"name": "everything", "replayed": 1, "segments": 1},
                                   {"name": "sampled", "replayed": "2", "segments": 3}, "full"])
def test_impossible_levels_are_refused(level: Any) -> None:
    with pytest.raises(E.InvalidLevel):
        level_from_report({"verdict": "verified", "level": level})


@pytest.mark.parametrize("text", ["", "full", "full:-1", "full:01", "sampled:2/2", "sampled:0/3", "sampled:3/2",
                                  "Commitments", "sampled:1/2 ", "full:1e3"])
def test_non_canonical_level_strings_are_refused(text: str) -> None:
    with pytest.raises(E.InvalidLevel):
        parse_level(text)


def test_level_covers() -> None:
    assert level_covers("full:30", "sampled:2/30") and level_covers("sampled:2/30", "commitments")
    assert level_covers("sampled:1/30", "data") and level_covers("data", "commitments")
    assert not level_covers("commitments", "data") and not level_covers("data", "sampled:1/30")
    assert not level_covers("commitments", "sampled:1/30") and not level_covers("sampled:1/30", "sampled:2/30")
    assert not level_covers("full:29", "full:30")
    assert format_level("sampled", 1, 30) == "sampled:1/30"


@pytest.mark.parametrize(("verdict", "status"), [("failed", "failed"), ("inconclusive", "inconclusive"),
                                                 ("error", None)])
def test_statement_from_report_refuses_anything_but_verified(verdict: str, status: str | None) -> None:
    report = {"verdict": verdict, "verdict_text": "something went wrong",
              "checks": [{"id": "replay", "status": status, "summary": "replay could not be bitwise here"}]}
    with pytest.raises(E.NotVerified, match=f"verification says {verdict}") as info:
        attest.statement_from_report(report, attestations=None)  # type: ignore[arg-type]
    assert info.value.exit_code == 1
    if status is not None:
        assert "replay could not be bitwise here" in str(info.value)


# --- the statement file format ----------------------------------------------------------------------------------


def test_signed_file_round_trip_and_malformed_files() -> None:
    p = part(ALICE)
    assert attest.SignedAttestation.from_json(json.loads(json.dumps(p.to_json()))) == p
    assert p.to_json()["format"] == "prov.signed-attestation.v2"
    assert p.to_json()["statement"]["format"] == "prov.attestation.v2"
    value = p.to_json()
    value["statement"]["level"] = "full"
    with pytest.raises(FormatError, match="not a verification level"):
        attest.SignedAttestation.from_json(value)
    value = p.to_json()
    value["statement"]["log_size"] = "20"
    with pytest.raises(FormatError):
        attest.SignedAttestation.from_json(value)
    with pytest.raises(FormatError):
        attest.SignedAttestation.from_json({"format": "prov.signed-attestation.v3"})
    with pytest.raises(E.InvalidLevel):
        attest.sign_statement(statement(level="all of it"), KEYS[ALICE], auditor=ALICE)


def test_a_version_1_file_still_opens_and_verifies_but_is_never_signed_again() -> None:
    old = attest.SignedAttestation.from_json(json.loads(LEGACY_V1_BUNDLE), source="v1 file")
    assert old.statement.format == "prov.attestation.v1" and old.addresses == [LEGACY_V1_AUDITOR]
    keys = {LEGACY_V1_AUDITOR.lower(): RegisteredKey(auditor=LEGACY_V1_AUDITOR, key=KEYS[ALICE].public,
                                                     registered_block=1, retired_block=0, revoked_block=0,
                                                     tx_hash="0x")}
    assert old.to_json() == json.loads(LEGACY_V1_BUNDLE)  # written back byte-for-byte in meaning
    with pytest.raises(E.LegacyStatement):
        attest.aggregate([old], registered=keys)
    with pytest.raises(E.LegacyStatement):
        attest.anchor(None, old)  # type: ignore[arg-type]


@pytest.mark.slow
def test_a_version_1_signature_still_verifies_off_chain() -> None:
    old = attest.SignedAttestation.from_json(json.loads(LEGACY_V1_BUNDLE))
    keys = {LEGACY_V1_AUDITOR.lower(): RegisteredKey(auditor=LEGACY_V1_AUDITOR, key=KEYS[ALICE].public,
                                                     registered_block=1, retired_block=0, revoked_block=0,
                                                     tx_hash="0x")}
    attest.verify_attestation(old, registered=keys)
    # (v1 signed the checkpoint's record hash, not its log size: change a field the v1 message covers)
    tampered = dataclasses.replace(old, statement=dataclasses.replace(old.statement, checkpoint_index=4))
    with pytest.raises(E.ForgedSignature):
        attest.verify_attestation(tampered, registered=keys)
