"""The verifier's stages, in order, each recording a typed check result on a shared `Evidence` record.

record → run_manifest → checkpoint → history → step_log → committers → chain → base_model → privacy →
dataset → steps → checkpoint_zero → replay. A stage whose prerequisite is missing records why it did not run,
naming the real cause (a store that could not be read is not "no on-chain record").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provenance import canonical
from provenance._verify import claims as claimsmod
from provenance._verify import files
from provenance._verify import lineage as walk
from provenance._verify.checks import CheckFailed, CheckInconclusive, Checks
from provenance._verify.privacy import PrivacyResult, check_privacy
from provenance._verify.subject import ADAPTER_FILE, Subject
from provenance.batches import MAX_WORLD_SIZE
from provenance.errors import ProvenanceError, one_line
from provenance.hashing import Digest
from provenance.manifest import ADAPTER_FORMAT, hash_directory
from provenance.ports import RegistryReader, StoreReader
from provenance.records import STATS_FORMAT_V2, STEP_FORMAT, STEP_FORMAT_V1, STEP_FORMAT_V3, AnyStepRecord

KNOWN_FORMATS = {"batch": "prov.batch.v2", "noise": "prov.noise.v2", "stats": "prov.stats.v1",
                 "step": STEP_FORMAT, "trainstate": "prov.trainstate.v2", "adapter": ADAPTER_FORMAT,
                 "merged": "prov.merged-dir.v1"}
# Later versions a run may name instead (issue #23: a v3 step keeps its example count in prov.stats.v2), and the
# statistics format each step format needs (a v3 record with v1 statistics would commit its count nowhere).
NEWER_FORMATS = {"step": (STEP_FORMAT_V3,), "stats": (STATS_FORMAT_V2,),
                 # issue #23: sampler and noise keys fixed by the registration's block hash (prov.keys.v1)
                 "noise": ("prov.noise.v3",), "sampler": ("prov.poisson.v2",)}
STATS_FOR_STEP = {STEP_FORMAT: "prov.stats.v1", STEP_FORMAT_V3: STATS_FORMAT_V2}
DEV_CHAIN_WARNING = ("its timestamps and block hashes are controlled by whoever runs it, so they prove nothing to a "
                     "third party")


@dataclass
class Evidence:
    """Everything a verification established, stage by stage (the report is built from it once)."""

    subject: Subject
    tensor_digest: Digest | None
    checks: Checks = field(default_factory=Checks)
    claims: list[claimsmod.Claim] = field(default_factory=list)
    record: Any = None  # the selected CheckpointRecord
    history: Any = None  # the run's verified on-chain history
    run: Any = None  # its RunRecord
    manifest: dict[str, Any] | None = None
    lineage: list[Any] = field(default_factory=list)  # CheckpointRecords 0..subject
    files: list[walk.CheckpointFiles] | None = None
    steps: list[AnyStepRecord] | None = None
    leaves: list[bytes] | None = None
    privacy: PrivacyResult | None = None
    chain: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    loss: list[float] | None = None
    loss_status: str = "withheld"
    steps_full: bool = False
    replay: dict[str, Any] | None = None
    attestations: list[dict[str, Any]] | None = None
    merged: Any = None  # a merged model's case (provenance._verify.merged.MergedCase); None for an adapter

    @property
    def step_format(self) -> str:
        formats = (self.manifest or {}).get("formats") or {}
        if isinstance(formats, dict) and isinstance(formats.get("step"), str):
            return str(formats["step"])
        return STEP_FORMAT_V1 if (self.manifest or {}).get("format") == "prov.run.v1" else STEP_FORMAT


def stage_record(ev: Evidence, registry: RegistryReader, store: StoreReader, *, expected_run: bytes | None) -> None:
    """Find every on-chain claim of the file's weights (and of its tensors, however re-encoded), select the one
    the file's own metadata names and whose registration its manifest's owner made, and report the others."""
    checks = ev.checks
    with checks.run("record"):
        found = claimsmod.find(registry, weights=ev.subject.weights_digest, tensors=ev.tensor_digest,
                               metadata=ev.subject.metadata)  # a node hiding the named claim: error, not FAILED
        if not found:
            raise CheckFailed("no checkpoint on this registry claims this file's weights, nor the same tensors "
                              "re-encoded (altered, or never anchored here)",
                              expected="a checkpoint committing these weights", found=ev.subject.weights_digest)
        checks.passed("record", adopt_claim(ev, found, registry, store, metadata=ev.subject.metadata,
                                            expected_run=expected_run))


def adopt_claim(ev: Evidence, found: list[claimsmod.Claim], registry: RegistryReader, store: StoreReader, *,
                metadata: Mapping[str, str], expected_run: bytes | None) -> str:
    """Select one of the claims `found` (claims.select) and make its run's checkpoints up to it the lineage to
    verify; returns the record check's summary."""
    ev.claims = found
    chosen = claimsmod.select(found, metadata=metadata, registry=registry, store=store, expected_run=expected_run)
    ev.record, ev.history, ev.manifest = chosen.record, chosen.history, chosen.manifest
    ev.run = chosen.history.registration
    ev.warnings.extend(chosen.warnings)
    lineage = list(chosen.history.checkpoints[: chosen.record.index + 1])
    if len(lineage) != chosen.record.index + 1 or _identity(lineage[-1]) != _identity(chosen.record):
        raise CheckFailed("the run's on-chain history does not contain the claim that was found (an "
                          "inconsistent node or registry)", expected=_identity(chosen.record),
                          found=_identity(lineage[-1]) if lineage else "no checkpoint")
    ev.lineage = lineage
    return chosen.summary


