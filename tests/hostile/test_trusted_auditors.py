"""Auditor names are whatever the submitter wrote (#22): on a real anvil node a stranger registers a key named
"EU AI Office (accredited)" and attests an honest run with the real verifier; the text report shows every name as
self-declared and lists it apart as untrusted, and with `--trust-auditors` naming the honest auditor only, that
auditor's attestation alone is shown as trusted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch", reason="needs a trained run: install the train extra (scripts/setup does)")

from provenance import attest, keys
from provenance._attest.client import AttestationClient
from provenance.chain import connect
from provenance.report import render_html, render_text
from provenance.store import open_store
from provenance.verify import VerifyOptions, verify
from tests.fixtures.attest import anchor_run, make_key

pytestmark = [pytest.mark.chain, pytest.mark.slow]

IMPOSTOR = "EU AI Office (accredited)"


def _section(text: str) -> str:
    """The text report's attestation section (up to the blank line that ends it)."""
    start = text.index("Auditor attestations")
    end = text.find("\n\n", start)
    return text[start:] if end < 0 else text[start:end]


def test_a_strangers_accredited_name_is_self_declared_and_untrusted(anvil_node: Any, tmp_path: Path,
                                                                    tiny_run: Any) -> None:
    from tests.fixtures.chain import _anvil_dev_keys

    dev = _anvil_dev_keys()
    run = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run)
    registry = connect(anvil_node.rpc_url, key=dev[0], use_config=False)
    registry.deploy()
    store = open_store(f"local:{tmp_path / 'store'}")
    anchor_run(run, registry=registry, store=store)
    lead = AttestationClient(registry)
    lead.deploy()
    honest_key, stranger_key = make_key("alice", 0xA11CE), make_key(IMPOSTOR, 0xBAD)
    honest, stranger = (AttestationClient(registry.with_signer(dev[i]), lead.address) for i in (1, 2))
    honest.register_auditor(honest_key)
    stranger.register_auditor(stranger_key)
    adapter = sorted((run / "checkpoints").iterdir())[-1] / "adapter_model.safetensors"
    for client, key in ((honest, honest_key), (stranger, stranger_key)):
        part, report = attest.attest_checkpoint(adapter, attestations=client, store=store, key=key)
        assert report.verdict == "verified"
        attest.anchor(client, attest.aggregate([part], registered=keys.registered_keys(client, [client.sender])))

    # No trust list: both attestations are valid signatures, but neither name is vouched for.
    plain = verify(adapter, registry=registry, store=store,
                   options=VerifyOptions(attestations=lead.address)).to_json()
    assert plain["verdict"] == "verified"
    assert [a["trusted"] for a in plain["attestations"]] == [False, False]
    assert all(a["names"] == "self-declared" for a in plain["attestations"])
    section = _section(render_text(plain))
    assert "self-declared" in section and "Trusted (" not in section
    assert f'"{IMPOSTOR}" (self-declared' in section and "Not on a trust list" in section

    # The honest auditor's address on the list: only that attestation is trusted, the impostor stays apart.
    trust = tmp_path / "trusted.json"
    trust.write_text(json.dumps([honest.sender]))
    listed = verify(adapter, registry=registry, store=store,
                    options=VerifyOptions(attestations=lead.address, trust_auditors=trust)).to_json()
    by_name = {a["signers"][0]["name"]: a["trusted"] for a in listed["attestations"]}
    assert by_name == {"alice": True, IMPOSTOR: False}
    section = _section(render_text(listed))
    trusted_part, _, untrusted_part = section.partition("Not on a trust list")
    assert "Trusted (" in trusted_part and '"alice"' in trusted_part and IMPOSTOR not in trusted_part
    assert IMPOSTOR in untrusted_part and '"alice"' not in untrusted_part
    html = render_html(listed)
    assert "trusted: on your --trust-auditors list" in html and "names self-declared, not trusted" in html
