"""The read side of auditor attestations: which AttestationRegistry serves a ProvenanceRegistry, and what the
anchored attestations of a checkpoint are worth — valid, signed with a revoked key, about another checkpoint,
forged, or malformed — each with a reason.

It never imports the verifier: the verifier calls `attestations_for` with the checkpoint record it has verified
(and the run key), and every attestation's statement is checked against that record here. (Signing, aggregating
and anchoring live in provenance.attest, above the verifier.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from provenance import config
from provenance._attest import bls
from provenance._attest.client import Anchored, AttestationClient, RegistryLike
from provenance._attest.errors import InvalidLevel
from provenance._attest.statement import CheckpointLike, parse_level
from provenance._chain.records import TxInfo
from provenance.canonical import restore_recursion_limit
from provenance.errors import ProvenanceError, UsageError
from provenance.keys import RegisteredKey

__all__ = ["STATUSES", "AttestationClient", "AttestationView", "SignerView", "attestation_client",
           "attestations_for", "connect_attestations", "deploy_attestations", "require_attestation_client",
           "save_deployment"]

CONFIG_SECTION = "attest"
# What an anchored attestation is worth to the reader, best first.
STATUSES = ("valid", "revoked", "wrong-checkpoint", "forged", "malformed")


@dataclass(frozen=True)
class SignerView:
    """One co-signer of an anchored attestation and the key they signed with (None fields: no such key)."""

    auditor: str
    name: str | None
    key_id: str
    registered_block: int | None
    revoked_block: int | None

    def to_json(self) -> dict[str, Any]:
        return {"auditor": self.auditor, "name": self.name, "key_id": self.key_id,
                "registered_block": self.registered_block, "revoked_block": self.revoked_block}


@dataclass(frozen=True)
class AttestationView:
    """An anchored attestation as the verify report shows it: where, by whom, what it states, and its status
    (one of STATUSES) with the reason when it is not valid."""

    number: int
    tx: str
    block: int
    submitter: str
    run_key: str
    checkpoint_index: int
    level: str
    verification_digest: str
    report_cid: str | None
    message: str
    signers: tuple[SignerView, ...]
    status: str
    reason: str | None
    trusted: bool = False  # every signer is on the auditor's --trust-auditors list

    @property
    def valid(self) -> bool:
        return self.status == "valid"

    def to_json(self) -> dict[str, Any]:
        """The verify report's item (docs/attestations.md): `valid` and `reason` as before, plus `status` and
        `revoked` (status "revoked")."""
        return {"number": self.number, "tx": self.tx, "block": self.block, "submitter": self.submitter,
                "run_key": self.run_key, "checkpoint_index": self.checkpoint_index, "level": self.level,
                "verification_digest": self.verification_digest, "report_cid": self.report_cid,
                "message": self.message, "signers": [s.to_json() for s in self.signers], "status": self.status,
                "valid": self.valid, "revoked": self.status == "revoked", "reason": self.reason,
                "trusted": self.trusted, "names": "self-declared"}


def attestation_client(registry: RegistryLike, address: str | None = None, *, home: Path | None = None,
                       use_config: bool = True) -> AttestationClient | None:
    """The AttestationRegistry for `registry`: at `address`, else the project config's `attest.address` when it
    was deployed for this registry; None when there is none. A wrong address raises a ChainError."""
    if address is None and use_config:
        section = config.get_section(CONFIG_SECTION, home)
        if section.get("registry") == registry.address and section.get("chain_id") == registry.transport.chain_id:
            address = section.get("address")
    return None if address is None else AttestationClient(registry, address)


def require_attestation_client(registry: RegistryLike, address: str | None = None, *,
                               home: Path | None = None) -> AttestationClient:
    """As `attestation_client`, but a UsageError saying what to do when none is known."""
    found = attestation_client(registry, address, home=home)
    if found is None:
        raise UsageError("no AttestationRegistry: pass --attestations ADDRESS or run `prov attest-deploy`")
    return found


def save_deployment(client: AttestationClient, home: Path | None = None) -> None:
    """Record the AttestationRegistry in the project config (section `attest`) for later commands."""
    if client.address is None:
        raise ProvenanceError("the attestation registry is not deployed; deploy it first")
    config.update_section(CONFIG_SECTION, {"address": client.address, "registry": client.registry.address,
                                           "chain_id": client.chain_id}, home)


def attestations_for(client: AttestationClient, *, record: CheckpointLike, run_key: bytes,
                     check_signatures: bool = True, trusted: frozenset[str] | None = None) -> list[AttestationView]:
    """The anchored attestations naming `record`'s weights digest, oldest first, each judged against `record`.

    `record`: the checkpoint record the caller has verified (index, weights/checkpoint digests, log size and root,
    ε micro); `run_key`: its run's key on the ProvenanceRegistry. An attestation is `valid` when its message is the
    hash of its statement, the level is canonical, every checkpoint field equals `record`'s, every signer's key
    is registered to them and not revoked, the aggregate key is the sum of those keys, and (with
    `check_signatures`, ~0.4 s each) the BLS signature verifies off chain too. Otherwise its status says why:
    `revoked` (a signer revoked the key: past attestations included), `wrong-checkpoint` (it names another claim of
    these weights, or other digests, log or ε), `forged`, or `malformed`. Chain errors propagate (ChainError).

    Auditor names are self-declared (anyone can register a key under any name and anchor attestations): those
    whose every signer is in `trusted` (addresses or key ids, lower case) come first, marked `trusted`; the others
    are listed apart, and at most MAX_UNTRUSTED of them (within UNTRUSTED_SECONDS) are checked at all.
    """
    keys: dict[str, RegisteredKey | None] = {}
    views = []
    untrusted_checked = 0
    stop_at = time.monotonic() + UNTRUSTED_SECONDS
    for item in client.attestations(record.weights_digest):
        is_trusted = trusted is not None and bool(item.signers) and all(
            s.lower() in trusted or k.lower() in trusted for s, k in zip(item.signers, item.key_ids, strict=True))
        if not is_trusted and (untrusted_checked >= MAX_UNTRUSTED or time.monotonic() >= stop_at):
            skipped = _skipped(item, untrusted_checked)
            if skipped is not None:
                views.append(skipped)
            continue  # anyone can anchor attestations: checking strangers' is bounded in count and time
        untrusted_checked += 0 if is_trusted else 1
        for key_id in item.key_ids:
            if key_id not in keys:
                keys[key_id] = client.key(key_id)
        status, reason = _judge(item, [keys[k] for k in item.key_ids], record=record, run_key=run_key,
                                check_signatures=check_signatures)
        views.append(replace(_view(item, [keys[k] for k in item.key_ids], status, reason), trusted=is_trusted))
    restore_recursion_limit()  # the BLS library raised it on import: deep JSON must not overflow the C stack
    return sorted(views, key=lambda v: (not v.trusted, v.number))  # trusted auditors first, the others apart


MAX_UNTRUSTED = 16  # attestations by auditors not on --trust-auditors that are checked (~0.4 s of pairings each)
UNTRUSTED_SECONDS = 10.0  # and the time spent on them


def load_trusted(path: Path) -> frozenset[str]:
    """The auditor allow-list (`--trust-auditors FILE`): a JSON list of auditor addresses and/or BLS key ids
    ("0x..."), compared case-insensitively. Read bounded; anything else is a one-line UsageError."""
    from provenance.canonical import load_json
    from provenance.errors import FormatError

    if not path.is_file():
        raise UsageError(f"{path} (--trust-auditors): not a regular file; give a JSON list of auditor addresses "
                         "or key ids")
    try:
        doc = load_json(path.read_bytes(), source=str(path), max_size=1 << 20)
    except (FormatError, OSError) as exc:
        raise UsageError(f"--trust-auditors: {exc}") from None
    if not isinstance(doc, list) or not all(isinstance(x, str) and x.startswith("0x") for x in doc):
        raise UsageError(f"{path} (--trust-auditors): expected a JSON list of \"0x...\" auditor addresses or key "
                         "ids")
    return frozenset(x.lower() for x in doc)


def _skipped(item: Anchored, checked: int) -> AttestationView | None:
    """An attestation by an untrusted auditor beyond the count or time bound: listed, never judged valid."""
    st = item.statement
    try:
        return AttestationView(number=item.number, tx=item.tx_hash, block=item.block_number, submitter=item.submitter,
                               run_key=st.run_key.hex(), checkpoint_index=st.checkpoint_index, level=st.level,
                               verification_digest=str(st.verification_digest), report_cid=st.report_cid or None,
                               message="0x" + item.message.hex(),
                               signers=tuple(SignerView(s, None, k, None, None)
                                             for s, k in zip(item.signers, item.key_ids, strict=True)),
                               status="malformed", reason=f"not checked: {checked} attestations by auditors not "
                               "on your --trust-auditors list were checked already (a bound: anyone can anchor them)")
    except (AttributeError, TypeError, ValueError):
        return None


def _judge(item: Anchored, registered: list[RegisteredKey | None], *, record: CheckpointLike, run_key: bytes,
           check_signatures: bool) -> tuple[str, str | None]:
    st = item.statement
    if st.message() != item.message:
        return "forged", "the recorded message is not the hash of the recorded statement"
    try:
        parse_level(st.level)
    except InvalidLevel as exc:
        return "malformed", str(exc)
    mismatch = st.checkpoint_mismatch(record, run_key)
    if mismatch is not None:
        name, expected, found = mismatch
        return "wrong-checkpoint", (f"it attests another checkpoint: {name} is {found}, the verified checkpoint's is "
                                    f"{expected}")
    for signer, key_id, key in zip(item.signers, item.key_ids, registered, strict=True):
        if key is None or key.auditor.lower() != signer.lower():
            return "forged", f"{signer} has no registered key {key_id}"
        if item.block_number < key.registered_block or 0 < key.retired_block < item.block_number:
            return "forged", f"key {key_id} was not {signer}'s current key in block {item.block_number}"
    revoked = [f"{signer} revoked key {key.key_id} in block {key.revoked_block}"
               for signer, key in zip(item.signers, registered, strict=True) if key is not None and key.revoked]
    if revoked:
        return "revoked", "; ".join(revoked)
    if bls.aggregate_g2([k.key.pk2 for k in registered if k is not None]) != item.aggregate_key:
        return "forged", "the aggregate key is not the sum of the signers' registered keys"
    if check_signatures and not bls.verify(item.aggregate_key, item.message, item.signature):
        return "forged", "the aggregate BLS signature does not verify"
    return "valid", None


def _view(item: Anchored, registered: list[RegisteredKey | None], status: str, reason: str | None) -> AttestationView:
    st = item.statement
    signers = tuple(SignerView(auditor=signer, name=key.name if key else None, key_id=key_id,
                               registered_block=key.registered_block if key else None,
                               revoked_block=(key.revoked_block or None) if key else None)
                    for signer, key_id, key in zip(item.signers, item.key_ids, registered, strict=True))
    return AttestationView(number=item.number, tx=item.tx_hash, block=item.block_number, submitter=item.submitter,
                           run_key=st.run_key.hex(), checkpoint_index=st.checkpoint_index, level=st.level,
                           verification_digest=str(st.verification_digest), report_cid=st.report_cid or None,
                           message="0x" + item.message.hex(), signers=signers, status=status, reason=reason)


def connect_attestations(rpc_url: str | None = None, *, registry: str | None = None, address: str | None = None,
                         keystore: Path | None = None, home: Path | None = None,
                         deployed: bool = True) -> AttestationClient:
    """The AttestationRegistry client the `prov keys` / `prov attest` commands use: the chain and ProvenanceRegistry
    given (or the project config's), signing with the usual account, bound to the AttestationRegistry at `address`
    or the project config's (`deployed=False`: not bound yet, to deploy one)."""
    from provenance.chain import connect

    client = connect(rpc_url, registry=registry, keystore=keystore, home=home)
    if client.address is None:
        raise UsageError("no registry address: pass --registry or run `prov chain deploy` in this project")
    if not deployed:
        return AttestationClient(client)
    return require_attestation_client(client, address, home=home)


def deploy_attestations(client: AttestationClient, home: Path | None = None) -> TxInfo:
    """Deploy an AttestationRegistry for the client's ProvenanceRegistry and record it in the project config."""
    tx = client.deploy()
    save_deployment(client, home)
    return tx