def settle_attribution(ev: Evidence) -> None:
    """A run whose manifest names no owner, registered under the same run id by several accounts that each claim
    this file: which of them trained it cannot be decided from the record (the earliest may be a front-runner who
    copied an owner-less registration), so the `record` check is inconclusive, never a pass with a warning."""
    if not ev.checks.ok("record") or ev.manifest is None or ev.record is None or ev.manifest.get("owner") is not None:
        return
    chosen = ev.record
    rivals = {c.record.run_key: str(c.record.committer) for c in ev.claims
              if c.record.run_id == chosen.run_id and c.record.run_key != chosen.run_key}
    if not rivals:
        return
    accounts = ", ".join(sorted({str(ev.run.owner) if ev.run is not None else "?", *rivals.values()}))
    result = ev.checks.results["record"]
    ev.checks.inconclusive("record", f"{result.summary}; but run {chosen.run_id.hex()[:12]}… was registered "
                                     f"{len(rivals) + 1} times, by different accounts ({accounts}), and its manifest "
                                     "names no owner: which of them trained it cannot be decided from the record")


def _identity(record: Any) -> tuple[Any, ...]:
    return (record.run_key, record.index, record.weights_digest, record.checkpoint_digest, record.log_size,
            record.log_root, record.epsilon_micro, record.block_number)


def stage_run_manifest(ev: Evidence) -> None:
    checks = ev.checks
    if ev.manifest is None:
        checks.not_run("run_manifest", checks.why_missing("record", "the on-chain record"))
        return
    with checks.run("run_manifest"):
        run, manifest = ev.run, ev.manifest
        pairs = [
            ("run id", run.run_id.hex(), manifest["run_id"]),
            ("base-model digest", str(run.base_model_digest), manifest["base_model"]["digest"]),
            ("dataset root", str(run.dataset_root), manifest["dataset"]["root"]),
            ("noise-seed commitment", str(run.noise_seed_commitment), manifest["secrets"]["noise_seed_commitment"]),
        ]
        for what, on_chain, in_manifest in pairs:
            if on_chain != in_manifest:
                raise CheckFailed(f"the run manifest's {what} differs from the registration", expected=on_chain,
                                  found=in_manifest)
        summary = "the stored manifest has the registered digest and commitments"
        formats = manifest.get("formats")
        if isinstance(formats, dict):
            unknown = {k: v for k, v in formats.items()
                       if KNOWN_FORMATS.get(k) != v and v not in NEWER_FORMATS.get(k, ())}
            if unknown:
                raise CheckInconclusive(f"the run uses formats this version of prov does not know ({unknown}): "
                                        "verify with a newer prov")
            step_format = formats.get("step")
            if step_format in STATS_FOR_STEP and formats.get("stats") != STATS_FOR_STEP[step_format]:
                raise CheckFailed(f"the run manifest pairs {step_format} step records with {formats.get('stats')} "
                                  "statistics", expected=STATS_FOR_STEP[step_format], found=formats.get("stats"))
            if (formats.get("noise") == "prov.noise.v3") != (formats.get("sampler") == "prov.poisson.v2"):
                raise CheckFailed("the run manifest keys only one of its sampler and noise by its registration block",
                                  expected="prov.noise.v3 with prov.poisson.v2",
                                  found=f"{formats.get('noise')} with {formats.get('sampler')}")
        training: dict[str, Any] = manifest["training"] if isinstance(manifest.get("training"), dict) else {}
        world = training.get("world_size", 1)
        if not canonical.is_count(world, 1) or world > MAX_WORLD_SIZE:
            raise CheckFailed("the run manifest records a world size no run can have", expected=f"1..{MAX_WORLD_SIZE}",
                              found=repr(world))
        size, declared = training.get("dataset_size"), (manifest.get("dataset") or {}).get("size")
        if not canonical.is_count(size, 1) or size != declared:
            raise CheckFailed("the run manifest's training.dataset_size is not the dataset's size (sampling and δ "
                              "depend on it)", expected=f"a whole number ≥ 1 equal to dataset.size ({declared!r})",
                              found=repr(size))
        if manifest.get("format") == "prov.run.v1" and int(ev.chain.get("registry_version") or 1) >= 2:
            raise CheckFailed("a run in v1 formats registered on a v2 registry: prov 0.1 wrote v1 runs to v1 "
                              "registries only, and v1 runs cannot be replayed (a way to escape replay)",
                              expected="prov.run.v2", found="prov.run.v1")
        if manifest.get("format") == "prov.run.v1":
            ev.warnings.append("this run was recorded in v1 formats (prov.run.v1 / prov.step.v1): its per-step loss "
                               "and clipped fraction and unsalted batch digests were published in clear, and this "
                               "version cannot replay it (its noise generator kept only 32 bits of its seed)")
            summary += " (v1 formats)"
        checks.passed("run_manifest", summary)


