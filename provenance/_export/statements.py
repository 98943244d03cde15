"""prov's evidence as in-toto Statements v1, one predicate each, DSSE-signed with the trainer's P-256 key.

- `https://prov.dev/lineage/v1`: the training lineage the verifier established (chain, run, base model and dataset
  commitments, every checkpoint committed on chain, the checks and the level reached).
- `https://prov.dev/dp/v1`: the differential-privacy evidence (mechanism, parameters, ε committed and recomputed,
  the privacy check, the guarantee in words).

Both are built from the publishable verify report only (docs/compliance.md lists every field), and their subjects
are the files an OpenSSF model signature of the same path covers (provenance.signing): every regular file of a
directory (sorted POSIX names, model-signing's default ignores), or the one weights file; without the files, the
report's weights digest. DSSE (https://github.com/secure-systems-lab/dsse) envelopes are made with
securesystemslib, keyed by the same key id model-signing writes (SHA-256 of the public key's PEM).
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

from provenance import _report_words as words
from provenance.errors import UsageError

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
LINEAGE_PREDICATE = "https://prov.dev/lineage/v1"
DP_PREDICATE = "https://prov.dev/dp/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
# model-signing's default ignored paths, so both list exactly the same files.
IGNORED = frozenset({".git", ".gitignore", ".gitattributes", ".github"})


def subjects_of(path: Path) -> list[dict[str, Any]]:
    """ResourceDescriptors of every file an OMS signature of `path` covers: name (relative POSIX) and sha256."""
    from provenance.hashing import hash_file

    if path.is_symlink():
        raise UsageError(f"{path}: a symbolic link; name the model itself")
    if path.is_file():
        return [{"name": path.name, "digest": {"sha256": hash_file(path).value.hex()}}]
    if not path.is_dir():
        raise UsageError(f"{path}: no such file or directory")
    out = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED or Path(dirpath) != path)
        for name in filenames:
            file = Path(dirpath) / name
            rel = file.relative_to(path).as_posix()
            if rel in IGNORED:
                continue
            if file.is_symlink() or not file.is_file():
                raise UsageError(f"{file}: only regular files can be subjects (no links or special files)")
            out.append({"name": rel, "digest": {"sha256": hash_file(file).value.hex()}})
    return sorted(out, key=lambda s: s["name"])


def subjects_of_report(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The one subject a report names when the files are not at hand: its file name and weights digest."""
    digest = report["subject"]["weights_digest"]
    if not digest:
        raise UsageError("the report names no weights digest: give the model path to export")
    return [{"name": report["subject"]["path"], "digest": {"sha256": digest.removeprefix("sha256:")}}]


def _header(report: dict[str, Any]) -> dict[str, Any]:
    chain = report["chain"]
    return {"verdict": report["verdict"], "level": report["level"]["name"], "verdict_line": report["level"]["text"],
            "verified_at": report["generated_at"], "prov_version": report["prov_version"],
            "report_format": report["format"],
            "chain": {"chain_id": chain["chain_id"], "genesis_hash": chain["genesis_hash"],
                      "registry": chain["registry"], "registry_version": chain["registry_version"],
                      "dev_chain": chain["dev_chain"]}}


def _statement(subjects: list[dict[str, Any]], predicate_type: str, predicate: dict[str, Any]) -> dict[str, Any]:
    if not subjects:
        raise UsageError("nothing to attest: the model path holds no file")
    return {"_type": STATEMENT_TYPE, "subject": subjects, "predicateType": predicate_type, "predicate": predicate}


