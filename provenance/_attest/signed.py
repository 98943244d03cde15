"""Signed attestations: one auditor's signature over a statement, aggregates of several, their off-chain check
against the signers' *registered* keys, and anchoring in AttestationRegistry (public API: provenance.attest).

A signed attestation file (`prov.signed-attestation.v2`) holds the statement (`prov.attestation.v2`), the signers
(auditor account and the public keys their part carries, ascending by address), the aggregate signature and the
aggregate G2 key; one auditor's file is an aggregate of one. Version 1 files still open (read-only).

Two rules close the rogue-key holes of #14.6: registered keys are mandatory (every entry point takes them, there is
no default), and a part's keys must be exactly its listed signers' registered keys, so a part cannot list another
auditor while carrying the attacker's key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provenance import canonical
from provenance._attest import bls
from provenance._attest.client import AttestationClient
from provenance._attest.errors import (
    DuplicateSignature,
    ForgedSignature,
    LegacyStatement,
    MissingProofOfPossession,
    MissingSignature,
    RevokedKey,
    SignerKeyMismatch,
    WrongCheckpoint,
)
from provenance._attest.legacy import STATEMENT_V1_FORMAT, StatementV1
from provenance._attest.statement import Statement, checksum
from provenance._chain.records import TxInfo
from provenance.errors import FormatError, UsageError
from provenance.keys import PublicKey, RegisteredKey, SecretKey

BUNDLE_FORMAT = "prov.signed-attestation.v2"
BUNDLE_V1_FORMAT = "prov.signed-attestation.v1"


@dataclass(frozen=True)
class Signer:
    """One co-signer: the account that registered the key, and the key its part carries."""

    auditor: str
    key: PublicKey


@dataclass(frozen=True)
class SignedAttestation:
    """A statement, its signers (ascending by address) and their aggregate signature and G2 key."""

    statement: Statement | StatementV1
    signers: tuple[Signer, ...]
    signature: bls.G1Affine
    aggregate_key: bls.G2Affine

    @property
    def addresses(self) -> list[str]:
        return [s.auditor for s in self.signers]

    def to_json(self) -> dict[str, Any]:
        agg = PublicKey("aggregate", (0, 0), self.aggregate_key).to_json()
        legacy = isinstance(self.statement, StatementV1)
        return {"format": BUNDLE_V1_FORMAT if legacy else BUNDLE_FORMAT, "statement": self.statement.to_json(),
                "signers": [{"auditor": s.auditor, **s.key.to_json()} for s in self.signers],
                "signature": [hex(self.signature[0]), hex(self.signature[1])], "aggregate_key": agg["pk2"]}

    def write(self, path: Path) -> None:
        try:
            path.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{path}: cannot write ({exc.strerror or exc})") from None

    @classmethod
    def from_json(cls, value: Any, *, source: str = "attestation") -> SignedAttestation:
        try:
            kind = value["format"]
            if kind not in (BUNDLE_FORMAT, BUNDLE_V1_FORMAT):
                raise FormatError(f"{source}: format {kind!r}, expected {BUNDLE_FORMAT}")
            statement: Statement | StatementV1
            if kind == BUNDLE_V1_FORMAT or value["statement"].get("format") == STATEMENT_V1_FORMAT:
                statement = StatementV1.from_json(value["statement"], source=source)
            else:
                statement = Statement.from_json(value["statement"], source=source)
            signers = tuple(Signer(checksum(s["auditor"]), _public(s)) for s in value["signers"])
            sig = (int(value["signature"][0], 16), int(value["signature"][1], 16))
            agg = _public({"name": "aggregate", "pk1": ["0x0", "0x0"], "pk2": value["aggregate_key"]}).pk2
            return cls(statement, signers, sig, agg)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise FormatError(f"{source}: malformed signed attestation ({type(exc).__name__}: {exc})") from None

    @classmethod
    def read(cls, path: Path) -> SignedAttestation:
        try:
            value = canonical.load_json(path.read_bytes(), source=str(path))
        except OSError as exc:
            raise UsageError(f"{path}: cannot read ({exc.strerror or exc})") from None
        return cls.from_json(value, source=str(path))


def _public(entry: dict[str, Any]) -> PublicKey:
    pk1 = (int(entry["pk1"][0], 16), int(entry["pk1"][1], 16))
    (a, b), (c, d) = entry["pk2"]
    return PublicKey(str(entry["name"]), pk1, ((int(a, 16), int(b, 16)), (int(c, 16), int(d, 16))))


def current_statement(statement: Statement | StatementV1) -> Statement:
    """`statement` if it is a current (v2) statement; LegacyStatement for a v1 one."""
    if not isinstance(statement, Statement):
        raise LegacyStatement(f"a {statement.format} statement can be read but no longer signed, aggregated or "
                              "anchored; attest the checkpoint again with `prov attest`")
    return statement


def sign_statement(statement: Statement, key: SecretKey, *, auditor: str) -> SignedAttestation:
    """One auditor's signature over `statement` (an aggregate of one), `auditor` being the account of the key."""
    statement = current_statement(statement).checked()
    return SignedAttestation(statement, (Signer(checksum(auditor), key.public),), key.sign(statement.message()),
                             key.public.pk2)


