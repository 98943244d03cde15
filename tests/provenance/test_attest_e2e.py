"""Attestations on a real run: the project's trainer trains a tiny DP run, the outbox anchors it on a ProvenanceRegistry
v2, and two auditors verify and attest its last checkpoint with the real verifier. Each signs the level their own
verification reached (alice: the commitments; bob, with the base model, data and secrets: every segment replayed);
bob co-signs alice's statement (his level covers hers) but alice cannot co-sign bob's; the aggregate and bob's own
attestation anchor, and the verifier then lists both, valid, with their levels."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch", reason="needs a trained run: install the train extra (scripts/setup does)")

from provenance import attest, attestations, keys
from provenance._attest import errors as E
from provenance._attest.client import AttestationClient
from provenance.chain import connect
from provenance.report import render_html, render_text
from provenance.store import open_store
from provenance.verify import VerifyOptions, verify
from tests.fixtures.attest import anchor_run, make_key

pytestmark = pytest.mark.slow


def test_auditors_attest_a_verified_run_at_their_levels(tmp_path: Path, tiny_run: Any,
                                                        tiny_model_dir: Path) -> None:
    from training.runinfo import read_local

    run = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run)
    registry = connect("tester", use_config=False)
    registry.deploy()
    store = open_store(f"local:{tmp_path / 'store'}")
    anchor_run(run, registry=registry, store=store)
    lead = AttestationClient(registry)
    lead.deploy()
    dev = registry.dev_keys()
    alice_key, bob_key = make_key("alice", 0xA11CE), make_key("bob", 0xB0B)
    alice, bob = (AttestationClient(registry.with_signer(dev[i]), lead.address) for i in (1, 2))
    alice.register_auditor(alice_key)
    bob.register_auditor(bob_key)
    adapter = sorted((run / "checkpoints").iterdir())[-1] / "adapter_model.safetensors"

    mine, report = attest.attest_checkpoint(adapter, attestations=alice, store=store, key=alice_key)
    assert report.verdict == "verified" and mine.statement.level == "commitments"
    _, data, _ = read_local(run)
    full = VerifyOptions(base_model=tiny_model_dir, data=data, secrets=run / "secrets.json", replay="all")
    own, report_b = attest.attest_checkpoint(adapter, attestations=bob, store=store, key=bob_key, options=full)
    assert report_b.verdict == "verified" and own.statement.level.startswith("full:"), report_b.level
    with pytest.raises(E.LevelNotReached):  # alice's verification did not replay what bob's statement claims
        attest.attest_checkpoint(adapter, attestations=alice, store=store, key=alice_key,
                                 cosign=attest.current_statement(own.statement))
    done = attest.attest_and_anchor(adapter, attestations=bob, store=store, key=bob_key, options=full,
                                    others=[mine], cosign=mine, anchor_it=True)
    assert done.tx is not None and done.statement.level == "commitments" and len(done.attestation.signers) == 2
    attest.anchor(lead, attest.aggregate([own], registered=keys.registered_keys(lead, [bob.sender])))

    result = verify(adapter, registry=registry, store=store, options=VerifyOptions(attestations=lead.address))
    assert result.verdict == "verified"
    items = result.to_json()["attestations"]
    assert [(i["status"], i["level"]) for i in items] == [("valid", "commitments"), ("valid", own.statement.level)]
    assert {s["name"] for s in items[0]["signers"]} == {"alice", "bob"}
    assert "alice" in render_text(result.to_json()) and "Auditor attestations" in render_html(result.to_json())
    # Another checkpoint of the same run carries no attestation.
    earlier = sorted((run / "checkpoints").iterdir())[1] / "adapter_model.safetensors"
    assert attestations.attestations_for(
        lead, record=registry.run(bytes.fromhex(items[0]["run_key"])).checkpoints[1],
        run_key=bytes.fromhex(items[0]["run_key"])) == []
    assert earlier.exists()