def lineage_statement(report: dict[str, Any], subjects: list[dict[str, Any]]) -> dict[str, Any]:
    """The training lineage of a verified report as an in-toto Statement (`https://prov.dev/lineage/v1`)."""
    from provenance._export.card import verify_command

    run = report["run"]
    keep = ("index", "step", "log_size", "log_root", "weights_digest", "tensor_digest", "checkpoint_digest",
            "manifest_cid", "tx", "block", "time", "committer", "is_subject")
    predicate = _header(report) | {
        "subject_kind": report["subject"]["kind"], "weights_digest": report["subject"]["weights_digest"],
        "tensor_digest": report["subject"]["tensor_digest"],
        "run": {k: run.get(k) for k in ("run_id", "run_key", "owner", "register_tx", "register_block",
                                        "register_time", "manifest_cid", "manifest_digest", "steps_planned",
                                        "finalized")},
        "base_model": dict(run["base_model"]),
        "dataset": {"root": run["dataset_root"], "examples": run["examples"],
                    "commitment": "RFC 6962 Merkle root over per-example leaves salted with a secret dataset key"},
        "checkpoints": [{k: c.get(k) for k in keep} for c in report["lineage"]],
        "checks": [{"id": c["id"], "status": c["status"], "summary": c["summary"]} for c in report["checks"]],
        "replay": None if report["replay"] is None else {
            k: report["replay"].get(k) for k in ("requested", "candidates", "chosen", "catch_probability")},
        "verify": verify_command(report),
        # the OpenSSF model signature the verifier found beside the model, if any (provenance.signing)
        "model_signature": None if not report.get("signature") else {
            k: report["signature"].get(k) for k in ("file", "format", "key_id", "key_checked", "valid", "covers")},
    }
    return _statement(subjects, LINEAGE_PREDICATE, predicate)


def dp_statement(report: dict[str, Any], subjects: list[dict[str, Any]]) -> dict[str, Any]:
    """The DP evidence of a verified report as an in-toto Statement (`https://prov.dev/dp/v1`)."""
    dp = report["dp"]
    private = dp is not None and dp["mode"] == "dp"
    check = next((c for c in report["checks"] if c["id"] == "privacy"), None)
    predicate = _header(report) | {
        "mechanism": "DP-SGD: Poisson sampling, per-example gradient clipping, Gaussian noise" if private else None,
        "unit": "one training example (add or remove)" if private else None,
        "parameters": None if dp is None else dict(dp),
        "epsilon": None if not private else (dp["epsilon_recomputed"] if dp["epsilon_recomputed"] is not None
                                             else dp["epsilon_committed"]),
        "delta": dp["delta"] if private else None,
        "privacy_check": None if check is None else {"status": check["status"], "summary": check["summary"]},
        "statement": words.privacy_sentence(dp) if private else "trained without differential privacy",
    }
    return _statement(subjects, DP_PREDICATE, predicate)


def canonical_payload(statement: dict[str, Any]) -> bytes:
    """The statement's bytes as signed: JSON with sorted keys and no spaces, UTF-8 (numbers as the report has them:
    DSSE signs these bytes, so no verifier re-serialises them)."""
    import json

    return json.dumps(statement, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def sign_envelope(statement: dict[str, Any], *, key: str = "trainer", password: str | None = None,
                  home: Path | None = None) -> dict[str, Any]:
    """A DSSE envelope of `statement` signed with the trainer's P-256 key (ECDSA, SHA-256)."""
    from provenance.signing import load_private_key

    try:
        from securesystemslib.dsse import Envelope
        from securesystemslib.signer import CryptoSigner, SSlibKey
    except ModuleNotFoundError:
        raise UsageError("signing in-toto statements needs securesystemslib: install prov's compliance extra "
                         "(pip install 'prov[compliance]')") from None
    private, found = load_private_key(key, password, home=home)
    signer = CryptoSigner(private, SSlibKey.from_crypto(private.public_key(), keyid=found.key_id))
    envelope = Envelope(canonical_payload(statement), PAYLOAD_TYPE, {})
    envelope.sign(signer)
    return dict(envelope.to_dict())


def envelope_statement(envelope: dict[str, Any]) -> dict[str, Any]:
    """The statement inside a DSSE envelope (unauthenticated: check the signature first)."""
    from provenance import canonical

    return dict(canonical.load_json(base64.b64decode(envelope["payload"]), source="DSSE payload"))
