"""Co-signed auditor attestations: sign a verified checkpoint with a BLS key, aggregate several auditors'
signatures into one, check it off chain, anchor it in AttestationRegistry, and list a checkpoint's attestations.

Scheme and curve (BN254, on-chain verification through the pairing precompile): docs/attestations.md.
A signed attestation file (`prov.signed-attestation.v1`) holds the statement, the signers (auditor account and
public keys, ascending by address), the aggregate signature and the aggregate G2 key; one auditor's file is an
aggregate of one. Every rejection is a typed error naming the reason (provenance._attest.errors).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provenance import config
from provenance._attest import bls
from provenance._attest.client import AttestationClient
from provenance._attest.errors import (
    DuplicateSignature,
    ForgedSignature,
    MissingProofOfPossession,
    MissingSignature,
    NotVerified,
    WrongCheckpoint,
)
from provenance._attest.keys import PublicKey, SecretKey
from provenance._attest.statement import Statement, verification_digest
from provenance._chain.records import TxInfo
from provenance.errors import FormatError, ProvenanceError, UsageError
from provenance.hashing import Digest

__all__ = [
    "AttestationClient", "SignedAttestation", "Signer", "aggregate", "anchor", "attest_checkpoint",
    "attestations_for", "sign_statement", "verify_attestation",
]

BUNDLE_FORMAT = "prov.signed-attestation.v1"
CONFIG_SECTION = "attest"


@dataclass(frozen=True)
class Signer:
    """One co-signer: the account that registered the key, and the key."""

    auditor: str
    key: PublicKey


@dataclass(frozen=True)
class SignedAttestation:
    """A statement, its signers (ascending by address) and their aggregate signature and G2 key."""

    statement: Statement
    signers: tuple[Signer, ...]
    signature: bls.G1Affine
    aggregate_key: bls.G2Affine

    @property
    def addresses(self) -> list[str]:
        return [s.auditor for s in self.signers]

    def to_json(self) -> dict[str, Any]:
        agg = PublicKey("aggregate", (0, 0), self.aggregate_key).to_json()
        return {"format": BUNDLE_FORMAT, "statement": self.statement.to_json(),
                "signers": [{"auditor": s.auditor, **s.key.to_json()} for s in self.signers],
                "signature": [hex(self.signature[0]), hex(self.signature[1])], "aggregate_key": agg["pk2"]}

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_json(cls, value: Any, *, source: str = "attestation") -> SignedAttestation:
        from eth_utils import to_checksum_address

        try:
            if value["format"] != BUNDLE_FORMAT:
                raise FormatError(f"{source}: format {value['format']!r}, expected {BUNDLE_FORMAT}")
            signers = tuple(Signer(to_checksum_address(s["auditor"]), _public(s)) for s in value["signers"])
            sig = (int(value["signature"][0], 16), int(value["signature"][1], 16))
            agg = _public({"name": "aggregate", "pk1": ["0x0", "0x0"], "pk2": value["aggregate_key"]}).pk2
            return cls(Statement.from_json(value["statement"], source=source), signers, sig, agg)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise FormatError(f"{source}: malformed signed attestation ({type(exc).__name__}: {exc})") from None

    @classmethod
    def read(cls, path: Path) -> SignedAttestation:
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise UsageError(f"{path}: cannot read ({exc.strerror or exc})") from None
        except ValueError:
            raise FormatError(f"{path}: not JSON") from None
        return cls.from_json(value, source=str(path))


def _public(entry: dict[str, Any]) -> PublicKey:
    pk1 = (int(entry["pk1"][0], 16), int(entry["pk1"][1], 16))
    (a, b), (c, d) = entry["pk2"]
    return PublicKey(str(entry["name"]), pk1, ((int(a, 16), int(b, 16)), (int(c, 16), int(d, 16))))


def sign_statement(statement: Statement, key: SecretKey, *, auditor: str) -> SignedAttestation:
    """One auditor's signature over `statement` (an aggregate of one), `auditor` being the account of the key."""
    from eth_utils import to_checksum_address

    return SignedAttestation(statement, (Signer(to_checksum_address(auditor), key.public),),
                             key.sign(statement.message()), key.public.pk2)


def _check_signers(signers: Sequence[Signer], proven_keys: Collection[str] | None) -> None:
    seen: dict[str, str] = {}
    for s in signers:
        for ident in (s.auditor.lower(), s.key.key_id):
            if ident in seen:
                raise DuplicateSignature(f"auditor {s.auditor} (key {s.key.key_id}) signs twice",
                                         expected="each auditor once", found=f"{seen[ident]} and {s.auditor}")
            seen[ident] = s.auditor
        if proven_keys is not None and s.key.key_id not in proven_keys:
            raise MissingProofOfPossession(f"auditor {s.auditor}: key {s.key.key_id} has no proven possession "
                                           "(it is not registered with a proof of possession); refused",
                                           expected="a registered key", found=s.key.key_id)


