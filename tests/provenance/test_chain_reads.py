"""What a verifier reads, on py-evm and on a real anvil: claims of re-encoded tensors across runs, a node that hides
or alters an event, the read protocol both registry versions satisfy, and a version 1 deployment read by the v1
reader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from provenance import chain
from provenance._chain.history import EventReader
from provenance.chain import Registry, RegistryReader, RegistryV1
from provenance.errors import ChainError, UsageError
from provenance.hashing import hash_file
from tests.fixtures.chain import ChainBackend, pyevm_backend
from tests.fixtures.chainvalues import (
    adapter_bytes,
    checkpoint_values,
    d,
    deploy_v1,
    hide_logs,
    log_block,
    log_hex,
    rewrite_logs,
    run_values,
    tensor_digest,
    v1_write,
)


@pytest.fixture(params=["py-evm", pytest.param("anvil", marks=pytest.mark.chain)])
def backend(request: pytest.FixtureRequest) -> ChainBackend:
    """py-evm and anvil only: these tests read, and Hardhat reads through the same JSON-RPC as anvil."""
    return pyevm_backend() if request.param == "py-evm" else request.getfixturevalue("anvil_backend")


@pytest.fixture
def owner(backend: ChainBackend) -> Registry:
    registry = backend.connect()
    assert isinstance(registry, Registry)
    registry.deploy()
    return registry


def anchored_run(registry: Registry, checkpoints: int = 3, *, label: str = "run") -> bytes:
    key = registry.register_run(chain.new_run_id(), **run_values(label)).run_key
    assert key is not None
    for i in range(checkpoints):
        registry.commit_checkpoint(key, **checkpoint_values(i))
    return key


def test_every_version_satisfies_the_read_protocol(owner: Registry) -> None:
    assert isinstance(owner, RegistryReader) and owner.version == 3
    address = deploy_v1(owner).address
    assert chain.registry_version(owner.transport, address) == 1
    assert chain.registry_version(owner.transport, str(owner.address)) == 3
    old = _v1(owner, address)
    assert isinstance(old, RegistryReader) and old.version == 1
    v2 = Registry(owner.transport, version=2)
    v2.deploy()
    assert chain.registry_version(owner.transport, str(v2.address)) == 2
    assert isinstance(v2, RegistryReader) and v2.version == 2


def test_a_version_3_history_is_read_by_single_block_queries(owner: Registry, backend: ChainBackend) -> None:
    """One eth_getLogs per block holding the run's events, each for that block alone, following the pointers."""
    key = anchored_run(owner, 3)
    owner.authorize_writer(key, owner.with_signer(backend.keys[1]).signer.address)
    owner.finalize_run(key)
    fresh = owner.with_signer(owner.signer)
    fresh._events = EventReader(fresh.contract, fresh.web3)
    history = fresh.run(key)
    assert len(history.checkpoints) == 3 and len(history.writers) == 1 and history.finalization is not None
    blocks = {history.registration.block_number, history.finalization.block_number,
              history.writers[0].block_number, *(c.block_number for c in history.checkpoints)}
    assert fresh.event_reader.queries == len(blocks) == 6
    assert fresh.event_reader.span is None


def test_a_version_2_registry_is_still_read_and_written(owner: Registry) -> None:
    """Runs on an already-deployed version 2 registry (frozen artifact) keep working: its history is scanned."""
    v2 = Registry(owner.transport, version=2)
    v2.deploy()
    key = anchored_run(v2, 2)
    v2.finalize_run(key, merged_tensor_digest=d("merged"))
    history = v2.run(key)
    assert [c.weights_digest for c in history.checkpoints] == [d("weights/0"), d("weights/1")]
    assert history.finalization is not None and v2.claims(weights=d("weights/1")) == [history.checkpoints[1]]
    assert v2.find_merged(d("merged")) == [history.finalization]
    if owner.transport.rpc_url != chain.TESTER:
        again = chain.connect(owner.transport.rpc_url, registry=v2.address, use_config=False)
        assert isinstance(again, Registry) and again.version == 2 and again.run(key) == history


def test_the_same_tensors_re_encoded_are_found_by_tensor_digest(tmp_path: Path, owner: Registry,
                                                                backend: ChainBackend) -> None:
    original, copy = tmp_path / "original.safetensors", tmp_path / "copy.safetensors"
    original.write_bytes(adapter_bytes(1))
    copy.write_bytes(adapter_bytes(1, metadata={"format": "pt", "note": "re-encoded by someone else"},
                                   header_padding=16))
    assert hash_file(original) != hash_file(copy) and tensor_digest(original) == tensor_digest(copy)
    honest = anchored_run(owner, 1)
    owner.commit_checkpoint(honest, **checkpoint_values(1, weights_digest=hash_file(original),
                                                        tensor_digest=tensor_digest(original)))
    other = owner.with_signer(backend.keys[1])
    copier = anchored_run(other, 1, label="copier")
    other.commit_checkpoint(copier, **checkpoint_values(1, weights_digest=hash_file(copy),
                                                        tensor_digest=tensor_digest(copy)))
    by_tensors = owner.claims(tensors=tensor_digest(copy))
    assert [(c.run_key, c.index) for c in by_tensors] == [(honest, 1), (copier, 1)]  # the earliest first
    assert by_tensors[0].block_number < by_tensors[1].block_number
    assert [c.run_key for c in owner.claims(weights=hash_file(copy))] == [copier]
    both = owner.claims(weights=hash_file(copy), tensors=tensor_digest(copy))
    assert both == by_tensors  # each claim once


