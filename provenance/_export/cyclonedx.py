"""A CycloneDX 1.6 ML-BOM of a verified model, built with cyclonedx-python-lib from the publishable verify report
(and the run manifest it verified, when given): the model component with its file hashes, the base model as a
dependency, the dataset as a `data` component (its salted commitment, size and kind), the modelCard's training
parameters, and prov's DP statement and on-chain anchors as `prov:` properties (docs/compliance.md).

cyclonedx-python-lib 11 does not model `modelCard` nor a component's `data`; both are added to the JSON the library
writes, and the whole document is checked with the library's own strict JSON-schema validator before it is returned.
"""

from __future__ import annotations

import datetime as _dt
import json
import uuid
from typing import Any

from provenance import _report_words as words
from provenance.errors import ProvenanceError, UsageError

SPEC = "1.6"
_NS = uuid.UUID("6f1d5c1e-4a0b-5c55-9a4c-70726f762e64")  # fixed namespace: the same report gives the same serial


def _lib() -> Any:
    try:
        from cyclonedx import model
        from cyclonedx.model import bom, component
        from cyclonedx.output.json import JsonV1Dot6
    except ModuleNotFoundError:
        raise UsageError("the CycloneDX export needs cyclonedx-python-lib: install prov's compliance extra "
                         "(pip install 'prov[compliance]')") from None
    return model, bom, component, JsonV1Dot6


def _props(model: Any, pairs: dict[str, Any]) -> list[Any]:
    return [model.Property(name=k, value=v if isinstance(v, str) else json.dumps(v, sort_keys=True))
            for k, v in pairs.items() if v is not None]


def _training(report: dict[str, Any], manifest: dict[str, Any] | None) -> dict[str, Any]:
    """Training parameters: the committed manifest's when given, else what the report carries."""
    dp = report["dp"] or {}
    out: dict[str, Any] = {"prov:training.method": "LoRA fine-tuning" + (" with DP-SGD" if dp.get("mode") == "dp"
                                                                          else ""),
                           "prov:training.steps": dp.get("steps")}
    training = (manifest or {}).get("training")
    if isinstance(training, dict):
        for key in ("steps", "checkpoint_every", "world_size", "loss", "lora", "optimizer", "schedule", "batch"):
            if training.get(key) is not None:
                out[f"prov:training.{key}"] = training[key]
    return out


def _dp_props(report: dict[str, Any]) -> dict[str, Any]:
    dp = report["dp"]
    if dp is None or dp["mode"] != "dp":
        return {"prov:dp.mode": "non-private", "prov:dp.statement": "trained without differential privacy"}
    eps = dp["epsilon_recomputed"] if dp["epsilon_recomputed"] is not None else dp["epsilon_committed"]
    return {"prov:dp.mode": "dp", "prov:dp.epsilon": words.num(eps), "prov:dp.delta": words.num(dp["delta"]),
            "prov:dp.accountant": dp["accountant"], "prov:dp.noise_multiplier": words.num(dp["noise_multiplier"]),
            "prov:dp.max_grad_norm": words.num(dp["max_grad_norm"]),
            "prov:dp.sample_rate": words.num(dp["sample_rate"]),
            "prov:dp.steps": dp["steps"], "prov:dp.statement": words.privacy_sentence(dp)}


def _anchor_props(report: dict[str, Any]) -> dict[str, Any]:
    chain, run = report["chain"], report["run"]
    subject = next((c for c in report["lineage"] if c["is_subject"]), None)
    out = {"prov:verdict": report["level"]["text"], "prov:verified_at": report["generated_at"],
           "prov:chain.id": chain["chain_id"], "prov:chain.genesis": chain["genesis_hash"],
           "prov:chain.registry": chain["registry"], "prov:chain.dev": chain["dev_chain"],
           "prov:run.id": run["run_id"], "prov:run.key": run["run_key"], "prov:run.owner": run["owner"],
           "prov:run.register_tx": run["register_tx"], "prov:run.manifest_cid": run["manifest_cid"],
           "prov:run.manifest_digest": run["manifest_digest"],
           "prov:run.finalized_tx": (run["finalized"] or {}).get("tx")}
    signature = report.get("signature")
    if isinstance(signature, dict):  # the OpenSSF model signature the verifier found beside the model
        out |= {"prov:signature.file": signature.get("file"), "prov:signature.key_id": signature.get("key_id"),
                "prov:signature.valid": signature.get("valid"), "prov:signature.covers": signature.get("covers")}
    if subject is not None:
        out |= {"prov:checkpoint.index": subject["index"], "prov:checkpoint.tx": subject["tx"],
                "prov:checkpoint.block": subject["block"], "prov:checkpoint.digest": subject["checkpoint_digest"],
                "prov:checkpoint.cid": subject["manifest_cid"], "prov:step_log.root": subject["log_root"],
                "prov:step_log.size": subject["log_size"]}
    return out