def fetch_committed(record: Any, store: StoreReader, target: Path) -> Subject:
    """The checkpoint directory `record` commits, fetched from the store into `target` and read as a subject;
    CheckFailed unless it has the committed checkpoint digest."""
    from provenance._verify.fetch import can_fetch_listed, fetch_listed
    from provenance._verify.subject import load_subject

    if can_fetch_listed(store):  # only the files the committed manifest lists, each capped by its size (#22)
        fetch_listed(store, record, target)
    else:
        store.get_directory(record.manifest_cid, target)
    stored = load_subject(target)
    if stored.checkpoint_digest != record.checkpoint_digest:
        raise CheckFailed("the stored checkpoint is not the committed one", expected=record.checkpoint_digest,
                          found=stored.checkpoint_digest)
    if stored.adapter_missing or stored.kind != "checkpoint":
        raise CheckFailed("the committed checkpoint holds no adapter_model.safetensors", expected="an adapter file",
                          found="none")
    return stored


def stage_checkpoint(ev: Evidence, store: StoreReader, tmp: Path) -> None:
    checks = ev.checks
    if ev.record is None:
        checks.not_run("checkpoint", checks.why_missing("record", "the on-chain record"))
        return
    from provenance.safetensors import tensor_digest

    with checks.run("checkpoint"):
        record = ev.record
        stored = fetch_committed(record, store, tmp / "subject")
        summary = "the stored checkpoint has the committed digest and holds this file"
        if ev.subject.adapter_missing:
            raise CheckFailed(f"this checkpoint directory has no {ADAPTER_FILE}; the committed checkpoint holds it "
                              "(its record was found through the weights the directory's own state names)",
                              expected=stored.weights_digest, found=f"no {ADAPTER_FILE}")
        if stored.weights_digest != ev.subject.weights_digest:
            stored_tensors = tensor_digest(stored.adapter)
            if ev.tensor_digest is None or stored_tensors != ev.tensor_digest:
                raise CheckFailed("the stored checkpoint holds other weights", expected=stored.weights_digest,
                                  found=ev.subject.weights_digest)
            summary = ("the stored checkpoint has the committed digest and holds the same tensors as this file "
                       "(this file was re-encoded: its metadata or layout differ)")
            ev.warnings.append("this file is a re-encoded copy of the committed adapter: same tensors, other file "
                               "bytes (metadata or layout)")
        if ev.subject.fileset is not None:  # every file a loader reads here is the committed checkpoint's
            extra, warnings = files.check_files(ev.subject.fileset, hash_directory(tmp / "subject"),
                                                checkpoint_digest=record.checkpoint_digest)
            summary += extra
            ev.warnings.extend(warnings)
        committed_config = tmp / "subject" / files.ADAPTER_CONFIG
        if committed_config.is_file():  # the base model the committed config sends AutoPeft to
            files.check_lora_settings(committed_config.read_bytes(), ev.manifest)
            note = files.check_base_name(committed_config.read_bytes(), ev.manifest)
            if note is not None and ev.subject.fileset is not None and not ev.subject.fileset.lone:
                ev.notes.append(note)
        checks.passed("checkpoint", summary)