def test_a_node_hiding_a_checkpoint_event_is_caught(owner: Registry) -> None:
    key = anchored_run(owner, 3)
    hidden = owner.run(key).checkpoints[1]
    assert len(owner.claims(weights=d("weights/1"))) == 1
    topic = "0x" + owner.event_reader.topic("CheckpointCommitted").hex()
    hide_logs(owner, lambda log: log_hex(log["topics"][0]) == topic and log_block(log) == hidden.block_number)
    # version 3 follows the pointers from checkpoint 2's block to checkpoint 1's, and finds nothing there
    with pytest.raises(chain.InconsistentChain, match=f"run {key.hex()}: no event of the run in block "
                       f"{hidden.block_number}, where the registry's pointers lead") as caught:
        owner.run(key)
    assert "\n" not in str(caught.value)
    with pytest.raises(chain.InconsistentChain):
        owner.claims(weights=d("weights/2"))  # a claim of another checkpoint of the same run is not trusted either
    with pytest.raises(chain.InconsistentChain):
        owner.get_run(key)  # nor the version 1 names


def test_a_node_hiding_the_last_event_is_caught_by_the_stored_head(owner: Registry) -> None:
    key = anchored_run(owner, 2)
    last = owner.run(key).checkpoints[-1]
    hide_logs(owner, lambda log: log_block(log) == last.block_number)
    with pytest.raises(chain.InconsistentChain, match=f"no event of the run in block {last.block_number}"):
        owner.run(key)  # the registry stores the block of the run's latest event: a node cannot stop earlier
    v2 = Registry(owner.transport, version=2)  # version 2, scanned, is caught by the stored head
    v2.deploy()
    old = anchored_run(v2, 2)
    old_last = v2.run(old).checkpoints[-1].block_number
    hide_logs(v2, lambda log: log_block(log) == old_last)
    with pytest.raises(chain.InconsistentChain, match=r"fold to head .* but the registry stores"):
        v2.run(old)