def aggregate(parts: Sequence[SignedAttestation], *, proven_keys: Collection[str] | None = None,
              require: Sequence[str] = ()) -> SignedAttestation:
    """Merge auditors' signed attestations of one statement into one aggregate, checked before it is returned.

    Refuses (typed errors): another statement (WrongCheckpoint), an auditor or key twice (DuplicateSignature), a key
    not in `proven_keys` when given (MissingProofOfPossession), an address of `require` that did not sign
    (MissingSignature), and a part whose signature does not verify (ForgedSignature, naming the auditor).
    """
    if not parts:
        raise MissingSignature("nothing to aggregate: no signed attestation given")
    for part in parts[1:]:
        parts[0].statement.check_same_checkpoint(part.statement)
    signers = sorted((s for p in parts for s in p.signers), key=lambda s: int(s.auditor, 16))
    _check_signers(signers, proven_keys)
    signed = {s.auditor.lower() for s in signers}
    for address in require:
        if address.lower() not in signed:
            raise MissingSignature(f"auditor {address} did not sign", expected=address, found=sorted(signed))
    merged = SignedAttestation(parts[0].statement, tuple(signers),
                               bls.aggregate_signatures([p.signature for p in parts]),
                               bls.aggregate_g2([p.aggregate_key for p in parts]))
    message = merged.statement.message()
    if not bls.verify(merged.aggregate_key, message, merged.signature):
        for part in parts:  # find the culprit: one pairing check per part, only on failure
            if not bls.verify(part.aggregate_key, message, part.signature):
                raise ForgedSignature(f"the signature of {part.addresses} does not verify over the statement",
                                      expected="a valid BLS signature", found=hex(part.signature[0]))
        raise ForgedSignature("the aggregate signature does not verify")
    return merged


def verify_attestation(att: SignedAttestation, *, expected: Statement | None = None,
                       proven_keys: Collection[str] | None = None) -> None:
    """Check a signed attestation off chain; raise a typed AttestationError naming the reason if it fails.

    `expected`: the statement it must be about (else WrongCheckpoint). `proven_keys`: key ids registered with a proof
    of possession (e.g. from the chain); any other key is refused. The aggregate key must be exactly the sum of the
    listed signers' keys (else MissingSignature), and the signature must verify (else ForgedSignature).
    """
    if expected is not None:
        expected.check_same_checkpoint(att.statement)
    if not att.signers:
        raise MissingSignature("an attestation needs at least one signer")
    if [int(s.auditor, 16) for s in att.signers] != sorted(int(s.auditor, 16) for s in att.signers):
        raise FormatError("signers must be listed in ascending address order")
    _check_signers(att.signers, proven_keys)
    listed = bls.aggregate_g2([s.key.pk2 for s in att.signers])
    if listed != att.aggregate_key:
        raise MissingSignature("the aggregate key is not the sum of the listed signers' keys (a signer is missing "
                               "from the list, or one listed did not contribute)")
    if not bls.verify(att.aggregate_key, att.statement.message(), att.signature):
        raise ForgedSignature("the aggregate signature does not verify against the listed signers' keys "
                              "(forged, or a listed signer did not sign)", expected="a valid aggregate",
                              found=hex(att.signature[0]))


def attest_checkpoint(path: str | Path, *, registry: Any, store: Any, key: SecretKey, auditor: str,
                      options: Any = None, report_cid: str = "", cosign: Statement | None = None,
                      store_report: bool = False) -> tuple[SignedAttestation, dict[str, Any]]:
    """Run the verifier on `path`, refuse unless it says `verified`, and sign the statement for its checkpoint.

    `store_report`: put the canonical report in `store` and attest its CID. `cosign`: a lead auditor's statement to
    co-sign instead (it must name the same checkpoint; its verification digest and report CID are kept).
    Returns the signed attestation (one signer) and the report.
    """
    from provenance import canonical
    from provenance.verify import verify

    report = verify(path, registry=registry, store=store, options=options)
    if report["verdict"] != "verified":
        raise NotVerified(f"refusing to attest: verification says {report['verdict']} ({report['verdict_text']})")
    record = registry.find_by_weights(Digest.parse(report["subject"]["weights_digest"]))
    if store_report and not report_cid:
        from provenance._attest.statement import stable_json

        report_cid = store.put_bytes(canonical.encode(stable_json(report)))
    statement = Statement.for_checkpoint(record, chain_id=registry.chain_id, registry=registry.address,
                                         verification=verification_digest(report), report_cid=report_cid)
    if cosign is not None:
        dataclasses.replace(cosign, verification_digest=statement.verification_digest,
                            report_cid=statement.report_cid).check_same_checkpoint(statement)
        statement = cosign
    return sign_statement(statement, key, auditor=auditor), report


