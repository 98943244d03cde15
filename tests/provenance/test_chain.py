"""The version 2 registry client against every backend: the same tests run on in-process py-evm, a real anvil and a
Hardhat node (`chain_backend` is parametrized; the node cases are marked `chain`)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from provenance import chain, merkle
from provenance._chain import heads
from provenance.chain import Registry
from provenance.errors import UsageError
from tests.fixtures.chain import ChainBackend
from tests.fixtures.chainvalues import CID, checkpoint_values, d, directory_cid, run_values, step_leaves

GAS_TARGET = 45_000


@pytest.fixture
def run_key(registry: Registry) -> bytes:
    info = registry.register_run(chain.new_run_id(), **run_values())
    assert info.run_key is not None
    return info.run_key


def test_register_and_read_back_a_run(registry: Registry) -> None:
    rid = chain.new_run_id()
    info = registry.register_run(rid, **run_values())
    assert info.run_key == chain.run_key_of(registry.signer.address, rid) == registry.run_key(rid)
    history = registry.run(info.run_key)
    record = history.registration
    assert (record.run_id, record.run_key, record.owner, record.tx_hash, record.block_number) == (
        rid, info.run_key, registry.signer.address, info.tx_hash, info.block_number)
    for name, value in run_values().items():
        assert getattr(record, name) == value, name
    assert (record.checkpoint_count, record.log_size, record.epsilon_micro, record.finalized) == (0, 0, 0, False)
    assert record.block_timestamp > 1_600_000_000
    assert (history.checkpoints, history.writers, history.finalization) == ((), (), None)
    state = registry.run_state(info.run_key)
    assert state.head == record.head and len(state.head) == 24 and state.registered_block == info.block_number
    assert registry.run(info.run_key.hex()) == history  # the text form is accepted too


def test_commit_checkpoints_and_read_the_verified_history(registry: Registry, run_key: bytes) -> None:
    infos = [registry.commit_checkpoint(run_key, **checkpoint_values(i)) for i in range(3)]
    history = registry.run(run_key)
    assert [c.index for c in history.checkpoints] == [0, 1, 2]
    for i, (info, record) in enumerate(zip(infos, history.checkpoints, strict=True)):
        for name, value in checkpoint_values(i).items():
            assert getattr(record, name) == value, name
        assert (record.tx_hash, record.block_number, record.committer, record.run_key) == (
            info.tx_hash, info.block_number, registry.signer.address, run_key)
        assert registry.claims(weights=d(f"weights/{i}")) == [record]
        assert registry.claims(tensors=d(f"tensors/{i}")) == [record]
        assert 0 < info.gas_used <= GAS_TARGET
    assert history.checkpoints[-1].head == registry.run_state(run_key).head
    state = history.registration
    assert (state.checkpoint_count, state.log_size, state.epsilon) == (3, 20, 0.5)
    assert registry.claims(weights=d("never committed")) == []


def test_commit_gas_does_not_depend_on_the_number_of_steps(registry: Registry, run_key: bytes) -> None:
    registry.commit_checkpoint(run_key, **checkpoint_values(0))
    small = registry.commit_checkpoint(run_key, **checkpoint_values(1, log_size=1))
    large = registry.commit_checkpoint(run_key, **checkpoint_values(2, log_size=2**32 - 1))
    assert small.gas_used <= GAS_TARGET and large.gas_used <= GAS_TARGET
    assert abs(large.gas_used - small.gas_used) <= 100  # only calldata/event bytes of the number differ


def test_any_number_of_runs_claim_the_same_weights(registry: Registry, chain_backend: ChainBackend,
                                                   run_key: bytes) -> None:
    other = registry.with_signer(chain_backend.keys[1])
    other_key = other.register_run(chain.new_run_id(), **run_values("other")).run_key
    assert other_key is not None
    mine = registry.commit_checkpoint(run_key, **checkpoint_values(0))
    theirs = other.commit_checkpoint(other_key, **checkpoint_values(0))  # the same digests: not refused
    claims = registry.claims(weights=d("weights/0"))
    assert [(c.run_key, c.tx_hash) for c in claims] == [(run_key, mine.tx_hash), (other_key, theirs.tx_hash)]
    assert claims[1].committer == other.signer.address
    assert registry.find_by_weights(d("weights/0")) == claims[0]  # version 1 name: the earliest claim


def test_events_are_decoded_in_chain_order(registry: Registry, chain_backend: ChainBackend, run_key: bytes) -> None:
    writer = registry.with_signer(chain_backend.keys[1])
    registry.authorize_writer(run_key, writer.signer.address)
    writer.commit_checkpoint(run_key, **checkpoint_values(0))
    registry.revoke_writer(run_key, writer.signer.address)
    registry.finalize_run(run_key, merged_tensor_digest=d("merged"))
    events = registry.events()
    assert [e.name for e in events] == [
        "RunRegistered", "WriterAuthorized", "CheckpointCommitted", "WriterRevoked", "RunFinalized"]
    assert all(e.args["runKey"] == run_key for e in events)
    assert events[2].args["committer"] == writer.signer.address
    assert events[4].args["checkpointCount"] == 1 and events[4].args["by"] == registry.signer.address
    history = registry.run(run_key)
    assert [(w.writer, w.authorized, w.name) for w in history.writers] == [
        (writer.signer.address, True, "WriterAuthorized"), (writer.signer.address, False, "WriterRevoked")]
    assert history.writers[0].args == {"runId": history.run_id, "runKey": run_key, "writer": writer.signer.address}
    final = history.finalization
    assert final is not None and (final.by, final.merged_tensor_digest, final.checkpoint_count) == (
        registry.signer.address, d("merged"), 1)
    assert final.head == history.registration.head and history.last_block == final.block_number
    assert registry.find_merged(d("merged")) == [final]


def test_writers_commit_until_revoked(registry: Registry, chain_backend: ChainBackend, run_key: bytes) -> None:
    writer = registry.with_signer(chain_backend.keys[1])
    assert not registry.can_write(run_key, writer.signer.address)
    registry.authorize_writer(run_key, writer.signer.address)
    assert registry.can_write(run_key, writer.signer.address)
    writer.commit_checkpoint(run_key, **checkpoint_values(0))
    assert registry.run(run_key).checkpoints[0].committer == writer.signer.address
    registry.revoke_writer(run_key, writer.signer.address)
    with pytest.raises(chain.Unauthorized) as caught:
        writer.commit_checkpoint(run_key, **checkpoint_values(1))
    assert caught.value.caller == writer.signer.address and caught.value.run_key == run_key


def _rule_cases() -> list[Any]:
    """(name, action(registry, other, run_key) that breaks one rule, expected class, expected values)."""
    unknown = b"\x42" * 32

    def commit(i: int, **kw: Any) -> Any:
        return lambda r, o, key: r.commit_checkpoint(key, **checkpoint_values(i, **kw))

    def register_again(r: Registry, o: Registry, key: bytes) -> Any:
        return r.register_run(r.run(key).registration.run_id, **run_values("again"))

    return [
        ("stranger commits", lambda r, o, key: o.commit_checkpoint(key, **checkpoint_values(1)),
         chain.Unauthorized, {"runKey": "KEY"}),
        ("register twice", register_again, chain.RunAlreadyRegistered, {"runKey": "KEY"}),
        ("unknown run", lambda r, o, key: r.commit_checkpoint(unknown, **checkpoint_values(0)),
         chain.UnknownRun, {"runKey": unknown}),
        ("zero run id", lambda r, o, key: r.register_run(bytes(32), **run_values()),
         chain.InvalidRunId, {"runId": bytes(32)}),
        ("empty cid", lambda r, o, key: r.register_run(chain.new_run_id(), **{**run_values(), "manifest_cid": ""}),
         chain.EmptyContentAddress, {}),
        ("zero writer", lambda r, o, key: r.authorize_writer(key, "0x" + "00" * 20),
         chain.InvalidWriter, {"runKey": "KEY"}),
        ("index gap", commit(3), chain.NonSequentialIndex, {"runKey": "KEY", "expected": 1, "given": 3}),
        ("zero steps", commit(1, log_size=0), chain.InvalidLogSize,
         {"runKey": "KEY", "index": 1, "previousSize": 0, "givenSize": 0}),
        ("log too large", commit(1, log_size=2**32), chain.LogSizeTooLarge,
         {"runKey": "KEY", "givenSize": 2**32, "maxSize": 2**32 - 1}),
        ("epsilon decreases", commit(1, epsilon_micro=0), chain.EpsilonDecreased,
         {"runKey": "KEY", "previousMicro": 1, "givenMicro": 0}),
        ("malformed proof", lambda r, o, key: r.root_from_inclusion_proof(
            leaf_hash=bytes(32), leaf_index=3, tree_size=3, proof=[]), chain.InvalidProof,
         {"leafIndex": 3, "treeSize": 3, "proofLength": 0}),
    ]


@pytest.mark.parametrize(("name", "action", "error", "values"), _rule_cases(), ids=[c[0] for c in _rule_cases()])
def test_every_rule_is_a_typed_error_with_its_values(
    registry: Registry, chain_backend: ChainBackend, run_key: bytes, name: str, action: Any,
    error: type[chain.RegistryRevert], values: dict[str, Any],
) -> None:
    registry.commit_checkpoint(run_key, **checkpoint_values(0, epsilon_micro=1))
    other = registry.with_signer(chain_backend.keys[2])
    with pytest.raises(error) as caught:
        action(registry, other, run_key)
    expected = {k: (run_key if v == "KEY" else v) for k, v in values.items()}
    assert {k: caught.value.values[k] for k in expected} == expected
    message = str(caught.value)
    assert "\n" not in message and message.strip() == message
    if "runKey" in expected:  # the message names the run
        assert expected["runKey"].hex() in message


def test_the_first_checkpoint_has_no_steps(registry: Registry, run_key: bytes) -> None:
    with pytest.raises(chain.InvalidLogSize, match="checkpoint 0 is the adapter before any step"):
        registry.commit_checkpoint(run_key, **checkpoint_values(0, log_size=3))


def test_content_addresses_must_be_directory_cids(registry: Registry, run_key: bytes) -> None:
    before = registry.latest_block_hash()
    for bad, reason in ((CID, "is a raw CID"), ("not-a-cid", "not a CID")):
        with pytest.raises(UsageError, match=reason):
            registry.commit_checkpoint(run_key, **checkpoint_values(0, manifest_cid=bad))
    assert registry.latest_block_hash() == before  # refused before anything was sent
    v0 = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"  # a CIDv0 is dag-pb too: stored, read back as CIDv1
    registry.commit_checkpoint(run_key, **checkpoint_values(0, manifest_cid=v0))
    assert registry.run(run_key).checkpoints[0].manifest_cid.startswith("bafybei")


def test_nothing_is_written_to_a_finalized_run(registry: Registry, run_key: bytes) -> None:
    registry.commit_checkpoint(run_key, **checkpoint_values(0))
    registry.finalize_run(run_key)
    assert registry.run_state(run_key).finalized
    final = registry.run(run_key).finalization
    assert final is not None and final.merged_tensor_digest is None
    for action in (lambda: registry.commit_checkpoint(run_key, **checkpoint_values(0)),
                   lambda: registry.authorize_writer(run_key, registry.signer.address),
                   lambda: registry.finalize_run(run_key)):
        with pytest.raises(chain.RunFinalized, match=f"run {run_key.hex()} is finalized"):
            action()


def test_a_run_without_checkpoint_cannot_be_finalized(registry: Registry, run_key: bytes) -> None:
    with pytest.raises(chain.NoCheckpoint, match=f"run {run_key.hex()} has no checkpoint yet") as caught:
        registry.finalize_run(run_key)
    assert caught.value.values == {"runKey": run_key} and not registry.run_state(run_key).finalized


def test_only_the_owner_finalizes(registry: Registry, chain_backend: ChainBackend, run_key: bytes) -> None:
    """An authorised writer commits checkpoints but cannot close the owner's run (registry version 3)."""
    writer = registry.with_signer(chain_backend.keys[1])
    registry.authorize_writer(run_key, writer.signer.address)
    writer.commit_checkpoint(run_key, **checkpoint_values(0))
    with pytest.raises(chain.Unauthorized) as caught:
        writer.finalize_run(run_key)
    assert caught.value.values == {"caller": writer.signer.address, "runKey": run_key}
    assert not registry.run_state(run_key).finalized
    registry.finalize_run(run_key)
    assert registry.run(run_key).finalization is not None


