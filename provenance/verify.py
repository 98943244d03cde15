"""`prov verify`: prove an adapter file's lineage from the file alone, a registry and a store — and, with what an
auditor is given (base model, data, the run's secrets and statistics), re-check every step and re-run training.

Checks, in order (ids as in the JSON report, docs/report-schema.md): `record` (every on-chain claim of the file's
weights or tensors; the one its metadata and its manifest's owner name is selected), `run_manifest`, `checkpoint`
(the stored checkpoint is the committed one and holds this file), `history` (checkpoints in order, each adding steps,
ε never decreasing), `step_log` (roots and consistency; checkpoints without steps hold their predecessor's state),
`committers`, `chain` (chain id and genesis, `--expect-chain-id/--expect-registry`), `base_model`, `privacy` (ε
recomputed for every checkpoint), `dataset`, `steps` (every step's sampled batch, size, lr, noise index and
statistics), `checkpoint_zero` (rebuilt from the base model), `replay` (segments rebuilt bit for bit, whole state).

Verdicts (exit codes): `verified` 0 — with a level saying what was proven: `commitments`, `data` (commitments and
every step recomputed from the data), `sampled` (k of n segments replayed, with the probability a single forged
segment would have been caught), `full` (every segment and checkpoint 0 rebuilt); `failed` 1; `inconclusive` 3 — a
check could not be decided here (replay not bitwise on this machine, ε not recomputable, replay asked of a run
that cannot be replayed),
never verified; `error` 2 — verification could not run (store or chain unreachable).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from provenance import __version__, limits
from provenance._verify import auditor, merged, pipeline
from provenance._verify.checks import REQUIRED, CheckFailed, Status
from provenance._verify.privacy import cross_check_opacus
from provenance._verify.replay import DEFAULT_CONFIRMATIONS
from provenance._verify.reporting import build_report
from provenance._verify.subject import load_subject
from provenance.errors import EXIT_ERROR, EXIT_FAILED, EXIT_INCONCLUSIVE, EXIT_OK, ProvenanceError, UsageError, one_line
from provenance.ports import RegistryReader, StoreReader
from provenance.report import seal, validate_report
from provenance.secrets import keys_anchored

REPORT_FORMAT = "prov.verify-report.v2"


@dataclass(frozen=True)
class VerifyOptions:
    """What the auditor asks for beyond the file: base model, data, secrets, statistics, replay, chain pins."""

    base_model: Path | None = None
    data: Path | None = None
    secrets: Path | None = None
    stats: Path | None = None
    replay: str = "auto"  # "auto" (the last segment and half the others), a number of segments, "all", or "0"
    beacon: str | None = None  # the auditor's own seed, mixed into the segment draw
    confirmations: int = DEFAULT_CONFIRMATIONS
    expected_run: bytes | None = None
    expected_chain_id: int | None = None
    expected_registry: str | None = None
    expected_genesis: str | None = None  # 0x-hex genesis block hash the node's chain must have (--expect-genesis)
    attestations: str | None = None  # AttestationRegistry address (default: the project config's, if any)
    adapter: Path | None = None  # a merged model not committed on chain: the run's adapter it was merged from
    max_bytes: int | None = None  # bytes the store may serve this verification (default: budget_for(subject))
    timeout: float | None = None  # wall-clock seconds for every store and chain request of this verification
    trust_auditors: Path | None = None  # JSON list of trusted auditor addresses / key ids (attestations.load_trusted)
    signature: Path | None = None  # an OpenSSF model signature (default: PATH.sig beside the model, if any)
    signature_key: Path | None = None  # the trainer's P-256 public key (PEM) that signature must check with
    opacus_epsilon: bool = False  # also recompute the last ε with opacus (the trainer's library), for the report
    jobs: int = 1  # replay worker processes at once (--jobs): independent segments replayed in parallel
    auditor: str | None = None  # who audited (--auditor), recorded in the report
    command: str | None = None  # the command line that produced the report (local paths shortened)

    def __post_init__(self) -> None:
        if self.replay not in ("all", "auto") and not self.replay.isdigit():
            raise UsageError(f"--replay takes a number of segments, 'auto' or 'all', not {self.replay!r}")
        if self.confirmations < 1:
            raise UsageError(f"--confirmations must be at least 1, got {self.confirmations}")
        if not 1 <= self.jobs <= 256:
            raise UsageError(f"--jobs takes 1 to 256 worker processes, got {self.jobs}")


@dataclass(frozen=True)
class Report:
    """The verdict and everything behind it; `to_json()` is the `prov.verify-report.v2` document."""

    verdict: str
    exit_code: int
    level: dict[str, Any]
    body: dict[str, Any] = field(repr=False)
    # the verified run manifest (public content, as stored): renderers fill Annex IV fields from it
    manifest: dict[str, Any] | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return dict(self.body)

    def check(self, check_id: str) -> dict[str, Any]:
        return next(c for c in self.body["checks"] if c["id"] == check_id)


def verify(path: str | Path, *, registry: RegistryReader, store: StoreReader, options: VerifyOptions | None = None,
           workdir: Path | None = None) -> Report:
    """Verify `path` (an adapter file, a checkpoint directory or a merged model) and return the report.

    Bad input the auditor gave (a missing or non-safetensors file) raises a ProvenanceError instead: there is
    nothing to report on.
    """
    from provenance.safetensors import tensor_digest, tensor_digest_of_files

    options = options or VerifyOptions()
    subject = load_subject(Path(path))
    case = merged.prepare(subject, adapter=options.adapter, base_model=options.base_model)
    ev = pipeline.Evidence(subject, None if subject.adapter_missing else tensor_digest(subject.adapter)
                           if case is None else tensor_digest_of_files(subject.files))
    ev.merged = case
    inputs = auditor.AuditorInputs(options.base_model, options.data, options.secrets, options.stats, options.replay,
                                   options.beacon, options.confirmations, jobs=options.jobs)
    remembering = getattr(registry, "remembering", contextlib.nullcontext)  # each run's history read once
    budget = limits.Budget(max_bytes=options.max_bytes if options.max_bytes is not None else
                           limits.budget_for(subject.files or (subject.adapter,)),
                           timeout=options.timeout).within(limits.current())
    from provenance import progress
    from provenance._verify.checks import TITLES

    with tempfile.TemporaryDirectory(prefix="prov-verify-", dir=workdir) as tmp, remembering(), \
            limits.active(budget), progress.polled("verify", total=len(TITLES) - (2 if case is None else 0),
                                                   count=lambda: len(ev.checks.results), unit="check"):
        work = Path(tmp)
        stage_chain(ev, registry, options)
        if case is None:
            pipeline.stage_record(ev, registry, store, expected_run=options.expected_run)
        else:  # a merged model: claimed by a run's finalisation (or, converted, through --adapter)
            merged.stage_record(ev, registry, store, expected_run=options.expected_run)
        pipeline.settle_attribution(ev)  # an owner-less run registered by several accounts: inconclusive
        pipeline.stage_run_manifest(ev)
        if ev.chain.get("dev_chain") and ev.manifest is not None and keys_anchored(ev.manifest):
            ev.warnings.append(DEV_KEYS_WARNING)
        (pipeline.stage_checkpoint if case is None else merged.stage_checkpoint)(ev, store, work)
        pipeline.stage_lineage(ev, store)
        pipeline.stage_base_model(ev, options.base_model)
        if case is not None:
            merged.stage_merge(ev, options.base_model)
            merged.stage_files(ev, options.base_model)
        pipeline.stage_privacy(ev)
        if options.opacus_epsilon and ev.privacy is not None and ev.manifest is not None and ev.files:
            ev.privacy = cross_check_opacus(ev.privacy, manifest=ev.manifest, states=[f.state for f in ev.files],
                                            opacus_version=None)
        usable = auditor.stage_data(ev, inputs, registry)
        auditor.stage_replay(ev, registry, store, inputs, usable, work)
        ev.attestations = _attestations(ev, registry, options)
    verdict, code = decide(ev)
    body = build_report(ev, verdict=verdict, exit_code=code, registry=registry, store=store,
                        generated_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                        prov_version=__version__, report_format=REPORT_FORMAT, options=options)
    if verdict == "verified":
        _bound_files(body, subject, ev)
    _signature(body, subject, options)
    seal(body)  # the report id: a digest of everything above
    validate_report(body)  # a report that does not match docs/report-schema.md is never returned
    return Report(verdict, code, body["level"], body,
                  manifest=ev.manifest if ev.checks.ok("run_manifest") else None)


def _bound_files(body: dict[str, Any], subject: Any, ev: pipeline.Evidence) -> None:
    """`subject.files` of a verified report: each file the verdict binds, by name and the digest the checks compared
    (provenance.signing.verified_files; a merged directory's other files as `merged_files` hashed them), so an
    export from the saved report can refuse a model path holding anything else a loader reads (#25)."""
    from provenance.signing import verified_files

    here = ev.merged.here if ev.merged is not None else None
    try:
        bound = verified_files(subject, beside=None if here is None else here.files)
    except (ProvenanceError, OSError):  # a file changed or vanished meanwhile: the report lists nothing it bound
        bound = {}
    body["subject"]["files"] = [{"path": name, "digest": f"sha256:{digest}"} for name, digest in sorted(bound.items())
                                if "/" not in name and "\\" not in name]


def _signature(body: dict[str, Any], subject: Any, options: VerifyOptions) -> None:
    """The report's `signature` (provenance.signing): informative, like attestations, never the verdict; a signature
    that does not check, or does not cover exactly the verified files, is also a warning."""
    from provenance.signing import signature_section, signature_words

    section = signature_section(subject, signature=options.signature, public_key=options.signature_key)
    body["signature"] = section
    if section is not None and (section["valid"] is False or section["covers"] == "partial"):
        body["warnings"].append(signature_words(section))


def decide(ev: pipeline.Evidence) -> tuple[str, int]:
    """failed > error (a required check kept from running by an unreachable store/chain) > inconclusive >
    verified."""
    statuses = {r.id: r.status for r in ev.checks.ordered()}
    if Status.FAILED in statuses.values():
        return "failed", EXIT_FAILED
    required = REQUIRED if ev.merged is None else (*REQUIRED, merged.MERGE_CHECK)
    required_missing = [c for c in required if statuses.get(c) in (None, Status.NOT_RUN)]
    if required_missing and ev.checks.reach_error is not None:
        return "error", EXIT_ERROR
    if Status.INCONCLUSIVE in statuses.values():
        return "inconclusive", EXIT_INCONCLUSIVE
    if required_missing:
        return "error", EXIT_ERROR
    return "verified", EXIT_OK


DEV_KEYS_WARNING = ("this run's sampling and noise keys are fixed by the hash of the block that included its "
                    "registration (prov.keys.v1), but on a development chain the trainer mines that block itself: "
                    "seeds ground before registering are not excluded here")


def stage_chain(ev: pipeline.Evidence, registry: RegistryReader, options: VerifyOptions) -> None:
    """The chain the evidence comes from: its id and genesis block (so a report names exactly which chain), pinned
    by the auditor when asked; a known development chain is labelled, since whoever runs it controls its
    timestamps and block hashes."""
    checks = ev.checks
    with checks.run("chain"):
        info = registry.chain_info()
        ev.chain = {"chain_id": info.chain_id, "genesis_hash": info.genesis_hash, "dev_chain": info.dev_chain,
                    "latest_block": info.latest_block, "registry_version": registry.version}
        if options.expected_chain_id is not None and info.chain_id != options.expected_chain_id:
            raise CheckFailed("the node serves another chain than the one expected (--expect-chain-id)",
                              expected=options.expected_chain_id, found=info.chain_id)
        _check_identity(ev, info, options)
        address = str(registry.address or "")
        if options.expected_registry is not None and address.lower() != options.expected_registry.lower():
            raise CheckFailed("the registry is not the one expected (--expect-registry)",
                              expected=options.expected_registry, found=address)
        if registry.version == 1:
            ev.warnings.append("this is a v1 ProvenanceRegistry: a weights digest could be claimed first by anyone "
                               "and registrations could be front-run; it is read with the v1 reader")
        elif registry.version == 2:
            ev.notes.append("this is a v2 ProvenanceRegistry: an authorised writer could finalise the owner's run "
                            "(v3 allows only the owner) and its history is read by scanning blocks, not by pointers")
        if info.dev_chain is not None:
            ev.warnings.append(f"{info.dev_chain}: {pipeline.DEV_CHAIN_WARNING}")
        elif options.expected_chain_id is None or options.expected_registry is None:
            ev.warnings.append("the chain and registry were not pinned (--expect-chain-id, --expect-registry): this "
                               f"verdict holds for chain {info.chain_id} and registry {address}, whoever runs them")
        summary = f"chain {info.chain_id} (genesis {info.genesis_hash[:18]}…), registry {address} (v{registry.version})"
        pinned = [name for name, value in (("chain id", options.expected_chain_id),
                                           ("registry", options.expected_registry)) if value is not None]
        if pinned:
            summary += f"; {' and '.join(pinned)} as expected"
        if info.dev_chain is not None:
            summary += f"; {info.dev_chain}"
        checks.passed("chain", summary)


def _check_identity(ev: pipeline.Evidence, info: Any, options: VerifyOptions) -> None:
    """A known public chain id must come with that chain's genesis block, and the auditor's --expect-genesis must
    match; either way the identity is only what the endpoint reports (issue #21)."""
    ev.notes.append("chain identity (id, genesis block, client) is as reported by the RPC endpoint; for a verdict "
                    "you rely on, verify through your own node or several independent providers")
    if options.expected_genesis is not None and info.genesis_hash.lower() != options.expected_genesis.lower():
        raise CheckFailed("the node's chain has another genesis block than expected (--expect-genesis)",
                          expected=options.expected_genesis, found=info.genesis_hash)
    if getattr(info, "genesis_mismatch", False):
        raise CheckFailed(f"the node claims chain id {info.chain_id} ({info.public_chain}) but its genesis block is "
                          f"not that chain's: it is another chain using that id (a local or test node)",
                          expected=info.expected_genesis, found=info.genesis_hash)


def _attestations(ev: pipeline.Evidence, registry: RegistryReader, options: VerifyOptions) -> list[Any] | None:
    """Auditors' anchored attestations of this checkpoint (informative: they do not change the verdict)."""
    import importlib.util

    if ev.record is None or importlib.util.find_spec("py_ecc") is None:
        return None
    from provenance.attestations import attestation_client, attestations_for, load_trusted

    trusted = load_trusted(options.trust_auditors) if options.trust_auditors is not None else None  # usage error
    try:
        client = attestation_client(cast(Any, registry), options.attestations)
        if client is None:
            return None
        found = attestations_for(client, record=ev.record, run_key=ev.record.run_key, trusted=trusted)
    except ProvenanceError as exc:  # informative only: never let it abort the lineage verdict
        ev.notes.append(f"attestations: could not be read ({one_line(exc)})")
        return None
    return [a.to_json() for a in found]
