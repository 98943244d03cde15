"""What only a real node shows: pending transactions, several clients sharing a key, timeouts, dropped and
failed-on-chain transactions. Uses anvil with automine switched off for the duration of a test."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from provenance import chain
from provenance._chain.anvil import AnvilNode
from tests.fixtures.chain import _anvil_dev_keys
from tests.provenance.test_chain import checkpoint_values, run_values

pytestmark = pytest.mark.chain


def rpc(registry: chain.Registry, method: str, *params: Any) -> Any:
    response = registry.web3.provider.make_request(method, list(params))
    assert "error" not in response, response
    return response["result"]


@pytest.fixture
def owner(anvil_node: AnvilNode) -> chain.Registry:
    reg = chain.connect(anvil_node.rpc_url, key=_anvil_dev_keys()[0], use_config=False, timeout=10)
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
    restarted = chain.connect(anvil_node.rpc_url, key=_anvil_dev_keys()[0], registry=owner.address,
                              use_config=False, timeout=10)
    runs = [chain.new_run_id(), chain.new_run_id()]
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(owner.register_run, runs[0], **run_values("a"))
        wait_pending(owner, 1)
        second = pool.submit(restarted.register_run, runs[1], **run_values("b"))
        wait_pending(owner, 2)
        rpc(owner, "evm_mine")
        a, b = first.result(timeout=10), second.result(timeout=10)
    assert a.block_number == b.block_number and a.tx_hash != b.tx_hash
    assert owner.get_run(runs[1]).owner == owner.get_run(runs[0]).owner == owner.signer.address


def test_a_pending_transaction_times_out_and_a_dropped_one_is_reported(
    anvil_node: AnvilNode, owner: chain.Registry, manual_mining: None,
) -> None:
    impatient = chain.connect(anvil_node.rpc_url, key=_anvil_dev_keys()[0], registry=owner.address,
                              use_config=False, timeout=1)
    with pytest.raises(chain.TransactionTimeout, match="still pending after 1s") as caught:
        impatient.register_run(chain.new_run_id(), **run_values())
    tx_hash = caught.value.tx_hash
    rpc(owner, "anvil_dropTransaction", tx_hash)
    with pytest.raises(chain.TransactionDropped, match=f"{tx_hash} was dropped"):
        impatient.transport.wait(tx_hash, what="register run")


def test_a_transaction_that_fails_on_chain_is_decoded(owner: chain.Registry, manual_mining: None) -> None:
    # Both commits of index 0 pass estimation (nothing is mined yet); the one mined second fails on chain.
    run_id = chain.new_run_id()
    writer = owner.with_signer(_anvil_dev_keys()[1])
    with ThreadPoolExecutor(2) as pool:
        registered = pool.submit(owner.register_run, run_id, **run_values())
        wait_pending(owner, 1)
        rpc(owner, "evm_mine")
        registered.result(timeout=10)
        authorized = pool.submit(owner.authorize_writer, run_id, writer.signer.address)
        wait_pending(owner, 1)
        rpc(owner, "evm_mine")
        authorized.result(timeout=10)
        commits = [pool.submit(owner.commit_checkpoint, run_id, **checkpoint_values(0)),
                   pool.submit(writer.commit_checkpoint, run_id,
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
