"""Attestations on real nodes (anvil and a Hardhat node): each reports reverts in its own JSON-RPC shape, and the
typed errors must still come through with their values (registration without a proof of possession, a forged
signature, a replayed attestation), next to a valid attestation that the reader lists as valid. And the key and
attest commands as a user runs them against anvil."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path
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


def _prov(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from provenance.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_key_life_and_attest_refusal_on_anvil(anvil_node: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`prov keys new/register/rotate/revoke` and `prov attest` against a real node, as a user runs them."""
    from tests.fixtures.chain import _anvil_dev_keys

    dev = _anvil_dev_keys()
    env = AttestEnv(anvil_node.rpc_url, keys=dev)
    monkeypatch.setenv("PROV_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(keys.ENV_PASSWORD, "correct horse")
    monkeypatch.setenv("PROV_PRIVATE_KEY", "0x" + dev[0].hex())  # the deployer's account: no BLS key yet
    where = ["--rpc", anvil_node.rpc_url, "--registry", str(env.chain.address),
             "--attestations", str(env.client.address)]
    assert _prov(capsys, "keys", "new", "carol")[0] == 0
    first = keys.show_key("carol").key_id
    code, out, err = _prov(capsys, "keys", "register", "carol", *where)
    assert code == 0 and first in out, err

    # A file that was never anchored: the verifier does not say "verified", so nothing is signed (exit 1).
    adapter = tmp_path / "adapter_model.safetensors"
    header = b'{"__metadata__":{}}'
    adapter.write_bytes(struct.pack("<Q", len(header)) + header)
    code, out, err = _prov(capsys, "attest", str(adapter), "--key", "carol", "--store", f"local:{tmp_path / 's'}",
                           *where)
    assert code == 1 and err.startswith("prov: error: refusing to attest: verification says") and out == ""

    code, out, err = _prov(capsys, "keys", "rotate", "carol", *where)
    second = keys.show_key("carol").key_id
    assert code == 0 and second != first and f"from {first} to {second}" in out, err
    assert (tmp_path / "home" / "keys" / f"carol.{first[2:10]}.json").exists()
    current = env.client.current_key(env.client.sender)
    assert current is not None and current.key_id == second
    old = env.client.key(first)
    assert old is not None and old.retired_block > 0

    assert _prov(capsys, "keys", "revoke", first, *where)[0] == 0  # a retired key, by its id
    code, out, err = _prov(capsys, "keys", "revoke", "carol", *where)
    assert code == 0 and second in out, err
    code, _, err = _prov(capsys, "keys", "revoke", "carol", *where)
    assert code == 1 and "already revoked" in err and len(err.strip().splitlines()) == 1
    # The revoked key signs nothing: refused before the verifier even runs.
    code, _, err = _prov(capsys, "attest", str(adapter), "--key", "carol", *where)
    assert code == 1 and "revoked" in err
