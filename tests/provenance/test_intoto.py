"""`prov export in-toto`: the in-toto Statement v1 / SLSA Provenance v1 and the model-signing manifest of a
checkpoint, validated against JSON Schemas written by hand from the published specs (tests/provenance/intoto/).

`jsonschema` is not a dependency, so tests.fixtures.attest.validate implements the subset of JSON Schema those files
use (type, const, enum, required, properties, patternProperties, additionalProperties, items, minItems,
minProperties, minLength, pattern, date-time, local and cross-file $ref); a test checks it rejects what it must.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from provenance import canonical, intoto
from provenance.chain import connect
from provenance.errors import VerificationError
from provenance.hashing import Digest, hash_file
from provenance.manifest import hash_directory
from tests.fixtures.attest import MANIFEST, check_statement
from tests.fixtures.attest import RUN_MANIFEST_ID as RUN_ID

CK_CID = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"  # a dag-pb CIDv1 (a directory)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run directory shaped like the trainer's: run.json and checkpoints/000/ with an adapter and state."""
    run = tmp_path / "run"
    ck = run / "checkpoints" / "000"
    ck.mkdir(parents=True)
    (run / "run.json").write_bytes(canonical.encode(MANIFEST))
    (ck / intoto.ADAPTER_FILE).write_bytes(b"adapter weights")
    (ck / "optimizer.safetensors").write_bytes(b"optimizer state")
    return run