def registered_sum(signers: Sequence[Signer], registered: Mapping[str, RegisteredKey]) -> bls.G2Affine:
    """Σ of the listed signers' registered G2 keys, after checking each listed signer has an active registered key
    and that the key the part carries for them is that key (typed errors otherwise)."""
    keys = []
    for s in signers:
        reg = registered.get(s.auditor.lower())
        if reg is None:
            raise MissingProofOfPossession(f"auditor {s.auditor} has no key registered (with a proof of possession) "
                                           "on this AttestationRegistry; refused", expected="a registered key",
                                           found="none")
        if not reg.active:
            why = f"revoked in block {reg.revoked_block}" if reg.revoked else "retired by a rotation"
            raise RevokedKey(f"auditor {s.auditor}'s key {reg.key_id} is {why}; it signs nothing new")
        if (s.key.pk1, s.key.pk2) != (reg.key.pk1, reg.key.pk2):
            raise SignerKeyMismatch(f"the part naming {s.auditor} carries another key than the one {s.auditor} "
                                    "registered (a part can only sign for its own auditor)", expected=reg.key_id,
                                    found=s.key.key_id)
        keys.append(reg.key.pk2)
    return bls.aggregate_g2(keys)


def _check_signer_list(signers: Sequence[Signer]) -> None:
    if not signers:
        raise MissingSignature("an attestation needs at least one signer")
    order = [int(s.auditor, 16) for s in signers]
    if len(set(order)) != len(order):
        raise DuplicateSignature("an auditor signs twice", expected="each auditor once",
                                 found=[s.auditor for s in signers])
    if order != sorted(order):
        raise FormatError("signers must be listed in ascending address order")


def _check_part(part: SignedAttestation, registered: Mapping[str, RegisteredKey]) -> None:
    _check_signer_list(part.signers)
    if registered_sum(part.signers, registered) != part.aggregate_key:
        raise SignerKeyMismatch(f"the aggregate key of the part signed by {part.addresses} is not the sum of their "
                                "registered keys", expected="Σ registered keys", found=hex(part.aggregate_key[0][0]))


def aggregate(parts: Sequence[SignedAttestation], *, registered: Mapping[str, RegisteredKey],
              require: Sequence[str] = ()) -> SignedAttestation:
    """Merge auditors' signed attestations of one statement into one aggregate, checked before it is returned.

    `registered`: each auditor's current registered key by lower-case address (provenance.keys.registered_keys);
    it is mandatory, since only keys registered with a proof of possession can be summed safely. Refuses (typed
    errors): a v1 statement (LegacyStatement), another statement (WrongCheckpoint), an auditor twice
    (DuplicateSignature), a signer without a registered key (MissingProofOfPossession) or with a revoked one
    (RevokedKey), a part whose keys are not its listed signers' registered keys (SignerKeyMismatch), an address of
    `require` that did not sign (MissingSignature), and a part whose signature does not verify (ForgedSignature).
    """
    if not parts:
        raise MissingSignature("nothing to aggregate: no signed attestation given")
    statement = current_statement(parts[0].statement)
    for part in parts[1:]:
        statement.check_same(current_statement(part.statement))
    for part in parts:
        _check_part(part, registered)
    signers = sorted((s for p in parts for s in p.signers), key=lambda s: int(s.auditor, 16))
    _check_signer_list(signers)
    signed = {s.auditor.lower() for s in signers}
    for address in require:
        if address.lower() not in signed:
            raise MissingSignature(f"auditor {address} did not sign", expected=address, found=sorted(signed))
    merged = SignedAttestation(statement, tuple(signers), bls.aggregate_signatures([p.signature for p in parts]),
                               registered_sum(signers, registered))
    message = statement.message()
    if not bls.verify(merged.aggregate_key, message, merged.signature):
        for part in parts:  # find the culprit: one pairing check per part, only on failure
            if not bls.verify(part.aggregate_key, message, part.signature):
                raise ForgedSignature(f"the signature of {part.addresses} does not verify over the statement",
                                      expected="a valid BLS signature", found=hex(part.signature[0]))
        raise ForgedSignature("the aggregate signature does not verify")
    return merged


def verify_attestation(att: SignedAttestation, *, registered: Mapping[str, RegisteredKey],
                       expected: Statement | StatementV1 | None = None) -> None:
    """Check a signed attestation off chain; raise a typed AttestationError naming the reason if it fails.

    `registered`: the signers' current registered keys by lower-case address (mandatory). `expected`: the statement
    it must be about (else WrongCheckpoint). Each listed signer's key must be their registered, unrevoked key (else
    MissingProofOfPossession, RevokedKey or SignerKeyMismatch), the aggregate key exactly their sum (else
    MissingSignature), and the signature must verify (else ForgedSignature).
    """
    if expected is not None:
        expected.check_same(att.statement)
    _check_signer_list(att.signers)
    if registered_sum(att.signers, registered) != att.aggregate_key:
        raise MissingSignature("the aggregate key is not the sum of the listed signers' registered keys (a signer "
                               "is missing from the list, or one listed did not contribute)")
    if not bls.verify(att.aggregate_key, att.statement.message(), att.signature):
        raise ForgedSignature("the aggregate signature does not verify against the listed signers' keys "
                              "(forged, or a listed signer did not sign)", expected="a valid aggregate",
                              found=hex(att.signature[0]))


def anchor(client: AttestationClient, att: SignedAttestation) -> TxInfo:
    """Send an aggregate attestation to the AttestationRegistry (which re-checks it all on chain)."""
    st = current_statement(att.statement)
    here = (client.chain_id, client.registry.address, client.address)
    if here != (st.chain_id, st.provenance_registry, st.attestation_registry):
        raise WrongCheckpoint("the attestation names another chain or deployment",
                              expected=f"{st.chain_id}/{st.provenance_registry}/{st.attestation_registry}",
                              found="/".join(map(str, here)))
    return client.submit(st, signers=att.addresses, signature=att.signature, aggregate_key=att.aggregate_key)
