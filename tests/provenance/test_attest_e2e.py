"""Attestations on a real run: two auditors verify a trained, anchored checkpoint, each signs, their signatures
aggregate into one attestation anchored on chain, and `verify` then lists it (valid, both auditors named)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch", reason="needs a trained run: install the train extra (scripts/setup does)")

from provenance import attest
from provenance._attest.client import AttestationClient
from provenance.report import render_html, render_text
from tests.provenance.test_attest import make_key
from tests.provenance.test_verify import Env, last

pytestmark = pytest.mark.slow


def test_auditors_attest_a_verified_run_and_verify_lists_them(tmp_path: Path, tiny_run: Any) -> None:
    env = Env(tmp_path)
    run = env.copy(tiny_run.run_dir)
    env.anchor(run)
    lead = AttestationClient(env.registry)
    lead.deploy()
    dev = env.registry.dev_keys()
    keys = [make_key("alice", 0xA11CE), make_key("bob", 0xB0B)]
    auditors = [AttestationClient(env.registry.with_signer(dev[i + 1]), lead.address) for i in range(2)]
    for client, key in zip(auditors, keys, strict=True):
        client.register_auditor(key)
    adapter = last(run) / "adapter_model.safetensors"
    parts = []
    for client, key in zip(auditors, keys, strict=True):
        signed, report = attest.attest_checkpoint(adapter, registry=env.registry, store=env.store, key=key,
                                                  auditor=client.transport.signer.address)
        assert report["verdict"] == "verified"
        parts.append(signed)
    combined = attest.aggregate(parts, proven_keys={k.public.key_id for k in keys})
    attest.anchor(lead, combined)

    report = env.verify(adapter, attestations=lead.address)
    assert report["verdict"] == "verified"
    [item] = report["attestations"]
    assert item["valid"] and {s["name"] for s in item["signers"]} == {"alice", "bob"}
    assert "alice" in render_text(report) and "Auditor attestations" in render_html(report)
    # Another checkpoint of the same run carries no attestation.
    earlier = env.verify(run / "checkpoints" / "000001" / "adapter_model.safetensors", attestations=lead.address)
    assert earlier["attestations"] == []