def test_idempotent_commit_returns_the_original_or_names_the_conflict(registry: Registry, run_key: bytes) -> None:
    first = registry.commit_checkpoint(run_key, **checkpoint_values(0))
    block = registry.latest_block_hash()
    again = registry.commit_checkpoint(run_key, **checkpoint_values(0), idempotent=True)
    assert again == chain.TxInfo(first.tx_hash, first.block_number, first.gas_used, already_committed=True)
    assert registry.latest_block_hash() == block  # nothing was sent
    with pytest.raises(chain.NonSequentialIndex) as caught:
        registry.commit_checkpoint(run_key, **checkpoint_values(0))
    assert caught.value.already_committed and "already committed" in str(caught.value)
    for field in ("log_root", "tensor_digest"):
        with pytest.raises(chain.CheckpointConflict, match=field):
            registry.commit_checkpoint(run_key, **checkpoint_values(0, **{field: d("other")}), idempotent=True)
    fresh = registry.commit_checkpoint(run_key, **checkpoint_values(1), idempotent=True)
    assert not fresh.already_committed and fresh.block_number > first.block_number


def test_idempotent_register_and_finalize(registry: Registry) -> None:
    rid = chain.new_run_id()
    original = registry.register_run(rid, **run_values())
    again = registry.register_run(rid, **run_values(), idempotent=True)
    assert (again.tx_hash, again.already_committed, again.run_key) == (original.tx_hash, True, original.run_key)
    with pytest.raises(chain.CheckpointConflict, match="dataset_root"):
        registry.register_run(rid, **{**run_values(), "dataset_root": d("x")}, idempotent=True)
    assert original.run_key is not None
    registry.commit_checkpoint(original.run_key, **checkpoint_values(0))
    closed = registry.finalize_run(original.run_key, merged_tensor_digest=d("m"), idempotent=True)
    assert not closed.already_committed
    assert registry.finalize_run(original.run_key, merged_tensor_digest=d("m"), idempotent=True).tx_hash == (
        closed.tx_hash)
    with pytest.raises(chain.CheckpointConflict, match="merged_tensor_digest"):
        registry.finalize_run(original.run_key, idempotent=True)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13])
