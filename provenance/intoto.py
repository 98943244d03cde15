"""Standard exports of a checkpoint's provenance: an in-toto Statement v1 with a SLSA Provenance v1 predicate, and
a model-signing-style manifest of the checkpoint's files (an in-toto Statement listing every file's SHA-256).

Inputs are local: the checkpoint directory (hashed here), the run manifest (`run.json` of the run directory, or
given), and optionally the on-chain records (registration and checkpoint) for times and anchors.

Public API (the CLI's `prov export in-toto` calls `export`, `sign_statement` and `write_json`). CHECKPOINT is a
checkpoint or adapter directory, or the adapter weights file itself; `sign_statement` wraps any statement in a DSSE
envelope signed with the trainer's P-256 key (provenance.signing). prov's own lineage and DP statements, built from a
verify report, are `provenance.exports.intoto_statements` / `signed_statements`.

Specs followed (field names and shapes, written from the published documents):
- in-toto Statement v1: https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md
- ResourceDescriptor v1: https://github.com/in-toto/attestation/blob/main/spec/v1/resource_descriptor.md
- SLSA Provenance v1: https://slsa.dev/spec/v1.0/provenance
- OpenSSF model signing v1.0 (`https://model_signing/signature/v1.0`, "files" serialization).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from pathlib import Path
from typing import Any

from provenance import canonical
from provenance.errors import UsageError, VerificationError
from provenance.fsutil import read_input
from provenance.manifest import MANIFEST_NAME, hash_directory, run_manifest_digest, validate_run_manifest

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
MODEL_SIGNING = "https://model_signing/signature/v1.0"
BUILD_TYPE = "https://github.com/prov-dev/prov/dp-sgd-lora/v1"
BUILDER_PREFIX = "https://github.com/prov-dev/prov/trainer"
ADAPTER_FILE = "adapter_model.safetensors"


def _iso(timestamp: int | None) -> str | None:
    if not timestamp:
        return None
    return _dt.datetime.fromtimestamp(timestamp, _dt.UTC).isoformat().replace("+00:00", "Z")


def _sha(digest: Any) -> dict[str, str]:
    """A ResourceDescriptor digest set from a Digest or its `sha256:<hex>` text."""
    return {"sha256": str(digest).removeprefix("sha256:")}


def find_run_manifest(checkpoint: Path) -> Path:
    """`run.json` of the run directory holding `checkpoint` (`<run>/checkpoints/<index>/`)."""
    for candidate in (checkpoint.parent.parent / "run.json", checkpoint.parent / "run.json"):
        if candidate.is_file():
            return candidate
    raise UsageError(f"{checkpoint}: cannot find the run manifest (run.json); pass it with --run-manifest")


def load_run_manifest(path: Path) -> dict[str, Any]:
    """A run.json, checked to be a run manifest (against the chain by `slsa_statement` when it reads one)."""
    return validate_run_manifest(canonical.decode(read_input(path), source=str(path)), source=str(path))


def model_signing_manifest(checkpoint: Path, *, name: str | None = None) -> dict[str, Any]:
    """A model-signing-style Statement over every file of `checkpoint` (sorted POSIX paths, SHA-256 each). Its
    subject digest is SHA-256 over the concatenated raw file digests in path order (the "files" serialization)."""
    manifest = hash_directory(checkpoint)
    root = hashlib.sha256(b"".join(f.digest.value for f in manifest.files)).hexdigest()
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name or checkpoint.name, "digest": {"sha256": root}}],
        "predicateType": MODEL_SIGNING,
        "predicate": {
            "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": False,
                              "ignore_paths": [MANIFEST_NAME]},
            "resources": [{"name": f.path, "algorithm": "sha256", "digest": f.digest.value.hex()}
                          for f in manifest.files],
        },
    }


def _external(manifest: dict[str, Any]) -> dict[str, Any]:
    training = dict(manifest["training"])
    dp = training.pop("dp", {})
    base = manifest["base_model"]
    dataset = manifest["dataset"]
    out = {
        "base_model": {"name": base.get("name"), "digest": base.get("digest")},
        "dataset": {"root": dataset.get("root"), "size": dataset.get("size"),
                    "commitment": "RFC 6962 root over salted per-example leaves"},
        "hyperparameters": training,
        "dp": dp,
    }
    for key in ("lora", "optimizer", "schedule"):
        if key in manifest:
            out[key] = manifest[key]
    return out


def _dependencies(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    base = manifest["base_model"]
    deps = [{"name": base.get("name") or "base-model", "digest": _sha(base["digest"]),
             "annotations": {"role": "base-model"}}]
    deps.append({"name": "dataset", "digest": _sha(manifest["dataset"]["root"]),
                 "annotations": {"role": "dataset-root", "merkle": "rfc6962"}})
    return deps


def _byproducts(checkpoint_manifest: Any, manifest: dict[str, Any], record: Any, run: Any,
                chain_id: int | None, registry: str | None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    # the local directory's files: listed when offline (the trainer's claim) or when they are the committed checkpoint
    if record is None or checkpoint_manifest.digest() == record.checkpoint_digest:
        items.append({"name": "checkpoint-manifest", "digest": _sha(checkpoint_manifest.digest()),
                      "mediaType": "application/vnd.prov.checkpoint.v1+json"})
    if record is not None:
        items.append({"name": "step-log", "digest": _sha(record.log_root),
                      "annotations": {"tree_size": record.log_size, "merkle": "rfc6962"}})
        items.append({"name": "checkpoint", "uri": f"ipfs://{record.manifest_cid}",
                      "digest": _sha(record.checkpoint_digest)})
        items.append({"name": "anchor:checkpoint", "uri": f"eip155:{chain_id}:{registry}",
                      "annotations": {"tx": record.tx_hash, "block": record.block_number, "index": record.index,
                                      "committer": record.committer}})
    if run is not None:
        items.append({"name": "run-manifest", "uri": f"ipfs://{run.manifest_cid}", "digest": _sha(run.manifest_digest)})
        items.append({"name": "anchor:run", "uri": f"eip155:{chain_id}:{registry}",
                      "annotations": {"tx": run.tx_hash, "block": run.block_number, "owner": run.owner}})
    return items


def _anchors(registry: Any, weights: Any, manifest: dict[str, Any]) -> tuple[Any, Any]:
    """The on-chain checkpoint record of these weights in this manifest's run, and the run's registration; (None,
    None) when the chain has none. A version 2 registry may hold several claims of the same weights: the claim of
    the manifest's run id (registered by the manifest's owner when it names one), earliest first."""
    if not callable(getattr(registry, "claims", None)):  # a version 1 registry: one record per weights digest
        record = registry.find_by_weights(weights)
        return record, (None if record is None else registry.get_run(record.run_id))
    owner = str(manifest.get("owner") or "").lower()
    for record in sorted(registry.claims(weights=weights), key=lambda r: (r.block_number, r.index)):
        if record.run_id.hex() != manifest["run_id"]:
            continue
        run = registry.run(record.run_key).registration
        if not owner or run.owner.lower() == owner:
            return record, run
    return None, None


def slsa_statement(checkpoint: Path, *, run_manifest: Path | None = None, registry: Any = None) -> dict[str, Any]:
    """The in-toto Statement v1 / SLSA Provenance v1 for `checkpoint` (a checkpoint or adapter directory, or the
    adapter weights file in one: the subject is that file).

    With `registry` (a provenance.chain.Registry), the checkpoint's on-chain record (the claim of the manifest's run)
    gives start/finish times (registration and commit blocks), the trainer identity (the committing account) and
    the anchors.
    """
    from provenance import __version__
    from provenance.hashing import hash_file

    checkpoint, adapter = _adapter_of(checkpoint)
    manifest = load_run_manifest(run_manifest or find_run_manifest(checkpoint))
    weights = hash_file(adapter)
    files = hash_directory(checkpoint)
    record, run = _anchors(registry, weights, manifest) if registry is not None else (None, None)
    if registry is not None:  # the statement speaks for the chain's record, never for local files alone
        if record is None:
            raise VerificationError(f"{adapter}: no checkpoint of run {manifest['run_id'][:12]}… on this registry "
                                    "claims this file's weights; export the anchored file (`prov verify` it first), "
                                    "or use --offline for the trainer's unchecked claim")
        if run is not None and run.manifest_digest != run_manifest_digest(manifest):
            raise VerificationError("the run manifest is not the one registered on chain for its run (changed "
                                    "after registration): export with the run's own run.json",
                                    expected=str(run.manifest_digest), found=str(run_manifest_digest(manifest)))
    builder = f"{BUILDER_PREFIX}@{record.committer}" if record is not None else BUILDER_PREFIX
    metadata: dict[str, Any] = {"invocationId": manifest["run_id"]}
    if run is not None and record is not None:
        metadata["startedOn"] = _iso(run.block_timestamp)
        metadata["finishedOn"] = _iso(record.block_timestamp)
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": adapter.name, "digest": _sha(weights)}],
        "predicateType": SLSA_PROVENANCE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": _external(manifest),
                "internalParameters": {"run_id": manifest["run_id"], "software": manifest["software"],
                                       "determinism": manifest["determinism"],
                                       "noise_seed_commitment": manifest["secrets"].get("noise_seed_commitment")},
                "resolvedDependencies": _dependencies(manifest),
            },
            "runDetails": {
                "builder": {"id": builder, "version": {"prov": __version__}},
                "metadata": metadata,
                "byproducts": _byproducts(files, manifest, record, run,
                                          getattr(registry, "chain_id", None), getattr(registry, "address", None)),
            },
        },
    }


def export(checkpoint: Path, *, run_manifest: Path | None = None, offline: bool = False, rpc_url: str | None = None,
           registry: str | None = None, model_signing: bool = False) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """`prov export in-toto`: the SLSA statement of `checkpoint` (with its on-chain anchors unless `offline`; the
    chain and registry are `rpc_url`/`registry` or the project config's) and, with `model_signing`, the
    model-signing manifest of its files."""
    client = None
    if not offline:
        from provenance.chain import connect

        client = connect(rpc_url, registry=registry)
        if client.address is None:
            raise UsageError("no registry address: pass --registry, run `prov chain deploy`, or use --offline")
    statement = slsa_statement(checkpoint, run_manifest=run_manifest, registry=client)
    return statement, (model_signing_manifest(_adapter_of(checkpoint)[0]) if model_signing else None)


def _adapter_of(path: Path) -> tuple[Path, Path]:
    """(directory, adapter file) for a checkpoint/adapter directory or an adapter weights file."""
    if path.is_file():
        return path.parent, path
    if not (path / ADAPTER_FILE).is_file():
        raise UsageError(f"{path}: give an adapter file or a checkpoint directory holding {ADAPTER_FILE}")
    return path, path / ADAPTER_FILE


def sign_statement(statement: dict[str, Any], *, key: str = "trainer", password: str | None = None
                   ) -> dict[str, Any]:
    """`statement` in a DSSE envelope signed with the trainer's P-256 key (provenance.signing; docs/compliance.md)."""
    from provenance._export.statements import sign_envelope

    return sign_envelope(statement, key=key, password=password)


def write_json(document: dict[str, Any], path: Path | None) -> None:
    """Write `document` as indented JSON to `path`, or to stdout when None."""
    text = json.dumps(document, indent=2) + "\n"
    if path is None:
        import click

        click.echo(text, nl=False)
        return
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot write ({exc.strerror or exc})") from None