def stage_lineage(ev: Evidence, store: StoreReader) -> None:
    checks = ev.checks
    if ev.record is None:
        for check_id in ("history", "step_log", "committers"):
            checks.not_run(check_id, checks.why_missing("record", "the on-chain record"))
        return
    zero_step: list[int] = []
    with checks.run("history"):
        zero_step = walk.check_history(ev.lineage, run=ev.run)
        final = ev.history.finalization
        closed = f"; finalised in block {final.block_number}" if final is not None else "; not finalised"
        checks.passed("history", f"{len(ev.lineage)} checkpoints in order, each extending the log; ε never "
                                 f"decreases{closed}")
    if not checks.ok("history"):
        checks.not_run("step_log", checks.why_missing("history", "the checkpoint history"))
        checks.not_run("committers", checks.why_missing("history", "the checkpoint history"))
        return
    with checks.run("step_log"):
        files = [walk.fetch_checkpoint(store, r) for r in ev.lineage]
        for j in zero_step:
            walk.check_zero_step(store, files[j - 1], files[j])
        ev.steps, ev.leaves = walk.rebuild_log(files, step_format=ev.step_format)
        ev.files = files
        extra = f"; {len(zero_step)} checkpoint(s) without steps hold their predecessor's state" if zero_step else ""
        checks.passed("step_log", f"{len(ev.steps)} steps; all {len(files)} committed roots match, each extending "
                                  f"the last{extra}")
    with checks.run("committers"):
        writers = walk.check_committers(ev.lineage, lambda: list(ev.history.writers), run=ev.run)
        extra = f" or one of {writers} authorised writer(s)" if writers else ""
        checks.passed("committers", f"all sent by the owner{extra}")


def stage_privacy(ev: Evidence) -> None:
    checks = ev.checks
    if ev.manifest is None or ev.files is None:
        checks.not_run("privacy", checks.why_missing("step_log" if ev.manifest else "run_manifest",
                                                     "the run manifest and every checkpoint's state"))
        return
    with checks.run("privacy"):
        versions = (ev.manifest.get("software") or {}).get("versions") or {}
        result = check_privacy(manifest=ev.manifest, states=[f.state for f in ev.files],
                               committed_micro=[r.epsilon_micro for r in ev.lineage],
                               opacus_version=versions.get("opacus") if isinstance(versions, dict) else None)
        ev.privacy = result
        checks.passed("privacy", result.summary)


def stage_base_model(ev: Evidence, base_model: Path | None) -> None:
    checks = ev.checks
    if base_model is None:
        checks.not_run("base_model", "no --base-model given: the registered digest is reported, not compared")
        return
    if ev.run is None:
        checks.not_run("base_model", checks.why_missing("record", "the on-chain record"))
        return
    from provenance.basemodel import base_model_manifest

    with checks.run("base_model"):
        from provenance.manifest import CheckpointManifest

        if ev.run.base_model_digest == CheckpointManifest(()).digest():
            raise CheckFailed("the run registered the digest of an empty file list, which commits to no base model "
                              "(prov before this version hashed a directory of symbolic links as nothing)",
                              expected="the digest of the base model's files", found=ev.run.base_model_digest)
        from provenance.basemodel import check_model_dir

        found = base_model_manifest(base_model, configs=False).digest()  # hashed before any config is parsed
        if found != ev.run.base_model_digest:  # a directory that is not the run's: none of its configs is read
            raise CheckFailed("the base model given is not the one this run registered",
                              expected=ev.run.base_model_digest, found=found)
        # The registered base's configs, through the bounded reader only (#22), before transformers reads them: a
        # loader redirect or an unreadable config there is the trainer's choice of base model, so a check result.
        try:
            check_model_dir(base_model)
        except ProvenanceError as exc:
            raise CheckFailed(f"the registered base model cannot be loaded as committed: {one_line(exc)}",
                              expected="a base model a loader reads from its hashed files only",
                              found=one_line(exc, 300)) from None
        checks.passed("base_model", f"{base_model.name} has the registered digest")