def test_onchain_inclusion_proofs_match_the_python_implementation(registry: Registry, size: int) -> None:
    leaves = step_leaves(size)
    expected_root = merkle.root(leaves)
    for index in range(size):
        proof = merkle.inclusion_proof(index, leaves)
        assert merkle.root_from_inclusion_proof(leaves[index], index, size, proof) == expected_root
        assert registry.root_from_inclusion_proof(
            leaf_hash=leaves[index], leaf_index=index, tree_size=size, proof=proof) == expected_root
    if size > 1:  # a proof with a node missing is refused by both implementations
        short = merkle.inclusion_proof(0, leaves)[:-1]
        with pytest.raises(merkle.ProofError):
            merkle.root_from_inclusion_proof(leaves[0], 0, size, short)
        with pytest.raises(chain.InvalidProof):
            registry.root_from_inclusion_proof(leaf_hash=leaves[0], leaf_index=0, tree_size=size, proof=short)


def test_certificate_transparency_vector(registry: Registry) -> None:
    # RFC 6962 test data (certificate-transparency): the 8-leaf tree's root and PATH(0, D[8]).
    leaves = [bytes.fromhex(x) for x in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                         "606162636465666768696a6b6c6d6e6f")]
    path = [bytes.fromhex(x) for x in (
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")]
    root = registry.root_from_inclusion_proof(leaf_hash=merkle.hash_leaf(leaves[0]), leaf_index=0, tree_size=8,
                                              proof=path)
    assert root.hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"


def test_verify_inclusion_against_a_committed_log(registry: Registry, run_key: bytes) -> None:
    leaves = step_leaves(10)
    registry.commit_checkpoint(run_key, **checkpoint_values(0))
    registry.commit_checkpoint(run_key, **checkpoint_values(1))
    record = registry.run(run_key).checkpoints[1]
    proof = merkle.inclusion_proof(6, leaves)
    assert registry.verify_inclusion(record, leaf_hash=leaves[6], leaf_index=6, proof=proof)
    assert not registry.verify_inclusion(record, leaf_hash=leaves[5], leaf_index=6, proof=proof)
    assert registry.verify_inclusion_onchain(run_key, 1, leaf_hash=leaves[6], leaf_index=6, proof=proof)


def test_chain_identity_and_blocks(registry: Registry, chain_backend: ChainBackend, run_key: bytes) -> None:
    info = registry.commit_checkpoint(run_key, **checkpoint_values(0))
    chain_info = registry.chain_info()
    assert chain_info.chain_id == registry.chain_id and chain_info.latest_block == info.block_number
    assert chain_info.genesis_hash == registry.web3.eth.get_block(0)["hash"].to_0x_hex()
    assert chain_info.dev_chain is not None  # py-evm, anvil and Hardhat are all development chains
    block = registry.block(info.block_number)
    assert block is not None and block.number == info.block_number and block.timestamp > 1_600_000_000
    assert registry.block(info.block_number + 1) is None and registry.block_hash_after(info.block_number) is None
    registry.commit_checkpoint(run_key, **checkpoint_values(1))
    after = registry.block_hash_after(info.block_number)
    assert after is not None and after[0] == info.block_number + 1 and after[1] != block.hash


def test_address_without_a_contract(chain_backend: ChainBackend) -> None:
    empty = "0x" + os.urandom(20).hex()
    with pytest.raises(chain.NoContract, match="no contract at"):
        chain_backend.connect(registry=empty)


def test_address_of_another_contract(registry: Registry, chain_backend: ChainBackend) -> None:
    # Init code that deploys a 10-byte runtime returning 42: some contract that is not the registry.
    init = bytes.fromhex("600a600c600039600a6000f3602a60005260206000f3")
    account = registry.signer.account
    eth = registry.web3.eth
    tx = {"data": init, "nonce": eth.get_transaction_count(account.address, "pending"), "gas": 100_000,
          "maxFeePerGas": 10 * 10**9, "maxPriorityFeePerGas": 10**9, "chainId": registry.chain_id, "value": 0}
    receipt = eth.wait_for_transaction_receipt(eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction))
    with pytest.raises(chain.NotARegistry, match="not this version of ProvenanceRegistry"):
        chain.Registry(registry.transport, receipt["contractAddress"])


def test_wrong_chain_id(chain_backend: ChainBackend, registry: Registry) -> None:
    with pytest.raises(chain.WrongChainId, match=f"serves chain id {registry.chain_id}, expected 1"):
        chain_backend.connect(chain_id=1)


def test_insufficient_funds(registry: Registry) -> None:
    poor = registry.with_signer(os.urandom(32))
    with pytest.raises(chain.InsufficientFunds, match=f"account {poor.signer.address} .* has 0 ETH"):
        poor.register_run(chain.new_run_id(), **run_values())


def test_calls_without_a_registry_address(chain_backend: ChainBackend) -> None:
    unbound = chain_backend.connect()
    assert isinstance(unbound, Registry) and unbound.address is None
    with pytest.raises(chain.RegistryNotConfigured, match="prov chain deploy"):
        unbound.run(chain.new_run_id())


def test_directory_cids_round_trip_through_their_digest() -> None:
    cid = directory_cid("x")
    assert heads.cid_from_digest(heads.cid_digest(cid)) == cid
