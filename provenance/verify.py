"""`prov verify`: prove an adapter file's lineage from the file alone, a registry and a store.

Checks, in order (ids as in the JSON report, see docs/report-schema.md):
`record` (the file's digest → its on-chain checkpoint record), `checkpoint_manifest` (the stored checkpoint is the
committed one, and holds this file), `run_manifest` (the stored run manifest is the registered one and agrees with
the registration), `history` (checkpoints 0..k sequential, logs never shrink, ε never decreases), `step_log` (the
log rebuilt from every checkpoint's segment matches every committed root, each tree consistent with the next),
`committers` (owner or authorised writer), `base_model` (with --base-model), `privacy` (ε recomputed),
`dataset` and `replay` (with --data and --secrets).

Verdict: `verified` (exit 0) only if no check failed and the record was found; `failed` (exit 1) if any check
failed; `error` (exit 2) if verification could not run (store or chain unreachable, missing content).
"""

from __future__ import annotations

import datetime as _dt
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provenance import __version__
from provenance._verify import lineage as walk
from provenance._verify import privacy
from provenance._verify.checks import CheckFailed, Checks
from provenance._verify.subject import Subject, load_subject
from provenance.errors import ProvenanceError
from provenance.hashing import Digest
from provenance.manifest import decode_run_manifest

REPORT_FORMAT = "prov.verify-report.v1"


@dataclass(frozen=True)
class VerifyOptions:
    """What the auditor asks for beyond the file: optional base model, data, secrets and replay count."""

    base_model: Path | None = None
    data: Path | None = None
    secrets: Path | None = None
    replay: str = "1"  # a number of segments, or "all"; "0" replays nothing
    expected_run: bytes | None = None
    attestations: str | None = None  # AttestationRegistry address (default: the project config's, if any)


def _iso(timestamp: int | None) -> str | None:
    if not timestamp:
        return None
    return _dt.datetime.fromtimestamp(timestamp, _dt.UTC).isoformat().replace("+00:00", "Z")


def _eps(micro_epsilon: float) -> float | None:
    return None if math.isinf(micro_epsilon) else micro_epsilon


@dataclass
class _State:
    subject: Subject
    checks: Checks
    record: Any = None
    run: Any = None
    manifest: dict[str, Any] | None = None
    lineage: list[Any] | None = None
    files: list[walk.CheckpointFiles] | None = None
    steps: list[Any] | None = None
    privacy: privacy.PrivacyResult | None = None
    replay: dict[str, Any] | None = None
    attestations: list[dict[str, Any]] | None = None
    notes: list[str] = field(default_factory=list)  # extra "not checked" lines


def verify(path: str | Path, *, registry: Any, store: Any, options: VerifyOptions | None = None,
           workdir: Path | None = None) -> dict[str, Any]:
    """Verify `path` (an adapter file or a checkpoint directory). Returns the report (prov.verify-report.v1).

    Bad input the auditor gave (a missing or non-safetensors file) raises a ProvenanceError instead: nothing to
    report on.
    """
    options = options or VerifyOptions()
    st = _State(load_subject(Path(path)), Checks())
    with tempfile.TemporaryDirectory(prefix="prov-verify-", dir=workdir) as tmp:
        _check_record(st, registry, options)
        if st.record is not None:
            _check_run_manifest(st, registry, store)
            _check_checkpoint(st, store, Path(tmp))
            _check_lineage(st, registry, store)
            _check_base_model(st, options)
            _check_privacy(st)
            if st.manifest is not None and st.files is not None:
                from provenance._verify.replay import check_data_and_replay

                st.replay = check_data_and_replay(st, registry=registry, store=store, options=options,
                                                  workdir=Path(tmp))
            st.attestations = _attestations(st, registry, options)
        st.checks.skip_rest("not run: the file has no on-chain record")
    return _report(st, registry, store, options)


def _attestations(st: _State, registry: Any, options: VerifyOptions) -> list[dict[str, Any]] | None:
    """Auditors' anchored attestations of this checkpoint (informative: they do not change the verdict, which is
    about the lineage). None when the BLS extra is absent or no AttestationRegistry is known."""
    import importlib.util

    if importlib.util.find_spec("py_ecc") is None:
        return None
    from provenance.attest import attestations_for

    try:
        found = attestations_for(registry, st.subject.weights_digest, address=options.attestations)
    except ProvenanceError as exc:  # informative only: never let it abort the lineage verdict
        st.notes.append(f"attestations: could not be read ({' '.join(str(exc).split())})")
        return None
    return found if found or options.attestations else None


