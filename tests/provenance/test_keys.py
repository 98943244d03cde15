"""Signing keys: the public test mnemonic's accounts sign only on a local development chain
(provenance/_chain/keys.py). A key the whole world knows proves nothing on a public network and anyone can spend
from it, so it is refused unless the chain id is a development id (31337, 1337) and the node answers as a
development node (or it is the in-process py-evm chain)."""

from __future__ import annotations

from typing import Any

import pytest

from provenance._chain import keys
from provenance._chain.errors import SignerError

OWN_KEY = "0x" + "5a" * 32  # not derived from the test mnemonic


class Node:
    """A stand-in node that answers web3_clientVersion."""

    def __init__(self, version: str | None) -> None:
        self.version = version

    @property
    def client_version(self) -> str:
        if self.version is None:
            raise ConnectionError("no answer")
        return self.version


def test_the_well_known_accounts_are_those_anvil_and_hardhat_fund() -> None:
    # anvil's and Hardhat's printed account list, derived from "test test ... junk" at m/44'/60'/0'/0/i
    assert keys.dev_account_index("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266") == 0
    assert keys.dev_account_index("0x70997970c51812dc3a010c7d01b50e0d17dc79c8") == 1
    assert keys.dev_account_index(keys.dev_signer(19).address) == 19
    assert keys.dev_account_index(keys.from_private_key(OWN_KEY, source="t").address) is None


@pytest.mark.parametrize(("chain_id", "version"), [
    (10, "anvil/v1.7.1"),  # anvil --chain-id 10: a dev node pretending to be OP mainnet
    (1, "HardhatNetwork/2.29.1/@ethereumjs/vm/5.9.3"),
    (31337, "Geth/v1.14.0-stable/linux-amd64/go1.22"),  # a dev id on a node that is not a dev node
    (31337, None),  # a node that does not answer: never taken for a dev node
    (8453, None),
])
def test_a_dev_key_is_refused_off_a_local_dev_chain(chain_id: int, version: str | None) -> None:
    with pytest.raises(SignerError, match="public test mnemonic") as info:
        keys.check_chain(keys.dev_signer(0), chain_id=chain_id, web3=Node(version))
    assert "use your own key" in str(info.value) and str(chain_id) in str(info.value)
    assert "0x" + "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"[:10] not in str(info.value)


@pytest.mark.parametrize(("chain_id", "version"), [
    (31337, "anvil/v1.7.1"), (31337, "HardhatNetwork/2.29.1"), (1337, "Ganache/v7.9.2/EthereumJS TestRPC/v7.9.2"),
    (131277322940537, "EthereumTester/0.14.0b1/linux/python3.11.7"),
])
def test_a_dev_key_is_accepted_on_a_local_dev_chain(chain_id: int, version: str) -> None:
    signer = keys.dev_signer(2)
    assert keys.check_chain(signer, chain_id=chain_id, web3=Node(version)) is signer


def test_an_own_key_is_accepted_on_any_chain() -> None:
    signer = keys.from_private_key(OWN_KEY, source="$PROV_PRIVATE_KEY")
    assert keys.check_chain(signer, chain_id=10, web3=Node("Geth/v1.14.0")) is signer


def test_resolve_checks_the_resolved_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(keys.ENV_KEY, bytes(keys.dev_signer(1).account.key).hex())
    with pytest.raises(SignerError, match="account 1 of the public test mnemonic"):
        keys.resolve(None, chain_id=10, web3=Node("anvil/v1.7.1"))
    monkeypatch.delenv(keys.ENV_KEY)
    with pytest.raises(SignerError, match="no signing key"):  # no dev fallback off chain 31337
        keys.resolve(None, chain_id=10, web3=Node("anvil/v1.7.1"))
    assert keys.resolve(None, chain_id=31337, web3=Node("anvil/v1.7.1")).address == keys.dev_signer(0).address


@pytest.mark.chain
def test_anvil_with_a_public_chain_id_refuses_the_dev_key(tmp_path: Any) -> None:
    """A real anvil started with --chain-id 10: deploying with its funded dev account is refused before anything
    is signed, and `prov chain deploy` says so in one line."""
    import os
    import subprocess
    import sys

    from provenance._chain import anvil
    from provenance.chain import connect

    binary = anvil.find_anvil()
    if binary is None:
        pytest.skip("anvil is not installed (npm ci)")
    node = anvil.start(binary=binary, port=0, chain_id=10)
    try:
        registry = connect(node.rpc_url, key=bytes(keys.dev_signer(0).account.key), use_config=False)
        assert registry.chain_id == 10
        with pytest.raises(SignerError, match="refused on chain id 10"):
            registry.deploy()
        assert int(registry.web3.eth.block_number) == 0  # nothing was sent
        dev_key = bytes(keys.dev_signer(0).account.key).hex()
        done = subprocess.run([sys.executable, "-m", "provenance", "chain", "deploy", "--rpc", node.rpc_url],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path,
                              env={**os.environ, "PROV_HOME": str(tmp_path / ".prov"), keys.ENV_KEY: dev_key})
        assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
        assert "public test mnemonic" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    finally:
        node.stop()
