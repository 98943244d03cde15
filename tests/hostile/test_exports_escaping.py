"""Trainer-supplied text in the compliance exports (#22): the run manifest's names, optimizer and module lists, and
the report's own strings reach an Annex IV form, the GPAI forms, a CycloneDX BOM and a model card with every
control and bidi character shown as an escape, so no regulator's copy can be reordered (Trojan Source) or carry
terminal sequences."""

from __future__ import annotations

import json
from typing import Any

import pytest

from provenance import canonical, exports
from provenance.hashing import Digest
from tests.fixtures.report import sample_report

HOSTILE = "Qwen\u202e(accredited)\x1b[2J\u2066x\u2069\x85\u200f"
UNSAFE = "\u202e\x1b\u2066\u2069\x85\u200f"


def _manifest(report: dict[str, Any]) -> dict[str, Any]:
    """A run manifest with hostile text in every free-text field the exports show; the report names its digest."""
    document: dict[str, Any] = {
        "format": "prov.run.v1", "run_id": report["run"]["run_id"],
        "base_model": {"digest": report["run"]["base_model"]["digest"], "name": HOSTILE},
        "dataset": {"root": report["run"]["dataset_root"], "size": 1600, "max_length": 128, "kind": HOSTILE},
        "secrets": {"noise_seed_commitment": "sha256:" + "1" * 64, "dataset_key_commitment": "sha256:" + "2" * 64},
        "software": {"versions": {"torch": "2.13.0", "peft": HOSTILE, "prov": "0.2.0"}},
        "determinism": {"profile": "portable", "cpu_capability": "avx2", "threads": 2, "device": HOSTILE,
                        "dtype": "float32", "machine": HOSTILE},
        "training": {"steps": 248, "checkpoint_every": 8, "world_size": 1, "loss": HOSTILE,
                     "batch": {"expected_batch_size": 80},
                     "lora": {"r": 8, "alpha": 16, "dropout": "0.05", "target_modules": [HOSTILE, "v_proj"]},
                     "optimizer": {"name": HOSTILE, "lr": "0.0002", "weight_decay": "0.0"},
                     "schedule": {"name": HOSTILE, "warmup_steps": 0},
                     "dp": {"mode": "dp", "noise_multiplier": "1.1"}},
    }
    report["run"]["manifest_digest"] = str(Digest.of(canonical.encode(document)))
    return document


def _report() -> dict[str, Any]:
    report = sample_report()
    report["run"]["base_model"]["name"] = HOSTILE
    report["subject"]["path"] = f"adapter{HOSTILE}.safetensors"
    return report


def _clean(text: str, what: str) -> None:
    found = sorted({repr(ch) for ch in text if ch in UNSAFE})
    assert not found, f"{what} carries {found}"


@pytest.mark.parametrize("fmt", ["md", "html", "json"])
def test_annex_iv_escapes_the_manifests_text(fmt: str) -> None:
    report = _report()
    doc = exports.annex_iv(report, manifest=_manifest(report))
    text = exports.render_annex_iv(doc, fmt)
    _clean(text, f"Annex IV ({fmt})")
    assert "\\u202e" in text or "\\\\u202e" in text  # shown, not dropped: a reader sees something was there


@pytest.mark.parametrize("fmt", ["md", "json"])
def test_gpai_forms_escape_the_manifests_text(fmt: str) -> None:
    report = _report()
    text = exports.render_gpai(exports.gpai_forms(report, manifest=_manifest(report)), fmt)
    _clean(text, f"GPAI forms ({fmt})")


def test_cyclonedx_bom_escapes_the_manifests_text() -> None:
    report = _report()
    bom = exports.cyclonedx_bom(report, manifest=_manifest(report))
    _clean(json.dumps(bom, ensure_ascii=False), "CycloneDX BOM")
    assert "\\u202e" in json.dumps(bom, ensure_ascii=False)


def test_model_card_escapes_the_reports_text() -> None:
    _clean(exports.model_card(_report()), "model card")


def test_markdown_cell_escapes_controls_before_markdown() -> None:
    from provenance._export.render import md

    assert md("a\u202eb|c") == "a\\\\u202eb\\|c"  # the escape's backslash is itself escaped for Markdown