def _check_record(st: _State, registry: Any, options: VerifyOptions) -> None:
    with st.checks.run("record"):
        record = registry.find_by_weights(st.subject.weights_digest)
        if record is None:
            raise CheckFailed("no checkpoint on this registry claims this file (altered, or never anchored here)",
                              expected="a checkpoint committing these weights", found=st.subject.weights_digest)
        if options.expected_run is not None and record.run_id != options.expected_run:
            raise CheckFailed("this file belongs to another run than the one asked for",
                              expected=options.expected_run.hex(), found=record.run_id.hex())
        st.record = record
        st.run = registry.get_run(record.run_id)
        st.checks.passed("record", f"checkpoint {record.index} of run {record.run_id.hex()[:12]}…, "
                                   f"block {record.block_number}, {_iso(record.block_timestamp)}")


def _check_run_manifest(st: _State, registry: Any, store: Any) -> None:
    with st.checks.run("run_manifest"):
        run = st.run
        data = store.get_bytes(run.manifest_cid)
        found = Digest.of(data)
        if found != run.manifest_digest:
            raise CheckFailed("the stored run manifest is not the registered one", expected=run.manifest_digest,
                              found=found)
        manifest = decode_run_manifest(data, source=f"run manifest {run.manifest_cid}")
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
        st.manifest = manifest
        st.checks.passed("run_manifest", "the stored manifest has the registered digest and commitments")


def _check_checkpoint(st: _State, store: Any, tmp: Path) -> None:
    with st.checks.run("checkpoint_manifest"):
        record = st.record
        fetched = tmp / "subject"
        store.get_directory(record.manifest_cid, fetched)
        subject = load_subject(fetched)
        if subject.checkpoint_digest != record.checkpoint_digest:
            raise CheckFailed("the stored checkpoint is not the committed one", expected=record.checkpoint_digest,
                              found=subject.checkpoint_digest)
        if subject.weights_digest != st.subject.weights_digest:
            raise CheckFailed("the stored checkpoint holds other weights", expected=st.subject.weights_digest,
                              found=subject.weights_digest)
        if st.subject.checkpoint_digest is not None and st.subject.checkpoint_digest != record.checkpoint_digest:
            raise CheckFailed("this checkpoint directory differs from the committed checkpoint (a file was added, "
                              "removed or changed)", expected=record.checkpoint_digest,
                              found=st.subject.checkpoint_digest)
        st.checks.passed("checkpoint_manifest", "the stored checkpoint has the committed digest and holds this file")


def _check_lineage(st: _State, registry: Any, store: Any) -> None:
    with st.checks.run("history"):
        records = registry.checkpoints(st.run.run_id, limit=st.record.index + 1)
        walk.check_history(records, run=st.run)
        st.lineage = records
        st.checks.passed("history", f"{len(records)} checkpoints in order; logs and ε never decrease")
    if st.lineage is None:
        st.checks.skipped("step_log", "needs the checkpoint history")
        st.checks.skipped("committers", "needs the checkpoint history")
        return
    with st.checks.run("step_log"):
        files = [walk.fetch_checkpoint(store, r) for r in st.lineage]
        st.steps = walk.rebuild_log(files)
        st.files = files
        st.checks.passed("step_log", f"{len(st.steps)} steps; all {len(files)} committed roots match, each "
                                     "extending the last")
    with st.checks.run("committers"):
        writers = walk.check_committers(
            st.lineage, lambda: registry.writer_events(st.run.run_id, from_block=st.run.block_number), run=st.run)
        extra = f" or one of {writers} authorised writer(s)" if writers else ""
        st.checks.passed("committers", f"all sent by the owner{extra}")


def _check_base_model(st: _State, options: VerifyOptions) -> None:
    if options.base_model is None:
        st.checks.skipped("base_model", "no --base-model given: the registered digest is reported, not compared")
        return
    with st.checks.run("base_model"):
        from provenance.basemodel import base_model_manifest

        found = base_model_manifest(options.base_model).digest()
        if found != st.run.base_model_digest:
            raise CheckFailed("the base model given is not the one this run registered",
                              expected=st.run.base_model_digest, found=found)
        st.checks.passed("base_model", f"{options.base_model.name} has the registered digest")


