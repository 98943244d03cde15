"""Attestations on real nodes (anvil and a Hardhat node): each reports reverts in its own JSON-RPC shape, and the
typed errors must still come through with their values (registration without a proof of possession, a forged
signature, a replayed attestation), next to a valid attestation that the reader lists as valid."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from provenance import attest, attestations, keys
from provenance._attest import errors as E
from tests.fixtures.attest import AttestEnv, make_key

pytestmark = pytest.mark.chain


# Only the node backends: this test is about their revert formats (py-evm is covered by test_attest.py).
@pytest.mark.parametrize("chain_backend", ["anvil", "hardhat"], indirect=True)
def test_register_attest_and_rejections_on_a_node(chain_backend: Any) -> None:
    assert chain_backend.name in ("anvil", "hardhat")
    env = AttestEnv(chain_backend.rpc_url, keys=chain_backend.keys)
    eve = make_key("eve", 0xE7E)
    with pytest.raises(E.InvalidProofOfPossession) as info:  # the deployer's account has no key yet
        env.client.register_auditor(eve, pop=env.keys[0].prove_possession(b"\x01" * 32))
    assert info.value.values["auditor"] == env.client.sender
    st = env.statement()
    part = attest.sign_statement(st, env.keys[0], auditor=env.addresses[0])
    with pytest.raises(E.InvalidSignature) as forged:
        attest.anchor(env.client, dataclasses.replace(part, signature=eve.sign(st.message())))
    assert forged.value.values["message"] == st.message()
    registered = keys.registered_keys(env.client, [env.addresses[0]])
    attest.anchor(env.client, attest.aggregate([part], registered=registered))
    with pytest.raises(E.AlreadyAttested) as replay:
        attest.anchor(env.client, part)
    assert replay.value.values["signer"] == env.addresses[0]
    [found] = attestations.attestations_for(env.client, record=env.record(), run_key=env.run_key)
    assert found.valid and found.signers[0].name == "alice" and found.level == st.level
