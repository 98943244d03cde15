"""Standards exports, each checked by its own ecosystem's tool (issue #25): OpenSSF model signatures (`prov sign`)
verified by the `model-signing` library's Python API and its CLI; DSSE-signed in-toto lineage and DP statements
verified with securesystemslib; the CycloneDX ML-BOM validated by cyclonedx-python-lib's JSON-schema validator; the
model card parsed by huggingface_hub's `ModelCard`; the EU GPAI forms with a known-answer compute estimate. And one
source of truth: a field changed once in the verify report shows up in every export."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provenance import exports, signing
from provenance._export import statements
from provenance._verify.checks import TITLES as CHECK_TITLES
from provenance._verify.subject import load_subject
from provenance.cli import cli, main
from provenance.cli.export import export_group
from provenance.exports import NotExportable
from provenance.hashing import hash_file
from tests.fixtures.report import sample_report

PASSWORD = "correct horse battery staple"


def safetensors_bytes(tensors: dict[str, tuple[int, ...]]) -> bytes:
    """A valid float32 safetensors file of zeros with these shapes (written by hand: no torch needed)."""
    header: dict[str, Any] = {}
    offset = 0
    for name, shape in tensors.items():
        size = 4
        for dim in shape:
            size *= dim
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + bytes(offset)


# LoRA on q_proj and v_proj of one 8x8 layer, rank 2: each module A (2x8) + B (8x2) = 32 parameters, 64 in all.
ADAPTER = {"base_model.model.layers.0.self_attn.q_proj.lora_A.weight": (2, 8),
           "base_model.model.layers.0.self_attn.q_proj.lora_B.weight": (8, 2),
           "base_model.model.layers.0.self_attn.v_proj.lora_A.weight": (2, 8),
           "base_model.model.layers.0.self_attn.v_proj.lora_B.weight": (8, 2)}
BASE = {"model.embed_tokens.weight": (100, 8), "model.layers.0.self_attn.q_proj.weight": (8, 8),
        "model.layers.0.self_attn.v_proj.weight": (8, 8)}  # 928 parameters


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private prov state directory holding the trainer's signing key (password from the environment)."""
    state = tmp_path / "home"
    monkeypatch.setenv("PROV_HOME", str(state))
    monkeypatch.setenv("PROV_KEY_PASSWORD", PASSWORD)
    signing.new_signing_key("trainer")
    return state


@pytest.fixture
def adapter_dir(tmp_path: Path) -> Path:
    """A shipped adapter directory as PEFT saves it."""
    d = tmp_path / "final"
    d.mkdir()
    (d / "adapter_model.safetensors").write_bytes(safetensors_bytes(ADAPTER))
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4,
                                                       "target_modules": ["q_proj", "v_proj"]}))
    return d


