"""Attestations on a real anvil node: anvil reports reverts in its own JSON-RPC shape, and the typed errors must
still come through (registration without a proof of possession, a forged signature), next to a valid aggregate."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from provenance import attest
from provenance._attest import errors as E
from provenance._attest.client import AttestationClient
from provenance._attest.statement import Statement
from provenance.hashing import Digest
from tests.provenance.test_attest import make_key

pytestmark = pytest.mark.chain


# Only the anvil backend: this test is about anvil's revert format (py-evm is covered by test_attest.py).
@pytest.mark.parametrize("chain_backend", ["anvil"], indirect=True)
def test_register_attest_and_rejections_on_anvil(chain_backend: Any) -> None:
    assert chain_backend.name == "anvil"
    reg = chain_backend.connect()
    reg.deploy()
    run = Digest.of(b"anvil run").value
    d = Digest.of
    reg.register_run(run, manifest_digest=d(b"m"), base_model_digest=d(b"b"), dataset_root=d(b"d"),
                     noise_seed_commitment=d(b"n"), manifest_cid="bafy-run")
    reg.commit_checkpoint(run, index=0, weights_digest=d(b"anvil w"), checkpoint_digest=d(b"c"), log_size=2,
                          log_root=d(b"r"), epsilon_micro=1, manifest_cid="bafy-ck")
    client = AttestationClient(reg)
    client.deploy()
    auditor = AttestationClient(reg.with_signer(chain_backend.keys[1]), client.address)
    key, other = make_key("alice", 0xA11CE), make_key("eve", 0xE7E)
    with pytest.raises(E.InvalidProofOfPossession):
        auditor.register_auditor(key, pop=other.prove_possession(b"\x01" * 32))
    auditor.register_auditor(key)
    st = Statement.for_checkpoint(reg.find_by_weights(d(b"anvil w")), chain_id=reg.chain_id,
                                  registry=str(reg.address), verification=d(b"v"))
    part = attest.sign_statement(st, key, auditor=auditor.transport.signer.address)
    with pytest.raises(E.InvalidSignature):
        attest.anchor(client, dataclasses.replace(part, signature=other.sign(st.message())))
    attest.anchor(client, part)
    [found] = attest.attestations_for(client, d(b"anvil w"))
    assert found["valid"] and found["signers"][0]["name"] == "alice"