def bom(report: dict[str, Any], *, subjects: list[dict[str, Any]], manifest: dict[str, Any] | None = None
        ) -> dict[str, Any]:
    """The ML-BOM (a JSON object) of a verified report; `subjects` are the model's files (name, sha256)."""
    model, bom_mod, comp, writer = _lib()
    run, subject = report["run"], report["subject"]
    sha = model.HashAlgorithm.SHA_256
    kind = "merged model" if subject["kind"] == "merged" else "LoRA adapter"
    main = comp.Component(
        name=subject["path"], type=comp.ComponentType.MACHINE_LEARNING_MODEL, bom_ref="model",
        description=f"{kind} trained with prov; {report['level']['text']}",
        hashes=[model.HashType(alg=sha, content=subject["weights_digest"].removeprefix("sha256:"))],
        properties=_props(model, _anchor_props(report) | _dp_props(report) | {
            "prov:weights_digest": subject["weights_digest"], "prov:tensor_digest": subject["tensor_digest"]}))
    files = [comp.Component(name=s["name"], type=comp.ComponentType.FILE, bom_ref=f"file:{s['name']}",
                            hashes=[model.HashType(alg=sha, content=s["digest"]["sha256"])]) for s in subjects]
    base = comp.Component(
        name=run["base_model"]["name"] or "base model", type=comp.ComponentType.MACHINE_LEARNING_MODEL,
        bom_ref="base-model", description="pre-trained base model, identified by its committed digest over "
                                          "weights, configuration and tokenizer (the name is the trainer's label)",
        hashes=[model.HashType(alg=sha, content=run["base_model"]["digest"].removeprefix("sha256:"))],
        properties=_props(model, {"prov:base_model.digest": run["base_model"]["digest"]}))
    dataset_info = (manifest or {}).get("dataset") or {}
    data = comp.Component(
        name="training data", type=comp.ComponentType.DATA, bom_ref="dataset",
        description="committed by a salted RFC 6962 Merkle root (records are not disclosed)",
        properties=_props(model, {"prov:dataset.root": run["dataset_root"], "prov:dataset.size": run["examples"],
                                  "prov:dataset.kind": dataset_info.get("kind"),
                                  "prov:dataset.commitment": "RFC 6962 root over HMAC-salted per-example leaves"}))
    doc = bom_mod.Bom(serial_number=uuid.uuid5(_NS, json.dumps(report, sort_keys=True)),
                      metadata=bom_mod.BomMetaData(timestamp=_dt.datetime.fromisoformat(
                          report["generated_at"].replace("Z", "+00:00")), component=main))
    for c in (base, data, *files):
        doc.components.add(c)
    doc.register_dependency(main, [base, data, *files])
    out = json.loads(writer(doc).output_as_string())
    out["metadata"]["component"]["modelCard"] = _model_card(report, manifest)
    for c in out["components"]:
        if c.get("bom-ref") == "dataset":
            c["data"] = [{"type": "dataset", "name": "training data",
                          "contents": {"properties": [{"name": "prov:dataset.root", "value": run["dataset_root"]}]},
                          "classification": "private (committed, not disclosed)",
                          "description": f"{words.num(run['examples'])} examples"}]
    validate(out)
    return dict(out)


def _model_card(report: dict[str, Any], manifest: dict[str, Any] | None) -> dict[str, Any]:
    params: dict[str, Any] = {"approach": {"type": "supervised"}, "task": "text-generation",
                              "architectureFamily": "transformer (causal language model) with a LoRA adapter",
                              "datasets": [{"ref": "dataset"}]}
    props = _training(report, manifest) | _dp_props(report)
    card: dict[str, Any] = {"modelParameters": params,
                            "properties": [{"name": k, "value": v if isinstance(v, str) else
                                            json.dumps(v, sort_keys=True)} for k, v in props.items()
                                           if v is not None]}
    return card


def validate(document: dict[str, Any]) -> None:
    """The library's strict CycloneDX 1.6 JSON-schema validation; a ProvenanceError if the BOM does not conform."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(document))
    if error is not None:
        raise ProvenanceError(f"the CycloneDX BOM does not validate: {str(error).splitlines()[0]}")
