"""What only a real node shows: pending transactions copied by another account (front-running), several clients
sharing a key, timeouts, dropped and failed-on-chain transactions. Uses anvil with automine switched off for the
duration of a test."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from provenance import chain
from provenance._chain import anvil
from provenance._chain.anvil import AnvilNode
from provenance.hashing import Digest
from tests.fixtures.chain import _anvil_dev_keys
from tests.fixtures.chainvalues import checkpoint_values, d, run_values

pytestmark = pytest.mark.chain


def rpc(registry: chain.Registry, method: str, *params: Any) -> Any:
    response = registry.web3.provider.make_request(method, list(params))
    assert "error" not in response, response
    return response["result"]


def client(anvil_node: AnvilNode, key_index: int = 0, **kwargs: Any) -> chain.Registry:
    reg = chain.connect(anvil_node.rpc_url, key=_anvil_dev_keys()[key_index], use_config=False, timeout=10, **kwargs)
    assert isinstance(reg, chain.Registry)
    return reg


@pytest.fixture
def owner(anvil_node: AnvilNode) -> chain.Registry:
    reg = client(anvil_node)
    reg.deploy()
    return reg


@pytest.fixture
def manual_mining(owner: chain.Registry) -> Iterator[None]:
    rpc(owner, "evm_setAutomine", False)
    try:
        yield
    finally:
        rpc(owner, "evm_setAutomine", True)


def wait_pending(registry: chain.Registry, count: int) -> None:
    deadline = time.monotonic() + 10
    while int(rpc(registry, "txpool_status")["pending"], 16) < count:
        assert time.monotonic() < deadline, f"never saw {count} pending transactions"
        time.sleep(0.02)


def test_clients_sharing_a_key_take_nonces_from_the_pending_pool(
    owner: chain.Registry, anvil_node: AnvilNode, manual_mining: None,
) -> None:
    # A second client with the same key stands for the trainer restarted while a transaction is pending.
    restarted = client(anvil_node, registry=owner.address)
    runs = [chain.new_run_id(), chain.new_run_id()]
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(owner.register_run, runs[0], **run_values("a"))
        wait_pending(owner, 1)
        second = pool.submit(restarted.register_run, runs[1], **run_values("b"))
        wait_pending(owner, 2)
        rpc(owner, "evm_mine")
        a, b = first.result(timeout=10), second.result(timeout=10)
    assert a.block_number == b.block_number and a.tx_hash != b.tx_hash
    assert a.run_key is not None and b.run_key is not None
    assert owner.run(b.run_key).registration.owner == owner.run(a.run_key).registration.owner == owner.signer.address


def test_a_pending_transaction_times_out_and_a_dropped_one_is_reported(
    anvil_node: AnvilNode, owner: chain.Registry, manual_mining: None,
) -> None:
    impatient = chain.connect(anvil_node.rpc_url, key=_anvil_dev_keys()[0], registry=owner.address,
                              use_config=False, timeout=1)
    assert isinstance(impatient, chain.Registry)
    with pytest.raises(chain.TransactionTimeout, match="still pending after 1s") as caught:
        impatient.register_run(chain.new_run_id(), **run_values())
    tx_hash = caught.value.tx_hash
    rpc(owner, "anvil_dropTransaction", tx_hash)
    with pytest.raises(chain.TransactionDropped, match=f"{tx_hash} was dropped"):
        impatient.transport.wait(tx_hash, what="register run")


def test_a_transaction_that_fails_on_chain_is_decoded(owner: chain.Registry, manual_mining: None) -> None:
    # Both commits of index 0 pass estimation (nothing is mined yet); the one mined second fails on chain.
    writer = owner.with_signer(_anvil_dev_keys()[1])
    with ThreadPoolExecutor(2) as pool:
        registered = pool.submit(owner.register_run, chain.new_run_id(), **run_values())
        wait_pending(owner, 1)
        rpc(owner, "evm_mine")
        run_key = registered.result(timeout=10).run_key
        authorized = pool.submit(owner.authorize_writer, run_key, writer.signer.address)
        wait_pending(owner, 1)
        rpc(owner, "evm_mine")
        authorized.result(timeout=10)
        commits = [pool.submit(owner.commit_checkpoint, run_key, **checkpoint_values(0)),
                   pool.submit(writer.commit_checkpoint, run_key,
                               **checkpoint_values(0, weights_digest=chain.Digest.of(b"w")))]
        wait_pending(owner, 2)
        rpc(owner, "evm_mine")
        outcomes = []
        for future in commits:
            try:
                outcomes.append(future.result(timeout=10))
            except chain.NonSequentialIndex as exc:
                outcomes.append(exc)
    failures = [o for o in outcomes if isinstance(o, chain.NonSequentialIndex)]
    assert len(failures) == 1, outcomes
    failure = failures[0]
    assert (failure.expected, failure.given) == (1, 0) and failure.tx_hash is not None
    assert f"(transaction {failure.tx_hash})" in str(failure)
    receipt = owner.web3.eth.get_transaction_receipt(failure.tx_hash)
    assert receipt["status"] == 0


def pending_input(registry: chain.Registry) -> tuple[str, bytes]:
    """The `to` and calldata of the one pending transaction, as an attacker watching the mempool sees them."""
    content = rpc(registry, "txpool_content")["pending"]
    (by_nonce,) = content.values()
    (tx,) = by_nonce.values()
    return tx["to"], bytes.fromhex(tx["input"].removeprefix("0x"))


def send_first(attacker: chain.Registry, to: str, data: bytes) -> str:
    """Send `data` to `to` from the attacker with a tip high enough to be mined before the copied transaction."""
    eth = attacker.web3.eth
    account = attacker.signer.account
    tx = {"to": attacker.web3.to_checksum_address(to), "data": data, "gas": 300_000, "value": 0,
          "nonce": eth.get_transaction_count(account.address, "pending"), "chainId": attacker.chain_id,
          "maxFeePerGas": 500 * 10**9, "maxPriorityFeePerGas": 100 * 10**9}
    return eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction).to_0x_hex()


def test_a_front_runner_copying_pending_transactions_cannot_take_or_block_the_run(
    owner: chain.Registry, anvil_node: AnvilNode, manual_mining: None,
) -> None:
    attacker = client(anvil_node, 2, registry=owner.address)
    run_id = chain.new_run_id()
    with ThreadPoolExecutor(1) as pool:
        # The registration: the attacker copies it from the mempool and gets it mined first.
        honest = pool.submit(owner.register_run, run_id, **run_values())
        wait_pending(owner, 1)
        to, data = pending_input(owner)
        copied = send_first(attacker, to, data)
        wait_pending(owner, 2)
        rpc(owner, "evm_mine")
        registered = honest.result(timeout=10)
        first = owner.web3.eth.get_transaction_receipt(copied)
        assert first["status"] == 1 and first["blockNumber"] == registered.block_number
        assert first["transactionIndex"] < owner.web3.eth.get_transaction_receipt(registered.tx_hash)[
            "transactionIndex"]
        honest_key, copy_key = registered.run_key, attacker.run_key(run_id)
        assert honest_key == owner.run_key(run_id) != copy_key

        # Checkpoint 0: the attacker replays the call on the honest run (refused) and into its own run (accepted).
        commit = pool.submit(owner.commit_checkpoint, honest_key, **checkpoint_values(0))
        wait_pending(owner, 1)
        to, data = pending_input(owner)
        replayed = send_first(attacker, to, data)
        own_copy = send_first(attacker, to, data[:4] + copy_key + data[36:])
        wait_pending(owner, 3)
        rpc(owner, "evm_mine")
        committed = commit.result(timeout=10)
    assert owner.web3.eth.get_transaction_receipt(replayed)["status"] == 0  # Unauthorized on the honest run
    assert owner.web3.eth.get_transaction_receipt(own_copy)["status"] == 1
    assert not committed.already_committed

    rpc(owner, "evm_setAutomine", True)
    for index in (1, 2):  # the honest run anchors fully
        owner.commit_checkpoint(honest_key, **checkpoint_values(index))
    owner.finalize_run(honest_key, merged_tensor_digest=d("merged"))
    honest_history, copy_history = owner.run(honest_key), owner.run(copy_key)
    assert honest_history.registration.owner == owner.signer.address
    assert copy_history.registration.owner == attacker.signer.address
    assert honest_history.run_id == copy_history.run_id == run_id
    assert [c.index for c in honest_history.checkpoints] == [0, 1, 2] and honest_history.finalization is not None
    assert [c.committer for c in copy_history.checkpoints] == [attacker.signer.address]
    claims = owner.claims(weights=d("weights/0"))
    assert {c.run_key for c in claims} == {honest_key, copy_key}
    assert [c.run_key for c in claims] == [copy_key, honest_key]  # the copy is older: the verifier must choose by run


V1_RUN = Path(__file__).resolve().parents[1] / "fixtures" / "v1run"


def test_a_real_version_1_run_is_read_by_the_v1_reader(tmp_path: Path) -> None:
    """The v1 fixture run (prov 0.1.0, a v1 registry on anvil) through `connect()`: detected as version 1, its
    history and its claim read and checked against the v1 record hashes."""
    fixture = json.loads((V1_RUN / "fixture.json").read_text())
    state = tmp_path / "state.json"
    shutil.copyfile(V1_RUN / "chain-state.json", state)  # anvil writes its state back on exit
    node = anvil.start(port=0, state_file=state)
    try:
        reader = chain.connect(node.rpc_url, registry=fixture["registry"], use_config=False)
        assert isinstance(reader, chain.RegistryV1) and isinstance(reader, chain.RegistryReader)
        assert reader.version == 1 and reader.chain_info().chain_id == fixture["chain_id"]
        run_id = bytes.fromhex(fixture["run_id"])
        history = reader.run(run_id)
        assert history.run_key == run_id and len(history.checkpoints) == fixture["checkpoints"]
        assert history.checkpoints[-1].log_size == fixture["steps"] and history.finalization is not None
        assert history.finalization.checkpoint_count == fixture["checkpoints"]
        (claim,) = reader.claims(weights=Digest.parse(fixture["weights_digest"]))
        assert claim == history.checkpoints[-1] and claim.tensor_digest is None
        with pytest.raises(chain.ReadOnlyRegistry, match="v1 registry"):
            reader.finalize_run(run_id)
    finally:
        node.stop()


def test_a_resent_transaction_the_node_already_holds_is_waited_for(owner: chain.Registry,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A gateway loses the answer to a transaction the node accepted and the same signed bytes are sent again: a
    geth-like node answers "already known". The client waits for that transaction by its hash: the run is
    registered once, and the error never stops an outbox for good."""
    from web3.exceptions import Web3RPCError

    eth = owner.web3.eth
    real = eth.send_raw_transaction
    sent: list[bytes] = []

    def resent(raw: Any) -> Any:
        real(raw)  # the node accepts it; the answer is lost, and the re-send is refused as a duplicate
        sent.append(bytes(raw))
        raise Web3RPCError("{'code': -32000, 'message': 'already known'}")

    monkeypatch.setattr(eth, "send_raw_transaction", resent)
    run_id = chain.new_run_id()
    tx = owner.register_run(run_id, **run_values())
    assert len(sent) == 1 and tx.tx_hash == owner.web3.keccak(sent[0]).to_0x_hex()
    assert owner.run(tx.run_key).registration.owner == owner.signer.address