def test_slsa_statement_from_local_files_matches_the_schemas(run_dir: Path) -> None:
    ck = run_dir / "checkpoints" / "000"
    st = intoto.slsa_statement(ck)
    check_statement(st, "slsa-provenance-v1.schema.json")
    assert st["subject"] == [{"name": "adapter_model.safetensors",
                              "digest": {"sha256": hash_file(ck / intoto.ADAPTER_FILE).value.hex()}}]
    ext = st["predicate"]["buildDefinition"]["externalParameters"]
    assert ext["dp"]["noise_multiplier"] == "1.1" and "dp" not in ext["hyperparameters"]
    assert ext["dataset"]["root"] == MANIFEST["dataset"]["root"]
    deps = st["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert deps[0]["digest"]["sha256"] == Digest.of(b"base").value.hex()


def _claim(reg: Any, run_id: str, ck: Path, *, log_root: Digest, manifest: dict[str, Any] = MANIFEST) -> bytes:
    """Register `run_id` (with `manifest`) for `reg`'s signer and commit `ck` as its checkpoint 0; the run key."""
    key = reg.register_run(run_id, manifest_digest=Digest.of(canonical.encode(manifest)),
                           base_model_digest=Digest.of(b"base"), dataset_root=Digest.of(b"dataset"),
                           noise_seed_commitment=Digest.of(b"noise"), manifest_cid="bafy-run").run_key
    reg.commit_checkpoint(key, index=0, weights_digest=hash_file(ck / intoto.ADAPTER_FILE),
                          tensor_digest=Digest.of(b"tensors"), checkpoint_digest=hash_directory(ck).digest(),
                          log_size=0, log_root=log_root, epsilon_micro=0, manifest_cid=CK_CID)
    return bytes(key)


def test_slsa_statement_with_chain_anchors_and_times(run_dir: Path) -> None:
    ck = run_dir / "checkpoints" / "000"
    reg = connect("tester", use_config=False)
    reg.deploy()
    # Another run (another run id) claims the same weights first: a v2 registry lets it; the export names the
    # claim of the manifest's own run.
    _claim(reg.with_signer(reg.dev_keys()[1]), "cd" * 32, ck, log_root=Digest.of(b"other log"))
    _claim(reg, RUN_ID, ck, log_root=Digest.of(b"log"))
    st = intoto.slsa_statement(ck, registry=reg)
    check_statement(st, "slsa-provenance-v1.schema.json")
    run_details = st["predicate"]["runDetails"]
    assert run_details["builder"]["id"].endswith(reg.signer.address)
    assert run_details["metadata"]["invocationId"] == RUN_ID and "startedOn" in run_details["metadata"]
    names = {b["name"]: b for b in run_details["byproducts"]}
    assert names["step-log"]["digest"]["sha256"] == Digest.of(b"log").value.hex()
    assert names["checkpoint"]["uri"] == f"ipfs://{CK_CID}" and names["run-manifest"]["uri"] == "ipfs://bafy-run"


def test_a_copied_run_id_is_not_taken_for_the_manifests_owner(tmp_path: Path) -> None:
    # A front-runner registers the same run id first and claims the same weights; the v2 manifest names its owner.
    reg = connect("tester", use_config=False)
    reg.deploy()
    owner = reg.signer.address
    manifest = {**MANIFEST, "format": "prov.run.v2", "formats": {}, "owner": owner}
    ck = tmp_path / "run" / "checkpoints" / "000"
    ck.mkdir(parents=True)
    (tmp_path / "run" / "run.json").write_bytes(canonical.encode(manifest))
    (ck / intoto.ADAPTER_FILE).write_bytes(b"adapter weights")
    copier = reg.with_signer(reg.dev_keys()[2])
    _claim(copier, RUN_ID, ck, log_root=Digest.of(b"copied"))
    with pytest.raises(VerificationError, match="no checkpoint of run"):  # only the copier's claim: refused
        intoto.slsa_statement(ck, registry=reg)
    _claim(reg, RUN_ID, ck, log_root=Digest.of(b"log"), manifest=manifest)
    st = intoto.slsa_statement(ck, registry=reg)
    assert st["predicate"]["runDetails"]["builder"]["id"].endswith(owner)
    names = {b["name"]: b for b in st["predicate"]["runDetails"]["byproducts"]}
    assert names["step-log"]["digest"]["sha256"] == Digest.of(b"log").value.hex()


def test_model_signing_manifest_lists_every_file(run_dir: Path) -> None:
    ck = run_dir / "checkpoints" / "000"
    doc = intoto.model_signing_manifest(ck)
    check_statement(doc, "model-signing-v1.schema.json")
    assert [r["name"] for r in doc["predicate"]["resources"]] == ["adapter_model.safetensors",
                                                                   "optimizer.safetensors"]


@pytest.mark.parametrize("mutate", [
    lambda s: s.update(_type="https://in-toto.io/Statement/v0.1"),
    lambda s: s["subject"].clear(),
    lambda s: s["subject"][0]["digest"].update(sha256="NOT-HEX"),
    lambda s: s["predicate"]["buildDefinition"].pop("buildType"),
    lambda s: s["predicate"]["runDetails"]["metadata"].update(startedOn="yesterday"),
    lambda s: s["predicate"]["runDetails"].update(extra=1),
    lambda s: s["predicate"]["runDetails"]["byproducts"].append({}),
])
def test_the_validator_rejects_broken_statements(run_dir: Path, mutate: Any) -> None:
    st = intoto.slsa_statement(run_dir / "checkpoints" / "000")
    st["predicate"]["runDetails"]["metadata"]["startedOn"] = "2026-01-01T00:00:00Z"
    check_statement(st, "slsa-provenance-v1.schema.json")
    mutate(st)
    with pytest.raises((AssertionError, ValueError)):
        check_statement(st, "slsa-provenance-v1.schema.json")


def test_slsa_refuses_a_file_or_manifest_the_chain_does_not_hold(run_dir: Path) -> None:
    """With a chain, the statement speaks for its record: a changed adapter file (no claim of this run holds its
    weights) or a run.json changed after registration is refused, exit 1; --offline builds the trainer's own
    unchecked claim from the local files."""
    ck = run_dir / "checkpoints" / "000"
    reg = connect("tester", use_config=False)
    reg.deploy()
    _claim(reg, RUN_ID, ck, log_root=Digest.of(b"log"))
    assert intoto.slsa_statement(ck, registry=reg)["predicate"]["runDetails"]["builder"]["id"].endswith(
        reg.signer.address)
    names = [b["name"] for b in intoto.slsa_statement(ck, registry=reg)["predicate"]["runDetails"]["byproducts"]]
    assert "checkpoint-manifest" in names  # the local directory is the committed checkpoint
    (ck / "optimizer.safetensors").write_bytes(b"another optimizer state")  # the weights still claimed
    names = [b["name"] for b in intoto.slsa_statement(ck, registry=reg)["predicate"]["runDetails"]["byproducts"]]
    assert "checkpoint-manifest" not in names and "checkpoint" in names  # only the chain's record of it
    (ck / intoto.ADAPTER_FILE).write_bytes(b"tampered weights")
    with pytest.raises(VerificationError) as info:
        intoto.slsa_statement(ck, registry=reg)
    assert info.value.exit_code == 1 and "claims this file's weights" in str(info.value)
    offline = intoto.slsa_statement(ck)["subject"][0]["digest"]["sha256"]
    assert offline == hash_file(ck / intoto.ADAPTER_FILE).value.hex()
    (ck / intoto.ADAPTER_FILE).write_bytes(b"adapter weights")
    changed = {**MANIFEST, "dataset": {**MANIFEST["dataset"], "size": 65}}
    (run_dir / "run.json").write_bytes(canonical.encode(changed))
    with pytest.raises(VerificationError, match="not the one registered on chain"):
        intoto.slsa_statement(ck, registry=reg)
