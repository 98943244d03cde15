"""Chain identity (provenance._chain.identity): public chains known by id and genesis hash, development nodes
recognised by what they answer whatever id they claim, and the verifier's `chain` check built on both."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from provenance._chain import anvil
from provenance._chain.identity import PUBLIC_CHAINS, identify
from provenance._chain.reader import ChainInfo

MAINNET_GENESIS = "0xd4e56740f876aef8c010b86a40d5f56745a118d0906a34e69aec8c0db1cb8fa3"


class FakeProvider:
    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers

    def make_request(self, method: str, params: list[Any]) -> dict[str, Any]:
        if method not in self.answers:
            return {"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "the method does not exist"}}
        answer = self.answers[method]
        if isinstance(answer, Exception):
            raise answer
        return {"jsonrpc": "2.0", "id": 1, "result": answer}


class FakeWeb3:
    def __init__(self, answers: dict[str, Any]) -> None:
        self.provider = FakeProvider(answers)


def test_table_holds_well_formed_unique_genesis_hashes() -> None:
    hashes = [genesis for _, genesis in PUBLIC_CHAINS.values()]
    assert all(re.fullmatch(r"0x[0-9a-f]{64}", h) for h in hashes)
    assert len(set(hashes)) == len(hashes)
    # Ethereum mainnet's genesis, recomputed by py-evm's own test (test_mainnet_genesis_hash) and every client.
    assert PUBLIC_CHAINS[1] == ("Ethereum mainnet", MAINNET_GENESIS)
    assert {1, 11155111, 17000, 10, 8453, 42161, 137} <= set(PUBLIC_CHAINS)


@pytest.mark.parametrize(("answers", "node"), [
    ({"web3_clientVersion": "anvil/v1.7.1"}, "anvil"),
    ({"web3_clientVersion": "HardhatNetwork/2.29.1/@ethereumjs/vm/7.0.0"}, "Hardhat"),
    ({"web3_clientVersion": "Ganache/v7.9.2/EthereumJS TestRPC/v7.9.2/ethereum-js"}, "Ganache"),
    # a node hiding its client version still answers a dev-only method
    ({"web3_clientVersion": "Geth/v1.14.0-stable/linux-amd64/go1.22", "anvil_nodeInfo": {"currentBlockNumber": 1}},
     "anvil"),
    ({"web3_clientVersion": "Geth/v1.14.0", "hardhat_metadata": {"chainId": 1}}, "Hardhat"),
    ({"web3_clientVersion": "Geth/v1.14.0-stable/linux-amd64/go1.22"}, None),
    ({"web3_clientVersion": OSError("connection reset"), "anvil_nodeInfo": OSError("reset")}, None),
])
def test_dev_nodes_are_recognised_whatever_their_id(answers: dict[str, Any], node: str | None) -> None:
    who = identify(FakeWeb3(answers), 1)
    assert who.dev_node == node
    assert who.public_name == "Ethereum mainnet" and who.expected_genesis == MAINNET_GENESIS
    label = who.dev_label(1)
    assert (label is None) == (node is None)
    if label is not None:
        assert "development chain" in label and "chain id 1" in label


def test_genesis_mismatch_only_for_a_known_id() -> None:
    assert ChainInfo(1, "0x" + "ab" * 32, 5, None, expected_genesis=MAINNET_GENESIS).genesis_mismatch
    assert not ChainInfo(1, MAINNET_GENESIS.upper().replace("0X", "0x"), 5, None,
                         expected_genesis=MAINNET_GENESIS).genesis_mismatch
    assert not ChainInfo(4242, "0x" + "ab" * 32, 5, None).genesis_mismatch


@pytest.fixture(scope="module")
def mainnet_id_anvil() -> Iterator[anvil.AnvilNode]:
    binary = anvil.find_anvil()
    if binary is None:
        from tests.fixtures.chain import missing

        missing("anvil is not installed: run `npm ci` at the repo root")
    node = anvil.start(binary=binary, port=0, chain_id=1)
    yield node
    node.stop()


@pytest.mark.chain
def test_anvil_claiming_mainnet_is_labelled_and_mismatched(mainnet_id_anvil: anvil.AnvilNode) -> None:
    from provenance.chain import connect

    info = connect(mainnet_id_anvil.rpc_url, use_config=False).chain_info()
    assert info.chain_id == 1 and info.public_chain == "Ethereum mainnet"
    assert info.dev_chain is not None and info.dev_chain.startswith("anvil development chain claiming chain id 1")
    assert info.genesis_mismatch and info.genesis_hash != MAINNET_GENESIS


@pytest.mark.chain
def test_default_anvil_keeps_its_label(anvil_node: anvil.AnvilNode) -> None:
    from provenance.chain import connect

    info = connect(anvil_node.rpc_url, use_config=False).chain_info()
    assert info.dev_chain == "anvil/Hardhat development chain"
    assert info.client_version is not None and "anvil" in info.client_version.lower()
    assert not info.genesis_mismatch and info.public_chain is None


@pytest.mark.parametrize("given", ["0x12", "d4e56740f876aef8c010b86a40d5f56745a118d0906a34e69aec8c0db1cb8fa3",
                                   "0x" + "g" * 64])
def test_expect_genesis_must_be_a_block_hash(tmp_path: Any, given: str) -> None:
    import subprocess
    import sys

    subject = tmp_path / "adapter_model.safetensors"
    subject.write_bytes(b"not even safetensors")
    done = subprocess.run([sys.executable, "-m", "provenance", "verify", str(subject), "--expect-genesis", given],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"--expect-genesis takes a block hash (0x and 64 hex digits), not {given[:80]!r}" in done.stderr


@pytest.mark.chain
def test_a_proxy_posing_as_mainnet_is_still_labelled_unless_it_hides_every_dev_trait(rpc_proxy: Any) -> None:
    """An endpoint answering mainnet's id and genesis in front of anvil is still labelled by what it cannot hide
    without rewriting more; one that rewrites everything is indistinguishable (hence "as reported by the
    endpoint" and the advice to use one's own node)."""
    from provenance.chain import connect

    def mainnet_genesis(params: Any, block: Any) -> Any:
        if isinstance(block, dict) and params and params[0] in ("0x0", "earliest"):
            return {**block, "hash": MAINNET_GENESIS}
        return block

    rpc_proxy.override("eth_chainId", lambda params, result: "0x1")
    rpc_proxy.override("eth_getBlockByNumber", mainnet_genesis)
    info = connect(rpc_proxy.url, use_config=False).chain_info()
    assert (info.chain_id, info.genesis_hash, info.genesis_mismatch) == (1, MAINNET_GENESIS, False)
    assert info.dev_chain is not None and info.dev_chain.startswith("anvil development chain claiming chain id 1")

    rpc_proxy.override("web3_clientVersion", lambda params, result: "Geth/v1.14.11-stable/linux-amd64/go1.22.7")
    assert "anvil_nodeInfo" in str(connect(rpc_proxy.url, use_config=False).chain_info().dev_chain)
    rpc_proxy.override("anvil_nodeInfo", lambda params, result: None)
    assert "hardhat_metadata" in str(connect(rpc_proxy.url, use_config=False).chain_info().dev_chain)
    rpc_proxy.override("hardhat_metadata", lambda params, result: None)  # anvil answers Hardhat's methods too
    assert connect(rpc_proxy.url, use_config=False).chain_info().dev_chain is None
