"""Gas of anchoring on ProvenanceRegistry version 3 (the current one), read from receipts on anvil, side by side with
version 1 and a naive on-chain step log, in one run.

prov commits one checkpoint per k steps (weights, tensor and checkpoint digests, step-log size and root, ε, the
directory CID's digest) at a cost that does not depend on k: versions 2 and 3 keep one hash-chained head per run and
put the record in an event (version 3 adds the block pointer to the run's previous event, ~560 gas). Baselines, all
measured here on the same chain: version 1 of the registry (two new storage slots per checkpoint; its frozen artifact
is deployed beside the current one), the 45,000-gas target of issue #14, and a naive
contract storing every batch digest on chain, one transaction per step (a bare 17-byte store: no access control, no
event, so that baseline is a lower bound and its ratios are conservative).

Run: `python bench/bench_gas.py`. `run()` returns rows {"name", "value", "baseline", "ratio", "unit", ...} with
`ratio` = value / baseline (below 1: cheaper than the baseline). Needs anvil (`npm ci`); falls back to the
in-process py-evm chain, saying so in each row, when it is absent (gas is the same EVM arithmetic on both).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import row, show
from provenance import chain, merkle
from provenance._chain import anvil, artifact
from provenance.cid import DAG_PB, Cid
from provenance.hashing import Digest

STEPS_PER_CHECKPOINT = (1, 10, 100, 1000)
NAIVE_SAMPLES = 20
GAS_TARGET = 45_000
CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
# runtime: calldatacopy(0, 0, 64); sstore(keccak256(0, 64), calldataload(64)); stop
_NAIVE_RUNTIME = "6040600060003760403560406000205500"
_NAIVE_INIT = bytes.fromhex("6011600c60003960116000f3" + _NAIVE_RUNTIME)
_COMMITMENTS = {"manifest_digest": Digest.of(b"manifest"), "base_model_digest": Digest.of(b"base"),
                "dataset_root": Digest.of(b"dataset"), "noise_seed_commitment": Digest.of(b"noise")}


def _send_raw(registry: chain.Registry, tx: dict[str, Any]) -> Any:
    account = registry.signer.account
    eth = registry.web3.eth
    tx = {"nonce": eth.get_transaction_count(account.address, "pending"), "chainId": registry.chain_id,
          "maxFeePerGas": 10 * 10**9, "maxPriorityFeePerGas": 10**9, "value": 0, **tx}
    tx.setdefault("gas", eth.estimate_gas({"from": account.address, **{k: v for k, v in tx.items() if k in
                                                                        ("to", "data", "value")}}))
    receipt = eth.wait_for_transaction_receipt(eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction))
    if receipt["status"] != 1:
        raise RuntimeError(f"benchmark transaction failed: {receipt['transactionHash'].hex()}")
    return receipt


def naive_gas_per_step(registry: chain.Registry, run_id: bytes) -> float:
    """Mean gas of one step-digest transaction on the naive contract (each a fresh storage slot)."""
    address = _send_raw(registry, {"data": _NAIVE_INIT, "gas": 200_000})["contractAddress"]
    used = []
    for step in range(NAIVE_SAMPLES):
        digest = Digest.of(b"batch %d" % step).value
        data = run_id + step.to_bytes(32, "big") + digest
        used.append(int(_send_raw(registry, {"to": address, "data": data})["gasUsed"]))
    return statistics.fmean(used)


def _checkpoint(index: int, log_size: int) -> dict[str, Any]:
    leaves = [merkle.hash_leaf(b"step %d" % i) for i in range(min(log_size, 64))]  # the root's value is immaterial
    return {"weights_digest": Digest.of(b"weights %d" % index), "tensor_digest": Digest.of(b"tensors %d" % index),
            "checkpoint_digest": Digest.of(b"checkpoint %d" % index), "log_size": log_size,
            "log_root": Digest(merkle.root(leaves)), "epsilon_micro": chain.epsilon_to_micro(0.1 * (index + 1)),
            "manifest_cid": str(Cid(DAG_PB, Digest.of(b"directory %d" % index).value))}


def v2_gas(registry: chain.Registry, writer: chain.Registry) -> dict[str, Any]:
    """registerRun, checkpoint 0, one commit per interval in STEPS_PER_CHECKPOINT, a commit by an authorised writer,
    finalizeRun: gas from each receipt."""
    c = _COMMITMENTS
    registered = registry.register_run(b"\x01" * 32, manifest_digest=c["manifest_digest"],
                                       base_model_digest=c["base_model_digest"], dataset_root=c["dataset_root"],
                                       noise_seed_commitment=c["noise_seed_commitment"], manifest_cid=CID)
    key = registered.run_key
    assert key is not None
    gas: dict[str, Any] = {"register": registered.gas_used, "commits": {}}
    gas["first"] = registry.commit_checkpoint(key, index=0, **_checkpoint(0, 0)).gas_used
    size = 0
    for index, steps in enumerate(STEPS_PER_CHECKPOINT, start=1):
        size += steps
        gas["commits"][steps] = registry.commit_checkpoint(key, index=index, **_checkpoint(index, size)).gas_used
    registry.authorize_writer(key, writer.signer.address)
    index = len(STEPS_PER_CHECKPOINT) + 1
    gas["writer"] = writer.commit_checkpoint(key, index=index, **_checkpoint(index, size + 10)).gas_used
    gas["finalize"] = registry.finalize_run(key, merged_tensor_digest=Digest.of(b"merged")).gas_used
    return gas


def v1_gas(registry: chain.Registry) -> dict[str, Any]:
    """The same sequence on the frozen version 1 registry (its functions called directly: the client only reads v1)."""
    old = artifact.load(artifact.V1_ARTIFACT_NAME)
    factory = registry.web3.eth.contract(abi=old.abi, bytecode=old.bytecode)
    address = registry.transport.transact(factory.constructor(), what="deploy v1")["contractAddress"]
    contract = registry.web3.eth.contract(address=address, abi=old.abi)
    run_id = b"\x02" * 32

    def send(function: str, *args: Any) -> int:
        call = getattr(contract.functions, function)(*args)
        return int(registry.transport.transact(call, what=f"v1 {function}")["gasUsed"])

    gas: dict[str, Any] = {"register": send("registerRun", run_id, *(v.value for v in _COMMITMENTS.values()), CID),
                           "commits": {}}
    size = 0
    for index, steps in enumerate([0, *STEPS_PER_CHECKPOINT]):
        size += steps
        c = _checkpoint(index, size)
        used = send("commitCheckpoint", run_id, index, c["weights_digest"].value, c["checkpoint_digest"].value,
                    c["log_size"], c["log_root"].value, c["epsilon_micro"], c["manifest_cid"])
        if index:
            gas["commits"][steps] = used
    gas["finalize"] = send("finalizeRun", run_id)
    return gas


def _clients() -> tuple[chain.Registry, chain.Registry, anvil.AnvilNode | None]:
    from provenance._chain.keys import dev_signer

    node = anvil.start(port=0) if anvil.find_anvil() is not None else None
    url = node.rpc_url if node is not None else chain.TESTER
    registry = chain.connect(url, key=bytes(dev_signer(0).account.key) if node else None, use_config=False)
    assert isinstance(registry, chain.Registry)
    registry.deploy()
    writer_key = bytes(dev_signer(1).account.key) if node else registry.dev_keys()[1]
    return registry, registry.with_signer(writer_key), node


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure on a fresh anvil (py-evm if anvil is absent); gas is deterministic, so `quick` changes nothing."""
    registry, writer, node = _clients()
    try:
        where = "anvil" if node is not None else "py-evm (anvil not installed)"
        v2, v1 = v2_gas(registry, writer), v1_gas(registry)
        per_step = naive_gas_per_step(registry, b"\x03" * 32)
    finally:
        if node is not None:
            node.stop()
    rows: list[dict[str, Any]] = []
    for steps in STEPS_PER_CHECKPOINT:
        gas = v2["commits"][steps]
        rows.append(row(f"commitCheckpoint gas, {steps} steps per checkpoint, v3 vs v1 registry", gas,
                        v1["commits"][steps], unit="gas", target="report", note=f"({where})"))
        rows.append(row(f"commitCheckpoint gas, {steps} steps per checkpoint, vs naive (every batch digest on chain)",
                        gas, round(per_step * steps), unit="gas", target="report",
                        note=f"(naive: {round(per_step):,} gas per step)"))
    worst = max(*v2["commits"].values(), v2["first"])
    rows.append(row(f"worst commitCheckpoint gas (owner) vs the {GAS_TARGET:,} target", worst, GAS_TARGET, unit="gas",
                    target="<= 1.0", note=f"(checkpoint 0: {v2['first']:,} gas; {where})"))
    rows.append(row(f"commitCheckpoint gas by an authorised writer vs the {GAS_TARGET:,} target", v2["writer"],
                    GAS_TARGET, unit="gas", target="<= 1.0", note="(one more storage read: the writer's right)"))
    rows.append(row("registerRun gas, v3 vs v1 (once per run)", v2["register"], v1["register"], unit="gas",
                    target="report", note="(v3 also stores the run id)"))
    rows.append(row("finalizeRun gas, v3 vs v1 (once per run)", v2["finalize"], v1["finalize"], unit="gas",
                    target="report", note="(v3 folds the merged-model digest into the head and is owner-only)"))
    return rows


def main() -> int:
    show(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