def test_a_node_altering_an_event_is_caught(owner: Registry) -> None:
    key = anchored_run(owner, 2)
    target = owner.run(key).checkpoints[0].block_number

    def alter(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for log in logs:
            if log_block(log) == target:  # another checkpoint digest in the data (its 2nd word)
                data = log_hex(log["data"])
                log["data"] = data[:2 + 64] + "ff" * 32 + data[2 + 128:]
        return logs

    rewrite_logs(owner, alter)
    with pytest.raises(chain.InconsistentChain, match="carries head"):
        owner.run(key)


def test_version_1_names_map_a_seen_run_id_to_its_key_unless_two_owners_used_it(owner: Registry,
                                                                                backend: ChainBackend) -> None:
    fresh = chain.new_run_id()
    fresh_key = owner.register_run(fresh, **run_values("fresh")).run_key
    assert owner.get_run(fresh).run_key == fresh_key  # an id never seen: tried as the signer's own run
    key = anchored_run(owner, 1)
    record = owner.find_by_weights(d("weights/0"))
    assert record is not None and record.run_key == key
    assert owner.get_run(record.run_id).run_key == key  # the old verifier passes the run id
    assert owner.checkpoints(record.run_id) == list(owner.run(key).checkpoints)
    other = owner.with_signer(backend.keys[1])
    other.register_run(record.run_id, **run_values())  # the same run id, another owner: another run
    assert len({c.run_key for c in owner.claims(weights=d("weights/0"))}) == 1
    owner.run(other.run_key(record.run_id))
    with pytest.raises(UsageError, match="registered by several accounts"):
        owner.get_run(record.run_id)


def test_a_version_1_registry_is_read_by_the_v1_reader(owner: Registry) -> None:
    contract = deploy_v1(owner)
    rid = chain.new_run_id()
    values = run_values()
    v1_write(owner, contract, "registerRun", rid, *(values[k].value for k in (
        "manifest_digest", "base_model_digest", "dataset_root", "noise_seed_commitment")), values["manifest_cid"])
    for i in range(2):
        c = checkpoint_values(i)
        v1_write(owner, contract, "commitCheckpoint", rid, i, c["weights_digest"].value, c["checkpoint_digest"].value,
                 c["log_size"], c["log_root"].value, c["epsilon_micro"], c["manifest_cid"])
    closed = v1_write(owner, contract, "finalizeRun", rid)
    reader = _v1(owner, contract.address)
    assert reader.version == 1 and reader.address == contract.address
    history = reader.run(rid)
    assert history.run_key == history.run_id == rid and history.registration.owner == owner.signer.address
    assert [c.weights_digest for c in history.checkpoints] == [d("weights/0"), d("weights/1")]
    assert all(c.tensor_digest is None and c.head is None for c in history.checkpoints)
    final = history.finalization
    assert final is not None and final.block_number == closed["blockNumber"] and final.merged_tensor_digest is None
    assert reader.claims(weights=d("weights/1")) == [history.checkpoints[1]]
    assert reader.claims(tensors=d("tensors/1")) == [] and reader.find_merged(d("x")) == []
    assert reader.chain_info().chain_id == owner.chain_id
    with pytest.raises(chain.ReadOnlyRegistry, match=r"this is a v1 registry.*prov chain deploy"):
        reader.commit_checkpoint(rid, **checkpoint_values(2))


def _v1(registry: Registry, address: str) -> RegistryV1:
    """The client `connect()` gives for a version 1 address (py-evm: on the same in-process chain)."""
    if registry.transport.rpc_url == chain.TESTER:
        from provenance._chain.v1 import connect_v1

        return connect_v1(registry.transport, address)
    found = chain.connect(registry.transport.rpc_url, registry=address, use_config=False)
    assert isinstance(found, RegistryV1)
    return found


def test_claims_need_a_digest(owner: Registry) -> None:
    with pytest.raises(UsageError, match="needs a weights digest or a tensor digest"):
        owner.claims()


def test_a_provider_refusing_every_log_query_gives_a_one_line_error(owner: Registry) -> None:
    """Refusals make the reader split the range down to single blocks (bounded: log2 of the range), then give up
    with one line (a capped provider that accepts narrower ranges is served: test_chain_public.py)."""
    anchored_run(owner, 1)
    provider = owner.web3.provider
    original = provider.make_request

    def capped(method: str, params: Any) -> Any:
        if method == "eth_getLogs":
            return {"jsonrpc": "2.0", "id": 1, "error": {"code": -32005, "message": "query exceeds max range 10000"}}
        return original(method, params)

    provider.make_request = capped
    provider._request_func_cache = (None, None)
    with pytest.raises(ChainError, match=r"refused the registry's log query for block \d+ alone \(query exceeds max "
                       r"range 10000\)") as caught:
        owner.claims(weights=d("weights/0"))
    assert "docs/registry.md" in str(caught.value) and "\n" not in str(caught.value)
    assert owner.event_reader.queries <= 2 + owner.web3.eth.block_number.bit_length()


def test_a_capped_provider_is_read_in_chunks_of_its_cap(owner: Registry) -> None:
    """A provider that refuses ranges wider than 2 blocks, naming its cap as real ones do, is read in 2-block
    chunks: the claims and the run's history are the uncapped ones, with one refusal per reader."""
    key = anchored_run(owner, 3)
    expected = owner.claims(weights=d("weights/2"))
    history = owner.run(key)
    provider = owner.web3.provider
    original = provider.make_request
    refused: list[int] = []

    def capped(method: str, params: Any) -> Any:
        if method == "eth_getLogs":
            query = params[0]  # JSON-RPC's shape (hex text) or the tester provider's (snake case, integers)
            start, stop = (query.get(k, query.get(snake)) for k, snake in (("fromBlock", "from_block"),
                                                                          ("toBlock", "to_block")))
            width = int(str(stop), 0) - int(str(start), 0) + 1
            if width > 2:
                refused.append(width)
                return {"jsonrpc": "2.0", "id": 1,
                        "error": {"code": -32005, "message": "query exceeds max block range 2"}}
        return original(method, params)

    provider.make_request = capped
    provider._request_func_cache = (None, None)
    fresh = owner.with_signer(owner.signer)
    fresh._events = EventReader(fresh.contract, fresh.web3)
    assert fresh.claims(weights=d("weights/2")) == expected
    assert fresh.run(key) == history
    assert len(refused) == 1 and fresh.event_reader.span == 2


def test_scans_are_bounded_chunks_even_without_a_cap(owner: Registry) -> None:
    """No query covers more than `max_span` blocks, so a long chain's scan never asks for one huge answer."""
    anchored_run(owner, 2)
    expected = owner.claims(weights=d("weights/1"))
    fresh = owner.with_signer(owner.signer)
    fresh._events = EventReader(fresh.contract, fresh.web3)
    fresh.event_reader.max_span = 2
    at = owner.web3.eth.block_number
    assert fresh.claims(weights=d("weights/1")) == expected
    start = fresh.deployment_block(at)
    assert fresh.event_reader.queries >= (at - start + 1) // 2 and fresh.event_reader.span is None
