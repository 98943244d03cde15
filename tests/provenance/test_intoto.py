"""`prov export in-toto`: the in-toto Statement v1 / SLSA Provenance v1 and the model-signing manifest of a
checkpoint, validated against JSON Schemas written by hand from the published specs (tests/provenance/intoto/).

`jsonschema` is not a dependency, so `validate` below implements the subset of JSON Schema those files use (type,
const, enum, required, properties, patternProperties, additionalProperties, items, minItems, minProperties,
minLength, pattern, date-time, local and cross-file $ref); a test checks it rejects what it must.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from pathlib import Path
from typing import Any

import pytest

from provenance import canonical
from provenance._attest import intoto
from provenance.chain import connect
from provenance.hashing import Digest, hash_file
from provenance.manifest import hash_directory

SCHEMAS = Path(__file__).parent / "intoto"
_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "integer": int}


def _resolve(ref: str, here: str) -> tuple[dict[str, Any], str]:
    file, _, pointer = ref.partition("#")
    file = file or here
    node = json.loads((SCHEMAS / file).read_text())
    for part in filter(None, pointer.split("/")):
        node = node[part]
    return node, file


def validate(value: Any, schema: dict[str, Any], where: str = "$", here: str = "") -> None:
    """Raise AssertionError naming the first place where `value` breaks `schema`."""
    if "$ref" in schema:
        target, file = _resolve(schema["$ref"], here)
        return validate(value, target, where, file)
    if "type" in schema:
        assert isinstance(value, _TYPES[schema["type"]]) and not (schema["type"] != "boolean"
                                                                  and isinstance(value, bool)), f"{where}: type"
    if "const" in schema:
        assert value == schema["const"], f"{where}: expected {schema['const']!r}"
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: not one of {schema['enum']}"
    if isinstance(value, str):
        assert len(value) >= schema.get("minLength", 0), f"{where}: too short"
        if "pattern" in schema:
            assert re.search(schema["pattern"], value), f"{where}: does not match {schema['pattern']}"
        if schema.get("format") == "date-time":
            _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            assert value.endswith("Z") or "+" in value, f"{where}: no time zone"
    if isinstance(value, list):
        assert len(value) >= schema.get("minItems", 0), f"{where}: too few items"
        for i, item in enumerate(value):
            if "items" in schema:
                validate(item, schema["items"], f"{where}[{i}]", here)
    if isinstance(value, dict):
        assert len(value) >= schema.get("minProperties", 0), f"{where}: too few properties"
        for key in schema.get("required", []):
            assert key in value, f"{where}: missing {key}"
        for key, item in value.items():
            if key in schema.get("properties", {}):
                validate(item, schema["properties"][key], f"{where}.{key}", here)
                continue
            patterns = [s for p, s in schema.get("patternProperties", {}).items() if re.search(p, key)]
            for sub in patterns:
                validate(item, sub, f"{where}.{key}", here)
            extra = schema.get("additionalProperties", True)
            if not patterns and extra is False:
                raise AssertionError(f"{where}: unexpected property {key}")
            if not patterns and isinstance(extra, dict):
                validate(item, extra, f"{where}.{key}", here)
    return None


def check_statement(statement: dict[str, Any], predicate_schema: str) -> None:
    validate(statement, _resolve("", "statement-v1.schema.json")[0], here="statement-v1.schema.json")
    validate(statement["predicate"], _resolve("", predicate_schema)[0], "$.predicate", predicate_schema)


RUN_ID = "ab" * 32
MANIFEST: dict[str, Any] = {
    "format": "prov.run.v1", "run_id": RUN_ID,
    "base_model": {"name": "tiny-llama", "digest": str(Digest.of(b"base"))},
    "dataset": {"root": str(Digest.of(b"dataset")), "size": 64},
    "secrets": {"noise_seed_commitment": str(Digest.of(b"noise"))},
    "training": {"steps": 6, "learning_rate": "0.001", "batch_size": 16,
                 "dp": {"mode": "dp-sgd", "noise_multiplier": "1.1", "max_grad_norm": "1.0", "delta": "1e-05"}},
    "lora": {"r": 4, "alpha": 8}, "software": {"prov": "0.1.0", "torch": "2.13.0"},
    "determinism": {"threads": 1},
}


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


def test_slsa_statement_with_chain_anchors_and_times(run_dir: Path) -> None:
    ck = run_dir / "checkpoints" / "000"
    reg = connect("tester", use_config=False)
    reg.deploy()
    reg.register_run(RUN_ID, manifest_digest=Digest.of(canonical.encode(MANIFEST)),
                     base_model_digest=Digest.of(b"base"), dataset_root=Digest.of(b"dataset"),
                     noise_seed_commitment=Digest.of(b"noise"), manifest_cid="bafy-run")
    reg.commit_checkpoint(RUN_ID, index=0, weights_digest=hash_file(ck / intoto.ADAPTER_FILE),
                          checkpoint_digest=hash_directory(ck).digest(), log_size=6,
                          log_root=Digest.of(b"log"), epsilon_micro=1_500_000, manifest_cid="bafy-ck")
    st = intoto.slsa_statement(ck, registry=reg)
    check_statement(st, "slsa-provenance-v1.schema.json")
    run_details = st["predicate"]["runDetails"]
    assert run_details["builder"]["id"].endswith(reg.signer.address)
    assert run_details["metadata"]["invocationId"] == RUN_ID and "startedOn" in run_details["metadata"]
    names = {b["name"]: b for b in run_details["byproducts"]}
    assert names["step-log"]["digest"]["sha256"] == Digest.of(b"log").value.hex()
    assert names["checkpoint"]["uri"] == "ipfs://bafy-ck" and names["run-manifest"]["uri"] == "ipfs://bafy-run"


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
