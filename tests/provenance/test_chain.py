"""The registry client against every backend: the same tests run on in-process py-evm and on a real anvil
(`chain_backend` is parametrized; the anvil case is marked `chain`)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from provenance import chain, merkle
from provenance.chain import Registry
from provenance.hashing import Digest
from tests.fixtures.chain import ChainBackend

CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
CID2 = "bafkreidgvpkjawlxz6sffxzwgooowe5yt7i6wsyg236mfoks77nywkptdq"
GAS_TARGET = 90_000


def d(label: str) -> Digest:
    return Digest.of(label.encode())


def run_values(label: str = "run") -> dict[str, Any]:
    return {"manifest_digest": d(f"{label}/manifest"), "base_model_digest": d(f"{label}/base"),
            "dataset_root": d(f"{label}/dataset"), "noise_seed_commitment": d(f"{label}/noise"), "manifest_cid": CID}


def step_leaves(n: int) -> list[bytes]:
    return [merkle.hash_leaf(b"step %d" % i) for i in range(n)]


def checkpoint_values(index: int, **overrides: Any) -> dict[str, Any]:
    leaves = step_leaves(10 * (index + 1))
    values = {"index": index, "weights_digest": d(f"weights/{index}"), "checkpoint_digest": d(f"ckpt/{index}"),
              "log_size": len(leaves), "log_root": Digest(merkle.root(leaves)),
              "epsilon_micro": chain.epsilon_to_micro(0.25 * (index + 1)), "manifest_cid": CID2}
    values.update(overrides)
    return values


@pytest.fixture
def run_id(registry: Registry) -> bytes:
    rid = chain.new_run_id()
    registry.register_run(rid, **run_values())
    return rid


def test_register_and_read_back_a_run(registry: Registry) -> None:
    rid = chain.new_run_id()
    info = registry.register_run(rid, **run_values())
    record = registry.get_run(rid)
    assert (record.run_id, record.owner, record.tx_hash, record.block_number) == (
        rid, registry.signer.address, info.tx_hash, info.block_number)
    for name, value in run_values().items():
        assert getattr(record, name) == value, name
    assert (record.checkpoint_count, record.log_size, record.epsilon_micro, record.finalized) == (0, 0, 0, False)
    assert record.block_timestamp > 1_600_000_000
    assert registry.get_run(rid.hex()) == record  # the text form is accepted too


def test_commit_checkpoints_and_look_them_up(registry: Registry, run_id: bytes) -> None:
    infos = [registry.commit_checkpoint(run_id, **checkpoint_values(i)) for i in range(3)]
    for i, info in enumerate(infos):
        record = registry.get_checkpoint(run_id, i)
        for name, value in checkpoint_values(i).items():
            assert getattr(record, name) == value, name
        assert (record.tx_hash, record.block_number, record.committer) == (
            info.tx_hash, info.block_number, registry.signer.address)
        assert registry.find_by_weights(d(f"weights/{i}")) == record
        assert 0 < info.gas_used <= GAS_TARGET
    assert registry.checkpoints(run_id) == [registry.get_checkpoint(run_id, i) for i in range(3)]
    head = registry.get_run(run_id)
    assert (head.checkpoint_count, head.log_size, head.epsilon) == (3, 30, 0.75)
    assert registry.find_by_weights(d("never committed")) is None


def test_commit_gas_does_not_depend_on_the_number_of_steps(registry: Registry, run_id: bytes) -> None:
    small = registry.commit_checkpoint(run_id, **checkpoint_values(0, log_size=1))
    large = registry.commit_checkpoint(run_id, **checkpoint_values(1, log_size=2**40))
    assert small.gas_used <= GAS_TARGET and large.gas_used <= GAS_TARGET
    assert abs(large.gas_used - small.gas_used) <= 100  # only calldata/event bytes of the number differ


def test_events_are_decoded_in_chain_order(registry: Registry, chain_backend: ChainBackend, run_id: bytes) -> None:
    writer = registry.with_signer(chain_backend.keys[1])
    registry.authorize_writer(run_id, writer.signer.address)
    writer.commit_checkpoint(run_id, **checkpoint_values(0))
    registry.revoke_writer(run_id, writer.signer.address)
    registry.finalize_run(run_id)
    events = registry.events()
    assert [e.name for e in events] == [
        "RunRegistered", "WriterAuthorized", "CheckpointCommitted", "WriterRevoked", "RunFinalized"]
    assert all(e.args["runId"] == run_id for e in events)
    assert events[2].args["committer"] == writer.signer.address
    assert events[4].args["checkpointCount"] == 1 and events[4].args["by"] == registry.signer.address


def test_writers_commit_until_revoked(registry: Registry, chain_backend: ChainBackend, run_id: bytes) -> None:
    writer = registry.with_signer(chain_backend.keys[1])
    assert not registry.can_write(run_id, writer.signer.address)
    registry.authorize_writer(run_id, writer.signer.address)
    assert registry.can_write(run_id, writer.signer.address)
    writer.commit_checkpoint(run_id, **checkpoint_values(0))
    assert registry.get_checkpoint(run_id, 0).committer == writer.signer.address
    registry.revoke_writer(run_id, writer.signer.address)
    with pytest.raises(chain.Unauthorized) as caught:
        writer.commit_checkpoint(run_id, **checkpoint_values(1))
    assert caught.value.caller == writer.signer.address and caught.value.run_id == run_id


def _rule_cases() -> list[Any]:
    """(name, action(registry, other, run_id) that breaks one rule, expected class, expected values)."""
    unknown = b"\x42" * 32

    def commit(i: int, **kw: Any) -> Any:
        return lambda r, o, rid: r.commit_checkpoint(rid, **checkpoint_values(i, **kw))

    return [
        ("stranger commits", lambda r, o, rid: o.commit_checkpoint(rid, **checkpoint_values(1)),
         chain.Unauthorized, {"runId": "RID"}),
        ("register twice", lambda r, o, rid: o.register_run(rid, **run_values("again")),
         chain.RunAlreadyRegistered, {"runId": "RID"}),
        ("unknown run", lambda r, o, rid: r.commit_checkpoint(unknown, **checkpoint_values(0)),
         chain.UnknownRun, {"runId": unknown}),
        ("zero run id", lambda r, o, rid: r.register_run(bytes(32), **run_values()),
         chain.InvalidRunId, {"runId": bytes(32)}),
        ("empty cid", commit(1, manifest_cid=""), chain.EmptyContentAddress, {"runId": "RID"}),
        ("zero writer", lambda r, o, rid: r.authorize_writer(rid, "0x" + "00" * 20),
         chain.InvalidWriter, {"runId": "RID"}),
        ("index gap", commit(3), chain.NonSequentialIndex, {"runId": "RID", "expected": 1, "given": 3}),
        ("log shrinks", commit(1, log_size=9), chain.LogShrank,
         {"runId": "RID", "previousSize": 10, "givenSize": 9}),
        ("epsilon decreases", commit(1, epsilon_micro=249_999), chain.EpsilonDecreased,
         {"runId": "RID", "previousMicro": 250_000, "givenMicro": 249_999}),
        ("weights reused", commit(1, weights_digest=d("weights/0")), chain.WeightsAlreadyCommitted,
         {"weightsDigest": d("weights/0").value, "runId": "RID", "index": 0}),
        ("unknown checkpoint", lambda r, o, rid: r.get_checkpoint(rid, 7), chain.UnknownCheckpoint,
         {"runId": "RID", "index": 7, "count": 1}),
        ("malformed proof", lambda r, o, rid: r.root_from_inclusion_proof(
            leaf_hash=bytes(32), leaf_index=3, tree_size=3, proof=[]), chain.InvalidProof,
         {"leafIndex": 3, "treeSize": 3, "proofLength": 0}),
    ]


@pytest.mark.parametrize(("name", "action", "error", "values"), _rule_cases(), ids=[c[0] for c in _rule_cases()])
def test_every_rule_is_a_typed_error_with_its_values(
    registry: Registry, chain_backend: ChainBackend, run_id: bytes, name: str, action: Any,
    error: type[chain.RegistryRevert], values: dict[str, Any],
) -> None:
    registry.commit_checkpoint(run_id, **checkpoint_values(0))
    other = registry.with_signer(chain_backend.keys[2])
    with pytest.raises(error) as caught:
        action(registry, other, run_id)
    expected = {k: (run_id if v == "RID" else v) for k, v in values.items()}
    assert {k: caught.value.values[k] for k in expected} == expected
    message = str(caught.value)
    assert "\n" not in message and message.strip() == message
    if "runId" in expected:  # the message names the run
        assert expected["runId"].hex() in message


def test_nothing_is_written_to_a_finalized_run(registry: Registry, chain_backend: ChainBackend, run_id: bytes) -> None:
    registry.finalize_run(run_id)
    assert registry.get_run(run_id).finalized
    for action in (lambda: registry.commit_checkpoint(run_id, **checkpoint_values(0)),
                   lambda: registry.authorize_writer(run_id, registry.signer.address),
                   lambda: registry.finalize_run(run_id)):
        with pytest.raises(chain.RunFinalized, match=f"run {run_id.hex()} is finalized"):
            action()


def test_idempotent_commit_returns_the_original_or_names_the_conflict(registry: Registry, run_id: bytes) -> None:
    first = registry.commit_checkpoint(run_id, **checkpoint_values(0))
    block = registry.latest_block_hash()
    again = registry.commit_checkpoint(run_id, **checkpoint_values(0), idempotent=True)
    assert again == chain.TxInfo(first.tx_hash, first.block_number, first.gas_used, already_committed=True)
    assert registry.latest_block_hash() == block  # nothing was sent
    with pytest.raises(chain.NonSequentialIndex) as caught:
        registry.commit_checkpoint(run_id, **checkpoint_values(0))
    assert caught.value.already_committed and "already committed" in str(caught.value)
    with pytest.raises(chain.CheckpointConflict, match="log_root"):
        registry.commit_checkpoint(run_id, **checkpoint_values(0, log_root=d("other")), idempotent=True)
    fresh = registry.commit_checkpoint(run_id, **checkpoint_values(1), idempotent=True)
    assert not fresh.already_committed and fresh.block_number > first.block_number


def test_idempotent_register(registry: Registry, run_id: bytes) -> None:
    original = registry.get_run(run_id)
    again = registry.register_run(run_id, **run_values(), idempotent=True)
    assert (again.tx_hash, again.already_committed) == (original.tx_hash, True)
    with pytest.raises(chain.CheckpointConflict, match="dataset_root"):
        registry.register_run(run_id, **{**run_values(), "dataset_root": d("x")}, idempotent=True)


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


def test_verify_inclusion_against_a_committed_log(registry: Registry, run_id: bytes) -> None:
    leaves = step_leaves(10)
    registry.commit_checkpoint(run_id, **checkpoint_values(0))
    proof = merkle.inclusion_proof(6, leaves)
    assert registry.verify_inclusion_onchain(run_id, 0, leaf_hash=leaves[6], leaf_index=6, proof=proof)
    assert not registry.verify_inclusion_onchain(run_id, 0, leaf_hash=leaves[5], leaf_index=6, proof=proof)
    record = registry.get_checkpoint(run_id, 0)
    doctored = (*record.data_tuple()[:3], d("another root").value, *record.data_tuple()[4:])
    with pytest.raises(Exception) as caught:
        registry.contract.functions.verifyInclusion(run_id, 0, doctored, leaves[6], 6, proof).call()
    decoded = registry.transport.decoder.from_exception(caught.value)
    assert isinstance(decoded, chain.RecordMismatch) and decoded.values["index"] == 0


def test_python_record_hashes_match_the_contract(registry: Registry, run_id: bytes) -> None:
    from provenance._chain.records import checkpoint_record_hash

    registry.commit_checkpoint(run_id, **checkpoint_values(0))
    record = registry.get_checkpoint(run_id, 0)
    onchain = registry.contract.functions.checkpointRecordHash(run_id, 0, record.data_tuple()).call()
    ours = checkpoint_record_hash(
        run_id, 0, weights_digest=record.weights_digest.value, checkpoint_digest=record.checkpoint_digest.value,
        log_size=record.log_size, log_root=record.log_root.value, epsilon_micro=record.epsilon_micro,
        manifest_cid=record.manifest_cid, committer=record.committer)
    assert bytes(onchain) == ours
    stored = registry.contract.functions.getCheckpoint(run_id, 0).call()[3]
    assert bytes(stored) == ours


def test_block_hash_after_a_commitment(registry: Registry, run_id: bytes) -> None:
    info = registry.commit_checkpoint(run_id, **checkpoint_values(0))
    number, block_hash = registry.latest_block_hash()
    assert number == info.block_number and len(block_hash) == 32
    assert registry.block_hash_after(info.block_number) is None
    registry.commit_checkpoint(run_id, **checkpoint_values(1))
    after = registry.block_hash_after(info.block_number)
    assert after is not None and after[0] == info.block_number + 1
    assert after[1] == bytes(registry.web3.eth.get_block(info.block_number + 1)["hash"]) != block_hash


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
    with pytest.raises(chain.RegistryNotConfigured, match="prov chain deploy"):
        unbound.get_run(chain.new_run_id())