def _check_privacy(st: _State) -> None:
    if st.manifest is None or st.files is None:
        st.checks.skipped("privacy", "needs the run manifest and the checkpoint state")
        return
    if not privacy.opacus_available():
        st.checks.skipped("privacy", "opacus is not installed (pip install 'prov[train]') to recompute ε")
        return
    with st.checks.run("privacy"):
        result = privacy.check_privacy(manifest=st.manifest, state=st.files[-1].state,
                                       committed=st.record.epsilon)
        st.privacy = result
        st.checks.passed("privacy", result.summary)


# --- the report -------------------------------------------------------------------------------------------------


def _dp_section(st: _State) -> dict[str, Any] | None:
    if st.manifest is None:
        return None
    dp = st.manifest["training"].get("dp", {})

    def num(key: str) -> float | None:
        value = dp.get(key)
        return None if value is None else float(value)

    return {
        "mode": dp.get("mode"), "noise_multiplier": num("noise_multiplier"), "max_grad_norm": num("max_grad_norm"),
        "sample_rate": num("sample_rate"), "delta": num("delta"), "accountant": dp.get("accountant"),
        "epsilon_budget": num("epsilon_budget"),
        "epsilon_committed": _eps(st.record.epsilon) if st.record else None,
        "epsilon_recomputed": st.privacy.recomputed if st.privacy else None,
        "steps": st.record.log_size if st.record else 0,
    }


def _run_section(st: _State) -> dict[str, Any] | None:
    if st.run is None:
        return None
    manifest = st.manifest or {}
    return {
        "run_id": st.run.run_id.hex(), "owner": st.run.owner, "register_tx": st.run.tx_hash,
        "register_block": st.run.block_number, "register_time": _iso(st.run.block_timestamp),
        "manifest_cid": st.run.manifest_cid, "manifest_digest": str(st.run.manifest_digest),
        "base_model": {"digest": str(st.run.base_model_digest),
                       "name": manifest.get("base_model", {}).get("name")},
        "dataset_root": str(st.run.dataset_root),
        "examples": manifest.get("dataset", {}).get("size"),
        "steps_planned": manifest.get("training", {}).get("steps"),
    }


def _lineage_section(st: _State) -> list[dict[str, Any]]:
    return [{
        "index": r.index, "step": r.log_size, "log_size": r.log_size, "log_root": r.log_root.hex,
        "weights_digest": str(r.weights_digest), "checkpoint_digest": str(r.checkpoint_digest),
        "epsilon": _eps(r.epsilon), "manifest_cid": r.manifest_cid, "tx": r.tx_hash, "block": r.block_number,
        "time": _iso(r.block_timestamp), "committer": r.committer, "is_subject": r.index == st.record.index,
    } for r in (st.lineage or [])]


def _verdict_text(verdict: str, st: _State) -> str:
    failed = [c for c in st.checks.items.values() if c.status == "failed"]
    if verdict == "verified":
        return "This adapter's lineage checks out against the on-chain record."
    if verdict == "failed":
        return f"{len(failed)} check(s) failed: {', '.join(c.id for c in failed)}."
    return f"{st.checks.error or 'no on-chain record was found for this file'}."


def _report(st: _State, registry: Any, store: Any, options: VerifyOptions) -> dict[str, Any]:
    verdict, code = st.checks.verdict()
    not_checked = [f"{c.id}: {c.summary}" for c in st.checks.items.values() if c.status == "skipped"] + st.notes
    steps = st.steps or []
    return {
        "format": REPORT_FORMAT, "verdict": verdict, "verdict_text": _verdict_text(verdict, st), "exit_code": code,
        "generated_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "prov_version": __version__,
        "subject": {"path": str(st.subject.path), "kind": st.subject.kind,
                    "weights_digest": str(st.subject.weights_digest)},
        "chain": {"rpc_url": registry.transport.rpc_url, "chain_id": registry.chain_id, "registry": registry.address},
        "store": {"backend": getattr(store, "spec", None) or type(store).__name__},
        "run": _run_section(st), "dp": _dp_section(st), "lineage": _lineage_section(st),
        "checks": st.checks.to_json(),
        "series": {"step": [s.step for s in steps], "loss": [s.loss for s in steps],
                   "epsilon": [[r.log_size, _eps(r.epsilon)] for r in (st.lineage or [])
                               if not math.isinf(r.epsilon)]},
        "replay": st.replay, "not_checked": not_checked, "attestations": st.attestations,
    }
