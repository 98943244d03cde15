"""EU forms a training record can partly fill: the GPAI Code of Practice "Model Documentation Form" items the run
proves (secure hash, dependencies, parameter counts, training compute, the provider threshold against the base
model's compute) and the fields of the Commission's public summary of training content the run can fill. What a
person must still write is marked `to be completed by the provider`.

Built from the publishable verify report, the run manifest it verified (when given) and the shapes in the weights
files (safetensors headers: no tensor is loaded). Training compute is an estimate whose method is stated in the
document (`COMPUTE_METHOD`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from provenance import _report_words as words
from provenance._export.render import md

FORM_FORMAT = "prov.gpai-forms.v1"
PROVIDER = "to be completed by the provider"
THRESHOLD = 1 / 3  # a downstream modifier becomes a GPAI provider above one third of the base model's compute
COMPUTE_METHOD = (
    "C = T x (4 N + 4 N_trainable) floating-point operations, where T is the number of tokens processed "
    "(optimizer steps x expected Poisson batch size x maximum sequence length, so padded positions count: an upper "
    "bound for variable-length data), N the parameters of the base model plus the adapter, and N_trainable the "
    "adapter's parameters. Per token: a forward pass 2N, back-propagation to activations through the frozen model "
    "2N, the adapter's weight gradients 2 N_trainable, and DP-SGD's per-example gradients (Opacus hooks) another "
    "2 N_trainable; the optimizer update, attention's sequence-length term and any evaluation are not counted.")


@dataclass(frozen=True)
class Item:
    """One form field: its value (or PROVIDER) and where it comes from."""

    section: str
    label: str
    value: str
    source: str


def parameter_count(files: list[Path]) -> int:
    """The number of parameters in safetensors files, from their headers' shapes."""
    from provenance.safetensors import read_header

    total = 0
    for f in files:
        for tensor in read_header(f).tensors:
            n = 1
            for dim in tensor.shape:
                n *= dim
            total += n
    return total


def _dig(doc: Any, *keys: str) -> Any:
    for key in keys:
        doc = doc.get(key) if isinstance(doc, dict) else None
    return doc


def compute(*, manifest: dict[str, Any] | None, trainable: int | None, base: int | None,
            dp: bool) -> tuple[int | None, int | None]:
    """(FLOPs, tokens) by COMPUTE_METHOD, or None where an input is missing."""
    training = _dig(manifest, "training") or {}
    steps = training.get("steps")
    batch = _dig(training, "batch", "expected_batch_size") or training.get("expected_batch_size")
    length = _dig(manifest, "dataset", "max_length")
    tokens = None
    try:
        if steps is not None and batch is not None and length is not None:
            tokens = round(float(steps) * float(batch) * float(length))
    except (TypeError, ValueError):
        tokens = None
    if tokens is None or trainable is None or base is None:
        return None, tokens
    n = base + trainable
    return tokens * (4 * n + (4 if dp else 2) * trainable), tokens