def anchor(client: AttestationClient, att: SignedAttestation) -> TxInfo:
    """Send an aggregate attestation to the AttestationRegistry (which re-checks it all on chain)."""
    st = att.statement
    if client.registry.address != st.registry or client.transport.chain_id != st.chain_id:
        raise WrongCheckpoint("the attestation names another chain or registry", expected=st.registry,
                              found=client.registry.address)
    return client.submit(weights_digest=st.weights_digest, verification_digest=st.verification_digest,
                         report_cid=st.report_cid, signers=att.addresses, signature=att.signature,
                         aggregate_key=att.aggregate_key)


def attestation_client(registry: Any, address: str | None = None, *, home: Path | None = None,
                       use_config: bool = True) -> AttestationClient | None:
    """The AttestationRegistry for `registry`: at `address`, else the project config's `attest.address` when it
    was deployed for this registry; None when there is none."""
    if address is None and use_config:
        section = config.get_section(CONFIG_SECTION, home)
        if section.get("registry") == registry.address and section.get("chain_id") == registry.chain_id:
            address = section.get("address")
    return None if address is None else AttestationClient(registry, address)


def attestations_for(registry_or_client: Any, weights_digest: Digest | str, *, address: str | None = None,
                     check_signatures: bool = True) -> list[dict[str, Any]]:
    """The anchored attestations of the checkpoint committing `weights_digest`, for the verify report.

    `registry_or_client`: a provenance.chain.Registry (the AttestationRegistry is `address` or the project
    config's) or an AttestationClient. Each dict: `number`, `tx`, `block`, `submitter`, `run_id`,
    `checkpoint_index`, `verification_digest`, `report_cid` (or None), `message` (0x hex), `signers` (list of
    `{"auditor", "name", "key_id", "registered_block"}`), `valid` (bool) and `reason` (None when valid). Valid means:
    the event matches storage, the message is the one for the checkpoint the registry holds now, every signer is
    registered and the aggregate key is the sum of their keys, and (with `check_signatures`, ~0.3 s each) the
    BLS signature verifies off chain too. An empty list when no AttestationRegistry is known.
    """
    client = registry_or_client if isinstance(registry_or_client, AttestationClient) \
        else attestation_client(registry_or_client, address)
    if client is None:
        return []
    digest = weights_digest if isinstance(weights_digest, Digest) else Digest.parse(weights_digest)
    record = client.registry.find_by_weights(digest)
    out = []
    for item in client.attestations(digest):
        auditors = [client.auditor(a) for a in item.signers]
        reason = _why_invalid(client, item, record, auditors, check_signatures)
        out.append({
            "number": item.number, "tx": item.tx_hash, "block": item.block_number, "submitter": item.submitter,
            "run_id": item.run_id.hex(), "checkpoint_index": item.index,
            "verification_digest": str(item.verification_digest), "report_cid": item.report_cid or None,
            "message": "0x" + item.message.hex(),
            "signers": [{"auditor": addr, "name": a.name if a else None, "key_id": a.key.key_id if a else None,
                         "registered_block": a.block_number if a else None}
                        for addr, a in zip(item.signers, auditors, strict=True)],
            "valid": reason is None, "reason": reason,
        })
    return out


def _why_invalid(client: AttestationClient, item: Any, record: Any, auditors: list[Any],
                 check_signatures: bool) -> str | None:
    if record is None:
        return "the registry no longer finds a checkpoint for these weights"
    statement = Statement.for_checkpoint(record, chain_id=client.transport.chain_id,
                                         registry=client.registry.address,
                                         verification=item.verification_digest, report_cid=item.report_cid)
    if statement.message() != item.message:
        return "the signed message is not the one for this checkpoint"
    if any(a is None for a in auditors):
        return "a signer has no registered key"
    if bls.aggregate_g2([a.key.pk2 for a in auditors]) != item.aggregate_key:
        return "the aggregate key is not the sum of the signers' registered keys"
    if check_signatures and not bls.verify(item.aggregate_key, item.message, item.signature):
        return "the aggregate BLS signature does not verify"
    return None


def save_deployment(client: AttestationClient, home: Path | None = None) -> None:
    """Record the AttestationRegistry in the project config (section `attest`) for later commands."""
    if client.address is None:
        raise ProvenanceError("the attestation registry is not deployed")
    config.update_section(CONFIG_SECTION, {"address": client.address, "registry": client.registry.address,
                                           "chain_id": client.transport.chain_id}, home)