@pytest.fixture
def prov(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setitem(cli.commands, "export", export_group)
    yield main


def verified_report(adapter: Path) -> dict[str, Any]:
    """The sample verified report, about this adapter file, listing the files it binds as `prov verify` does (the
    file and the adapter_config.json beside it)."""
    report = sample_report()
    report["subject"]["weights_digest"] = str(hash_file(adapter))
    report["subject"]["path"] = adapter.name
    report["subject"]["files"] = [{"path": name, "digest": f"sha256:{digest}"}
                                  for name, digest in sorted(signing.verified_files(load_subject(adapter)).items())]
    return report


def public_key(home: Path) -> Path:
    return home / "keys" / "trainer.p256.pub.pem"


# --- OpenSSF model signing ---------------------------------------------------------------------------------------

def test_sign_writes_a_signature_the_library_verifies(home: Path, adapter_dir: Path, prov: Any,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from model_signing import verifying

    assert prov(["sign", str(adapter_dir)]) == 0
    out = capsys.readouterr().out
    signature = adapter_dir.parent / "final.sig"
    assert signature.is_file() and not (adapter_dir / "final.sig").exists()
    assert "signed 2 file(s)" in out and PASSWORD not in out
    verifying.Config().use_elliptic_key_verifier(public_key=public_key(home)).verify(adapter_dir, signature)
    cli_run = subprocess.run([sys.executable, "-m", "model_signing", "verify", "key", "--public_key",
                              str(public_key(home)), "--signature", str(signature), str(adapter_dir)],
                             capture_output=True, text=True, timeout=120)
    assert cli_run.returncode == 0 and "Verification succeeded" in cli_run.stdout, cli_run.stdout + cli_run.stderr


def test_the_signed_files_are_the_statement_subjects(home: Path, adapter_dir: Path) -> None:
    done = signing.sign_model(adapter_dir)
    _, statement = signing.read_signature(done.signature)
    oms = {r["name"]: r["digest"] for r in statement["predicate"]["resources"]}
    subjects = {s["name"]: s["digest"]["sha256"] for s in statements.subjects_of(adapter_dir)}
    assert oms == subjects == done.files and set(oms) == {"adapter_config.json", "adapter_model.safetensors"}


@pytest.mark.parametrize("tamper", ["flip", "add", "remove", "other-key", "payload"])
def test_tampering_breaks_the_signature(home: Path, adapter_dir: Path, tamper: str) -> None:
    from model_signing import verifying

    done = signing.sign_model(adapter_dir)
    key = public_key(home)
    if tamper == "flip":
        data = bytearray((adapter_dir / "adapter_model.safetensors").read_bytes())
        data[-1] ^= 1
        (adapter_dir / "adapter_model.safetensors").write_bytes(bytes(data))
    elif tamper == "add":
        (adapter_dir / "tokenizer.json").write_text("{}")
    elif tamper == "remove":
        (adapter_dir / "adapter_config.json").unlink()
    elif tamper == "other-key":
        key = signing.new_signing_key("someone-else").public_path
    else:  # swap in a statement of other digests, keeping the signature
        bundle = json.loads(done.signature.read_text())
        payload = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
        payload["predicate"]["resources"][0]["digest"] = "0" * 64
        bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
        done.signature.write_text(json.dumps(bundle))
    from cryptography.exceptions import InvalidSignature

    with pytest.raises((ValueError, InvalidSignature)):  # a forged payload fails the ECDSA check itself
        verifying.Config().use_elliptic_key_verifier(public_key=key).verify(adapter_dir, done.signature)
    cli_run = subprocess.run([sys.executable, "-m", "model_signing", "verify", "key", "--public_key", str(key),
                              "--signature", str(done.signature), str(adapter_dir)], capture_output=True, text=True,
                             timeout=120)
    assert cli_run.returncode != 0


def test_signs_a_merged_model_directory(home: Path, tmp_path: Path) -> None:
    from model_signing import verifying

    merged = tmp_path / "merged"
    merged.mkdir()
    (merged / "config.json").write_text("{}")
    (merged / "model.safetensors").write_bytes(safetensors_bytes(BASE))
    done = signing.sign_model(merged)
    assert set(done.files) == {"config.json", "model.safetensors"}
    verifying.Config().use_elliptic_key_verifier(public_key=public_key(home)).verify(merged, done.signature)


def test_the_key_is_stored_encrypted_and_never_shown(home: Path, adapter_dir: Path, prov: Any,
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    private = home / "keys" / "trainer.p256.pem"
    assert private.stat().st_mode & 0o777 == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in private.read_bytes()
    assert prov(["signing-key", "show"]) == 0
    shown = capsys.readouterr().out
    assert signing.show_signing_key().key_id in shown and "PRIVATE" not in shown
    assert prov(["signing-key", "new"]) == 2  # never overwritten
    assert "already exists" in capsys.readouterr().err
    monkeypatch.setenv("PROV_KEY_PASSWORD", "wrong")
    assert prov(["sign", str(adapter_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "wrong password" in err and "Traceback" not in err


def test_a_signature_inside_the_directory_is_refused(home: Path, adapter_dir: Path) -> None:
    with pytest.raises(signing.UsageError, match="beside the model"):
        signing.sign_model(adapter_dir, signature=adapter_dir / "model.sig")


# --- what `prov verify` says about a signature beside the model ----------------------------------------------------

def test_signature_section_checks_and_covers_the_verified_files(home: Path, tmp_path: Path) -> None:
    ck = tmp_path / "checkpoints" / "000003"
    ck.mkdir(parents=True)
    (ck / "adapter_model.safetensors").write_bytes(safetensors_bytes(ADAPTER))
    (ck / "optimizer.safetensors").write_bytes(safetensors_bytes({"m": (2,)}))
    subject = load_subject(ck)
    assert signing.signature_section(subject) is None  # nothing beside it
    signing.sign_model(ck)
    unchecked = signing.signature_section(subject)
    assert unchecked is not None and unchecked["valid"] is None and unchecked["files_match"] is True
    assert unchecked["covers"] == "exact" and "--signature-key" in unchecked["reason"]
    checked = signing.signature_section(subject, public_key=public_key(home))
    assert checked is not None and checked["valid"] is True and checked["key_checked"]
    assert checked["key_id"] == signing.show_signing_key().key_id
    other = signing.new_signing_key("other").public_path
    wrong = signing.signature_section(subject, public_key=other)
    assert wrong is not None and wrong["valid"] is False and "Key mismatch" in wrong["reason"]


def test_a_signature_of_only_the_weights_does_not_cover_a_checkpoint(home: Path, tmp_path: Path) -> None:
    ck = tmp_path / "000001"
    ck.mkdir()
    (ck / "adapter_model.safetensors").write_bytes(safetensors_bytes(ADAPTER))
    (ck / "optimizer.safetensors").write_bytes(safetensors_bytes({"m": (2,)}))
    sig = tmp_path / "weights.sig"
    signing.sign_model(ck / "adapter_model.safetensors", signature=sig)
    section = signing.signature_section(load_subject(ck), signature=sig, public_key=public_key(home))
    assert section is not None and section["covers"] == "partial"
    assert section["unsigned"] == ["optimizer.safetensors"]
    # the adapter file alone, verified as a file, is covered exactly by the same signature
    alone = signing.signature_section(load_subject(ck / "adapter_model.safetensors"), signature=sig,
                                      public_key=public_key(home))
    assert alone is not None and alone["covers"] == "exact" and alone["valid"] is True


def test_a_tampered_file_is_reported_not_matching(home: Path, adapter_dir: Path) -> None:
    weights = adapter_dir / "adapter_model.safetensors"
    signing.sign_model(weights)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    section = signing.signature_section(load_subject(weights), public_key=public_key(home))
    assert section is not None and section["valid"] is False and section["files_match"] is False
    assert "adapter_model.safetensors.sig does NOT check" in (signing.signature_words(section) or "")


def test_a_malformed_signature_is_invalid_not_a_crash(home: Path, adapter_dir: Path) -> None:
    weights = adapter_dir / "adapter_model.safetensors"
    signing.default_signature(weights).write_text('{"dsseEnvelope": {"payload": "!!"}}')
    section = signing.signature_section(load_subject(weights))
    assert section is not None and section["valid"] is False and "base64" in section["reason"]


def test_a_fifo_or_hostile_signature_is_refused_without_leaking_paths(home: Path, adapter_dir: Path,
                                                                      tmp_path: Path) -> None:
    weights = adapter_dir / "adapter_model.safetensors"
    fifo = tmp_path / "pipe.sig"
    os.mkfifo(fifo)
    section = signing.signature_section(load_subject(weights), signature=fifo)
    assert section is not None and section["valid"] is False and "not a regular file" in section["reason"]
    # a signed name that climbs out of the model directory is never read
    done = signing.sign_model(adapter_dir)
    bundle = json.loads(done.signature.read_text())
    payload = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    payload["predicate"]["resources"].append({"name": "../../secret", "algorithm": "sha256", "digest": "0" * 64})
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    done.signature.write_text(json.dumps(bundle))
    hostile = signing.signature_section(load_subject(adapter_dir), public_key=public_key(home))
    assert hostile is not None and hostile["files_match"] is False and hostile["valid"] is False
    assert "../../secret" in hostile["extra"] and str(tmp_path) not in json.dumps(hostile)


# --- in-toto statements, DSSE-signed --------------------------------------------------------------------------------

def _sslib_key(home: Path) -> Any:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    from securesystemslib.signer import SSlibKey

    pem = public_key(home).read_bytes()
    return SSlibKey.from_crypto(load_pem_public_key(pem), keyid=hashlib.sha256(pem).hexdigest())


def test_lineage_and_dp_statements_are_dsse_signed_and_bound_to_the_signed_files(home: Path,
                                                                                  adapter_dir: Path) -> None:
    from securesystemslib.dsse import Envelope

    report = verified_report(adapter_dir / "adapter_model.safetensors")
    envelopes = exports.signed_statements(report, path=adapter_dir)
    oms = signing.sign_model(adapter_dir).files
    types = set()
    for envelope in envelopes.values():
        assert envelope["payloadType"] == "application/vnd.in-toto+json"
        Envelope.from_dict(envelope).verify([_sslib_key(home)], 1)
        st = statements.envelope_statement(envelope)
        assert st["_type"] == "https://in-toto.io/Statement/v1"
        assert {s["name"]: s["digest"]["sha256"] for s in st["subject"]} == oms
        types.add(st["predicateType"])
    assert types == {"https://prov.dev/lineage/v1", "https://prov.dev/dp/v1"}
    dp = statements.envelope_statement(envelopes["dp"])["predicate"]
    assert dp["epsilon"] == 3.21 and dp["delta"] == 1e-05 and dp["privacy_check"]["status"] == "passed"
    lineage = statements.envelope_statement(envelopes["lineage"])["predicate"]
    assert lineage["run"]["run_id"] == report["run"]["run_id"] and len(lineage["checkpoints"]) == 31
    assert "dp" not in lineage and "checkpoints" not in dp  # one predicate each


@pytest.mark.parametrize("attack", ["payload", "other-key"])
def test_a_changed_statement_or_another_key_fails_dsse(home: Path, adapter_dir: Path, attack: str) -> None:
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import VerificationError

    envelope = exports.signed_statements(verified_report(adapter_dir / "adapter_model.safetensors"),
                                         path=adapter_dir)["dp"]
    if attack == "payload":
        st = statements.envelope_statement(envelope)
        st["predicate"]["epsilon"] = 0.1
        envelope["payload"] = base64.b64encode(statements.canonical_payload(st)).decode()
        key = _sslib_key(home)
    else:
        other = signing.new_signing_key("other")
        from cryptography.hazmat.primitives.serialization import load_pem_public_key
        from securesystemslib.signer import SSlibKey

        key = SSlibKey.from_crypto(load_pem_public_key(other.public_path.read_bytes()),
                                   keyid=envelope["signatures"][0]["keyid"])  # even claiming the same key id
    with pytest.raises(VerificationError):
        Envelope.from_dict(envelope).verify([key], 1)


def test_statements_refuse_files_that_are_not_the_verified_ones(adapter_dir: Path, tmp_path: Path) -> None:
    """Every export speaks for exactly the files the verdict bound (`subject.files`): a directory that merely holds
    the verified adapter beside a forged config or other weights, a copy missing a bound file, or another file is
    refused; documentation beside them may be a subject (no loader reads it)."""
    other = verified_report(adapter_dir / "adapter_model.safetensors")
    other["subject"]["files"][-1]["digest"] = "sha256:" + "ab" * 32  # the report bound other weights
    with pytest.raises(NotExportable, match="the report binds"):
        exports.intoto_statements(other, path=adapter_dir)
    report = verified_report(adapter_dir / "adapter_model.safetensors")
    (adapter_dir / "README.md").write_text("# model card\n")
    assert {s["name"] for s in exports.model_subjects(report, adapter_dir)} == \
        {"README.md", "adapter_config.json", "adapter_model.safetensors"}
    forged = tmp_path / "forged"
    for attack in ("config", "extra-weights", "missing", "subfolder", "doc-named-folder"):
        shutil.rmtree(forged, ignore_errors=True)
        shutil.copytree(adapter_dir, forged)
        if attack == "config":
            (forged / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 400}))
        elif attack == "extra-weights":
            (forged / "model.safetensors").write_bytes(safetensors_bytes(BASE))
        elif attack == "missing":
            (forged / "adapter_config.json").unlink()
        elif attack == "doc-named-folder":  # PEFT reads sub-folders (subfolder=), whatever their name
            (forged / "README").mkdir()
            (forged / "README" / "adapter_model.safetensors").write_bytes(safetensors_bytes(ADAPTER))
        else:
            (forged / "sub").mkdir()
            (forged / "sub" / "adapter_model.safetensors").write_bytes(safetensors_bytes(ADAPTER))
        with pytest.raises(NotExportable) as info:
            exports.model_subjects(report, forged)
        assert info.value.exit_code == 1 and "export the verified model itself" in str(info.value), attack
        with pytest.raises(NotExportable):
            exports.cyclonedx_bom(report, path=forged)
    with pytest.raises(NotExportable, match="not the verified file"):
        exports.model_subjects(report, adapter_dir / "adapter_config.json")
    # a report written before subject.files binds the weights file alone: nothing else of a directory goes with it
    legacy = copy.deepcopy(report)
    del legacy["subject"]["files"]
    assert exports.model_subjects(legacy, adapter_dir / "adapter_model.safetensors")[0]["name"] == \
        "adapter_model.safetensors"
    with pytest.raises(NotExportable, match=r"predates subject\.files"):
        exports.model_subjects(legacy, adapter_dir)


def test_a_merged_report_binds_the_directory_a_loader_reads(tmp_path: Path) -> None:
    """A merged model: the weights and every other file a loader reads (config, tokenizer) are bound, the shard
    index too; a directory with another config.json or other weights is refused."""
    model = tmp_path / "merged"
    model.mkdir()
    (model / "model.safetensors").write_bytes(safetensors_bytes(BASE))
    (model / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_act": "silu"}))
    (model / "tokenizer.json").write_text("{}")
    (model / "prov-merged.json").write_text("{}")
    subject = load_subject(model)
    bound = signing.verified_files(subject)
    assert set(bound) == {"model.safetensors", "config.json", "tokenizer.json"}
    report = sample_report()
    report["subject"] |= {"kind": "merged", "path": model.name, "weights_digest": str(subject.weights_digest),
                          "files": [{"path": n, "digest": f"sha256:{d}"} for n, d in sorted(bound.items())]}
    at = next(i for i, c in enumerate(report["checks"]) if c["id"] == "checkpoint") + 1
    report["checks"].insert(at, {"id": "merge", "title": CHECK_TITLES["merge"], "status": "passed",
                                 "summary": "recomputed", "expected": None, "found": None})
    assert {s["name"] for s in exports.model_subjects(report, model)} == {*bound, "prov-merged.json"}
    (model / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_act": "relu"}))
    with pytest.raises(NotExportable, match=r"config\.json: differs from the verified file"):
        exports.intoto_statements(report, path=model)


def test_cli_in_toto_takes_the_adapter_file_and_signs(home: Path, adapter_dir: Path, tmp_path: Path,
                                                      prov: Any) -> None:
    from securesystemslib.dsse import Envelope

    from provenance import canonical
    from tests.fixtures.attest import MANIFEST

    (adapter_dir.parent / "run.json").write_bytes(canonical.encode(MANIFEST))
    weights = adapter_dir / "adapter_model.safetensors"
    saved = tmp_path / "report.json"
    saved.write_text(json.dumps(verified_report(weights)))
    out, lineage, dp = tmp_path / "slsa.json", tmp_path / "lineage.json", tmp_path / "dp.json"
    assert prov(["export", "in-toto", str(weights), "--offline", "--key", "trainer", "--out", str(out),
                 "--report", str(saved), "--lineage", str(lineage), "--dp", str(dp)]) == 0
    for path, predicate in ((out, "https://slsa.dev/provenance/v1"), (lineage, "https://prov.dev/lineage/v1"),
                            (dp, "https://prov.dev/dp/v1")):
        envelope = json.loads(path.read_text())
        Envelope.from_dict(envelope).verify([_sslib_key(home)], 1)
        assert statements.envelope_statement(envelope)["predicateType"] == predicate
    slsa = statements.envelope_statement(json.loads(out.read_text()))
    assert slsa["subject"][0]["digest"]["sha256"] == hash_file(weights).value.hex()
    # a saved report alone, as the other exports take it: the statements name the report's file and digest
    alone = tmp_path / "alone.json"
    assert prov(["export", "in-toto", "--report", str(saved), "--dp", str(alone), "--key", "trainer"]) == 0
    assert statements.envelope_statement(json.loads(alone.read_text()))["subject"] == [
        {"name": "adapter_model.safetensors", "digest": {"sha256": hash_file(weights).value.hex()}}]


# --- CycloneDX ML-BOM -----------------------------------------------------------------------------------------------

def _props(items: list[dict[str, str]]) -> dict[str, str]:
    return {p["name"]: p["value"] for p in items}


def test_cyclonedx_bom_validates_and_carries_the_evidence(adapter_dir: Path) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    report = verified_report(adapter_dir / "adapter_model.safetensors")
    from tests.provenance.test_exports import manifest_for

    _, manifest = manifest_for(report)
    bom = exports.cyclonedx_bom(report, path=adapter_dir, manifest=manifest)
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(bom)) is None
    model = bom["metadata"]["component"]
    assert model["type"] == "machine-learning-model"
    assert model["hashes"] == [{"alg": "SHA-256", "content": hash_file(adapter_dir / "adapter_model.safetensors")
                                .value.hex()}]
    props = _props(model["properties"])
    assert props["prov:dp.epsilon"] == "3.21" and props["prov:chain.id"] == "31337"
    assert props["prov:run.id"] == report["run"]["run_id"] and "prov:checkpoint.tx" in props
    assert "(ε = 3.21" in props["prov:dp.statement"]
    by_ref = {c["bom-ref"]: c for c in bom["components"]}
    assert by_ref["base-model"]["hashes"][0]["content"] == report["run"]["base_model"]["digest"][7:]
    assert by_ref["dataset"]["type"] == "data" and by_ref["dataset"]["data"][0]["type"] == "dataset"
    assert _props(by_ref["dataset"]["properties"])["prov:dataset.root"] == report["run"]["dataset_root"]
    deps = {d["ref"]: d.get("dependsOn", []) for d in bom["dependencies"]}
    assert {"base-model", "dataset"} <= set(deps["model"])
    card = _props(model["modelCard"]["properties"])
    assert json.loads(card["prov:training.lora"])["r"] == 8 and card["prov:dp.noise_multiplier"] == "1.1"
    assert model["modelCard"]["modelParameters"]["datasets"] == [{"ref": "dataset"}]
    broken = copy.deepcopy(bom)
    broken["metadata"]["component"]["modelCard"]["epsilon"] = 3.21  # not a modelCard field
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(broken)) is not None


# --- Hugging Face model card ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "relation"), [("adapter", "adapter"), ("merged", "merge")])
def test_model_card_loads_with_huggingface_hub(kind: str, relation: str) -> None:
    from huggingface_hub import ModelCard

    from provenance._verify.checks import TITLES

    report = sample_report()
    report["subject"]["kind"] = kind
    if kind == "merged":  # a merged model's report has the `merge` check right after `checkpoint`
        at = [c["id"] for c in report["checks"]].index("checkpoint") + 1
        report["checks"].insert(at, {"id": "merge", "title": TITLES["merge"], "status": "passed",
                                     "summary": "merged from the verified adapter", "expected": None, "found": None})
    text = exports.model_card(report, datasets=["tatsu-lab/alpaca", "/home/alice/private.jsonl"])
    card = ModelCard(text)
    assert card.data.base_model == "Qwen/Qwen2.5-0.5B" and card.data.base_model_relation == relation
    assert card.data.library_name == "peft" and card.data.datasets == ["tatsu-lab/alpaca"]
    assert card.data.to_dict()["prov"]["dp"]["epsilon"] == 3.21
    assert "### Differential privacy" in card.text


def test_cli_model_card_names_public_datasets(tmp_path: Path, prov: Any) -> None:
    from huggingface_hub import ModelCard

    saved = tmp_path / "report.json"
    saved.write_text(json.dumps(sample_report()))
    out = tmp_path / "README.md"
    assert prov(["export", "model-card", "--report", str(saved), "--dataset", "tatsu-lab/alpaca", "--out",
                 str(out)]) == 0
    assert ModelCard.load(out).data.datasets == ["tatsu-lab/alpaca"]


def test_cli_in_toto_lineage_needs_a_report(adapter_dir: Path, prov: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert prov(["export", "in-toto", str(adapter_dir), "--offline", "--lineage", "x.json"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pass --report FILE" in err


# --- EU GPAI forms --------------------------------------------------------------------------------------------------

def test_gpai_forms_count_parameters_and_compute_with_the_stated_method(adapter_dir: Path, tmp_path: Path) -> None:
    from tests.provenance.test_exports import manifest_for

    base = tmp_path / "base"
    base.mkdir()
    (base / "model.safetensors").write_bytes(safetensors_bytes(BASE))
    report = verified_report(adapter_dir / "adapter_model.safetensors")
    _, manifest = manifest_for(report)
    # 248 steps x expected batch 80 x max_length 128 = 2,539,520 tokens; N = 928 + 64; DP: 4N + 4*64 per token.
    expected = 248 * 80 * 128 * (4 * (928 + 64) + 4 * 64)
    doc = exports.gpai_forms(report, path=adapter_dir, manifest=manifest, base_model=base, base_compute=1e10)
    assert doc["training_flops"] == expected and doc["compute_method"].startswith("C = T x (4 N + 4 N_trainable)")
    items = {i["label"]: i["value"] for i in doc["items"]}
    assert items["Trainable parameters (adapter)"] == "64"
    assert items["Total parameters (base model + adapter)"] == "992"
    assert items["Tokens processed (upper bound)"] == "2539520"
    assert doc["above_threshold"] is True and "above one third" in items["Share of the base model's training compute"]
    assert "sha256:" + hash_file(adapter_dir / "adapter_config.json").value.hex() in items[
        "Model authenticity (secure hash)"]
    assert all(t["value"] == "to be completed by the provider" for t in doc["todo"])
    below = exports.gpai_forms(report, path=adapter_dir, manifest=manifest, base_model=base, base_compute=1e20)
    assert below["above_threshold"] is False
    text = exports.render_gpai(doc, "md")
    assert "## Training content summary" in text and "to be completed by the provider" in text


def test_gpai_without_inputs_says_what_is_missing() -> None:
    doc = exports.gpai_forms(sample_report())
    items = {i["label"]: i["value"] for i in doc["items"]}
    assert doc["training_flops"] is None and "--base-compute" in items["Share of the base model's training compute"]
    assert "--base-model" in items["Total parameters (base model + adapter)"]
    with pytest.raises(exports.UsageError, match="positive"):
        exports.gpai_forms(sample_report(), base_compute=-1.0)


# --- one source of truth --------------------------------------------------------------------------------------------

def test_a_field_changed_once_shows_in_every_export(home: Path, adapter_dir: Path) -> None:
    report = verified_report(adapter_dir / "adapter_model.safetensors")
    report["run"]["run_id"] = "ab" * 32
    report["dp"]["epsilon_recomputed"] = 2.75
    card = exports.model_card(report)
    annex = exports.render_annex_iv(exports.annex_iv(report), "json")
    intoto = {n: statements.envelope_statement(e)
              for n, e in exports.signed_statements(report, path=adapter_dir).items()}
    bom = json.dumps(exports.cyclonedx_bom(report, path=adapter_dir))
    gpai = exports.render_gpai(exports.gpai_forms(report, path=adapter_dir), "json")
    for name, text in {"card": card, "annex": annex, "lineage": json.dumps(intoto["lineage"]), "bom": bom,
                       "gpai": gpai}.items():
        assert "ab" * 32 in text, name
    for name, text in {"card": card, "annex": annex, "dp": json.dumps(intoto["dp"]), "bom": bom,
                       "gpai": gpai}.items():
        assert "2.75" in text, name


@pytest.mark.parametrize("story", ["failed", "inconclusive", "error"])
def test_standards_exports_refuse_what_is_not_verified(story: str, adapter_dir: Path) -> None:
    report = sample_report(story)
    for export in (lambda: exports.intoto_statements(report, path=adapter_dir),
                   lambda: exports.cyclonedx_bom(report), lambda: exports.gpai_forms(report)):
        with pytest.raises(NotExportable):
            export()


def test_cli_cyclonedx_and_gpai_from_a_saved_report(adapter_dir: Path, tmp_path: Path, prov: Any) -> None:
    saved = tmp_path / "report.json"
    saved.write_text(json.dumps(verified_report(adapter_dir / "adapter_model.safetensors")))
    bom, form = tmp_path / "bom.json", tmp_path / "gpai.json"
    assert prov(["export", "cyclonedx", "--report", str(saved), "--model", str(adapter_dir), "--out", str(bom)]) == 0
    assert json.loads(bom.read_text())["specVersion"] == "1.6"
    assert prov(["export", "gpai", "--report", str(saved), "--model", str(adapter_dir), "--base-compute", "1e21",
                 "--out", str(form)]) == 0
    assert json.loads(form.read_text())["format"] == "prov.gpai-forms.v1"
    assert os.path.getsize(form) > 0


# --- a real run, verified on the in-process chain ------------------------------------------------------------------

@pytest.mark.slow
def test_verify_reports_the_signature_of_a_real_run_and_exports_from_it(home: Path, tiny_run: Any,
                                                                        tmp_path: Path) -> None:
    """Train (shared fixture), anchor, sign the last checkpoint; `verify` says the signature checks and covers
    exactly the verified files, then stops saying so once a signed file changes; the exports of the same report
    agree with the signature's digests."""
    pytest.importorskip("torch", reason="training the run needs the train extra (scripts/setup installs it)")
    from tests.fixtures.verify import VerifyEnv, last

    env = VerifyEnv(tmp_path)
    run = env.copy(tiny_run.run_dir)
    env.anchor(run)
    ck = last(run)
    done = signing.sign_model(ck)
    report = env.verify(ck, replay="0", signature_key=public_key(home))
    assert report["verdict"] == "verified", report["checks"]
    assert {f["path"] for f in report["subject"]["files"]} == set(done.files)  # what the verdict bound
    section = report["signature"]
    assert section["valid"] is True and section["covers"] == "exact" and section["file"] == f"{ck.name}.sig"
    assert not [w for w in report["warnings"] if "model signature" in w]
    subjects = {s["name"]: s["digest"]["sha256"] for s in exports.model_subjects(report, ck)}
    assert subjects == done.files
    bom = exports.cyclonedx_bom(report, path=ck)
    assert {c["name"]: c["hashes"][0]["content"] for c in bom["components"] if c["type"] == "file"} == done.files
    props = _props(bom["metadata"]["component"]["properties"])
    assert props["prov:signature.valid"] == "true" and props["prov:signature.key_id"] == done.key_id
    lineage = exports.intoto_statements(report, path=ck)["lineage"]["predicate"]
    assert lineage["model_signature"]["valid"] is True and lineage["model_signature"]["covers"] == "exact"
    # from the saved report, the GPAI form reads the run manifest from the project's store (no --store needed)
    from provenance import config
    from provenance.cli import main as prov_main

    saved, form = tmp_path / "audit.json", tmp_path / "gpai.json"
    saved.write_text(json.dumps(report))
    args = ["export", "gpai", "--report", str(saved), "--model", str(ck), "--base-compute", "1e21", "--out", str(form)]
    assert prov_main(args) == 0
    lacking = form.read_text().count("needs the run manifest")
    assert lacking >= 2  # this project's store does not hold it yet
    config.update_section("store", {"spec": f"local:{tmp_path / 'store'}"}, home)
    assert prov_main(args) == 0
    assert form.read_text().count("needs the run manifest") == 1  # the FLOPs also need the base model's size
    # the adapter file alone: no signature beside it, so the report has none
    assert env.verify(ck / "adapter_model.safetensors", replay="0")["signature"] is None
    # a signature over the weights only, given explicitly, does not cover the checkpoint's other files
    only = tmp_path / "weights.sig"
    signing.sign_model(ck / "adapter_model.safetensors", signature=only)
    partial = env.verify(ck, replay="0", signature=only, signature_key=public_key(home))
    assert partial["signature"]["covers"] == "partial" and partial["signature"]["valid"] is False
    # a report that is not verified binds nothing, so it lists no files (and nothing can be exported from it)
    (ck / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 64}))
    failed = env.verify(ck, replay="0")
    assert failed["verdict"] == "failed" and "files" not in failed["subject"]
    assert any("model signature weights.sig" in w for w in partial["warnings"])
