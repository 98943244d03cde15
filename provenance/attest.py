"""Co-signed auditor attestations, the write side: verify a checkpoint, sign a statement of what was proven (the
verification level included) with a BLS key, aggregate several auditors' signatures into one, check it off chain
against the signers' registered keys, and anchor it in AttestationRegistry.

Scheme and curve (BN254, on-chain verification through the pairing precompile): docs/attestations.md. The signed
file format and the aggregation rules are in provenance._attest.signed (re-exported here). This module sits above
the verifier (`attest_checkpoint` runs it); listing anchored attestations is provenance.attestations, below it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from provenance import canonical
from provenance._attest.client import AttestationClient
from provenance._attest.errors import LevelNotReached, NotVerified, WrongCheckpoint
from provenance._attest.signed import (
    BUNDLE_FORMAT,
    SignedAttestation,
    Signer,
    aggregate,
    anchor,
    current_statement,
    registered_sum,
    sign_statement,
    verify_attestation,
)
from provenance._attest.statement import (
    CHECKPOINT_FIELDS,
    CheckpointLike,
    Statement,
    level_covers,
    level_from_report,
    run_key_of,
    stable_json,
    verification_digest,
)
from provenance._chain.records import TxInfo
from provenance.errors import UsageError
from provenance.keys import SecretKey, registered_keys
from provenance.verify import Report, VerifyOptions, verify

__all__ = [
    "BUNDLE_FORMAT", "AttestOutcome", "SignedAttestation", "Signer", "aggregate", "anchor", "attest_and_anchor",
    "attest_checkpoint", "registered_sum", "run_key_of", "sign_statement", "statement_from_report",
    "verified_checkpoint", "verify_attestation",
]


@dataclass(frozen=True)
class AttestOutcome:
    """What `attest_and_anchor` did: this auditor's part, the aggregate (with the other parts given), the verify
    report the part signs, and the anchoring transaction (None when not anchored)."""

    own: SignedAttestation
    attestation: SignedAttestation
    report: Report
    tx: TxInfo | None

    @property
    def statement(self) -> Statement:
        return current_statement(self.attestation.statement)


def _body(report: Any) -> dict[str, Any]:
    """The report document (the verifier's Report, or its JSON)."""
    body = report.to_json() if callable(getattr(report, "to_json", None)) else report
    if not isinstance(body, dict):
        raise UsageError("a verify report is a JSON object")
    return body


def _require_verified(report: dict[str, Any]) -> None:
    verdict = report.get("verdict")
    if verdict == "verified":
        return
    reasons = [f"{c.get('id')}: {c.get('summary')}" for c in report.get("checks") or []
               if c.get("status") in ("failed", "inconclusive")]
    detail = "; ".join(reasons) or report.get("verdict_text") or "no reason given"
    raise NotVerified(f"refusing to attest: verification says {verdict} ({detail})")


def verified_checkpoint(registry: Any, report: dict[str, Any]) -> tuple[CheckpointLike, bytes]:
    """The verified report's subject checkpoint, read again from the run's verified history on chain
    (`registry.run(run_key)`, ProvenanceRegistry v2), and its run key."""
    run = report.get("run") or {}
    subject = next((e for e in report.get("lineage") or [] if e.get("is_subject")), None)
    if not run or subject is None:
        raise NotVerified("refusing to attest: the verify report names no run or subject checkpoint")
    if run.get("run_key"):
        run_key = bytes.fromhex(str(run["run_key"]).removeprefix("0x"))
    else:
        run_key = run_key_of(run["owner"], bytes.fromhex(str(run["run_id"]).removeprefix("0x")))
    if not callable(getattr(registry, "run", None)):
        raise UsageError("attestations need a version 2 ProvenanceRegistry (its runs are keyed by owner and id)")
    history = registry.run(run_key)
    record = next((c for c in getattr(history, "checkpoints", history) if c.index == subject["index"]), None)
    if record is None or str(record.weights_digest) != report["subject"]["weights_digest"]:
        raise NotVerified(f"refusing to attest: checkpoint {subject['index']} of run {run_key.hex()} on chain is not "
                          "the verified subject")
    return record, run_key


def statement_from_report(report: Any, *, attestations: AttestationClient, report_cid: str = "") -> Statement:
    """The statement for a verify report (the verifier's Report or its JSON): refused (NotVerified) unless the
    verdict is `verified`; it carries the level the verifier reached, the digest of the report and the checkpoint
    as the chain records it."""
    report = _body(report)
    _require_verified(report)
    level = level_from_report(report)
    registry = attestations.registry
    record, run_key = verified_checkpoint(registry, report)
    if attestations.address is None or registry.address is None:
        raise UsageError("the AttestationRegistry is not deployed; run `prov attest-deploy`")
    return Statement.for_checkpoint(record, run_key=run_key, chain_id=attestations.chain_id,
                                    provenance_registry=registry.address, attestation_registry=attestations.address,
                                    level=level, verification=verification_digest(report), report_cid=report_cid)


def _cosigned(lead: Statement, own: Statement) -> Statement:
    """The lead auditor's statement, if it names the same checkpoint and deployment and claims no more than this
    auditor's own verification reached."""
    mine, theirs = own.to_json(), lead.to_json()
    for name in ("chain_id", "provenance_registry", "attestation_registry", *CHECKPOINT_FIELDS):
        if mine[name] != theirs[name]:
            raise WrongCheckpoint(f"refusing to co-sign: the lead's statement names another {name}",
                                  expected=mine[name], found=theirs[name])
    if not level_covers(own.level, lead.level):
        raise LevelNotReached(f"refusing to co-sign: the lead's statement claims {lead.level}, your verification "
                              f"reached {own.level}", expected=lead.level, found=own.level)
    return lead


def attest_checkpoint(path: str | Path, *, attestations: AttestationClient, store: Any, key: SecretKey,
                      options: VerifyOptions | None = None, cosign: Statement | None = None,
                      store_report: bool = False, report_cid: str = "") -> tuple[SignedAttestation, Report]:
    """Run the verifier on `path`, refuse unless it says `verified`, and sign the statement for its checkpoint
    (the level reached included) as the auditor `attestations` sends from, whose current registered key `key` must
    be. `store_report`: put the canonical report in `store` and attest its CID. `cosign`: a lead auditor's statement
    to co-sign instead (same checkpoint; a level this verification reached). Returns the part and the report."""
    auditor = attestations.sender
    registered_sum([Signer(auditor, key.public)], registered_keys(attestations, [auditor]))
    report = verify(path, registry=cast(Any, attestations.registry), store=store, options=options)
    _require_verified(_body(report))
    if store_report and not report_cid:
        report_cid = store.put_bytes(canonical.encode(stable_json(_body(report))))
    statement = statement_from_report(report, attestations=attestations, report_cid=report_cid)
    if cosign is not None:
        statement = _cosigned(cosign, statement)
    return sign_statement(statement, key, auditor=auditor), report


def attest_and_anchor(path: str | Path, *, attestations: AttestationClient, store: Any, key: SecretKey,
                      options: VerifyOptions | None = None, others: Sequence[SignedAttestation] = (),
                      cosign: SignedAttestation | None = None, store_report: bool = False, anchor_it: bool = False,
                      require: Sequence[str] = ()) -> AttestOutcome:
    """`prov attest`: attest `path` (see attest_checkpoint; `cosign`: the lead auditor's signed attestation, whose
    statement is co-signed), aggregate with `others` against every signer's registered key, and with `anchor_it`
    send the aggregate to the AttestationRegistry."""
    lead = None if cosign is None else current_statement(cosign.statement)
    own, report = attest_checkpoint(path, attestations=attestations, store=store, key=key, options=options,
                                    cosign=lead, store_report=store_report)
    parts = [own, *others]
    registered = registered_keys(attestations, [s.auditor for p in parts for s in p.signers])
    merged = aggregate(parts, registered=registered, require=require)
    tx = anchor(attestations, merged) if anchor_it else None
    return AttestOutcome(own=own, attestation=merged, report=report, tx=tx)