def build(report: dict[str, Any], *, manifest: dict[str, Any] | None, trainable: int | None,
          base_params: int | None, base_compute: float | None, subjects: list[dict[str, Any]]) -> dict[str, Any]:
    """The forms as a JSON object: `items` (filled from the run) and `todo` (for a person)."""
    run, dp, subject = report["run"], report["dp"], report["subject"]
    private = dp is not None and dp["mode"] == "dp"
    flops, tokens = compute(manifest=manifest, trainable=trainable, base=base_params, dp=private)
    versions = _dig(manifest, "software", "versions")
    files = ", ".join(f"{s['name']} sha256:{s['digest']['sha256']}" for s in subjects)
    items = [
        Item("Model documentation", "Model authenticity (secure hash)", f"weights {subject['weights_digest']}; "
             f"files: {files}", "the verified file (verify report subject), hashed here"),
        Item("Model documentation", "Provenance record", f"run {run['run_id']} on chain {report['chain']['chain_id']}"
             f", registry {report['chain']['registry']}; {report['level']['text']}", "verify report"),
        Item("Model documentation", "Model dependencies: base model", f"{run['base_model']['name'] or 'unnamed'}, "
             f"digest {run['base_model']['digest']}", "registration on chain, run manifest"),
        Item("Model documentation", "Model dependencies: software",
             ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) if isinstance(versions, dict) else
             "recorded in the run manifest (give it to fill this in)", "run manifest software.versions"),
        Item("Model documentation", "Trainable parameters (adapter)",
             words.num(trainable) if trainable is not None else
             "give the adapter (CHECKPOINT or --model) to count it", "safetensors header of the adapter"),
        Item("Model documentation", "Total parameters (base model + adapter)",
             words.num(base_params + (trainable or 0)) if base_params is not None else
             "give the base model directory (--base-model) to count it", "safetensors headers"),
        Item("Model documentation", "Training compute (FLOPs, estimate)",
             f"{flops:.3e}" if flops is not None else "needs the run manifest and the base model's parameter count",
             "computed: " + COMPUTE_METHOD),
        Item("Model documentation", "Tokens processed (upper bound)", words.num(tokens) if tokens is not None else
             "needs the run manifest", "run manifest training.steps, batch, dataset.max_length"),
        Item("Model documentation", "Share of the base model's training compute", _ratio(flops, base_compute),
             "--base-compute (the base model's provider states it) and the estimate above"),
        Item("Model documentation", "Energy consumption", PROVIDER, "not recorded by a training run"),
        Item("Training content summary", "Modality and size", f"text; {words.num(run['examples'])} training "
             "examples", "run manifest dataset.size (registered dataset commitment)"),
        Item("Training content summary", "Data commitment", f"{run['dataset_root']}: a salted Merkle root; any one "
             "record can be proven included without disclosing others", "registration on chain"),
        Item("Training content summary", "Privacy protection", words.privacy_sentence(dp) if private else
             "trained without differential privacy", "verify report dp"),
    ]
    todo = [Item("Training content summary", label, PROVIDER, "") for label in (
        "Data sources (publicly available datasets, licensed data, scraped data and its crawlers, user data, "
        "synthetic data)", "Top domain names of scraped content", "Measures to respect reservations of rights "
        "(text and data mining opt-outs)", "Removal of illegal content")] + [
        Item("Model documentation", label, PROVIDER, "") for label in (
            "Intended uses and acceptable use policy", "Distribution channels and licence", "Evaluation results",
            "Energy used and how it was measured")]
    return {"format": FORM_FORMAT, "subject": subject["path"], "level": report["level"]["text"],
            "generated_at": report["generated_at"], "compute_method": COMPUTE_METHOD,
            "training_flops": flops, "base_compute": base_compute,
            "provider_threshold": THRESHOLD, "above_threshold": None if flops is None or not base_compute
            else flops / base_compute > THRESHOLD,
            "items": [asdict(i) for i in items], "todo": [asdict(i) for i in todo]}


def _ratio(flops: int | None, base_compute: float | None) -> str:
    if base_compute is None:
        return "give the base model's training compute (--base-compute FLOPS) to compare; " + PROVIDER
    if flops is None:
        return "the estimate above could not be computed"
    share = flops / base_compute
    side = "above" if share > THRESHOLD else "at or below"
    return (f"{share:.3g} of the base model's {base_compute:.3e} FLOPs: {side} one third (a modification above one "
            "third of the original compute makes the modifier a provider of a GPAI model)")


def markdown(doc: dict[str, Any]) -> str:
    lines = ["# EU GPAI model documentation and public training-content summary (prov)", "",
             f"- **Model file:** {md(doc['subject'])}", f"- **Verification:** {md(doc['level'])}",
             f"- **Format:** {doc['format']}", ""]
    for section in ("Model documentation", "Training content summary"):
        lines += [f"## {section}", "", "| Field | Value | Source |", "|---|---|---|"]
        lines += [f"| {md(i['label'])} | {md(i['value'])} | {md(i['source'])} |"
                  for i in doc["items"] + doc["todo"] if i["section"] == section]
        lines.append("")
    lines += ["## Compute method", "", md(doc["compute_method"]), ""]
    return "\n".join(lines)


def as_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
